#include "runtime/tokenizer/internal/model_tokenizer.h"

#include <algorithm>
#include <array>
#include <limits>
#include <queue>

#include "absl/container/flat_hash_map.h"
#include "base/status.h"
#include "fmt/format.h"
#include "runtime/tokenizer/internal/utf8.h"
#include "spdlog/spdlog.h"

namespace tessera::tokenizer_internal {
namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // "▁"

absl::string_view AbslView(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
         c == '\f';
}

// "<0xXX>" -> XX, else -1.
int ParseByteToken(std::string_view t) {
  if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = t[i];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return -1;
    }
    v = v * 16 + d;
  }
  return v;
}

class ModelTokenizer final : public Tokenizer {
 public:
  explicit ModelTokenizer(ModelTokenizerSpec spec) : spec_(std::move(spec)) {}

  absl::Status Init(const std::string& name);

  absl::StatusOr<std::vector<int32_t>> Encode(
      std::string_view text, bool add_special,
      bool parse_special) const override;
  std::string TokenBytes(int32_t id) const override {
    return InRange(id) ? pieces_[id] : std::string();
  }
  int32_t vocab_size() const override {
    return static_cast<int32_t>(spec_.tokens.size());
  }
  int32_t bos_id() const override { return spec_.bos_id; }
  const std::vector<int32_t>& eos_ids() const override { return spec_.eos_ids; }
  bool IsSpecial(int32_t id) const override {
    if (!InRange(id)) return false;
    const TokenType t = spec_.types[id];
    return t == TokenType::kControl || t == TokenType::kUnknown;
  }
  std::string_view TokenText(int32_t id) const override {
    return InRange(id) ? std::string_view(spec_.tokens[id])
                       : std::string_view();
  }
  int32_t TokenId(std::string_view text) const override { return Lookup(text); }
  std::string_view kind() const override { return spec_.kind; }
  const std::string& chat_template() const override {
    return spec_.chat_template;
  }
  void AppendDecoded(int32_t id, bool skip_special, DecodeState* state,
                     std::string* out) const override;

 private:
  struct Fragment {
    int32_t id;             // >= 0: a special/added token.
    std::string_view text;  // Raw text otherwise.
  };

  bool InRange(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < spec_.tokens.size();
  }
  int32_t Lookup(std::string_view s) const {
    const auto it = token_to_id_.find(AbslView(s));
    return it == token_to_id_.end() ? -1 : it->second;
  }
  // Whether merging may produce `id` (SentencePiece only merges into normal
  // and user-defined pieces).
  bool Mergeable(int32_t id) const {
    const TokenType t = spec_.types[id];
    return t == TokenType::kNormal || t == TokenType::kUserDefined ||
           t == TokenType::kUndefined;
  }
  void Partition(std::string_view text, bool parse_special,
                 std::vector<Fragment>* out) const;
  void EmitUnknown(std::string_view bytes, std::vector<int32_t>* out) const;
  void BpeWord(std::string_view word, std::vector<int32_t>* out) const;
  void WordPieceWord(std::string_view word, std::vector<int32_t>* out) const;
  void UnigramWord(std::string_view word, std::vector<int32_t>* out) const;
  // The trie node reached from `node` by byte `b`, or -1.
  int32_t TrieNext(int32_t node, uint8_t b) const {
    const auto it = trie_edges_.find((static_cast<uint64_t>(node) << 8) | b);
    return it == trie_edges_.end() ? -1 : it->second;
  }
  void SpmText(std::string_view text, std::vector<int32_t>* out) const;
  absl::Status Llama2cText(std::string_view text, bool bos,
                           std::vector<int32_t>* out) const;

  ModelTokenizerSpec spec_;
  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  // (left id << 32 | right id) -> (rank, merged id).
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::vector<std::string> pieces_;  // Decoded bytes per id.
  std::array<int32_t, 256> byte_ids_{};
  // Tokens matched in text, by first byte, longest first.
  std::array<std::vector<std::pair<std::string_view, int32_t>>, 256>
      specials_by_byte_;
  absl::flat_hash_map<int32_t, std::pair<bool, bool>> strip_flags_;
  size_t max_token_len_ = 0;  // Longest token text, in bytes.
  // kUnigram: a byte trie of the matchable pieces. Node 0 is the root;
  // trie_value_[node] is the token ending there, or -1.
  absl::flat_hash_map<uint64_t, int32_t> trie_edges_;
  std::vector<int32_t> trie_value_;
  // kWordPiece decoding: the text of each token when it comes first.
  std::vector<std::string> first_pieces_;
};

// Hugging Face's decoder cleanup (WordPiece/BPE decoders' `cleanup`).
std::string CleanupPiece(std::string s) {
  static constexpr std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},
      {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},   {" do not", " don't"},
      {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
  };
  for (const auto& [from, to] : kRules) ReplaceAll(&s, from, to);
  return s;
}

absl::Status ModelTokenizer::Init(const std::string& name) {
  const size_t n = spec_.tokens.size();
  if (n == 0) {
    return absl::InvalidArgumentError(name + ": empty vocabulary");
  }
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(name + ": vocabulary too large");
  }
  if (spec_.scores.empty()) spec_.scores.assign(n, 0.0f);
  if (spec_.types.empty()) spec_.types.assign(n, TokenType::kNormal);
  if (spec_.scores.size() != n || spec_.types.size() != n) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} tokens but {} scores and {} token types", name, n,
                    spec_.scores.size(), spec_.types.size()));
  }
  auto check_id = [&](int32_t id, std::string_view what) -> absl::Status {
    if (id < -1 || id >= static_cast<int32_t>(n)) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: {} id {} outside the vocabulary of {}", name, what, id, n));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(check_id(spec_.bos_id, "BOS"));
  RETURN_IF_ERROR(check_id(spec_.unk_id, "unknown-token"));
  RETURN_IF_ERROR(check_id(spec_.append_eos_id, "EOS"));
  for (const int32_t id : spec_.eos_ids) RETURN_IF_ERROR(check_id(id, "EOS"));
  if (spec_.add_bos && spec_.bos_id < 0) spec_.add_bos = false;
  if (spec_.add_eos && spec_.append_eos_id < 0) spec_.add_eos = false;

  token_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (spec_.tokens[i].empty()) continue;  // Holes in a sparse vocabulary.
    token_to_id_.emplace(spec_.tokens[i], static_cast<int32_t>(i));
  }
  size_t skipped = 0;
  merges_.reserve(spec_.merges.size());
  for (size_t r = 0; r < spec_.merges.size(); ++r) {
    const auto& [a, b] = spec_.merges[r];
    const int32_t l = Lookup(a), rt = Lookup(b), m = Lookup(a + b);
    if (l < 0 || rt < 0 || m < 0) {
      ++skipped;
      continue;
    }
    const uint64_t key =
        (static_cast<uint64_t>(l) << 32) | static_cast<uint32_t>(rt);
    merges_.emplace(key, std::make_pair(static_cast<int32_t>(r), m));
  }
  if (skipped > 0) {
    spdlog::warn("{}: {} of {} merges name tokens outside the vocabulary", name,
                 skipped, spec_.merges.size());
  }
  spec_.merges.clear();
  spec_.merges.shrink_to_fit();
  for (int b = 0; b < 256; ++b) {
    byte_ids_[b] = Lookup(fmt::format("<0x{:02X}>", b));
  }
  pieces_.resize(n);
  const ByteLevelMap& byte_map = ByteLevelMap::Get();
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = spec_.tokens[i];
    const TokenType type = spec_.types[i];
    if (type == TokenType::kControl || type == TokenType::kUnknown ||
        type == TokenType::kUserDefined) {
      pieces_[i] = t;
      if (!t.empty()) {
        specials_by_byte_[static_cast<uint8_t>(t[0])].emplace_back(
            t, static_cast<int32_t>(i));
      }
      continue;
    }
    const int byte = ParseByteToken(t);
    if (byte >= 0 && (type == TokenType::kByte || spec_.byte_fallback ||
                      spec_.algorithm == Algorithm::kLlama2c)) {
      pieces_[i] = std::string(1, static_cast<char>(byte));
    } else if (spec_.byte_level) {
      pieces_[i] = byte_map.Decode(t);
    } else if (spec_.metaspace) {
      pieces_[i] = t;
      ReplaceAll(&pieces_[i], kMetaspace, " ");
    } else {
      pieces_[i] = t;
    }
  }
  for (auto& list : specials_by_byte_) {
    std::stable_sort(list.begin(), list.end(),
                     [](const auto& x, const auto& y) {
                       return x.first.size() > y.first.size();
                     });
  }
  for (const auto& [id, flags] : spec_.strip_flags) {
    if (InRange(id)) strip_flags_[id] = flags;
  }
  for (const std::string& t : spec_.tokens) {
    max_token_len_ = std::max(max_token_len_, t.size());
  }
  if (spec_.algorithm == Algorithm::kUnigram) {
    trie_value_.push_back(-1);
    for (size_t i = 0; i < n; ++i) {
      const std::string& t = spec_.tokens[i];
      const TokenType type = spec_.types[i];
      const bool matchable =
          spec_.unigram_model_pieces >= 0
              ? i < static_cast<size_t>(spec_.unigram_model_pieces)
              : type == TokenType::kNormal || type == TokenType::kUserDefined ||
                    type == TokenType::kUnused || type == TokenType::kUndefined;
      if (!matchable || t.empty()) continue;
      int32_t node = 0;
      for (const char c : t) {
        const uint64_t key =
            (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
        auto [it, inserted] = trie_edges_.try_emplace(
            key, static_cast<int32_t>(trie_value_.size()));
        if (inserted) trie_value_.push_back(-1);
        node = it->second;
      }
      // The first of duplicate texts wins, as in a token -> id map.
      if (trie_value_[node] < 0) trie_value_[node] = static_cast<int32_t>(i);
    }
  }
  if (spec_.decode_cleanup || spec_.wordpiece_decode) {
    if (spec_.wordpiece_decode) first_pieces_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      if (spec_.wordpiece_decode) {
        first_pieces_[i] = pieces_[i];
        if (pieces_[i].starts_with(spec_.decode_prefix) &&
            !spec_.decode_prefix.empty()) {
          pieces_[i].erase(0, spec_.decode_prefix.size());
        } else {
          pieces_[i].insert(0, " ");
        }
      }
      if (spec_.decode_cleanup) {
        pieces_[i] = CleanupPiece(std::move(pieces_[i]));
        if (spec_.wordpiece_decode) {
          first_pieces_[i] = CleanupPiece(std::move(first_pieces_[i]));
        }
      }
    }
  }
  return absl::OkStatus();
}

void ModelTokenizer::Partition(std::string_view text, bool parse_special,
                               std::vector<Fragment>* out) const {
  size_t raw_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    int32_t found = -1;
    size_t found_len = 0;
    for (const auto& [s, id] :
         specials_by_byte_[static_cast<uint8_t>(text[i])]) {
      if (!parse_special && spec_.types[id] != TokenType::kUserDefined) {
        continue;
      }
      if (text.substr(i).starts_with(s)) {
        found = id;
        found_len = s.size();
        break;
      }
    }
    if (found < 0) {
      ++i;
      continue;
    }
    bool lstrip = false, rstrip = false;
    if (const auto it = strip_flags_.find(found); it != strip_flags_.end()) {
      lstrip = it->second.first;
      rstrip = it->second.second;
    }
    size_t raw_end = i;
    if (lstrip) {
      while (raw_end > raw_start && IsAsciiSpace(text[raw_end - 1])) --raw_end;
    }
    if (raw_end > raw_start) {
      out->push_back({-1, text.substr(raw_start, raw_end - raw_start)});
    }
    out->push_back({found, {}});
    i += found_len;
    if (rstrip) {
      while (i < text.size() && IsAsciiSpace(text[i])) ++i;
    }
    raw_start = i;
  }
  if (raw_start < text.size()) {
    out->push_back({-1, text.substr(raw_start)});
  }
}

absl::StatusOr<std::vector<int32_t>> ModelTokenizer::Encode(
    std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int32_t> out;
  if (spec_.algorithm == Algorithm::kLlama2c) {
    RETURN_IF_ERROR(Llama2cText(text, add_special && spec_.add_bos, &out));
    if (add_special && spec_.add_eos) out.push_back(spec_.append_eos_id);
    return out;
  }
  if (add_special && spec_.add_bos) out.push_back(spec_.bos_id);
  std::vector<Fragment> fragments;
  Partition(text, parse_special, &fragments);
  bool prev_special = true;
  bool at_start = true;
  std::vector<std::string> words;
  for (const Fragment& f : fragments) {
    if (f.id >= 0) {
      out.push_back(f.id);
      prev_special = true;
      at_start = false;
      continue;
    }
    if (spec_.algorithm == Algorithm::kSpm) {
      std::string s;
      if (spec_.add_space_prefix && prev_special) s = " ";
      s.append(f.text);
      if (spec_.escape_whitespace) ReplaceAll(&s, " ", kMetaspace);
      SpmText(s, &out);
    } else {
      std::string s(f.text);
      RETURN_IF_ERROR(Normalize(spec_.normalizer, &s));
      words.clear();
      RETURN_IF_ERROR(PreTokenize(spec_.pre_tokenizer, s, at_start, &words));
      for (const std::string& w : words) {
        switch (spec_.algorithm) {
          case Algorithm::kWordPiece:
            WordPieceWord(w, &out);
            break;
          case Algorithm::kUnigram:
            UnigramWord(w, &out);
            break;
          default:
            BpeWord(w, &out);
            break;
        }
      }
    }
    prev_special = false;
    at_start = false;
  }
  if (add_special && spec_.add_eos) out.push_back(spec_.append_eos_id);
  return out;
}

void ModelTokenizer::EmitUnknown(std::string_view bytes,
                                 std::vector<int32_t>* out) const {
  if (spec_.byte_fallback) {
    // Hugging Face (BPE and Unigram): byte pieces only if every byte has
    // one, else the unknown token.
    bool all = true;
    for (const char c : bytes)
      all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
    if (all) {
      for (const char c : bytes)
        out->push_back(byte_ids_[static_cast<uint8_t>(c)]);
      return;
    }
    if (spec_.unk_id >= 0) out->push_back(spec_.unk_id);
    return;
  }
  if (spec_.unk_id >= 0) {
    out->push_back(spec_.unk_id);
    return;
  }
  // llama.cpp's last resort: single-byte tokens, dropping bytes without one.
  for (const char c : bytes) {
    const int32_t id = Lookup(std::string_view(&c, 1));
    if (id >= 0) out->push_back(id);
  }
}

struct Symbol {
  uint32_t begin;
  uint32_t len;  // 0 once merged into its left neighbour.
  int32_t id;    // -1 if the text is not a token.
  int32_t prev;
  int32_t next;
};

// Splits `text` into one symbol per UTF-8 character (invalid bytes alone).
template <typename LookupFn>
void SplitChars(std::string_view text, LookupFn lookup,
                std::vector<Symbol>* syms) {
  syms->clear();
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t len = NextUtf8(text.substr(pos)).len;
    const auto idx = static_cast<int32_t>(syms->size());
    syms->push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(len),
                     lookup(text.substr(pos, len)), idx - 1, idx + 1});
    pos += len;
  }
  if (!syms->empty()) syms->back().next = -1;
}

void ModelTokenizer::BpeWord(std::string_view word,
                             std::vector<int32_t>* out) const {
  if (spec_.ignore_merges) {
    if (const int32_t id = Lookup(word); id >= 0) {
      out->push_back(id);
      return;
    }
  }
  std::vector<Symbol> syms;
  SplitChars(
      word, [this](std::string_view s) { return Lookup(s); }, &syms);
  struct Cand {
    int32_t rank, left, right, left_id, right_id, merged;
    bool operator>(const Cand& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> queue;
  auto add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0 || syms[l].id < 0 || syms[r].id < 0) return;
    const uint64_t key = (static_cast<uint64_t>(syms[l].id) << 32) |
                         static_cast<uint32_t>(syms[r].id);
    const auto it = merges_.find(key);
    if (it == merges_.end()) return;
    queue.push(
        {it->second.first, l, r, syms[l].id, syms[r].id, it->second.second});
  };
  for (size_t i = 1; i < syms.size(); ++i) {
    add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }
  while (!queue.empty()) {
    const Cand c = queue.top();
    queue.pop();
    Symbol& l = syms[c.left];
    Symbol& r = syms[c.right];
    if (l.len == 0 || r.len == 0 || l.next != c.right || l.id != c.left_id ||
        r.id != c.right_id) {
      continue;  // Stale: one side changed since this pair was queued.
    }
    l.len += r.len;
    l.id = c.merged;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    add(l.prev, c.left);
    add(c.left, l.next);
  }
  for (const Symbol& s : syms) {
    if (s.len == 0) continue;
    if (s.id >= 0) {
      out->push_back(s.id);
    } else {
      EmitUnknown(word.substr(s.begin, s.len), out);
    }
  }
}

void ModelTokenizer::WordPieceWord(std::string_view raw_word,
                                   std::vector<int32_t>* out) const {
  if (spec_.max_input_chars_per_word > 0) {
    size_t chars = 0;
    for (size_t p = 0; p < raw_word.size();
         p += NextUtf8(raw_word.substr(p)).len) {
      ++chars;
    }
    if (chars > static_cast<size_t>(spec_.max_input_chars_per_word)) {
      EmitUnknown(raw_word, out);
      return;
    }
  }
  std::string word_buf;
  std::string_view word = raw_word;
  if (!spec_.word_prefix.empty()) {
    word_buf = spec_.word_prefix;
    word_buf.append(raw_word);
    word = word_buf;
  }
  const size_t first = out->size();
  std::string candidate;
  size_t start = 0;
  while (start < word.size()) {
    // Longest match first, shrinking one character at a time; no token is
    // longer than max_token_len_ bytes.
    size_t end = std::min(word.size(), start + max_token_len_);
    while (end > start && end < word.size() &&
           (static_cast<uint8_t>(word[end]) & 0xC0) == 0x80) {
      --end;  // Never cut a character.
    }
    int32_t found = -1;
    while (end > start) {
      std::string_view sub = word.substr(start, end - start);
      if (start > 0 && !spec_.continuing_prefix.empty()) {
        candidate = spec_.continuing_prefix;
        candidate.append(sub);
        sub = candidate;
      }
      found = Lookup(sub);
      if (found >= 0) break;
      // Step back one character.
      --end;
      while (end > start && (static_cast<uint8_t>(word[end]) & 0xC0) == 0x80) {
        --end;
      }
    }
    if (found < 0) {
      // No piece fits here: the whole word is unknown.
      out->resize(first);
      EmitUnknown(raw_word, out);
      return;
    }
    out->push_back(found);
    start = end;
  }
}

void ModelTokenizer::UnigramWord(std::string_view word,
                                 std::vector<int32_t>* out) const {
  const size_t n = word.size();
  if (n == 0) return;
  constexpr double kNone = -std::numeric_limits<double>::infinity();
  struct Best {
    double score;
    uint32_t start;
    int32_t id;  // -1: an unknown character.
  };
  std::vector<Best> best(n + 1, Best{kNone, 0, -1});
  // llama.cpp compares the double sum with the stored float best.
  auto round = [this](double x) {
    return spec_.unigram_float_sums ? static_cast<double>(static_cast<float>(x))
                                    : x;
  };
  best[0].score = 0.0;
  size_t pos = 0;
  while (pos < n) {
    const size_t char_len = NextUtf8(word.substr(pos)).len;
    const double base = best[pos].score;
    if (base == kNone) {
      pos += char_len;
      continue;
    }
    bool whole_char = false;
    int32_t node = 0;
    for (size_t end = pos; end < n;) {
      node = TrieNext(node, static_cast<uint8_t>(word[end]));
      if (node < 0) break;
      ++end;
      const int32_t id = trie_value_[node];
      if (id < 0) continue;
      if (end - pos == char_len) whole_char = true;
      // User-defined pieces score 0 (llama.cpp; they are split out before
      // this anyway unless written inside a word).
      const double score = base + (spec_.types[id] == TokenType::kUserDefined &&
                                           spec_.unigram_model_pieces < 0
                                       ? 0.0
                                       : static_cast<double>(spec_.scores[id]));
      if (score > best[end].score) {
        best[end] = {round(score), static_cast<uint32_t>(pos), id};
      }
    }
    if (!whole_char) {
      const double score = base + spec_.unk_score;
      if (score > best[pos + char_len].score) {
        best[pos + char_len] = {round(score), static_cast<uint32_t>(pos), -1};
      }
    }
    pos += char_len;
  }
  // Backtrack, then emit left to right, fusing runs of unknown characters
  // into one unknown piece as Hugging Face and llama.cpp do.
  std::vector<std::pair<uint32_t, int32_t>> path;  // (start, id)
  for (size_t end = n; end > 0;) {
    const Best& b = best[end];
    path.emplace_back(b.start, b.id);
    end = b.start;
  }
  std::reverse(path.begin(), path.end());
  for (size_t k = 0; k < path.size(); ++k) {
    if (path[k].second >= 0) {
      out->push_back(path[k].second);
      continue;
    }
    size_t j = k;
    while (j + 1 < path.size() && path[j + 1].second < 0) ++j;
    const size_t end = j + 1 < path.size() ? path[j + 1].first : n;
    EmitUnknown(word.substr(path[k].first, end - path[k].first), out);
    k = j;
  }
}

void ModelTokenizer::SpmText(std::string_view text,
                             std::vector<int32_t>* out) const {
  std::vector<Symbol> syms;
  SplitChars(
      text, [](std::string_view) { return 0; }, &syms);
  struct Cand {
    float score;
    int32_t left, right;
    uint32_t size;
    bool operator<(const Cand& o) const {  // Max score, then leftmost.
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::priority_queue<Cand> queue;
  auto add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const std::string_view s =
        text.substr(syms[l].begin, syms[l].len + syms[r].len);
    const int32_t id = Lookup(s);
    if (id < 0 || !Mergeable(id)) return;
    queue.push({spec_.scores[id], l, r, static_cast<uint32_t>(s.size())});
  };
  for (size_t i = 1; i < syms.size(); ++i) {
    add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }
  while (!queue.empty()) {
    const Cand c = queue.top();
    queue.pop();
    Symbol& l = syms[c.left];
    Symbol& r = syms[c.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != c.size) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    add(l.prev, c.left);
    add(c.left, l.next);
  }
  for (const Symbol& s : syms) {
    if (s.len == 0) continue;
    const std::string_view piece = text.substr(s.begin, s.len);
    const int32_t id = Lookup(piece);
    if (id >= 0 && Mergeable(id)) {
      out->push_back(id);
      continue;
    }
    // Byte fallback: "<0xXX>" pieces, else a single-byte token, else <unk>.
    for (const char c : piece) {
      int32_t b = byte_ids_[static_cast<uint8_t>(c)];
      if (b < 0) b = Lookup(std::string_view(&c, 1));
      if (b < 0) b = spec_.unk_id;
      if (b >= 0) out->push_back(b);
    }
  }
}

absl::Status ModelTokenizer::Llama2cText(std::string_view text, bool bos,
                                         std::vector<int32_t>* out) const {
  // run.c works on C strings: text ends at the first NUL.
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    text = text.substr(0, nul);
  }
  std::vector<int32_t> toks;
  if (bos) toks.push_back(spec_.bos_id);
  if (!text.empty()) {
    const int32_t space = Lookup(" ");
    if (space < 0) {
      return absl::InvalidArgumentError(
          "llama2c tokenizer has no \" \" token for the dummy prefix");
    }
    toks.push_back(space);
  }
  char buf[8];
  size_t len = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if ((c & 0xC0) != 0x80) len = 0;
    buf[len++] = c;
    const char next = i + 1 < text.size() ? text[i + 1] : '\0';
    if ((next & 0xC0) == 0x80 && len < 4) continue;
    const int32_t id = Lookup(std::string_view(buf, len));
    if (id >= 0) {
      toks.push_back(id);
    } else {
      // Byte fallback: ids 3.. are bytes 0..255 (after <unk>, <s>, </s>).
      for (size_t k = 0; k < len; ++k) {
        const int32_t b = static_cast<uint8_t>(buf[k]) + 3;
        if (b >= vocab_size()) {
          return absl::InvalidArgumentError(
              "llama2c tokenizer too small for byte fallback");
        }
        toks.push_back(b);
      }
    }
    len = 0;
  }
  // Greedy merges: best score first, leftmost on ties (strictly greater).
  // pair_id/pair_score cache each adjacent pair's merge.
  std::vector<int32_t> pair_id;
  std::vector<float> pair_score;
  std::string joined;
  auto pair_at = [&](size_t i) {
    joined = spec_.tokens[toks[i]];
    joined += spec_.tokens[toks[i + 1]];
    const int32_t id = Lookup(joined);
    pair_id[i] = id;
    pair_score[i] = id >= 0 ? spec_.scores[id] : 0.0f;
  };
  if (toks.size() >= 2) {
    pair_id.resize(toks.size() - 1);
    pair_score.resize(toks.size() - 1);
    for (size_t i = 0; i + 1 < toks.size(); ++i) pair_at(i);
  }
  while (toks.size() >= 2) {
    float best_score = -1e10f;
    int64_t best = -1;
    for (size_t i = 0; i + 1 < toks.size(); ++i) {
      if (pair_id[i] >= 0 && pair_score[i] > best_score) {
        best_score = pair_score[i];
        best = static_cast<int64_t>(i);
      }
    }
    if (best < 0) break;
    const auto b = static_cast<size_t>(best);
    toks[b] = pair_id[b];
    toks.erase(toks.begin() + static_cast<ptrdiff_t>(b) + 1);
    pair_id.erase(pair_id.begin() + static_cast<ptrdiff_t>(b));
    pair_score.erase(pair_score.begin() + static_cast<ptrdiff_t>(b));
    if (b > 0) pair_at(b - 1);
    if (b + 1 < toks.size()) pair_at(b);
  }
  out->insert(out->end(), toks.begin(), toks.end());
  return absl::OkStatus();
}

void ModelTokenizer::AppendDecoded(int32_t id, bool skip_special,
                                   DecodeState* state, std::string* out) const {
  const bool special = IsSpecial(id);
  if (skip_special && special) {
    state->prev_id = id;
    return;
  }
  std::string_view piece = pieces_[id];
  if (spec_.wordpiece_decode && !state->emitted_text) piece = first_pieces_[id];
  if (spec_.algorithm == Algorithm::kLlama2c) {
    // run.c: "following BOS (1) token, sentencepiece decoder strips any
    // leading whitespace".
    if (state->prev_id == spec_.bos_id && piece.starts_with(' ')) {
      piece.remove_prefix(1);
    }
  } else if (spec_.strip_leading_space && !state->emitted_text && !special &&
             piece.starts_with(' ')) {
    piece.remove_prefix(1);
  }
  out->append(piece);
  if (!piece.empty()) state->emitted_text = true;
  state->prev_id = id;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> NewModelTokenizer(
    ModelTokenizerSpec spec, const std::string& name) {
  auto tok = std::make_unique<ModelTokenizer>(std::move(spec));
  RETURN_IF_ERROR(tok->Init(name));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

}  // namespace tessera::tokenizer_internal
