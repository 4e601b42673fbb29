// OpenAI-compatible HTTP server (cpp-httplib) in front of an Engine.
//
// Endpoints: POST /v1/completions, POST /v1/chat/completions (stream and
// non-stream, SSE), GET /v1/models, GET /health, GET /metrics, POST /tokenize,
// POST /detokenize. Errors use OpenAI's {"error": {...}} shape.
//
// Lifecycle: Start() listens at once and /health answers 503 until
// AttachEngine() (so a load balancer can probe while the model loads);
// Shutdown() stops admitting, drains in-flight requests until a deadline,
// aborts the rest, then stops listening.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "runtime/engine.h"
#include "runtime/metrics.h"

namespace httplib {
class Server;
}

namespace tessera {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 = an ephemeral port (see Server::port()).
  std::string served_model_name = "tessera";
  std::string api_key;  // When set, /v1/* needs "Authorization: Bearer KEY".
  size_t max_body_bytes = 8 << 20;  // Larger bodies get 413 unparsed.
  // Worker threads: every open connection (streaming or keep-alive) holds
  // one, so this bounds concurrent streams.
  int http_threads = 512;
  // Default max_tokens for chat when the request gives none (0: up to
  // max_model_len, as vLLM).
  int64_t default_chat_max_tokens = 0;
};

class Server {
 public:
  // `registry` (may be null) is what GET /metrics renders.
  Server(const ServerOptions& options, MetricsRegistry* registry);
  ~Server();  // Shutdown(now) if still running.

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving on a background thread. Unavailable if the
  // address cannot be bound.
  absl::Status Start();
  // The bound port (after Start).
  int port() const { return port_; }
  // Makes the server ready: requests go to `engine` (which must outlive the
  // server or the next Shutdown).
  void AttachEngine(Engine* engine);
  // Graceful stop: refuse new requests (503), let in-flight ones finish until
  // `deadline`, abort the rest, close. Idempotent.
  void Shutdown(std::chrono::steady_clock::time_point deadline);
  // Blocks until Shutdown has completed.
  void Wait();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// Blocks SIGINT and SIGTERM in the calling thread and the threads it starts
// afterwards (call first thing in main / the serve command).
void BlockTerminationSignals();
// Waits for SIGINT or SIGTERM (after BlockTerminationSignals); returns it.
int WaitForTerminationSignal();

}  // namespace tessera
