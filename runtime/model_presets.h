// Built-in model shapes and seeded random weights: the demo model `tessera
// run` uses without --model, and the presets `tessera make-model` writes.
//
// Values depend only on (seed, tensor name, element index), never on thread
// count or the order tensors are produced in, so an in-memory model and a
// file written tensor-by-tensor hold identical weights. Matrices are uniform
// with variance 1/fan_in; norms are 1; biases small.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/internal/synthetic_vocab.h"
#include "runtime/model.h"
#include "runtime/model_writer.h"

namespace tessera {

// Preset names: demo, tiny-llama, tinyllama-1.1b, llama-3.2-1b, qwen2-tiny,
// qwen3-tiny, mixtral-tiny.
std::vector<std::string> ModelPresetNames();

// The configuration of `preset`; NotFound listing the presets otherwise.
absl::StatusOr<ModelConfig> PresetConfig(std::string_view preset);

// The special-token style of `preset`'s tokenizer.
SpecialTokenStyle PresetTokenStyle(std::string_view preset);

// The seeded values of tensor `spec` in `dtype` (norms and biases are f32
// regardless). Large tensors are filled by several threads.
Tensor SynthesizeTensor(const TensorSpec& spec, DType dtype, uint64_t seed);

// A lazily-synthesizing source for WriteModel (nothing is held in memory).
ModelSource SyntheticSource(const ModelConfig& config, DType dtype,
                            uint64_t seed);

// A whole model with owning tensors (2-D weights in `dtype`: f32, f16 or
// bf16; norms, biases and the router f32), Q/K rows in rotate-half order.
absl::StatusOr<Model> SynthesizeModel(std::string_view preset, DType dtype,
                                      uint64_t seed);
// Same for an explicit config.
absl::StatusOr<Model> SynthesizeModel(const ModelConfig& config, DType dtype,
                                      uint64_t seed);

}  // namespace tessera
