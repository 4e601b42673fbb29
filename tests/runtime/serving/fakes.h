// Test doubles for the serving engine: a ModelRunner whose next token is a
// hash of the KV contents it reads back through the block table (so a wrong
// block table, a missed copy-on-write or a bad prefix-cache hit changes the
// output), and a byte tokenizer.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fmt/format.h"
#include "runtime/model_runner.h"
#include "runtime/tokenizer.h"

namespace tessera::testing {

// Token ids: 0 = <pad>, 1 = <s>, 2 = </s>, 3 + b = byte b.
class FakeTokenizer : public Tokenizer {
 public:
  static constexpr int32_t kOffset = 3;
  absl::StatusOr<std::vector<int32_t>> Encode(
      std::string_view text, bool add_special,
      bool /*parse_special*/) const override {
    std::vector<int32_t> ids;
    if (add_special) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(kOffset + c);
    return ids;
  }
  std::string TokenBytes(int32_t id) const override {
    if (id == 1) return "<s>";
    if (id == 2) return "</s>";
    if (id < kOffset) return "<pad>";
    return std::string(1, static_cast<char>(id - kOffset));
  }
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special) const override {
    std::string out;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) {
        return absl::InvalidArgumentError(fmt::format("bad id {}", id));
      }
      if (id < kOffset && skip_special) continue;
      out += TokenBytes(id);
    }
    return out;
  }
  int32_t vocab_size() const override { return 256 + kOffset; }
  int32_t bos_id() const override { return 1; }
  const std::vector<int32_t>& eos_ids() const override { return eos_; }
  bool IsSpecial(int32_t id) const override { return id < kOffset; }
  std::string_view TokenText(int32_t id) const override {
    if (id < 0 || id >= vocab_size()) return {};
    return texts_[id];
  }
  int32_t TokenId(std::string_view text) const override {
    for (int32_t id = 0; id < kOffset; ++id) {
      if (texts_[id] == text) return id;
    }
    return text.size() == 1 ? kOffset + static_cast<unsigned char>(text[0])
                            : -1;
  }
  std::string_view kind() const override { return "byte"; }
  const std::string& chat_template() const override { return chat_template_; }

 private:
  std::vector<int32_t> eos_ = {2};
  std::vector<std::string> texts_ = [] {
    std::vector<std::string> t = {"<pad>", "<s>", "</s>"};
    for (int b = 0; b < 256; ++b)
      t.push_back(std::string(1, static_cast<char>(b)));
    return t;
  }();
  std::string chat_template_;
};

struct FakeRunnerOptions {
  int64_t num_blocks = 64;
  int64_t block_size = 4;
  // Sampled tokens are FakeTokenizer ids of bytes in [first_byte,
  // first_byte + num_bytes).
  int32_t first_byte = 'a';
  int32_t num_bytes = 26;
  // When > 0, a sampled token is EOS if hash % eos_every == 0.
  int32_t eos_every = 0;
  std::chrono::microseconds step_delay{0};
};

class FakeRunner : public ModelRunner {
 public:
  explicit FakeRunner(const FakeRunnerOptions& options = {})
      : options_(options),
        kv_(static_cast<size_t>(options.num_blocks * options.block_size), -1) {
    config_.vocab_size = 256 + FakeTokenizer::kOffset;
    config_.max_position_embeddings = 4096;
    config_.eos_token_ids = {2};
  }

  const ModelConfig& config() const override { return config_; }
  int64_t num_kv_blocks() const override { return options_.num_blocks; }
  int64_t block_size() const override { return options_.block_size; }

  absl::Status Step(absl::Span<const StepSequence> batch,
                    std::vector<StepOutput>* outputs) override {
    if (options_.step_delay.count() > 0) {
      std::this_thread::sleep_for(options_.step_delay);
    }
    ++steps;
    const int64_t bs = options_.block_size;
    for (const StepSequence& s : batch) {
      const int64_t end =
          s.num_computed + static_cast<int64_t>(s.tokens.size());
      if (static_cast<int64_t>(s.block_table.size()) * bs < end) {
        return absl::InvalidArgumentError("block table too short");
      }
      for (size_t j = 0; j < s.tokens.size(); ++j) {
        const int64_t p = s.num_computed + static_cast<int64_t>(j);
        const int32_t block = s.block_table[p / bs];
        if (block < 0 || block >= options_.num_blocks) {
          return absl::InvalidArgumentError("bad block id");
        }
        kv_[block * bs + p % bs] = s.tokens[j];
      }
      tokens_computed += static_cast<int64_t>(s.tokens.size());
      if (!s.sample) continue;
      uint64_t h = 1469598103934665603ull;
      for (int64_t p = 0; p < end; ++p) {
        const int32_t t = kv_[s.block_table[p / bs] * bs + p % bs];
        h = (h ^ static_cast<uint64_t>(t + 7)) * 1099511628211ull;
      }
      h ^= h >> 29;
      StepOutput out;
      out.seq_id = s.seq_id;
      if (options_.eos_every > 0 && h % options_.eos_every == 0) {
        out.token = 2;
      } else {
        out.token = FakeTokenizer::kOffset + options_.first_byte +
                    static_cast<int32_t>(h % options_.num_bytes);
      }
      out.logprob = -0.5f;
      if (s.sampling != nullptr && s.sampling->logprobs > 0) {
        for (int32_t k = 0; k < s.sampling->logprobs; ++k) {
          out.top_logprobs.push_back({out.token + k, -0.5f - k});
        }
      }
      outputs->push_back(std::move(out));
    }
    return absl::OkStatus();
  }

  void CopyBlock(int32_t src, int32_t dst) override {
    const int64_t bs = options_.block_size;
    std::copy(kv_.begin() + src * bs, kv_.begin() + (src + 1) * bs,
              kv_.begin() + dst * bs);
    ++copies;
  }

  std::atomic<int64_t> steps{0};
  std::atomic<int64_t> tokens_computed{0};
  std::atomic<int64_t> copies{0};

 private:
  FakeRunnerOptions options_;
  ModelConfig config_;
  std::vector<int32_t> kv_;
};

}  // namespace tessera::testing
