#include "runtime/bench_decode.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <thread>
#include <vector>

#include "base/host_memory.h"
#include "base/status.h"
#include "fmt/format.h"
#include "kernels/machine_peaks.h"
#include "kernels/thread_pool.h"
#include "runtime/cpu_model_runner.h"
#include "runtime/generate.h"
#include "runtime/model_loader.h"

namespace tessera {
namespace {

int64_t Bytes(const Tensor& t) { return t.defined() ? t.nbytes() : 0; }

}  // namespace

double DecodeBytesPerToken(const ModelConfig& c, const ModelWeights& w,
                           int64_t context) {
  double bytes = Bytes(w.lm_head) + Bytes(w.output_norm) +
                 static_cast<double>(Bytes(w.token_embedding)) /
                     std::max<int64_t>(1, c.vocab_size);
  for (const LayerWeights& l : w.layers) {
    for (const Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq,
                            &l.bk, &l.bv, &l.q_norm, &l.k_norm, &l.ffn_norm,
                            &l.w_gate, &l.w_up, &l.w_down, &l.router}) {
      bytes += Bytes(*t);
    }
    if (!l.expert_gate.empty()) {
      // A token reads top-k of the experts.
      const double per_expert = Bytes(l.expert_gate[0]) +
                                Bytes(l.expert_up[0]) + Bytes(l.expert_down[0]);
      bytes += per_expert * c.num_experts_per_tok;
    }
  }
  // K and V for every cached position, f32.
  bytes += 2.0 * c.num_hidden_layers * context * c.num_key_value_heads *
           c.head_dim * 4.0;
  return bytes;
}

double PrefillFlopsPerToken(const ModelConfig& c, int64_t context) {
  const double q = c.num_attention_heads * c.head_dim,
               kv = c.num_key_value_heads * c.head_dim;
  const double ffn = 3.0 * c.hidden_size * c.intermediate_size *
                     (c.is_moe() ? c.num_experts_per_tok : 1);
  const double per_layer =
      2.0 * (c.hidden_size * (q + 2 * kv) + q * c.hidden_size + ffn) +
      // QK^T and PV over, on average, half the context (causal).
      2.0 * 2.0 * q * (context / 2.0);
  return c.num_hidden_layers * per_layer + 2.0 * c.hidden_size * c.vocab_size;
}

absl::Status RunBenchDecode(const Model& model, const BenchDecodeOptions& o,
                            std::FILE* out) {
  const ModelConfig& c = model.config;
  const int64_t total = o.prompt_tokens + o.decode_tokens;
  if (o.prompt_tokens <= 0 || o.decode_tokens <= 1) {
    return absl::InvalidArgumentError(
        "--prompt-tokens must be > 0 and --tokens > 1");
  }
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(fmt::format(
        "{} prompt + {} decode tokens exceed the model's context of {}",
        o.prompt_tokens, o.decode_tokens, c.max_position_embeddings));
  }
  RunnerOptions ro;
  ro.threads = o.threads;
  ro.max_model_len = total;
  ro.num_kv_blocks = (total + ro.block_size - 1) / ro.block_size;
  ro.max_num_seqs = 1;
  ro.max_num_batched_tokens = o.prompt_tokens;
  ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                   CreateCpuModelRunner(model, ro));

  // A fixed pseudo-random prompt: content does not change the work.
  std::vector<int32_t> prompt(o.prompt_tokens);
  for (int64_t i = 0; i < o.prompt_tokens; ++i)
    prompt[i] = static_cast<int32_t>((i * 7919 + 13) % c.vocab_size);
  GenerateOptions go;
  go.max_tokens = o.decode_tokens;
  go.sampling.temperature = 0;
  go.prefill_chunk = o.prompt_tokens;
  GenerateStats best;
  for (int r = 0; r < std::max(1, o.repeats); ++r) {
    ASSIGN_OR_RETURN(GenerateStats s,
                     Generate(*runner, prompt, go, [](int32_t) {}));
    if (r == 0 ||
        s.decode_tokens_per_second() > best.decode_tokens_per_second()) {
      best.decode_seconds = s.decode_seconds;
      best.generated_tokens = s.generated_tokens;
    }
    if (r == 0 ||
        s.prefill_tokens_per_second() > best.prefill_tokens_per_second()) {
      best.ttft_seconds = s.ttft_seconds;
      best.prompt_tokens = s.prompt_tokens;
    }
  }
  kernels::ThreadPool pool(o.threads > 0
                               ? o.threads
                               : static_cast<int>(std::max(
                                     1u, std::thread::hardware_concurrency())));
  const kernels::MachinePeaks peaks = kernels::MeasureMachinePeaks(pool, 0.3);

  const int64_t mid_context = o.prompt_tokens + o.decode_tokens / 2;
  const double bytes = DecodeBytesPerToken(c, model.weights, mid_context);
  const double decode_tps = best.decode_tokens_per_second();
  const double decode_roofline = peaks.read_gbs * 1e9 / bytes;
  const double flops = PrefillFlopsPerToken(c, o.prompt_tokens);
  const double prefill_tps = best.prefill_tokens_per_second();
  // Prefill rides the peak of the weights' compute path (bf16 dot products for
  // bf16).
  const bool bf16 = c.dtype == DType::kBF16 && peaks.bf16_gflops > 0;
  const double peak_gflops = bf16 ? peaks.bf16_gflops : peaks.f32_gflops;
  const double prefill_roofline = peak_gflops * 1e9 / flops;

  std::fprintf(out, "model: %s (%s, %.3g B params, %s weights)\n",
               model.source.c_str(), c.architecture.c_str(),
               c.ParameterCount() / 1e9,
               std::string(DTypeName(c.dtype)).c_str());
  // Decode speed depends on the pages behind the weights (--weights-memory).
  std::fprintf(out,
               "weights: %.1f MiB; %.1f MiB of this process in huge pages "
               "(THP mode %s)\n",
               WeightBytes(model) / 1048576.0,
               std::max<int64_t>(0, AnonHugePageBytes()) / 1048576.0,
               TransparentHugePageMode());
  std::fprintf(out,
               "machine: %.1f GB/s read bandwidth, %.1f GFLOP/s f32 FMA peak, "
               "%.1f GFLOP/s bf16 peak\n",
               peaks.read_gbs, peaks.f32_gflops, peaks.bf16_gflops);
  std::fprintf(out,
               "decode bytes/token: %.1f MB at context %lld; prefill "
               "FLOPs/token: %.3g\n",
               bytes / 1e6, static_cast<long long>(mid_context), flops);
  std::fprintf(
      out, "decode: %.1f tok/s (%.2f of memory roofline, %.1f GB/s measured)\n",
      decode_tps, decode_tps / decode_roofline, peaks.read_gbs);
  std::fprintf(
      out,
      "prefill: %.1f tok/s (%.2f of compute roofline, %.1f GFLOP/s measured)\n",
      prefill_tps, prefill_tps / prefill_roofline, peak_gflops);
  return absl::OkStatus();
}

}  // namespace tessera
