// Chat templates: turning OpenAI-style messages into the prompt text a model
// was trained on, for the common families (Llama 3, Llama 2, Mistral,
// ChatML/Qwen).
//
// tessera does not run Jinja: the family is recognised from the model's own
// template (GGUF tokenizer.chat_template / tokenizer_config.json
// chat_template) by its distinctive markers, and rendered by code. A model
// without a template, or with one tessera does not recognise, uses ChatML.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tessera {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant".
  std::string content;
};

enum class ChatTemplateFamily {
  kChatMl,   // <|im_start|>role\n...<|im_end|> (Qwen, many fine-tunes).
  kLlama3,   // <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
  kLlama2,   // <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] ... </s>
  kMistral,  // <s>[INST] ... [/INST]...</s>
};

// "chatml", "llama3", "llama2", "mistral".
std::string_view ChatTemplateFamilyName(ChatTemplateFamily family);

// The family of a Jinja template by its markers: "<|start_header_id|>" ->
// Llama 3, "<|im_start|>" -> ChatML, "[INST]" with "<<SYS>>" -> Llama 2,
// "[INST]" -> Mistral; anything else (including empty) -> ChatML.
ChatTemplateFamily DetectChatTemplate(std::string_view jinja);

struct ChatTemplate {
  ChatTemplateFamily family = ChatTemplateFamily::kChatMl;
  std::string bos;  // BOS text the template writes ("<s>"), may be empty.
  std::string eos;  // EOS text ending assistant turns ("</s>").
  // ChatML: system prompt the model's template adds when the conversation
  // has none (Qwen2's "You are a helpful assistant."), may be empty.
  std::string default_system;
};

// The template for `tokenizer`: family from its chat_template(), BOS/EOS
// texts from its vocabulary.
ChatTemplate ChatTemplateFor(const Tokenizer& tokenizer);

// Renders `messages` (roles system/user/assistant; a system message must come
// first). `add_generation_prompt` ends with the assistant header. Tokenize the
// result with add_special=false, parse_special=true: it already holds BOS.
// InvalidArgument for an unknown role or a misplaced system message.
absl::StatusOr<std::string> RenderChat(const ChatTemplate& tmpl,
                                       absl::Span<const ChatMessage> messages,
                                       bool add_generation_prompt);

}  // namespace tessera
