#include "runtime/chat_template.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

const std::vector<ChatMessage> kChat = {{"system", "Be brief."},
                                        {"user", "Hi"},
                                        {"assistant", "Hello!"},
                                        {"user", "Bye"}};

TEST(ChatTemplateTest, DetectsFamiliesFromMarkers) {
  EXPECT_EQ(DetectChatTemplate("{{ '<|start_header_id|>' + role }}"),
            ChatTemplateFamily::kLlama3);
  EXPECT_EQ(DetectChatTemplate("{{'<|im_start|>' + message['role']}}"),
            ChatTemplateFamily::kChatMl);
  EXPECT_EQ(DetectChatTemplate("[INST] <<SYS>>\\n"),
            ChatTemplateFamily::kLlama2);
  EXPECT_EQ(DetectChatTemplate("{{ '[INST] ' + content + ' [/INST]' }}"),
            ChatTemplateFamily::kMistral);
  EXPECT_EQ(DetectChatTemplate(""), ChatTemplateFamily::kChatMl);
  EXPECT_EQ(DetectChatTemplate("{% weird %}"), ChatTemplateFamily::kChatMl);
}

TEST(ChatTemplateTest, Llama3) {
  ChatTemplate t{ChatTemplateFamily::kLlama3, "<|begin_of_text|>", "", ""};
  auto s = RenderChat(t, kChat, true);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            "Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "Bye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, ChatMlWithDefaultSystem) {
  ChatTemplate t{ChatTemplateFamily::kChatMl, "", "",
                 "You are a helpful assistant."};
  auto s = RenderChat(t, {{"user", "Hi"}}, true);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  auto s2 = RenderChat(t, kChat, false);
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ(*s2,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi"
            "<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>user\nBye<|im_end|>\n");
}

TEST(ChatTemplateTest, Llama2) {
  ChatTemplate t{ChatTemplateFamily::kLlama2, "<s>", "</s>", ""};
  auto s = RenderChat(t, kChat, true);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s,
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s>"
            "<s>[INST] Bye [/INST]");
}

TEST(ChatTemplateTest, Mistral) {
  ChatTemplate t{ChatTemplateFamily::kMistral, "<s>", "</s>", ""};
  auto s = RenderChat(
      t, {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}}, true);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, "<s>[INST] Hi [/INST]Hello!</s>[INST] Bye [/INST]");
}

TEST(ChatTemplateTest, BadConversationsAreErrors) {
  ChatTemplate t{ChatTemplateFamily::kLlama2, "<s>", "</s>", ""};
  EXPECT_FALSE(RenderChat(t, {{"user", "a"}, {"system", "b"}}, true).ok());
  EXPECT_FALSE(RenderChat(t, {{"robot", "a"}}, true).ok());
  EXPECT_FALSE(RenderChat(t, {{"user", "a"}, {"user", "b"}}, true).ok());
}

}  // namespace
}  // namespace tessera
