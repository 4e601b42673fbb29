#include "runtime/internal/synthetic_vocab.h"

#include <algorithm>
#include <map>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "fmt/format.h"

namespace tessera {
namespace {

// Training text for the merges (original prose; any English text works, it
// only decides which merges come first).
constexpr std::string_view kTrainingText =
    "Once upon a time, in a small town by the sea, there lived a little girl "
    "named Lily. She loved to play outside in the sun with her friends. Every "
    "morning she would walk to the beach and look at the boats. One day, she "
    "found a shiny shell in the sand. It was the most beautiful thing she had "
    "ever seen. She picked it up and ran home to show her mother. \"Look what "
    "I found!\" she said. Her mother smiled and said, \"That is a very special "
    "shell. You should keep it safe.\" Lily put the shell on the table next to "
    "her bed. That night, she dreamed of the sea and the fish that swim in "
    "it. The next day, the sun was bright and the sky was blue. Lily and her "
    "friend Tom went to the park to play. They played on the swings and the "
    "slide. Then they saw a big dog. The dog was friendly and wanted to play "
    "too. They threw a ball and the dog ran to get it. They laughed and had a "
    "lot of fun. When it was time to go home, Lily said goodbye to Tom and the "
    "dog. She was happy because it was a good day. The weather report said "
    "that it would rain in the evening, so people in the city went home "
    "early. A computer program reads the numbers 1, 2, 3 and 42 from a file, "
    "adds them together, and prints the result. Systems engineers measure the "
    "time it takes to answer each request and the number of tokens produced "
    "every second. The model generates text one token at a time; each new "
    "token depends on all of the tokens that came before it. This is why the "
    "cache of keys and values matters so much for speed. The quick brown fox "
    "jumps over the lazy dog. What is the capital of France? The capital of "
    "France is Paris. How are you today? I am fine, thank you. We went to the "
    "store to buy some bread, milk, eggs and apples for breakfast.";

bool IsLetter(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}
bool IsDigit(unsigned char c) { return c >= '0' && c <= '9'; }

// A rough GPT-2 pre-tokenization: optional leading space + a run of letters,
// digits, or other symbols; whitespace runs on their own.
std::vector<std::string> PreTokenize(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    if (text[j] == ' ' && j + 1 < text.size() && text[j + 1] != ' ') ++j;
    const unsigned char c = static_cast<unsigned char>(text[j]);
    auto same = [&](unsigned char d) {
      if (IsLetter(c)) return IsLetter(d);
      if (IsDigit(c)) return IsDigit(d);
      if (c == ' ') return d == ' ';
      return !IsLetter(d) && !IsDigit(d) && d != ' ';
    };
    ++j;
    while (j < text.size() && same(static_cast<unsigned char>(text[j]))) ++j;
    words.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return words;
}

}  // namespace

std::string ByteToUnicode(uint8_t b) {
  uint32_t cp = b;
  const bool printable =
      (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
  if (!printable) {
    // Non-printable bytes map, in order, to 256, 257, ...
    uint32_t n = 0;
    for (uint32_t x = 0; x < b; ++x) {
      const bool p =
          (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174);
      if (!p) ++n;
    }
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
  return out;
}

absl::StatusOr<SyntheticVocab> BuildSyntheticVocab(int64_t vocab_size,
                                                   SpecialTokenStyle style) {
  std::vector<std::string> specials;
  if (style == SpecialTokenStyle::kLlama3) {
    // Llama 3's layout of its 256 special tokens.
    specials = {"<|begin_of_text|>",
                "<|end_of_text|>",
                "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>",
                "<|finetune_right_pad_id|>",
                "<|reserved_special_token_2|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eom_id|>",
                "<|eot_id|>",
                "<|python_tag|>"};
    for (int i = 3; specials.size() < 256; ++i) {
      specials.push_back(fmt::format("<|reserved_special_token_{}|>", i));
    }
  } else {
    specials = {"<s>", "</s>"};
  }
  const int64_t n_special = static_cast<int64_t>(specials.size());
  if (vocab_size < 256 + n_special) {
    return absl::InvalidArgumentError(
        fmt::format("vocab_size {} is smaller than 256 bytes + {} special "
                    "tokens",
                    vocab_size, n_special));
  }
  const int64_t n_regular = vocab_size - n_special;
  SyntheticVocab v;
  v.tokens.reserve(static_cast<size_t>(vocab_size));
  std::unordered_set<std::string> known;
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(ByteToUnicode(static_cast<uint8_t>(b)));
    known.insert(v.tokens.back());
  }
  auto add_merge = [&](const std::string& a, const std::string& b) {
    v.merges.push_back(a + " " + b);
    v.tokens.push_back(a + b);
    known.insert(v.tokens.back());
  };

  // BPE training over the text: words as symbol sequences with counts.
  std::map<std::string, int> word_count;
  for (const std::string& w : PreTokenize(kTrainingText)) ++word_count[w];
  std::vector<std::pair<std::vector<std::string>, int>> words;
  for (const auto& [w, n] : word_count) {
    std::vector<std::string> syms;
    for (unsigned char c : w) syms.push_back(ByteToUnicode(c));
    words.emplace_back(std::move(syms), n);
  }
  while (static_cast<int64_t>(v.tokens.size()) < n_regular) {
    std::map<std::pair<std::string, std::string>, int> pairs;
    for (const auto& [syms, n] : words) {
      for (size_t k = 0; k + 1 < syms.size(); ++k) {
        pairs[{syms[k], syms[k + 1]}] += n;
      }
    }
    // Most frequent pair; ties go to the smallest pair (std::map order).
    const std::pair<std::string, std::string>* best = nullptr;
    int best_n = 1;
    for (const auto& [p, n] : pairs) {
      if (n > best_n && known.count(p.first + p.second) == 0) {
        best = &p;
        best_n = n;
      }
    }
    if (best == nullptr) break;
    const std::string a = best->first, b = best->second;
    add_merge(a, b);
    for (auto& [syms, n] : words) {
      std::vector<std::string> out;
      for (size_t k = 0; k < syms.size(); ++k) {
        if (k + 1 < syms.size() && syms[k] == a && syms[k + 1] == b) {
          out.push_back(a + b);
          ++k;
        } else {
          out.push_back(syms[k]);
        }
      }
      syms = std::move(out);
    }
  }
  // Filler: extend existing tokens with a letter (then a space-prefixed
  // form), in id order, until the vocabulary is full. Every merge joins two
  // tokens already in the vocabulary, so the merge list stays valid.
  const std::string letters = "etaoinshrdlcumwfgypbvkjxqz";
  for (size_t base = 0; static_cast<int64_t>(v.tokens.size()) < n_regular;
       ++base) {
    const std::string a = v.tokens[base];
    for (char l : letters) {
      if (static_cast<int64_t>(v.tokens.size()) >= n_regular) break;
      const std::string b(1, l);
      if (known.count(a + b) == 0) add_merge(a, b);
    }
  }
  v.token_types.assign(v.tokens.size(), 1);
  for (const std::string& s : specials) {
    v.special_ids.push_back(static_cast<int32_t>(v.tokens.size()));
    v.tokens.push_back(s);
    v.token_types.push_back(3);
  }
  v.bos_id = v.special_ids[0];
  v.eos_id = v.special_ids[1];
  return v;
}

}  // namespace tessera
