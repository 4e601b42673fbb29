#include "runtime/internal/openai_protocol.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "fmt/format.h"

namespace tessera::internal {
namespace {

using json = nlohmann::json;

constexpr int32_t kMaxN = 128;
constexpr int32_t kMaxLogprobs = 20;

bool Fail(RequestError* error, std::string param, std::string message) {
  error->param = std::move(param);
  error->message = std::move(message);
  return false;
}

// Reads an optional number field into `*out`; false on a wrong type.
bool GetNumber(const json& j, const char* key, double* out, bool* present,
               RequestError* error) {
  *present = false;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return true;
  if (!it->is_number()) {
    return Fail(error, key, fmt::format("'{}' must be a number", key));
  }
  *out = it->get<double>();
  if (!std::isfinite(*out)) {
    return Fail(error, key, fmt::format("'{}' must be finite", key));
  }
  *present = true;
  return true;
}

bool GetInt(const json& j, const char* key, int64_t* out, bool* present,
            RequestError* error) {
  *present = false;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return true;
  if (it->is_number_integer()) {
    if (it->is_number_unsigned() &&
        it->get<uint64_t>() >
            static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Fail(error, key, fmt::format("'{}' is too large", key));
    }
    *out = it->get<int64_t>();
    *present = true;
    return true;
  }
  return Fail(error, key, fmt::format("'{}' must be an integer", key));
}

bool GetBool(const json& j, const char* key, bool* out, RequestError* error) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return true;
  if (!it->is_boolean()) {
    return Fail(error, key, fmt::format("'{}' must be a boolean", key));
  }
  *out = it->get<bool>();
  return true;
}

bool GetTokenIds(const json& arr, const char* key, std::vector<int32_t>* out,
                 RequestError* error) {
  out->clear();
  for (const auto& v : arr) {
    if (!v.is_number_integer()) {
      return Fail(error, key, fmt::format("'{}' must hold token ids", key));
    }
    const int64_t id = v.is_number_unsigned()
                           ? static_cast<int64_t>(std::min<uint64_t>(
                                 v.get<uint64_t>(), 1ull << 40))
                           : v.get<int64_t>();
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
      return Fail(error, key, fmt::format("token id {} is out of range", id));
    }
    out->push_back(static_cast<int32_t>(id));
  }
  return true;
}

bool ParsePrompt(const json& j, OpenAiRequest* out, RequestError* error) {
  auto it = j.find("prompt");
  if (it == j.end() || it->is_null()) {
    return Fail(error, "prompt", "'prompt' is required");
  }
  const json* p = &*it;
  // A list of one prompt (string or token ids) is accepted; batches are not.
  if (p->is_array() && p->size() == 1 &&
      ((*p)[0].is_string() || (*p)[0].is_array())) {
    p = &(*p)[0];
  }
  if (p->is_string()) {
    out->prompt_text = p->get<std::string>();
    if (out->prompt_text.empty()) {
      return Fail(error, "prompt", "'prompt' must not be empty");
    }
    return true;
  }
  if (p->is_array()) {
    if (p->empty()) return Fail(error, "prompt", "'prompt' must not be empty");
    if (!(*p)[0].is_number_integer()) {
      return Fail(error, "prompt",
                  "'prompt' must be a string, a list of token ids, or a list "
                  "holding one of them (batched prompts are not supported)");
    }
    out->has_prompt_ids = true;
    return GetTokenIds(*p, "prompt", &out->prompt_ids, error);
  }
  return Fail(error, "prompt",
              "'prompt' must be a string or a list of token ids");
}

bool ParseMessages(const json& j, OpenAiRequest* out, RequestError* error) {
  auto it = j.find("messages");
  if (it == j.end() || !it->is_array() || it->empty()) {
    return Fail(error, "messages", "'messages' must be a non-empty list");
  }
  for (const auto& m : *it) {
    if (!m.is_object()) {
      return Fail(error, "messages", "each message must be an object");
    }
    ChatMessage msg;
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return Fail(error, "messages", "each message needs a string 'role'");
    }
    msg.role = role->get<std::string>();
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      // Allowed (e.g. assistant tool calls); renders as empty.
    } else if (content->is_string()) {
      msg.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (const auto& part : *content) {
        if (!part.is_object()) {
          return Fail(error, "messages", "content parts must be objects");
        }
        auto type = part.find("type");
        auto text = part.find("text");
        if (type == part.end() || !type->is_string() ||
            type->get<std::string>() != "text") {
          return Fail(error, "messages",
                      "only text content parts are supported");
        }
        if (text == part.end() || !text->is_string()) {
          return Fail(error, "messages", "a text part needs a string 'text'");
        }
        msg.content += text->get<std::string>();
      }
    } else {
      return Fail(error, "messages", "'content' must be a string or a list");
    }
    out->messages.push_back(std::move(msg));
  }
  return true;
}

bool ParseSampling(const json& j, OpenAiRequest* out, RequestError* error) {
  double v;
  bool present;
  int64_t i;
  SamplingParams& s = out->sampling;
  if (!GetNumber(j, "temperature", &v, &present, error)) return false;
  if (present) {
    if (v < 0) return Fail(error, "temperature", "'temperature' must be >= 0");
    s.temperature = static_cast<float>(v);
  }
  if (!GetNumber(j, "top_p", &v, &present, error)) return false;
  if (present) {
    if (!(v > 0 && v <= 1))
      return Fail(error, "top_p", "'top_p' must be in (0, 1]");
    s.top_p = static_cast<float>(v);
  }
  if (!GetInt(j, "top_k", &i, &present, error)) return false;
  if (present) {
    if (i < -1 || i > std::numeric_limits<int32_t>::max()) {
      return Fail(error, "top_k", "'top_k' must be -1 (off) or >= 0");
    }
    s.top_k = i < 0 ? 0 : static_cast<int32_t>(i);
  }
  if (!GetNumber(j, "min_p", &v, &present, error)) return false;
  if (present) {
    if (v < 0 || v > 1)
      return Fail(error, "min_p", "'min_p' must be in [0, 1]");
    s.min_p = static_cast<float>(v);
  }
  if (!GetNumber(j, "presence_penalty", &v, &present, error)) return false;
  if (present) {
    if (v < -2 || v > 2) {
      return Fail(error, "presence_penalty",
                  "'presence_penalty' must be in [-2, 2]");
    }
    s.presence_penalty = static_cast<float>(v);
  }
  if (!GetNumber(j, "frequency_penalty", &v, &present, error)) return false;
  if (present) {
    if (v < -2 || v > 2) {
      return Fail(error, "frequency_penalty",
                  "'frequency_penalty' must be in [-2, 2]");
    }
    s.frequency_penalty = static_cast<float>(v);
  }
  if (!GetNumber(j, "repetition_penalty", &v, &present, error)) return false;
  if (present) {
    if (v <= 0) {
      return Fail(error, "repetition_penalty",
                  "'repetition_penalty' must be > 0");
    }
    s.repetition_penalty = static_cast<float>(v);
  }
  if (!GetInt(j, "seed", &i, &present, error)) return false;
  if (present) {
    s.seed = static_cast<uint64_t>(i);
    s.has_seed = true;
  }
  // Logprobs: completions take an int; chat a bool plus top_logprobs.
  if (out->endpoint == Endpoint::kCompletions) {
    if (!GetInt(j, "logprobs", &i, &present, error)) return false;
    if (present) {
      if (i < 0 || i > kMaxLogprobs) {
        return Fail(error, "logprobs",
                    fmt::format("'logprobs' must be in [0, {}]", kMaxLogprobs));
      }
      s.logprobs = static_cast<int32_t>(i);
      out->want_logprobs = true;
    }
  } else {
    bool want = false;
    if (!GetBool(j, "logprobs", &want, error)) return false;
    if (!GetInt(j, "top_logprobs", &i, &present, error)) return false;
    if (present && (i < 0 || i > kMaxLogprobs)) {
      return Fail(
          error, "top_logprobs",
          fmt::format("'top_logprobs' must be in [0, {}]", kMaxLogprobs));
    }
    if (present && i > 0 && !want) {
      return Fail(error, "top_logprobs",
                  "'top_logprobs' requires 'logprobs' to be true");
    }
    if (want) {
      s.logprobs = present ? static_cast<int32_t>(i) : 0;
      out->want_logprobs = true;
    }
  }
  return true;
}

bool ParseStop(const json& j, OpenAiRequest* out, RequestError* error) {
  auto it = j.find("stop");
  if (it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      out->stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const auto& s : *it) {
        if (!s.is_string()) {
          return Fail(error, "stop", "'stop' must be a string or strings");
        }
        out->stop.push_back(s.get<std::string>());
      }
    } else {
      return Fail(error, "stop",
                  "'stop' must be a string or a list of strings");
    }
    for (const auto& s : out->stop) {
      if (s.empty())
        return Fail(error, "stop", "stop strings must not be empty");
    }
  }
  auto ids = j.find("stop_token_ids");
  if (ids != j.end() && !ids->is_null()) {
    if (!ids->is_array()) {
      return Fail(error, "stop_token_ids", "'stop_token_ids' must be a list");
    }
    if (!GetTokenIds(*ids, "stop_token_ids", &out->stop_token_ids, error)) {
      return false;
    }
  }
  return true;
}

bool ParseObject(const json& j, Endpoint endpoint, OpenAiRequest* out,
                 RequestError* error) {
  out->endpoint = endpoint;
  auto model = j.find("model");
  if (model != j.end() && !model->is_null()) {
    if (!model->is_string())
      return Fail(error, "model", "'model' must be a string");
    out->model = model->get<std::string>();
  }
  if (endpoint == Endpoint::kDetokenize) {
    auto t = j.find("tokens");
    if (t == j.end() || !t->is_array()) {
      return Fail(error, "tokens", "'tokens' must be a list of token ids");
    }
    return GetTokenIds(*t, "tokens", &out->prompt_ids, error);
  }
  if (!GetBool(j, "add_special_tokens", &out->add_special_tokens, error)) {
    return false;
  }
  if (endpoint == Endpoint::kTokenize) {
    if (j.contains("messages")) return ParseMessages(j, out, error);
    return ParsePrompt(j, out, error);
  }
  if (endpoint == Endpoint::kCompletions) {
    if (!ParsePrompt(j, out, error)) return false;
  } else {
    if (!ParseMessages(j, out, error)) return false;
  }
  int64_t i;
  bool present;
  // max_completion_tokens is the newer chat name for max_tokens.
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!GetInt(j, key, &i, &present, error)) return false;
    if (present) {
      if (i < 1) return Fail(error, key, fmt::format("'{}' must be >= 1", key));
      out->max_tokens = i;
    }
  }
  if (!GetInt(j, "n", &i, &present, error)) return false;
  if (present) {
    if (i < 1 || i > kMaxN) {
      return Fail(error, "n", fmt::format("'n' must be in [1, {}]", kMaxN));
    }
    out->n = static_cast<int32_t>(i);
  }
  if (!GetBool(j, "stream", &out->stream, error)) return false;
  auto so = j.find("stream_options");
  if (so != j.end() && !so->is_null()) {
    if (!so->is_object()) {
      return Fail(error, "stream_options",
                  "'stream_options' must be an object");
    }
    if (!GetBool(*so, "include_usage", &out->include_usage, error))
      return false;
    if (!out->stream) {
      return Fail(error, "stream_options",
                  "'stream_options' is only allowed when 'stream' is true");
    }
  }
  if (!GetBool(j, "ignore_eos", &out->ignore_eos, error)) return false;
  if (!GetBool(j, "skip_special_tokens", &out->skip_special_tokens, error)) {
    return false;
  }
  if (auto b = j.find("best_of"); b != j.end() && !b->is_null() &&
                                  !(b->is_number_integer() && *b == out->n)) {
    return Fail(error, "best_of", "'best_of' is not supported");
  }
  if (auto e = j.find("echo");
      e != j.end() && e->is_boolean() && e->get<bool>()) {
    return Fail(error, "echo", "'echo' is not supported");
  }
  return ParseSampling(j, out, error) && ParseStop(j, out, error);
}

// Deepest [ / { nesting outside strings (bounded before parsing so that a
// hostile body cannot drive deep recursion anywhere downstream).
int MaxDepth(std::string_view body) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

}  // namespace

bool ParseOpenAiRequest(std::string_view body, Endpoint endpoint,
                        OpenAiRequest* out, RequestError* error) {
  *out = OpenAiRequest{};
  if (MaxDepth(body) > 32) {
    return Fail(error, "", "the request body is nested too deeply");
  }
  try {
    json j = json::parse(body.begin(), body.end(), nullptr,
                         /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      return Fail(error, "", "the request body is not valid JSON");
    }
    if (!j.is_object()) {
      return Fail(error, "", "the request body must be a JSON object");
    }
    return ParseObject(j, endpoint, out, error);
  } catch (const std::exception& e) {
    // Defensive: nlohmann throws on unexpected type access.
    return Fail(error, "", fmt::format("bad request: {}", e.what()));
  }
}

std::string DumpJson(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

StreamEvent ParseStreamEvent(std::string_view data, bool chat) {
  using nlohmann::json;
  StreamEvent ev;
  if (data == "[DONE]") {
    ev.kind = StreamEvent::Kind::kDone;
    return ev;
  }
  const json j = json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    ev.kind = StreamEvent::Kind::kError;
    ev.error = "malformed event: " + std::string(data.substr(0, 200));
    return ev;
  }
  // Only find()/is_*() below: operator[] and value() throw on a wrong type,
  // and another server's shapes are not ours to trust.
  if (auto e = j.find("error"); e != j.end()) {
    ev.kind = StreamEvent::Kind::kError;
    auto m = e->is_object() ? e->find("message") : e->end();
    ev.error = e->is_object() && m != e->end() && m->is_string()
                   ? m->get<std::string>()
                   : "server error: " + DumpJson(*e);
    return ev;
  }
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
    // Integers only: converting a float such as 1e30 would be undefined.
    auto t = u->find("completion_tokens");
    if (t != u->end() && t->is_number_integer() && t->get<int64_t>() >= 0) {
      ev.completion_tokens = t->get<int64_t>();
    }
  }
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array() || choices->empty() ||
      !choices->front().is_object()) {
    return ev;
  }
  const json& c = choices->front();
  const json* holder = &c;
  if (chat) {
    auto d = c.find("delta");
    if (d == c.end() || !d->is_object()) return ev;
    holder = &*d;
  }
  auto t = holder->find(chat ? "content" : "text");
  if (t != holder->end() && t->is_string()) ev.text = t->get<std::string>();
  return ev;
}

}  // namespace tessera::internal
