// Measures the serving engine's own per-step cost (scheduling, KV block
// bookkeeping, token/stream handling: everything but ModelRunner::Step) with
// a fake runner, at several concurrencies. Prints figures; not a test.
//
//   ./build/tests/runtime/serving/engine_overhead_benchmark
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "runtime/engine.h"
#include "tests/runtime/serving/fakes.h"

int main() {
  using namespace tessera;
  std::printf("%-12s %8s %24s %22s %18s\n", "concurrency", "steps",
              "engine overhead us/step", "of which scheduler us",
              "fake Step us/step");
  for (int concurrency : {1, 16, 64, 256}) {
    testing::FakeRunner runner({.num_blocks = 8192, .block_size = 16});
    testing::FakeTokenizer tokenizer;
    MetricsRegistry registry;
    ServingMetrics metrics(&registry, "bench");
    EngineOptions options;
    options.max_model_len = 4096;
    Engine engine(&runner, &tokenizer, options, &metrics);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < concurrency; ++i) {
      GenerateRequest g;
      for (int k = 0; k < 128; ++k) g.prompt.push_back(10 + (i * 7 + k) % 200);
      g.max_tokens = 256;
      g.ignore_eos = true;
      g.sampling.temperature = 0;
      streams.push_back(*engine.AddRequest(g));
    }
    std::vector<std::thread> readers;
    for (auto& s : streams) {
      readers.emplace_back([s] {
        RequestUpdate u;
        while (!(s->Read(&u, std::chrono::milliseconds(100)) && u.finished)) {
        }
      });
    }
    for (auto& t : readers) t.join();
    const EngineStats st = engine.stats();
    std::printf("%-12d %8lld %24.1f %22.1f %18.1f\n", concurrency,
                static_cast<long long>(st.num_steps),
                1e6 * st.scheduler_seconds / st.num_steps,
                1e6 * st.schedule_seconds / st.num_steps,
                1e6 * st.step_seconds / st.num_steps);
  }
  return 0;
}
