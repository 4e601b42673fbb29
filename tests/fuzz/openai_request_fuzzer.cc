// Fuzzes the OpenAI request parser (HTTP bodies are untrusted): it must never
// crash, throw or hang, and a parsed request must satisfy the validated
// ranges. The same bytes go through the client's stream-event parser.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/chat_template.h"
#include "runtime/internal/openai_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using tessera::internal::Endpoint;
  // The first byte picks the endpoint, the rest is the body.
  const auto endpoint = static_cast<Endpoint>(data[0] % 4);
  const std::string_view body(reinterpret_cast<const char*>(data + 1),
                              size - 1);
  const tessera::internal::StreamEvent ev =
      tessera::internal::ParseStreamEvent(body, (data[0] & 1) != 0);
  if (ev.completion_tokens < -1) __builtin_trap();
  tessera::internal::OpenAiRequest req;
  tessera::internal::RequestError error;
  if (tessera::internal::ParseOpenAiRequest(body, endpoint, &req, &error)) {
    if (req.n < 1 || req.sampling.temperature < 0 || req.sampling.top_p <= 0 ||
        req.sampling.top_p > 1 || req.sampling.logprobs > 20) {
      __builtin_trap();
    }
    if (endpoint == Endpoint::kChatCompletions) {
      (void)tessera::RenderChat(tessera::ChatTemplate{}, req.messages, true);
    }
  }
  return 0;
}
