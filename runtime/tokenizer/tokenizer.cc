// Tokenizer base behaviour, the byte tokenizer, the incremental detokenizer
// and LoadTokenizer's format dispatch.
#include "runtime/tokenizer.h"

#include <cstring>
#include <filesystem>

#include "base/mapped_file.h"
#include "base/status.h"
#include "fmt/format.h"
#include "runtime/formats/gguf.h"
#include "runtime/tokenizer/internal/model_tokenizer.h"
#include "runtime/tokenizer/internal/utf8.h"

namespace tessera {

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special) const {
  std::string bytes;
  DecodeState state;
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(fmt::format(
          "token id {} outside the vocabulary of {}", id, vocab_size()));
    }
    AppendDecoded(id, skip_special, &state, &bytes);
  }
  return SanitizeUtf8(bytes);
}

void Tokenizer::AppendDecoded(int32_t id, bool skip_special, DecodeState* state,
                              std::string* out) const {
  state->prev_id = id;
  if (skip_special && IsSpecial(id)) return;
  const std::string piece = TokenBytes(id);
  out->append(piece);
  if (!piece.empty()) state->emitted_text = true;
}

IncrementalDetokenizer::IncrementalDetokenizer(
    const Tokenizer& tokenizer, bool skip_special,
    absl::Span<const int32_t> context)
    : tokenizer_(tokenizer), skip_special_(skip_special) {
  std::string discard;
  for (const int32_t id : context) {
    if (id < 0 || id >= tokenizer_.vocab_size()) continue;
    tokenizer_.AppendDecoded(id, skip_special_, &state_, &discard);
  }
}

absl::StatusOr<std::string> IncrementalDetokenizer::Push(int32_t id) {
  if (id < 0 || id >= tokenizer_.vocab_size()) {
    return absl::InvalidArgumentError(
        fmt::format("token id {} outside the vocabulary of {}", id,
                    tokenizer_.vocab_size()));
  }
  tokenizer_.AppendDecoded(id, skip_special_, &state_, &pending_);
  const size_t stable = tokenizer_internal::StableUtf8Prefix(pending_);
  if (stable == 0) return std::string();
  std::string out = SanitizeUtf8(std::string_view(pending_).substr(0, stable));
  pending_.erase(0, stable);
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  std::string out = SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;

  absl::StatusOr<std::vector<int32_t>> Encode(
      std::string_view text, bool add_special,
      bool parse_special) const override {
    std::vector<int32_t> out;
    out.reserve(text.size() + 1);
    if (add_special) out.push_back(kBos);
    size_t i = 0;
    while (i < text.size()) {
      if (parse_special && text.substr(i).starts_with("<s>")) {
        out.push_back(kBos);
        i += 3;
      } else if (parse_special && text.substr(i).starts_with("</s>")) {
        out.push_back(kEos);
        i += 4;
      } else {
        out.push_back(static_cast<uint8_t>(text[i++]));
      }
    }
    return out;
  }
  std::string TokenBytes(int32_t id) const override {
    return std::string(TokenText(id));
  }
  int32_t vocab_size() const override { return 258; }
  int32_t bos_id() const override { return kBos; }
  const std::vector<int32_t>& eos_ids() const override { return eos_; }
  bool IsSpecial(int32_t id) const override { return id == kBos || id == kEos; }
  std::string_view TokenText(int32_t id) const override {
    if (id == kBos) return "<s>";
    if (id == kEos) return "</s>";
    if (id < 0 || id > 255) return {};
    return std::string_view(&bytes_[id], 1);
  }
  int32_t TokenId(std::string_view text) const override {
    if (text == "<s>") return kBos;
    if (text == "</s>") return kEos;
    if (text.size() == 1) return static_cast<uint8_t>(text[0]);
    return -1;
  }
  std::string_view kind() const override { return "byte"; }
  const std::string& chat_template() const override { return template_; }

 private:
  const std::vector<int32_t> eos_{kEos};
  const std::string template_;
  const std::array<char, 256> bytes_ = [] {
    std::array<char, 256> b{};
    for (int i = 0; i < 256; ++i) b[i] = static_cast<char>(i);
    return b;
  }();
};

namespace fs = std::filesystem;

// Reads `dir/name` if it exists (empty string if not).
absl::StatusOr<std::string> ReadOptional(const fs::path& dir,
                                         const char* name) {
  const fs::path p = dir / name;
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return std::string();
  return ReadFileToString(p.string());
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfJson(const fs::path& file) {
  ASSIGN_OR_RETURN(std::string json, ReadFileToString(file.string()));
  const fs::path dir =
      file.parent_path().empty() ? fs::path(".") : file.parent_path();
  ASSIGN_OR_RETURN(std::string config,
                   ReadOptional(dir, "tokenizer_config.json"));
  ASSIGN_OR_RETURN(std::string gen,
                   ReadOptional(dir, "generation_config.json"));
  if (gen.empty()) {
    ASSIGN_OR_RETURN(gen, ReadOptional(dir, "config.json"));
  }
  return TokenizerFromHfJson(json, config, gen, file.string());
}

}  // namespace

std::unique_ptr<Tokenizer> NewByteTokenizer() {
  return std::make_unique<ByteTokenizer>();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const std::string& path) {
  if (path == "builtin:demo") return NewByteTokenizer();
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    if (fs::is_regular_file(p / "tokenizer.json", ec)) {
      return LoadHfJson(p / "tokenizer.json");
    }
    return absl::NotFoundError(fmt::format(
        "{}: no tokenizer.json in this directory (pass --tokenizer with a "
        "tokenizer.json, GGUF or llama2.c tokenizer.bin)",
        path));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  const absl::Span<const uint8_t> bytes = file->bytes();
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0) {
    ASSIGN_OR_RETURN(std::shared_ptr<GgufFile> gguf, GgufFile::Open(path));
    return TokenizerFromGguf(*gguf);
  }
  size_t first = 0;
  while (first < bytes.size() && std::isspace(bytes[first])) ++first;
  if (p.extension() == ".json" ||
      (first < bytes.size() && bytes[first] == '{')) {
    return LoadHfJson(p);
  }
  return TokenizerFromLlama2c(bytes, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromLlama2c(
    absl::Span<const uint8_t> bytes, const std::string& name) {
  using tokenizer_internal::TokenType;
  size_t pos = 0;
  auto read = [&](void* dst, size_t n) {
    if (bytes.size() - pos < n) return false;
    std::memcpy(dst, bytes.data() + pos, n);
    pos += n;
    return true;
  };
  int32_t max_len = 0;
  if (!read(&max_len, 4) || max_len <= 0 || max_len > (1 << 20)) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: not a llama2.c tokenizer.bin (bad max_token_length)", name));
  }
  tokenizer_internal::ModelTokenizerSpec spec;
  spec.kind = "llama2c";
  spec.algorithm = tokenizer_internal::Algorithm::kLlama2c;
  while (pos < bytes.size()) {
    float score = 0;
    int32_t len = 0;
    if (!read(&score, 4) || !read(&len, 4) || len < 0 || len > max_len ||
        bytes.size() - pos < static_cast<size_t>(len)) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: truncated or corrupt llama2.c tokenizer at byte {} (token {})",
          name, pos, spec.tokens.size()));
    }
    std::string text(reinterpret_cast<const char*>(bytes.data() + pos), len);
    pos += len;
    // run.c keeps tokens as C strings.
    if (const size_t nul = text.find('\0'); nul != std::string::npos) {
      text.resize(nul);
    }
    spec.tokens.push_back(std::move(text));
    spec.scores.push_back(score);
  }
  if (spec.tokens.size() < 3 + 256) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: llama2.c tokenizer has {} tokens; needs at least 259 (<unk>, "
        "<s>, </s>, 256 bytes)",
        name, spec.tokens.size()));
  }
  spec.types.assign(spec.tokens.size(), TokenType::kNormal);
  spec.types[0] = TokenType::kUnknown;
  spec.types[1] = TokenType::kControl;
  spec.types[2] = TokenType::kControl;
  for (int i = 3; i < 3 + 256; ++i) spec.types[i] = TokenType::kByte;
  spec.unk_id = 0;
  spec.bos_id = 1;
  spec.add_bos = true;
  // run.c stops generating when the model samples BOS; it never stops on 2.
  spec.eos_ids = {1};
  spec.append_eos_id = 2;
  return tokenizer_internal::NewModelTokenizer(std::move(spec), name);
}

}  // namespace tessera
