// `tessera make-model`: writes a seeded random model (HF directory or GGUF)
// that loads like a real checkpoint.
#include <chrono>
#include <cstdio>
#include <string>

#include "base/dtype.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "runtime/cli/internal/command.h"
#include "runtime/internal/synthetic_vocab.h"
#include "runtime/model_presets.h"
#include "runtime/model_writer.h"

namespace tessera::cli {
namespace {

struct MakeModelFlags {
  std::string preset;
  std::string dtype = "f16";
  std::string format = "hf";
  std::string out;
  uint64_t seed = 0;
};

int RunMakeModel(const MakeModelFlags& f) {
  absl::StatusOr<ModelConfig> config = PresetConfig(f.preset);
  if (!config.ok()) {
    return ReportError("make-model", std::string(config.status().message()));
  }
  absl::StatusOr<DType> dtype = ParseDType(f.dtype);
  if (!dtype.ok()) {
    return ReportError("make-model", std::string(dtype.status().message()));
  }
  absl::StatusOr<SyntheticVocab> vocab =
      BuildSyntheticVocab(config->vocab_size, PresetTokenStyle(f.preset));
  if (!vocab.ok()) {
    return ReportError("make-model", std::string(vocab.status().message()));
  }
  WriteModelOptions options;
  options.format = f.format == "gguf" ? ModelFormat::kGguf : ModelFormat::kHf;
  options.dtype = *dtype;
  options.name = f.preset;
  options.vocab = &*vocab;
  const auto start = std::chrono::steady_clock::now();
  const absl::Status s =
      WriteModel(SyntheticSource(*config, *dtype, f.seed), options, f.out);
  if (!s.ok()) return ReportError("make-model", std::string(s.message()));
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::printf(
      "wrote %s (%s, %s, %.1fM parameters, seed %llu) to %s in %.1f s\n",
      f.preset.c_str(), f.format.c_str(), f.dtype.c_str(),
      static_cast<double>(config->ParameterCount()) / 1e6,
      static_cast<unsigned long long>(f.seed), f.out.c_str(), secs);
  return kExitOk;
}

}  // namespace

void AddMakeModelCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<MakeModelFlags>();
  CLI::App* sub = app.add_subcommand(
      "make-model", "Write a seeded random model in HF or GGUF format");
  sub->add_option(
         "--preset", flags->preset,
         fmt::format("Model shape: {}", fmt::join(ModelPresetNames(), ", ")))
      ->required()
      ->check(CLI::IsMember(ModelPresetNames()));
  sub->add_option("--dtype", flags->dtype,
                  "Weight dtype: f32, f16, bf16 (q8_0 for gguf)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}))
      ->capture_default_str();
  sub->add_option("--format", flags->format,
                  "hf (config.json + model.safetensors + tokenizer.json) or "
                  "gguf (model.gguf)")
      ->check(CLI::IsMember({"hf", "gguf"}))
      ->capture_default_str();
  sub->add_option("--out", flags->out, "Output directory")->required();
  sub->add_option("--seed", flags->seed, "Random seed")->capture_default_str();
  sub->final_callback(
      [flags, exit_code] { *exit_code = RunMakeModel(*flags); });
}

}  // namespace tessera::cli
