#include "runtime/chat_template.h"

#include "fmt/format.h"
#include "runtime/tokenizer.h"

namespace tessera {
namespace {

std::string_view Trim(std::string_view s) {
  const auto is_space = [](char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
  };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Qwen2-style templates write a default system turn as a literal:
// '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'.
std::string DefaultChatMlSystem(std::string_view jinja) {
  for (std::string_view head : {std::string_view("<|im_start|>system\\n"),
                                std::string_view("<|im_start|>system\n")}) {
    const size_t at = jinja.find(head);
    if (at == std::string_view::npos) continue;
    const size_t begin = at + head.size();
    const size_t end = jinja.find("<|im_end|>", begin);
    if (end == std::string_view::npos) continue;
    const std::string_view text = jinja.substr(begin, end - begin);
    // Only a plain literal, not an expression like "' + message['content']".
    if (text.empty() ||
        text.find_first_of("'\"{}+") != std::string_view::npos) {
      continue;
    }
    return std::string(text);
  }
  return {};
}

absl::Status CheckRoles(absl::Span<const ChatMessage> messages) {
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r == "system") {
      if (i != 0) {
        return absl::InvalidArgumentError(
            "a system message must be the first message");
      }
    } else if (r != "user" && r != "assistant") {
      return absl::InvalidArgumentError(
          fmt::format("unknown chat role '{}' (system, user, assistant)", r));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view ChatTemplateFamilyName(ChatTemplateFamily family) {
  switch (family) {
    case ChatTemplateFamily::kChatMl:
      return "chatml";
    case ChatTemplateFamily::kLlama3:
      return "llama3";
    case ChatTemplateFamily::kLlama2:
      return "llama2";
    case ChatTemplateFamily::kMistral:
      return "mistral";
  }
  return "chatml";
}

ChatTemplateFamily DetectChatTemplate(std::string_view jinja) {
  if (jinja.find("<|start_header_id|>") != std::string_view::npos) {
    return ChatTemplateFamily::kLlama3;
  }
  if (jinja.find("<|im_start|>") != std::string_view::npos) {
    return ChatTemplateFamily::kChatMl;
  }
  if (jinja.find("[INST]") != std::string_view::npos) {
    return jinja.find("<<SYS>>") != std::string_view::npos
               ? ChatTemplateFamily::kLlama2
               : ChatTemplateFamily::kMistral;
  }
  return ChatTemplateFamily::kChatMl;
}

ChatTemplate ChatTemplateFor(const Tokenizer& tokenizer) {
  ChatTemplate t;
  t.family = DetectChatTemplate(tokenizer.chat_template());
  if (tokenizer.bos_id() >= 0) t.bos = tokenizer.TokenText(tokenizer.bos_id());
  if (!tokenizer.eos_ids().empty()) {
    t.eos = tokenizer.TokenText(tokenizer.eos_ids().front());
  }
  if (t.family == ChatTemplateFamily::kChatMl) {
    t.default_system = DefaultChatMlSystem(tokenizer.chat_template());
  }
  return t;
}

absl::StatusOr<std::string> RenderChat(const ChatTemplate& tmpl,
                                       absl::Span<const ChatMessage> messages,
                                       bool add_generation_prompt) {
  if (auto s = CheckRoles(messages); !s.ok()) return s;
  std::string out;
  switch (tmpl.family) {
    case ChatTemplateFamily::kLlama3:
      // Meta's template: BOS, then per message a header, the trimmed content
      // and <|eot_id|>.
      out = tmpl.bos;
      for (const ChatMessage& m : messages) {
        out += fmt::format(
            "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", m.role,
            Trim(m.content));
      }
      if (add_generation_prompt) {
        out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      }
      return out;
    case ChatTemplateFamily::kChatMl:
      if (!tmpl.default_system.empty() &&
          (messages.empty() || messages[0].role != "system")) {
        out += fmt::format("<|im_start|>system\n{}<|im_end|>\n",
                           tmpl.default_system);
      }
      for (const ChatMessage& m : messages) {
        out += fmt::format("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatTemplateFamily::kLlama2:
    case ChatTemplateFamily::kMistral: {
      const bool llama2 = tmpl.family == ChatTemplateFamily::kLlama2;
      std::string system;
      size_t first = 0;
      if (!messages.empty() && messages[0].role == "system") {
        system = std::string(Trim(messages[0].content));
        first = 1;
      }
      if (!llama2) out = tmpl.bos;  // Mistral: one BOS for the conversation.
      bool expect_user = true;
      for (size_t i = first; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if ((m.role == "user") != expect_user) {
          return absl::InvalidArgumentError(
              "this chat template needs user and assistant messages to "
              "alternate, starting with user");
        }
        expect_user = !expect_user;
        if (m.role == "assistant") {
          out += llama2 ? fmt::format(" {} {}", Trim(m.content), tmpl.eos)
                        : fmt::format("{}{}", Trim(m.content), tmpl.eos);
          continue;
        }
        std::string content(Trim(m.content));
        if (i == first && !system.empty()) {
          content = llama2 ? fmt::format("<<SYS>>\n{}\n<</SYS>>\n\n{}", system,
                                         content)
                           : fmt::format("{}\n\n{}", system, content);
        }
        // Llama 2: every user turn starts with BOS.
        out +=
            fmt::format("{}[INST] {} [/INST]", llama2 ? tmpl.bos : "", content);
      }
      // The prompt already ends with [/INST]: the assistant answers next.
      (void)add_generation_prompt;
      return out;
    }
  }
  return out;
}

}  // namespace tessera
