// Writing models as a Hugging Face directory or a GGUF v3 file.
//
// The writer pulls tensors one at a time from a ModelSource (by their HF
// name), converts them and streams them to disk, so a multi-GB model never
// sits in memory twice. HF output: config.json, model.safetensors (HF names,
// rotate-half Q/K rows), tokenizer.json, tokenizer_config.json and
// generation_config.json. GGUF output: llama.cpp's metadata keys and tensor
// names, Q/K rows permuted to llama.cpp's pairwise order for llama-family
// architectures (qwen2/qwen3 keep the HF order, as llama.cpp's converter
// does), and the tokenizer as tokenizer.ggml.* keys, so both files compute
// the same function.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/internal/synthetic_vocab.h"
#include "runtime/model.h"
#include "runtime/model_loader.h"

namespace tessera {

// One tensor of a model under its Hugging Face name.
struct TensorSpec {
  enum class Kind : uint8_t {
    kWeight,  // 2-D matrix (stored in the requested dtype).
    kNorm,    // 1-D RMSNorm weight (stored f32; initialised to 1).
    kBias,    // 1-D bias (stored f32).
    kRouter,  // MoE router [experts, hidden] (stored f32, as llama.cpp does).
  };
  std::string name;
  Shape shape;
  Kind kind = Kind::kWeight;
  int64_t fan_in = 1;  // Input features (for initialisation).
};

// Every tensor of `config` in HF naming and canonical order (embedding,
// layers, final norm, LM head unless tied).
std::vector<TensorSpec> HfTensorSpecs(const ModelConfig& config);

// Where the writer gets a model from.
struct ModelSource {
  ModelConfig config;
  // Row order of the Q/K tensors that `tensor` returns.
  RopeStyle rope_style = RopeStyle::kHalf;
  // The tensor named by an HF name from HfTensorSpecs (any float dtype).
  std::function<absl::StatusOr<Tensor>(const std::string& hf_name)> tensor;
};

// A source reading an in-memory model (which must outlive it).
ModelSource SourceFromModel(const Model& model);

// `t` converted to `dtype` (f32/f16/bf16), a new contiguous tensor (or `t`
// itself when it already is).
absl::StatusOr<Tensor> ConvertTensor(const Tensor& t, DType dtype);

struct WriteModelOptions {
  ModelFormat format = ModelFormat::kHf;  // kHf or kGguf.
  DType dtype = DType::kF16;     // Of the 2-D weights (f32, f16 or bf16).
  std::string name = "tessera";  // general.name / _name_or_path.
  // Tokenizer to embed; when null, none is written.
  const SyntheticVocab* vocab = nullptr;
};

// Writes the model into directory `out_dir` (created if missing): the HF
// files, or `model.gguf` (GGUF format also gets no other files).
absl::Status WriteModel(const ModelSource& source,
                        const WriteModelOptions& options,
                        const std::string& out_dir);

// The tokenizer.json text of `vocab` (BPE, ByteLevel pre-tokenizer and
// decoder, BOS added by the post-processor).
std::string TokenizerJson(const SyntheticVocab& vocab);

}  // namespace tessera
