// Shared by the server tests: a Server + Engine + FakeRunner on an ephemeral
// loopback port, and helpers to call it and check responses.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "runtime/engine.h"
#include "runtime/metrics.h"
#include "runtime/server.h"
#include "tests/runtime/serving/fakes.h"

namespace tessera::serving_test {

using json = nlohmann::json;
using testing::FakeRunner;
using testing::FakeRunnerOptions;
using testing::FakeTokenizer;
using namespace std::chrono_literals;

// A server on an ephemeral loopback port with a fake model.
class ServerFixture {
 public:
  explicit ServerFixture(FakeRunnerOptions runner_options = {},
                         ServerOptions options = {},
                         EngineOptions engine_options = {}, bool attach = true)
      : runner_(runner_options), metrics_(&registry_, "fake-model") {
    options.port = 0;
    options.host = "127.0.0.1";
    options.served_model_name = "fake-model";
    if (engine_options.max_model_len == 0) engine_options.max_model_len = 512;
    engine_ = std::make_unique<Engine>(&runner_, &tokenizer_, engine_options,
                                       &metrics_);
    server_ = std::make_unique<Server>(options, &registry_);
    EXPECT_TRUE(server_->Start().ok());
    if (attach) server_->AttachEngine(engine_.get());
  }
  ~ServerFixture() { server_->Shutdown(std::chrono::steady_clock::now()); }

  httplib::Client Client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(30, 0);
    return c;
  }
  Server& server() { return *server_; }
  Engine& engine() { return *engine_; }
  FakeRunner& runner() { return runner_; }
  ServingMetrics& metrics() { return metrics_; }

  void WaitIdle() {
    for (int i = 0; i < 5000 && engine_->stats().num_live_requests > 0; ++i) {
      std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(10ms);
  }

 private:
  FakeRunner runner_;
  FakeTokenizer tokenizer_;
  MetricsRegistry registry_;
  ServingMetrics metrics_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Server> server_;
};

inline httplib::Result PostJson(httplib::Client& c, const std::string& path,
                                const json& body,
                                httplib::Headers headers = {}) {
  return c.Post(path.c_str(), headers, body.dump(), "application/json");
}

inline void ExpectError(const httplib::Result& r, int status,
                        const std::string& param = "") {
  ASSERT_TRUE(r) << "no response";
  EXPECT_EQ(r->status, status) << r->body;
  json j = json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r->body;
  ASSERT_TRUE(j.contains("error")) << r->body;
  const json& e = j["error"];
  EXPECT_TRUE(e["message"].is_string());
  EXPECT_TRUE(e["type"].is_string());
  EXPECT_TRUE(e.contains("param"));
  EXPECT_EQ(e["code"], status);
  if (!param.empty()) {
    EXPECT_EQ(e["param"], param) << r->body;
  }
}

// Parses an SSE body; checks framing; returns the JSON events (not [DONE]).
inline std::vector<json> ParseSse(const std::string& body) {
  std::vector<json> events;
  size_t pos = 0;
  bool done = false;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated event";
    if (end == std::string::npos) break;
    const std::string ev = body.substr(pos, end - pos);
    pos = end + 2;
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    EXPECT_FALSE(done) << "event after [DONE]";
    const std::string payload = ev.substr(6);
    if (payload == "[DONE]") {
      done = true;
      continue;
    }
    json j = json::parse(payload, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << payload;
    events.push_back(j);
  }
  EXPECT_TRUE(done) << "no [DONE]";
  return events;
}

inline json Completion(const std::string& prompt, int max_tokens) {
  return {{"model", "fake-model"},
          {"prompt", prompt},
          {"max_tokens", max_tokens},
          {"temperature", 0}};
}

}  // namespace tessera::serving_test
