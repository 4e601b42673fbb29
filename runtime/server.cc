#include "runtime/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <condition_variable>
#include <ctime>
#include <functional>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#include "base/logging.h"
#include "base/random.h"
#include "fmt/format.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "runtime/chat_template.h"
#include "runtime/internal/openai_protocol.h"

namespace tessera {
namespace {

using json = nlohmann::json;

// Renders `messages` with the model's chat template family; the text already
// holds BOS, and special tokens in it are real.
absl::StatusOr<std::vector<int32_t>> EncodeChat(
    const Tokenizer& tok, const std::vector<ChatMessage>& messages) {
  auto text = RenderChat(ChatTemplateFor(tok), messages,
                         /*add_generation_prompt=*/true);
  if (!text.ok()) return text.status();
  return tok.Encode(*text, /*add_special=*/false, /*parse_special=*/true);
}
using internal::DumpJson;
using internal::Endpoint;
using internal::OpenAiRequest;
using Clock = std::chrono::steady_clock;

const char* ErrorType(int status) {
  switch (status) {
    case 400:
    case 413:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable_error";
    default:
      return "internal_error";
  }
}

void SendError(httplib::Response& res, int status, const std::string& message,
               const std::string& param = "") {
  json err = {{"message", message},
              {"type", ErrorType(status)},
              {"param", param.empty() ? json(nullptr) : json(param)},
              {"code", status}};
  res.status = status;
  res.set_content(DumpJson(json{{"error", err}}), "application/json");
}

// The request's prompt as token ids: the rendered chat `messages` when `chat`,
// else the given ids or the encoded prompt text (moved out of `r`). On failure
// sends a 400 naming the offending field and returns false.
bool PromptIds(const Tokenizer& tok, bool chat, internal::OpenAiRequest* r,
               std::vector<int32_t>* ids, httplib::Response& res) {
  absl::StatusOr<std::vector<int32_t>> encoded;
  if (chat) {
    encoded = EncodeChat(tok, r->messages);
  } else if (r->has_prompt_ids) {
    encoded = std::move(r->prompt_ids);
  } else {
    encoded = tok.Encode(r->prompt_text, r->add_special_tokens, false);
  }
  if (!encoded.ok()) {
    SendError(res, 400, std::string(encoded.status().message()),
              chat ? "messages" : "prompt");
    return false;
  }
  *ids = std::move(*encoded);
  return true;
}

int HttpStatusFor(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

json UsageJson(int64_t prompt, int64_t completion, int64_t cached) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json ByteArray(const std::string& s) {
  json a = json::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

// Accumulates per-choice logprobs in the endpoint's format.
struct LogprobsBuilder {
  bool chat = false;
  json content = json::array();  // Chat.
  json tokens = json::array(), token_logprobs = json::array(),
       top = json::array(), offsets = json::array();  // Completions.
  int64_t text_offset = 0;

  void Add(const Tokenizer& tok, const TokenInfo& t) {
    const std::string s = tok.TokenBytes(t.token);
    if (chat) {
      json tops = json::array();
      for (const auto& [id, lp] : t.top_logprobs) {
        const std::string ts = tok.TokenBytes(id);
        tops.push_back(
            {{"token", ts}, {"logprob", lp}, {"bytes", ByteArray(ts)}});
      }
      content.push_back({{"token", s},
                         {"logprob", t.logprob},
                         {"bytes", ByteArray(s)},
                         {"top_logprobs", tops}});
    } else {
      tokens.push_back(s);
      token_logprobs.push_back(t.logprob);
      json tops = json::object();
      for (const auto& [id, lp] : t.top_logprobs) tops[tok.TokenBytes(id)] = lp;
      top.push_back(tops);
      offsets.push_back(text_offset);
      text_offset += static_cast<int64_t>(s.size());
    }
  }
  json Take() {
    json out;
    if (chat) {
      out = {{"content", content}};
      content = json::array();
    } else {
      out = {{"tokens", tokens},
             {"token_logprobs", token_logprobs},
             {"top_logprobs", top},
             {"text_offset", offsets}};
      tokens = token_logprobs = top = offsets = json::array();
    }
    return out;
  }
};

std::string NewRequestId(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  SplitMix64 rng(
      static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^
      (counter.fetch_add(1) << 32));
  return fmt::format("{}-{:016x}{:016x}", prefix, rng.Next(), rng.Next());
}

// Debian's libcpp-httplib 0.11 is compiled with a listen backlog of 5
// (CPPHTTPLIB_LISTEN_BACKLOG), so a burst of more than a few concurrent
// connections overflows the accept queue and clients see resets. The library
// does not expose its socket, so find our listening socket by port and call
// listen() again, which on Linux just raises the backlog.
void WidenListenBacklog(int port) {
  for (int fd = 0; fd < 65536; ++fd) {
    int accepting = 0;
    socklen_t len = sizeof(accepting);
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0) {
      if (errno == EBADF && fd > 1024) break;
      continue;
    }
    if (!accepting) continue;
    sockaddr_storage addr{};
    socklen_t alen = sizeof(addr);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) {
      continue;
    }
    int bound = -1;
    if (addr.ss_family == AF_INET) {
      bound = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      bound = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    }
    if (bound == port) {
      ::listen(fd, SOMAXCONN);
      return;
    }
  }
}

}  // namespace

class Server::Impl {
 public:
  Impl(const ServerOptions& options, MetricsRegistry* registry)
      : options_(options), registry_(registry), created_(std::time(nullptr)) {}

  ServerOptions options_;
  MetricsRegistry* registry_;
  const int64_t created_;
  httplib::Server svr_;
  std::thread thread_;
  std::atomic<Engine*> engine_{nullptr};
  std::atomic<bool> draining_{false};
  std::atomic<bool> shutdown_started_{false};
  std::atomic<int64_t> active_{0};  // Generation requests in flight.
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false;
  bool started_ = false;

  void Routes();
  void HandleGenerate(const httplib::Request& req, httplib::Response& res,
                      Endpoint endpoint);
  void HandleTokenize(const httplib::Request& req, httplib::Response& res,
                      Endpoint endpoint);
  // Engine, or null after sending 503.
  Engine* ReadyEngine(httplib::Response& res) {
    Engine* e = engine_.load();
    if (e == nullptr) {
      SendError(res, 503, "the model is still loading");
    } else if (draining_.load()) {
      SendError(res, 503, "the server is shutting down");
      e = nullptr;
    }
    return e;
  }
  void FinishActive() {
    if (active_.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
    }
  }
};

// State shared by a streaming response's provider and releaser.
struct StreamState {
  Engine* engine = nullptr;
  std::function<void()> on_released;  // Called once the response ends.
  std::vector<std::shared_ptr<RequestStream>> streams;
  std::vector<char> done;
  std::vector<LogprobsBuilder> logprobs;
  bool chat = false;
  bool want_logprobs = false;
  bool include_usage = false;
  bool role_sent = false;
  bool finished = false;
  std::string id;
  std::string model;
  int64_t created = 0;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
  std::vector<int64_t> completion_tokens;
  RequestUpdate update;
};

namespace {

json ChunkBase(const StreamState& s) {
  return {{"id", s.id},
          {"object", s.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", s.created},
          {"model", s.model}};
}

bool WriteEvent(httplib::DataSink& sink, const std::string& payload) {
  const std::string ev = "data: " + payload + "\n\n";
  return sink.write(ev.data(), ev.size());
}

json ChoiceChunk(StreamState& s, size_t i, const std::string& text,
                 const char* finish_reason, bool with_logprobs) {
  json choice = {{"index", i}};
  if (s.chat) {
    json delta = json::object();
    if (!text.empty()) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = with_logprobs ? s.logprobs[i].Take() : json(nullptr);
  choice["finish_reason"] =
      finish_reason == nullptr ? json(nullptr) : json(finish_reason);
  json chunk = ChunkBase(s);
  chunk["choices"] = json::array({choice});
  if (s.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

// One provider call: writes what is ready (waiting briefly for news).
bool ProvideStream(StreamState& s, httplib::DataSink& sink) {
  if (s.finished) {
    sink.done();
    return true;
  }
  if (s.chat && !s.role_sent) {
    for (size_t i = 0; i < s.streams.size(); ++i) {
      json choice = {{"index", i},
                     {"delta", {{"role", "assistant"}, {"content", ""}}},
                     {"logprobs", nullptr},
                     {"finish_reason", nullptr}};
      json chunk = ChunkBase(s);
      chunk["choices"] = json::array({choice});
      if (s.include_usage) chunk["usage"] = nullptr;
      if (!WriteEvent(sink, DumpJson(chunk))) return false;
    }
    s.role_sent = true;
  }
  const Tokenizer& tok = s.engine->tokenizer();
  bool waited = false;
  for (size_t i = 0; i < s.streams.size(); ++i) {
    if (s.done[i]) continue;
    // Block briefly on the first unfinished choice only.
    const auto timeout =
        waited ? std::chrono::milliseconds(0) : std::chrono::milliseconds(50);
    waited = true;
    if (!s.streams[i]->Read(&s.update, timeout)) continue;
    const RequestUpdate& u = s.update;
    s.prompt_tokens = u.prompt_tokens;
    if (i == 0) s.cached_tokens = u.cached_tokens;
    s.completion_tokens[i] = u.completion_tokens;
    if (s.want_logprobs) {
      for (const auto& t : u.tokens) s.logprobs[i].Add(tok, t);
    }
    if (u.finished && u.finish_reason == FinishReason::kError) {
      s.done[i] = 1;
      json err = {{"message", std::string(u.error.message())},
                  {"type", ErrorType(500)},
                  {"param", nullptr},
                  {"code", 500}};
      if (!WriteEvent(sink, DumpJson(json{{"error", err}}))) return false;
      continue;
    }
    const char* reason =
        u.finished ? FinishReasonName(u.finish_reason) : nullptr;
    if (u.finished) s.done[i] = 1;
    if (u.text.empty() && reason == nullptr &&
        !(s.want_logprobs && !u.tokens.empty())) {
      continue;
    }
    if (!WriteEvent(sink, DumpJson(ChoiceChunk(s, i, u.text, reason,
                                               s.want_logprobs)))) {
      return false;
    }
  }
  for (char d : s.done) {
    if (!d) return true;
  }
  if (s.include_usage) {
    int64_t completion = 0;
    for (int64_t c : s.completion_tokens) completion += c;
    json chunk = ChunkBase(s);
    chunk["choices"] = json::array();
    chunk["usage"] = UsageJson(s.prompt_tokens, completion, s.cached_tokens);
    if (!WriteEvent(sink, DumpJson(chunk))) return false;
  }
  static constexpr std::string_view kDone = "data: [DONE]\n\n";
  if (!sink.write(kDone.data(), kDone.size())) return false;
  s.finished = true;
  sink.done();
  return true;
}

}  // namespace

void Server::Impl::HandleGenerate(const httplib::Request& req,
                                  httplib::Response& res, Endpoint endpoint) {
  Engine* engine = ReadyEngine(res);
  if (engine == nullptr) return;
  const bool chat = endpoint == Endpoint::kChatCompletions;
  OpenAiRequest r;
  internal::RequestError err;
  if (!internal::ParseOpenAiRequest(req.body, endpoint, &r, &err)) {
    SendError(res, 400, err.message, err.param);
    return;
  }
  if (!r.model.empty() && r.model != options_.served_model_name) {
    SendError(res, 404, fmt::format("The model `{}` does not exist.", r.model),
              "model");
    return;
  }
  const Tokenizer& tok = engine->tokenizer();
  std::vector<int32_t> prompt;
  if (!PromptIds(tok, chat, &r, &prompt, res)) return;
  const int64_t max_len = engine->max_model_len();
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  if (n_prompt >= max_len) {
    SendError(res, 400,
              fmt::format("This model's maximum context length is {} tokens. "
                          "However, your request has {} input tokens. Please "
                          "reduce the length of the input.",
                          max_len, n_prompt),
              chat ? "messages" : "prompt");
    return;
  }
  int64_t max_tokens = r.max_tokens;
  if (max_tokens > 0 && n_prompt + max_tokens > max_len) {
    SendError(res, 400,
              fmt::format("This model's maximum context length is {} tokens. "
                          "However, you requested {} tokens ({} in the input, "
                          "{} in the completion). Please reduce the length of "
                          "the input or completion.",
                          max_len, n_prompt + max_tokens, n_prompt, max_tokens),
              "max_tokens");
    return;
  }
  if (max_tokens <= 0) {
    max_tokens = chat ? (options_.default_chat_max_tokens > 0
                             ? options_.default_chat_max_tokens
                             : max_len - n_prompt)
                      : 16;
  }

  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int32_t i = 0; i < r.n; ++i) {
    GenerateRequest g;
    g.prompt = prompt;
    g.sampling = r.sampling;
    if (g.sampling.has_seed) g.sampling.seed += static_cast<uint64_t>(i);
    g.max_tokens = max_tokens;
    g.stop = r.stop;
    g.stop_token_ids = r.stop_token_ids;
    g.ignore_eos = r.ignore_eos;
    g.skip_special_tokens = r.skip_special_tokens;
    auto s = engine->AddRequest(std::move(g));
    if (!s.ok()) {
      for (auto& prev : streams) engine->Abort(prev->id());
      const int status = HttpStatusFor(s.status());
      SendError(res, status, std::string(s.status().message()),
                status == 400 ? (chat ? "messages" : "prompt") : "");
      return;
    }
    streams.push_back(*s);
  }

  auto state = std::make_shared<StreamState>();
  state->engine = engine;
  state->on_released = [this] { FinishActive(); };
  state->streams = std::move(streams);
  state->done.assign(state->streams.size(), 0);
  state->logprobs.resize(state->streams.size());
  for (auto& lb : state->logprobs) lb.chat = chat;
  state->completion_tokens.assign(state->streams.size(), 0);
  state->chat = chat;
  state->want_logprobs = r.want_logprobs;
  state->include_usage = r.include_usage;
  state->id = NewRequestId(chat ? "chatcmpl" : "cmpl");
  state->model = options_.served_model_name;
  state->created = static_cast<int64_t>(std::time(nullptr));
  state->prompt_tokens = n_prompt;

  if (r.stream) {
    active_.fetch_add(1);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [state](size_t /*offset*/, httplib::DataSink& sink) {
          return ProvideStream(*state, sink);
        },
        [state](bool /*success*/) {
          // Client gone (or stream ended): abort what is still running so its
          // KV blocks are freed at once.
          for (size_t i = 0; i < state->streams.size(); ++i) {
            if (!state->done[i]) state->engine->Abort(state->streams[i]->id());
          }
          state->on_released();
        });
    return;
  }

  // Non-streaming: wait for every choice.
  active_.fetch_add(1);
  json choices = json::array();
  int64_t completion = 0;
  int64_t cached = 0;
  for (size_t i = 0; i < state->streams.size(); ++i) {
    std::string text;
    RequestUpdate& u = state->update;
    while (true) {
      if (!state->streams[i]->Read(&u, std::chrono::milliseconds(1000))) {
        continue;
      }
      text += u.text;
      if (r.want_logprobs) {
        for (const auto& t : u.tokens) state->logprobs[i].Add(tok, t);
      }
      if (u.finished) break;
    }
    if (u.finish_reason == FinishReason::kError) {
      for (size_t j = i + 1; j < state->streams.size(); ++j) {
        engine->Abort(state->streams[j]->id());
      }
      const int status =
          u.error.code() == absl::StatusCode::kResourceExhausted ? 400 : 500;
      SendError(res, status, std::string(u.error.message()));
      FinishActive();
      return;
    }
    completion += u.completion_tokens;
    if (i == 0) cached = u.cached_tokens;
    json choice = {{"index", i}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text}};
    } else {
      choice["text"] = text;
    }
    choice["logprobs"] =
        r.want_logprobs ? state->logprobs[i].Take() : json(nullptr);
    choice["finish_reason"] = FinishReasonName(u.finish_reason);
    choices.push_back(choice);
  }
  json body = {{"id", state->id},
               {"object", chat ? "chat.completion" : "text_completion"},
               {"created", state->created},
               {"model", state->model},
               {"choices", choices},
               {"usage", UsageJson(n_prompt, completion, cached)}};
  res.set_content(DumpJson(body), "application/json");
  FinishActive();
}

void Server::Impl::HandleTokenize(const httplib::Request& req,
                                  httplib::Response& res, Endpoint endpoint) {
  Engine* engine = ReadyEngine(res);
  if (engine == nullptr) return;
  OpenAiRequest r;
  internal::RequestError err;
  if (!internal::ParseOpenAiRequest(req.body, endpoint, &r, &err)) {
    SendError(res, 400, err.message, err.param);
    return;
  }
  if (!r.model.empty() && r.model != options_.served_model_name) {
    SendError(res, 404, fmt::format("The model `{}` does not exist.", r.model),
              "model");
    return;
  }
  const Tokenizer& tok = engine->tokenizer();
  if (endpoint == Endpoint::kDetokenize) {
    auto text = tok.Decode(r.prompt_ids, /*skip_special=*/false);
    if (!text.ok()) {
      SendError(res, 400, std::string(text.status().message()), "tokens");
      return;
    }
    res.set_content(DumpJson(json{{"prompt", *text}}), "application/json");
    return;
  }
  std::vector<int32_t> ids;
  if (!PromptIds(tok, !r.messages.empty(), &r, &ids, res)) return;
  json body = {{"count", ids.size()},
               {"max_model_len", engine->max_model_len()},
               {"tokens", ids}};
  res.set_content(DumpJson(body), "application/json");
}

void Server::Impl::Routes() {
  svr_.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) {
        if (!options_.api_key.empty() && req.path.rfind("/v1", 0) == 0) {
          const std::string expected = "Bearer " + options_.api_key;
          if (req.get_header_value("Authorization") != expected) {
            SendError(res, 401, "Incorrect or missing API key.");
            return httplib::Server::HandlerResponse::Handled;
          }
        }
        return httplib::Server::HandlerResponse::Unhandled;
      });
  svr_.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty())
          return httplib::Server::HandlerResponse::Unhandled;
        const int status = res.status;
        if (status == 404) {
          SendError(res, 404,
                    fmt::format("Not found: {} {}", req.method, req.path));
        } else if (status == 413) {
          SendError(res, 413, "the request body is too large");
        } else {
          SendError(res, status, fmt::format("HTTP error {}", status));
        }
        return httplib::Server::HandlerResponse::Handled;
      }));
  svr_.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                                std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("HTTP handler failed: {}", what);
    SendError(res, 500, what);
  });
  svr_.Post("/v1/completions",
            [this](const httplib::Request& req, httplib::Response& res) {
              HandleGenerate(req, res, Endpoint::kCompletions);
            });
  svr_.Post("/v1/chat/completions",
            [this](const httplib::Request& req, httplib::Response& res) {
              HandleGenerate(req, res, Endpoint::kChatCompletions);
            });
  svr_.Post("/tokenize",
            [this](const httplib::Request& req, httplib::Response& res) {
              HandleTokenize(req, res, Endpoint::kTokenize);
            });
  svr_.Post("/detokenize",
            [this](const httplib::Request& req, httplib::Response& res) {
              HandleTokenize(req, res, Endpoint::kDetokenize);
            });
  svr_.Get(
      "/v1/models", [this](const httplib::Request&, httplib::Response& res) {
        Engine* e = engine_.load();
        json model = {{"id", options_.served_model_name},
                      {"object", "model"},
                      {"created", created_},
                      {"owned_by", "tessera"},
                      {"root", options_.served_model_name},
                      {"parent", nullptr}};
        if (e != nullptr) model["max_model_len"] = e->max_model_len();
        res.set_content(
            DumpJson(json{{"object", "list"}, {"data", json::array({model})}}),
            "application/json");
      });
  svr_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.status = engine_.load() != nullptr && !draining_.load() ? 200 : 503;
    res.set_content("", "text/plain");
  });
  svr_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry_ != nullptr ? registry_->Serialize() : "",
                    "text/plain; version=0.0.4; charset=utf-8");
  });
}

Server::Server(const ServerOptions& options, MetricsRegistry* registry)
    : impl_(std::make_unique<Impl>(options, registry)) {}

Server::~Server() {
  if (impl_->started_) Shutdown(Clock::now());
}

absl::Status Server::Start() {
  Impl& s = *impl_;
  // A client that disconnects mid-stream must not kill the process with
  // SIGPIPE; the failed write is how the stream notices.
  ::signal(SIGPIPE, SIG_IGN);
  const int threads = std::max(8, s.options_.http_threads);
  s.svr_.new_task_queue = [threads] {
    return new httplib::ThreadPool(threads);
  };
  s.svr_.set_payload_max_length(s.options_.max_body_bytes);
  s.svr_.set_keep_alive_max_count(1000);
  s.svr_.set_keep_alive_timeout(5);
  s.svr_.set_read_timeout(60, 0);
  s.svr_.set_write_timeout(30, 0);
  s.Routes();
  if (s.options_.port == 0) {
    port_ = s.svr_.bind_to_any_port(s.options_.host);
  } else {
    port_ = s.svr_.bind_to_port(s.options_.host, s.options_.port)
                ? s.options_.port
                : -1;
  }
  if (port_ <= 0) {
    return absl::UnavailableError(fmt::format(
        "cannot listen on {}:{}", s.options_.host, s.options_.port));
  }
  WidenListenBacklog(port_);
  s.started_ = true;
  s.thread_ = std::thread([&s] { s.svr_.listen_after_bind(); });
  for (int i = 0; i < 2000 && !s.svr_.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  spdlog::info("serving {} on http://{}:{}", s.options_.served_model_name,
               s.options_.host, port_);
  return absl::OkStatus();
}

void Server::AttachEngine(Engine* engine) { impl_->engine_.store(engine); }

void Server::Shutdown(Clock::time_point deadline) {
  Impl& s = *impl_;
  if (s.shutdown_started_.exchange(true)) {
    Wait();
    return;
  }
  s.draining_.store(true);
  if (Engine* e = s.engine_.load()) e->Shutdown(deadline);
  {
    // Streams end once the engine has finished or aborted them; give their
    // final chunks a moment to be written.
    std::unique_lock<std::mutex> lock(s.mu_);
    s.cv_.wait_until(lock,
                     std::max(deadline, Clock::now()) + std::chrono::seconds(2),
                     [&] { return s.active_.load() == 0; });
  }
  s.svr_.stop();
  if (s.thread_.joinable()) s.thread_.join();
  {
    std::lock_guard<std::mutex> lock(s.mu_);
    s.stopped_ = true;
  }
  s.cv_.notify_all();
}

void Server::Wait() {
  std::unique_lock<std::mutex> lock(impl_->mu_);
  impl_->cv_.wait(lock, [&] { return impl_->stopped_; });
}

void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace tessera
