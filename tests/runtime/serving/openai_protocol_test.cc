// Client-side parsing of streamed completion events (ParseStreamEvent): the
// shapes our server sends, and the malformed or foreign ones another server
// might, none of which may throw.
#include "runtime/internal/openai_protocol.h"

#include <string>

#include "gtest/gtest.h"

namespace tessera::internal {
namespace {

using Kind = StreamEvent::Kind;

TEST(ParseStreamEventTest, ReadsCompletionAndChatChunks) {
  StreamEvent e = ParseStreamEvent(R"({"choices":[{"text":"Hi"}]})", false);
  EXPECT_EQ(e.kind, Kind::kChunk);
  EXPECT_EQ(e.text, "Hi");
  EXPECT_EQ(e.completion_tokens, -1);

  e = ParseStreamEvent(R"({"choices":[{"delta":{"content":"Yo"}}]})", true);
  EXPECT_EQ(e.kind, Kind::kChunk);
  EXPECT_EQ(e.text, "Yo");

  // A chat stream's first chunk carries only the role.
  e = ParseStreamEvent(R"({"choices":[{"delta":{"role":"assistant"}}]})", true);
  EXPECT_EQ(e.kind, Kind::kChunk);
  EXPECT_EQ(e.text, "");

  e = ParseStreamEvent(R"({"choices":[],"usage":{"completion_tokens":7}})",
                       false);
  EXPECT_EQ(e.kind, Kind::kChunk);
  EXPECT_EQ(e.completion_tokens, 7);

  EXPECT_EQ(ParseStreamEvent("[DONE]", true).kind, Kind::kDone);
}

TEST(ParseStreamEventTest, ErrorObjectGivesItsMessage) {
  const StreamEvent e =
      ParseStreamEvent(R"({"error":{"message":"too long","code":400}})", true);
  EXPECT_EQ(e.kind, Kind::kError);
  EXPECT_EQ(e.error, "too long");
}

// Regression: bench serve read these with json::value() and operator[],
// which throw (and, for a float token count, cast out of range: undefined
// behaviour), so a foreign server's reply could abort the benchmark.
TEST(ParseStreamEventTest, ForeignShapesNeverThrow) {
  StreamEvent e = ParseStreamEvent(R"({"error":"overloaded"})", false);
  EXPECT_EQ(e.kind, Kind::kError);
  EXPECT_EQ(e.error, "server error: \"overloaded\"");

  e = ParseStreamEvent(R"({"error":{"message":5}})", false);
  EXPECT_EQ(e.kind, Kind::kError);
  EXPECT_EQ(e.error, R"(server error: {"message":5})");

  e = ParseStreamEvent(R"({"usage":{"completion_tokens":1e30}})", false);
  EXPECT_EQ(e.kind, Kind::kChunk);
  EXPECT_EQ(e.completion_tokens, -1);

  e = ParseStreamEvent(R"({"usage":{"completion_tokens":-3}})", false);
  EXPECT_EQ(e.completion_tokens, -1);

  for (const char* data :
       {R"(5)", R"([1,2])", R"("text")", R"(null)", R"({"choices":5})",
        R"({"choices":[5]})", R"({"choices":[{"delta":"x"}]})",
        R"({"choices":[{"text":["a"]}]})", R"({"usage":[]})",
        "{\"a\":", "\xff\xfe"}) {
    SCOPED_TRACE(data);
    e = ParseStreamEvent(data, true);
    EXPECT_EQ(e.text, "");
    e = ParseStreamEvent(data, false);
    EXPECT_EQ(e.text, "");
  }
  EXPECT_EQ(ParseStreamEvent("5", false).kind, Kind::kError);
  EXPECT_EQ(ParseStreamEvent(R"({"choices":5})", false).kind, Kind::kChunk);
}

}  // namespace
}  // namespace tessera::internal
