// `tessera serve`: the OpenAI-compatible server over one in-process instance
// (coordinator + a `both` instance), with vLLM's flag names.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "base/logging.h"
#include "base/status.h"
#include "comm/bootstrap.h"
#include "fmt/format.h"
#include "placement/plan.h"
#include "runtime/cli/internal/command.h"
#include "runtime/cli/internal/model_options.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/engine.h"
#include "runtime/metrics.h"
#include "runtime/server.h"

namespace tessera::cli {
namespace {

struct ServeOptions {
  ModelOptions model;
  ServerOptions server;
  int64_t max_num_seqs = 64;
  int64_t max_model_len = 0;  // 0: the model's context.
  int64_t max_num_batched_tokens = 2048;
  int64_t kv_cache_memory =
      0;  // Bytes; 0: 10% of available RAM, capped by need.
  int64_t block_size = 16;
  std::string kv_cache_dtype = "f32";
  bool enable_prefix_caching = true;
  int64_t max_waiting_requests = 4096;
  double shutdown_timeout = 30.0;  // Seconds in-flight requests get on SIGTERM.
  std::string plan;  // A Plan from `tessera plan --json`: this rank's part.
  int rank = -1;     // With --plan: this process's world rank (else env).
};

// With --plan: finds this process's instance (by world rank from --rank,
// Open MPI, Slurm or LeaderWorkerSet) and takes the engine settings from it:
// the Plan is the single source of truth for max_num_seqs, max_model_len,
// the step token budget, the KV block size and dtype. Ranks on one host get
// ports --port + local rank. Only single-rank `both` instances can run in
// this build; anything else is refused with what is missing.
absl::Status ApplyPlan(ServeOptions& o) {
  ASSIGN_OR_RETURN(placement::Plan plan, placement::LoadPlan(o.plan));
  comm::BootstrapFlags flags;
  if (o.rank >= 0) {
    flags.rank = o.rank;
    flags.world_size = plan.num_ranks();
  }
  ASSIGN_OR_RETURN(comm::WorldInfo world,
                   comm::ResolveWorld(flags, comm::ProcessEnv()));
  if (world.source != "default" && world.world_size != plan.num_ranks()) {
    return absl::InvalidArgumentError(fmt::format(
        "the plan has {} ranks but this world ({}) has {}: launch it with "
        "the command `tessera plan --emit mpirun` prints",
        plan.num_ranks(), world.source, world.world_size));
  }
  const placement::PlanInstance* mine = nullptr;
  for (const placement::PlanInstance& in : plan.instances) {
    for (const placement::PlanRank& r : in.ranks) {
      if (r.rank == world.rank) mine = &in;
    }
  }
  if (mine == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("rank {} is in no instance of {}", world.rank, o.plan));
  }
  if (mine->layout.size() > 1) {
    return absl::UnimplementedError(fmt::format(
        "instance {} spans {} ranks (tp {}, pp {}): this build executes "
        "single-rank instances only (the multi-rank executor is not built)",
        mine->id, mine->layout.size(), mine->layout.tp, mine->layout.pp));
  }
  if (mine->role != placement::InstanceRole::kBoth) {
    return absl::UnimplementedError(fmt::format(
        "instance {} has role {}: disaggregated prefill/decode instances are "
        "planned but not executable in this build",
        mine->id, placement::RoleName(mine->role)));
  }
  const placement::KvCacheSettings& kv = mine->kv_cache;
  o.max_num_seqs = kv.max_num_seqs;
  o.max_model_len = kv.max_model_len;
  o.max_num_batched_tokens = kv.max_num_batched_tokens;
  o.block_size = kv.block_size;
  const std::string& d = kv.dtype;
  o.kv_cache_dtype = d == "fp32" || d == "f32"   ? "f32"
                     : d == "fp16" || d == "f16" ? "f16"
                                                 : "bf16";
  if (o.server.port > 0) o.server.port += world.local_rank;
  spdlog::info(
      "plan {}: rank {} of {} ({}) serves instance {} on port {}: "
      "max_num_seqs {}, max_model_len {}, max_num_batched_tokens {}, KV {} "
      "blocks of {} ({})",
      o.plan, world.rank, plan.num_ranks(), world.source, mine->id,
      o.server.port, kv.max_num_seqs, kv.max_model_len,
      kv.max_num_batched_tokens, kv.num_blocks, kv.block_size,
      o.kv_cache_dtype);
  return absl::OkStatus();
}

// MemAvailable from /proc/meminfo in bytes (0 if unknown).
int64_t AvailableMemoryBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

absl::Status Serve(ServeOptions o) {
  BlockTerminationSignals();
  RETURN_IF_ERROR(InitLogging(o.model.log_level));
  if (!o.plan.empty()) RETURN_IF_ERROR(ApplyPlan(o));
  MetricsRegistry registry;
  Server server(o.server, &registry);
  // Listen first: /health answers 503 while the model loads.
  RETURN_IF_ERROR(server.Start());
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelAndTokenizer(o.model));
  if (loaded.tokenizer == nullptr) {
    return absl::InvalidArgumentError(
        "serving needs a tokenizer: pass --tokenizer PATH");
  }
  const ModelConfig& config = loaded.model->config;
  const int64_t max_len =
      o.max_model_len > 0
          ? std::min(o.max_model_len, config.max_position_embeddings)
          : config.max_position_embeddings;
  ASSIGN_OR_RETURN(DType kv_dtype, ParseDType(o.kv_cache_dtype));

  RunnerOptions ro;
  ro.block_size = o.block_size;
  ro.kv_dtype = kv_dtype;
  ro.max_model_len = max_len;
  ro.max_num_seqs = o.max_num_seqs;
  ro.max_num_batched_tokens = o.max_num_batched_tokens;
  ro.threads = o.model.threads;
  const int64_t block_bytes =
      2 * config.num_hidden_layers *
      DTypeBytes(kv_dtype,
                 o.block_size * config.num_key_value_heads * config.head_dim);
  const int64_t blocks_per_seq = (max_len + o.block_size - 1) / o.block_size;
  if (o.kv_cache_memory > 0) {
    ro.kv_cache_bytes = o.kv_cache_memory;
  } else {
    // Enough for every sequence at full length, but never more than 10% of RAM.
    const int64_t want = blocks_per_seq * o.max_num_seqs * block_bytes;
    ro.kv_cache_bytes = std::max(blocks_per_seq * block_bytes,
                                 std::min(want, AvailableMemoryBytes() / 10));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   CreateCpuModelRunner(*loaded.model, ro));

  EngineOptions eo;
  eo.scheduler.max_num_seqs = o.max_num_seqs;
  eo.scheduler.max_num_batched_tokens = o.max_num_batched_tokens;
  eo.enable_prefix_caching = o.enable_prefix_caching;
  eo.max_model_len = max_len;
  eo.max_waiting_requests = o.max_waiting_requests;
  ServingMetrics metrics(&registry, o.server.served_model_name);
  Engine engine(runner.get(), loaded.tokenizer.get(), eo, &metrics);
  server.AttachEngine(&engine);
  std::fprintf(
      stderr,
      "tessera serve: %s as '%s' on http://%s:%d (%lld KV blocks of %lld "
      "tokens, max_model_len %lld, %d threads)\n",
      loaded.model->source.c_str(), o.server.served_model_name.c_str(),
      o.server.host.c_str(), server.port(),
      static_cast<long long>(runner->num_kv_blocks()),
      static_cast<long long>(runner->block_size()),
      static_cast<long long>(max_len), EffectiveThreads(o.model.threads));
  const int signal = WaitForTerminationSignal();
  std::fprintf(stderr, "tessera serve: signal %d, draining for up to %.0f s\n",
               signal, o.shutdown_timeout);
  const auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(o.shutdown_timeout));
  server.Shutdown(deadline);
  server.Wait();
  engine.Shutdown(deadline);
  return absl::OkStatus();
}

}  // namespace

void AddServeCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<ServeOptions>();
  CLI::App* sub = app.add_subcommand(
      "serve",
      "Serve an OpenAI-compatible HTTP API (the built-in demo model unless "
      "--model is given)");
  AddModelOptions(*sub, &opts->model);
  sub->add_option("--host", opts->server.host, "Address to listen on")
      ->capture_default_str();
  sub->add_option("--port", opts->server.port, "Port (0 = ephemeral)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  sub->add_option("--served-model-name", opts->server.served_model_name,
                  "Model name clients use (default: the model path's name)");
  sub->add_option("--api-key", opts->server.api_key,
                  "Require 'Authorization: Bearer KEY' on /v1/*");
  sub->add_option("--max-num-seqs", opts->max_num_seqs,
                  "Sequences per step at most")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sub->add_option(
         "--max-model-len", opts->max_model_len,
         "Prompt + output tokens per request (0 = the model's context)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--max-num-batched-tokens", opts->max_num_batched_tokens,
                  "Token budget per step (chunked prefill)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub->add_option("--kv-cache-memory", opts->kv_cache_memory,
                  "KV cache bytes (0 = up to 10% of available RAM)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--block-size", opts->block_size, "Tokens per KV block")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub->add_option("--kv-cache-dtype", opts->kv_cache_dtype, "f32 | f16 | bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  sub->add_flag("--enable-prefix-caching,!--no-enable-prefix-caching",
                opts->enable_prefix_caching, "Reuse cached prompt prefixes")
      ->capture_default_str();
  sub->add_option("--max-waiting-requests", opts->max_waiting_requests,
                  "Queue length beyond which requests get 503")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--shutdown-timeout", opts->shutdown_timeout,
                  "Seconds in-flight requests may run after SIGTERM")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--plan", opts->plan,
                  "Serve this rank's instance of a Plan (`tessera plan "
                  "--json`): engine settings come from the plan, the port is "
                  "--port + local rank");
  sub->add_option("--rank", opts->rank,
                  "With --plan: this process's world rank (default: from "
                  "OMPI_COMM_WORLD_RANK, SLURM_PROCID or LWS_WORKER_INDEX)")
      ->check(CLI::NonNegativeNumber);
  sub->final_callback([opts, exit_code] {
    if (opts->server.served_model_name == "tessera") {
      // Like vLLM: the model path's last component ("hf/" counts as "hf").
      std::filesystem::path p(opts->model.model);
      if (p.filename().empty()) p = p.parent_path();
      opts->server.served_model_name =
          opts->model.model.empty() ? "tessera-demo" : p.filename().string();
    }
    const absl::Status status = Serve(*opts);
    *exit_code = status.ok()
                     ? kExitOk
                     : ReportError("serve", std::string(status.message()));
  });
}

}  // namespace tessera::cli
