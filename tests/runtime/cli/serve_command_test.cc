// `tessera serve` end to end: the real binary, a real model, HTTP on loopback.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "placement/plan.h"
#include "runtime/bench_simulator.h"
#include "runtime/model_presets.h"
#include "tests/util/test_profile.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::tessera::testing::RunCommand;
using ::tessera::testing::TesseraBin;
using ::testing::HasSubstr;

// A `tessera serve` child process on a free loopback port.
class ServeProcess {
 public:
  explicit ServeProcess(const std::vector<std::string>& args) {
    for (int attempt = 0; attempt < 5 && pid_ <= 0; ++attempt) {
      port_ = 20000 +
              static_cast<int>((::getpid() * 7919 + attempt * 104729) % 30000);
      pid_ = ::fork();
      if (pid_ == 0) {
        std::vector<std::string> argv = {
            TesseraBin(), "serve", "--port",      std::to_string(port_),
            "--threads",  "1",     "--log-level", "error"};
        argv.insert(argv.end(), args.begin(), args.end());
        std::vector<char*> cargv;
        for (auto& a : argv) cargv.push_back(a.data());
        cargv.push_back(nullptr);
        ::execv(cargv[0], cargv.data());
        ::_exit(127);
      }
      // Wait until /health says ready (200), or the child died (port taken).
      httplib::Client client("127.0.0.1", port_);
      for (int i = 0; i < 300; ++i) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = -1;
          break;
        }
        auto res = client.Get("/health");
        if (res && res->status == 200) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool ok() const { return pid_ > 0; }
  int port() const { return port_; }
  // SIGTERM, then the exit code (or -1 on timeout).
  int Terminate() {
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

// Greedy text through the server, streaming and not, equals `tessera run`.
TEST(ServeCommandTest, GreedyTextEqualsRun) {
  TESSERA_REQUIRE_SHARED(shared);
  const std::string model = shared + "/models/aidreams260K.bin";
  const std::string tok = shared + "/models/aidreams260K.tok512.bin";
  auto run = RunCommand(
      TesseraBin() + " run --threads 1 --model " + model + " --tokenizer " +
      tok + " --prompt 'Once upon a time' --temperature 0 --max-tokens 40");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::string expected = run.out;
  if (!expected.empty() && expected.back() == '\n') expected.pop_back();

  ServeProcess serve({"--model", model, "--tokenizer", tok});
  ASSERT_TRUE(serve.ok()) << "tessera serve did not become ready";
  httplib::Client client("127.0.0.1", serve.port());
  nlohmann::json body = {{"model", "aidreams260K.bin"},
                         {"prompt", "Once upon a time"},
                         {"max_tokens", 40},
                         {"temperature", 0}};
  auto res = client.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const auto reply = nlohmann::json::parse(res->body);
  EXPECT_EQ(reply["choices"][0]["text"].get<std::string>(), expected);

  body["stream"] = true;
  res = client.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  std::string streamed;
  size_t pos = 0;
  while ((pos = res->body.find("data: ", pos)) != std::string::npos) {
    const size_t end = res->body.find("\n\n", pos);
    const std::string payload = res->body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (payload == "[DONE]") break;
    const auto chunk = nlohmann::json::parse(payload);
    if (!chunk["choices"].empty())
      streamed += chunk["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(streamed, expected);
  EXPECT_THAT(res->body, HasSubstr("data: [DONE]\n\n"));
  EXPECT_EQ(serve.Terminate(), 0);
}

// A one-instance plan for the demo model (tp ranks on one node).
std::string WriteDemoPlan(const std::string& dir, int tp) {
  auto model = SynthesizeModel("demo", DType::kF32, 1);
  EXPECT_TRUE(model.ok());
  const placement::DeviceProfile profile = testing::TestCpuProfile(8e9);
  BenchSimulatorOptions o;
  o.input_len = 60;
  o.output_len = 40;  // max_model_len 100
  o.max_num_seqs = 3;
  o.max_num_batched_tokens = 64;
  auto plan = SingleInstancePlan(*model, profile, o, 32);
  EXPECT_TRUE(plan.ok()) << plan.status();
  if (tp > 1) {
    plan->cluster.devices_per_node = tp;
    placement::PlanInstance& in = plan->instances[0];
    in.layout.tp = tp;
    in.ranks.clear();
    for (int r = 0; r < tp; ++r) {
      placement::PlanRank pr;
      pr.rank = r;
      pr.device = r;
      pr.tp_rank = r;
      in.ranks.push_back(pr);
    }
  }
  const std::string path = dir + "/plan.json";
  EXPECT_TRUE(placement::WritePlan(*plan, path).ok());
  return path;
}

// `serve --plan` takes the engine settings from this rank's instance.
TEST(ServeCommandTest, PlanSetsTheEngine) {
  const std::string plan = WriteDemoPlan(testing::MakeTempDir(), 1);
  ServeProcess serve({"--plan", plan, "--rank", "0"});
  ASSERT_TRUE(serve.ok()) << "tessera serve --plan did not become ready";
  httplib::Client client("127.0.0.1", serve.port());
  auto res = client.Get("/v1/models");
  ASSERT_TRUE(res);
  const auto models = nlohmann::json::parse(res->body);
  EXPECT_EQ(models["data"][0]["max_model_len"], 100) << res->body;
  // A 120-token prompt exceeds the plan's max_model_len.
  nlohmann::json body = {{"prompt", std::vector<int>(120, 65)},
                         {"max_tokens", 1}};
  res = client.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  EXPECT_EQ(serve.Terminate(), 0);
}

TEST(ServeCommandTest, PlanWithMultiRankInstanceIsRefusedPlainly) {
  const std::string plan = WriteDemoPlan(testing::MakeTempDir(), 2);
  auto r =
      RunCommand(TesseraBin() + " serve --port 0 --plan " + plan + " --rank 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("single-rank instances only"));
  r = RunCommand(TesseraBin() + " serve --port 0 --plan " + plan + " --rank 5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("rank"));
}

TEST(ServeCommandTest, BadModelExitsWithMessage) {
  auto r =
      RunCommand(TesseraBin() + " serve --port 0 --model /nonexistent/x.gguf");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/x.gguf"));
}

}  // namespace
}  // namespace tessera
