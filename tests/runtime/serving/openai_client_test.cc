// The official `openai` npm client against the server (needs node, npm and
// the npm registry; skips otherwise). Labelled slow: npm install takes seconds.
#include <cstdio>
#include <string>

#include "fmt/format.h"
#include "gtest/gtest.h"
#include "tests/runtime/serving/server_fixture.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using namespace serving_test;

// CI: the official `openai` npm client streams a chat completion. Skips when
// node or the npm registry is unavailable.
TEST(ServerTest, OfficialOpenAiNodeClientStreamsChat) {
  if (testing::RunCommand("command -v node && command -v npm").exit_code != 0) {
    GTEST_SKIP() << "node/npm not installed";
  }
  const std::string dir = testing::MakeTempDir();
  auto install = testing::RunCommand(
      "cd " + dir +
      " && timeout 120 npm install --no-audit --no-fund --silent openai@4 "
      ">/dev/null 2>&1");
  if (install.exit_code != 0) {
    GTEST_SKIP() << "npm install openai failed (offline?)";
  }
  ServerOptions opts;
  opts.api_key = "test-key";
  ServerFixture f({}, opts);
  const std::string script = dir + "/client.mjs";
  {
    std::FILE* out = std::fopen(script.c_str(), "w");
    ASSERT_NE(out, nullptr);
    std::fputs(R"JS(
import OpenAI from 'openai';
const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'test-key' });
const stream = await client.chat.completions.create({
  model: 'fake-model', messages: [{ role: 'user', content: 'hi' }],
  max_tokens: 8, stream: true, stream_options: { include_usage: true } });
let text = ''; let usage = null; let finish = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    text += c.delta?.content ?? '';
    if (c.finish_reason) finish = c.finish_reason;
  }
}
const models = await client.models.list();
console.log(JSON.stringify({ text, usage, finish, model: models.data[0].id }));
)JS",
               out);
    std::fclose(out);
  }
  auto run = testing::RunCommand(
      fmt::format("cd {} && node client.mjs http://127.0.0.1:{}/v1", dir,
                  f.server().port()));
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  json j = json::parse(run.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << run.out;
  EXPECT_EQ(j["text"].get<std::string>().size(), 8u);
  EXPECT_EQ(j["finish"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 8);
  EXPECT_EQ(j["model"], "fake-model");
}

}  // namespace
}  // namespace tessera
