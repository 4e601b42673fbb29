// Loading models from files into the one in-memory representation (Model).
//
// Supported: a Hugging Face directory (config.json + model.safetensors or a
// sharded model.safetensors.index.json), a GGUF v3 file (llama.cpp's
// llama/qwen2/qwen3 layouts, Mixtral-style MoE), and llama2.c checkpoints
// (legacy 7-int header with shared/unshared classifier, and the versioned
// "ak42" v1 float export). Weights are borrowed zero-copy from the mapped
// files; only 1-D tensors (norms, biases) stored as f16/bf16 are converted to
// f32 copies, so every norm and bias is f32. Q/K rows stay in file order and
// Model::rope_style says how RoPE pairs them. Every tensor's shape is checked
// against the config; a missing tensor or mismatch is a Status naming the file
// and the tensor.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/model.h"

namespace tessera {

enum class ModelFormat : uint8_t { kHf, kGguf, kLlama2c };

// Guesses the format of `path` from what it is (directory, config.json,
// .safetensors) and the file's magic bytes. NotFound if it does not exist.
absl::StatusOr<ModelFormat> DetectModelFormat(const std::string& path);

// Loads the model at `path` (any supported format).
absl::StatusOr<Model> LoadModel(const std::string& path);

// What CopyWeightsToHostMemory moved.
struct WeightCopyStats {
  int64_t tensors = 0;  // Distinct tensors copied (tied ones count once).
  int64_t bytes = 0;    // Bytes of the arena.
  double seconds = 0;   // Wall time of the copy.
};

// Bytes of `model`'s weights, tensors that alias counted once.
int64_t WeightBytes(const Model& model);

// Moves every weight of `model` into one anonymous host arena advised for 2
// MiB huge pages (base/host_memory.h) and drops the model's file mappings.
// Tensors that alias (a tied LM head, expert views of one stacked tensor)
// keep aliasing. Decode reads every weight once per token, so pages that
// avoid a TLB miss per 4 KiB are worth the copy (runtime/README, "Weight
// memory"). ResourceExhausted when the arena cannot be allocated; the model is
// unchanged then.
absl::StatusOr<WeightCopyStats> CopyWeightsToHostMemory(Model& model);

// Parses a Hugging Face config.json; `name` is used in messages.
absl::StatusOr<ModelConfig> ParseHfConfig(std::string_view json,
                                          const std::string& name);

// Checks every weight's presence and shape against `model.config`;
// InvalidArgument naming the tensor (with tessera's field name) otherwise.
absl::Status ValidateModelWeights(const Model& model);

// Rows [begin, end) of a 2-D weight, sharing storage (a tensor-parallel shard
// of an output dimension).
absl::StatusOr<Tensor> SliceRows(const Tensor& weight, int64_t begin,
                                 int64_t end);
// Columns [begin, end) of a 2-D weight as a new contiguous tensor (a shard of
// an input dimension); for Q8_0, begin and end must be multiples of 32.
absl::StatusOr<Tensor> SliceColumns(const Tensor& weight, int64_t begin,
                                    int64_t end);

// A copy of a Q or K projection weight (or bias) whose per-head rows are
// reordered from RoPE layout `from` to `to`: rotate-half row j*hd/2 + i is
// pairwise row 2i + j (llama.cpp's convert_hf_to_gguf permute). Works on any
// dtype whose rows are whole blocks.
Tensor PermuteQkRows(const Tensor& weight, int64_t num_heads, RopeStyle from,
                     RopeStyle to);

// The llama3 RoPE frequency divisors (one per rotary pair, head_dim/2 of
// them), as llama.cpp's converter writes to rope_freqs.weight.
std::vector<float> Llama3RopeFreqFactors(const ModelConfig& config);

}  // namespace tessera
