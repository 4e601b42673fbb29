// Parsing and validation of OpenAI-compatible request bodies (untrusted input;
// fuzzed by tests/fuzz/openai_request_fuzzer.cc). No exceptions escape.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "runtime/chat_template.h"
#include "runtime/sampling_params.h"

namespace tessera::internal {

using ::tessera::ChatMessage;

enum class Endpoint { kCompletions, kChatCompletions, kTokenize, kDetokenize };

// A validated request.
struct OpenAiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;  // Empty when absent.
  bool has_prompt_ids = false;
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
  std::vector<ChatMessage> messages;
  int64_t max_tokens = -1;  // -1: endpoint default.
  SamplingParams sampling;
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool skip_special_tokens = true;
  bool add_special_tokens = true;  // /tokenize, completions.
  bool want_logprobs = false;      // Chat: logprobs true; completions: set.
};

// A 400-class problem with the request, in OpenAI's error vocabulary.
struct RequestError {
  std::string message;
  std::string param;  // The offending field, or empty.
};

// Parses `body` for `endpoint`. Returns false and fills `*error` on bad JSON
// or bad parameters. Never throws.
bool ParseOpenAiRequest(std::string_view body, Endpoint endpoint,
                        OpenAiRequest* out, RequestError* error);

// json::dump that replaces invalid UTF-8 instead of throwing.
std::string DumpJson(const nlohmann::json& j);

// One server-sent event of a streamed completion, as a client reads it.
struct StreamEvent {
  enum class Kind {
    kDone,   // "[DONE]"
    kChunk,  // a completion chunk (text may be empty)
    kError,  // an error object, or data that is not a JSON object
  };
  Kind kind = Kind::kChunk;
  std::string text;                // kChunk: choices[0]'s text or delta.
  int64_t completion_tokens = -1;  // usage.completion_tokens, when an int.
  std::string error;               // kError: the message.
};

// Parses the data of one event (after "data: ") of a /v1/completions
// (`chat` false) or /v1/chat/completions stream from any server (untrusted;
// fuzzed with the request parser). Never throws.
StreamEvent ParseStreamEvent(std::string_view data, bool chat);

}  // namespace tessera::internal
