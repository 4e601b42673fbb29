#include "runtime/formats/gguf.h"

#include <cstring>
#include <string>
#include <vector>

#include "base/mapped_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

Tensor Iota(DType dtype, Shape shape) {
  Tensor t = Tensor::Empty(DType::kF32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = 0.5f * i - 3;
  if (dtype == DType::kF32) return t;
  Tensor h = Tensor::Empty(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    h.data<uint16_t>()[i] = dtype == DType::kF16
                                ? FloatToHalf(t.data<float>()[i])
                                : FloatToBF16(t.data<float>()[i]);
  }
  return h;
}

// Writes a small file with every metadata type and three tensors.
std::string WriteSample(const std::string& dir, uint64_t alignment = 32) {
  GgufWriter w(alignment);
  w.SetKv("general.architecture", GgufValue::String("llama"));
  w.SetKv("u8", GgufValue::Uint8(200));
  w.SetKv("i8", GgufValue::Int8(-100));
  w.SetKv("u16", GgufValue::Uint16(60000));
  w.SetKv("i16", GgufValue::Int16(-30000));
  w.SetKv("u32", GgufValue::Uint32(4000000000u));
  w.SetKv("i32", GgufValue::Int32(-2000000000));
  w.SetKv("u64", GgufValue::Uint64(1ull << 40));
  w.SetKv("i64", GgufValue::Int64(-(1ll << 40)));
  w.SetKv("f32", GgufValue::Float32(1.5f));
  w.SetKv("f64", GgufValue::Float64(2.25));
  w.SetKv("b", GgufValue::Bool(true));
  w.SetKv("strs", GgufValue::StringArray({"a", "", "héllo"}));
  const std::vector<int32_t> ints = {1, -2, 3};
  w.SetKv("ints", GgufValue::Int32Array(ints));
  const std::vector<float> floats = {0.25f, -1.0f};
  w.SetKv("floats", GgufValue::Float32Array(floats));
  std::vector<GgufValue> nested;
  nested.push_back(GgufValue::Int32Array(ints));
  nested.push_back(GgufValue::Int32Array({}));
  w.SetKv("nested", GgufValue::ValueArray(GgufType::kArray, nested));
  EXPECT_TRUE(w.AddTensor("a", Iota(DType::kF32, {3, 5})).ok());
  EXPECT_TRUE(w.AddTensor("b", Iota(DType::kF16, {7})).ok());
  EXPECT_TRUE(w.AddTensor("c", Iota(DType::kBF16, {2, 2, 3})).ok());
  const std::string path = dir + "/sample.gguf";
  EXPECT_TRUE(w.Write(path).ok());
  return path;
}

TEST(GgufTest, RoundTripsMetadataAndTensors) {
  const std::string path = WriteSample(testing::MakeTempDir());
  absl::StatusOr<std::shared_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(*g.GetString("general.architecture"), "llama");
  EXPECT_EQ(*g.GetInt("u8"), 200);
  EXPECT_EQ(*g.GetInt("i8"), -100);
  EXPECT_EQ(*g.GetInt("u16"), 60000);
  EXPECT_EQ(*g.GetInt("i16"), -30000);
  EXPECT_EQ(*g.GetInt("u32"), 4000000000ll);
  EXPECT_EQ(*g.GetInt("i32"), -2000000000);
  EXPECT_EQ(*g.GetInt("u64"), 1ll << 40);
  EXPECT_EQ(*g.GetInt("i64"), -(1ll << 40));
  EXPECT_EQ(*g.GetFloat("f32"), 1.5);
  EXPECT_EQ(*g.GetFloat("f64"), 2.25);
  EXPECT_TRUE(*g.GetBool("b"));
  EXPECT_EQ(g.Find("u32")->type(), GgufType::kUint32);
  EXPECT_EQ(g.Find("b")->type(), GgufType::kBool);
  EXPECT_THAT(*g.GetStringArray("strs"),
              ::testing::ElementsAre("a", "", "héllo"));
  EXPECT_THAT(*g.GetInt32Array("ints"), ::testing::ElementsAre(1, -2, 3));
  EXPECT_THAT(*g.GetFloat32Array("floats"),
              ::testing::ElementsAre(0.25f, -1.0f));
  const GgufValue* nested = g.Find("nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->array_size(), 2u);
  EXPECT_THAT(*nested->values()[0].AsInt32Array(),
              ::testing::ElementsAre(1, -2, 3));
  // Metadata keeps file order.
  EXPECT_EQ(g.metadata().front().first, "general.architecture");
  EXPECT_EQ(g.metadata().back().first, "nested");

  ASSERT_EQ(g.tensors().size(), 3u);
  EXPECT_EQ(g.tensors()[0].name, "a");
  EXPECT_EQ(g.tensors()[1].name, "b");
  EXPECT_EQ(g.tensors()[2].name, "c");
  for (const char* name : {"a", "b", "c"}) {
    const GgufTensorInfo* info = g.FindTensor(name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->offset % 32, 0u);
    EXPECT_EQ((g.data_offset() + info->offset) % 32, 0u);
  }
  absl::StatusOr<Tensor> a = g.TensorView("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->DebugString(), "f32[3, 5]");
  Tensor ref = Iota(DType::kF32, {3, 5});
  EXPECT_EQ(std::memcmp(a->raw_data(), ref.raw_data(), ref.nbytes()), 0);
  EXPECT_EQ(g.FindTensor("a")->ne, (std::vector<int64_t>{5, 3}));
  absl::StatusOr<Tensor> c = g.TensorView("c");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->DebugString(), "bf16[2, 2, 3]");
  Tensor cref = Iota(DType::kBF16, {2, 2, 3});
  EXPECT_EQ(std::memcmp(c->raw_data(), cref.raw_data(), cref.nbytes()), 0);
  EXPECT_EQ(g.TensorView("zz").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(g.GetInt("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(g.GetInt("strs").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*g.GetIntOr("missing", 7), 7);
}

TEST(GgufTest, CustomAlignmentIsRecordedAndHonored) {
  const std::string path = WriteSample(testing::MakeTempDir(), 64);
  absl::StatusOr<std::shared_ptr<GgufFile>> f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ((*f)->Find("general.alignment")->type(), GgufType::kUint32);
  EXPECT_EQ((*f)->data_offset() % 64, 0u);
  for (const GgufTensorInfo& t : (*f)->tensors()) EXPECT_EQ(t.offset % 64, 0u);
}

TEST(GgufTest, ExactLayoutOfATinyFile) {
  GgufWriter w;
  w.SetKv("k", GgufValue::Uint32(7));
  ASSERT_TRUE(w.AddTensor("t", Iota(DType::kF32, {2})).ok());
  const std::string path = testing::MakeTempDir() + "/t.gguf";
  ASSERT_TRUE(w.Write(path).ok());
  std::string bytes = *ReadFileToString(path);
  std::string expect;
  auto put = [&](const void* p, size_t n) {
    expect.append(static_cast<const char*>(p), n);
  };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  put("GGUF", 4);
  u32(3);
  u64(1);  // tensors
  u64(1);  // kv
  u64(1);
  put("k", 1);
  u32(4);  // uint32
  u32(7);
  u64(1);
  put("t", 1);
  u32(1);  // n_dims
  u64(2);
  u32(0);  // F32
  u64(0);  // offset
  while (expect.size() % 32 != 0) expect.push_back('\0');
  const float data[2] = {-3.0f, -2.5f};
  put(data, 8);
  while (expect.size() % 32 != 0) expect.push_back('\0');
  EXPECT_EQ(bytes, expect);
}

absl::Status ParseBytes(const std::string& bytes) {
  return GgufFile::Parse(
             {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()},
             "mem.gguf", nullptr)
      .status();
}

TEST(GgufTest, EveryTruncationIsAnError) {
  const std::string path = WriteSample(testing::MakeTempDir());
  const std::string bytes = *ReadFileToString(path);
  ASSERT_TRUE(ParseBytes(bytes).ok());
  // The last tensor ends before the final padding; cuts inside that padding
  // are still valid files.
  const std::shared_ptr<GgufFile> f = *GgufFile::Open(path);
  const GgufTensorInfo& last = f->tensors().back();
  const size_t end = f->data_offset() + last.offset + last.nbytes;
  for (size_t n = 0; n < end; ++n) {
    absl::Status s = ParseBytes(bytes.substr(0, n));
    ASSERT_FALSE(s.ok()) << "cut at " << n;
    EXPECT_THAT(std::string(s.message()), HasSubstr("mem.gguf")) << n;
  }
}

TEST(GgufTest, RejectsBadMagicVersionAndTypes) {
  const std::string path = WriteSample(testing::MakeTempDir());
  const std::string bytes = *ReadFileToString(path);
  std::string bad = bytes;
  bad[0] = 'X';
  EXPECT_THAT(std::string(ParseBytes(bad).message()), HasSubstr("not a GGUF"));
  bad = bytes;
  bad[4] = 9;
  EXPECT_THAT(std::string(ParseBytes(bad).message()), HasSubstr("version 9"));
  // First KV's value type sits after magic, version, counts, key length and
  // the 20-byte key "general.architecture".
  bad = bytes;
  bad[24 + 8 + 20] = 99;
  absl::Status s = ParseBytes(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("general.architecture"));
  // A huge tensor count.
  bad = bytes;
  const uint64_t huge = ~0ull;
  std::memcpy(&bad[8], &huge, 8);
  EXPECT_FALSE(ParseBytes(bad).ok());
  // A huge metadata count.
  bad = bytes;
  std::memcpy(&bad[16], &huge, 8);
  EXPECT_FALSE(ParseBytes(bad).ok());
}

TEST(GgufTest, RejectsTensorOutsideFileAndUnknownType) {
  const std::string dir = testing::MakeTempDir();
  auto corrupt_tensor = [&](uint32_t type, uint64_t offset) {
    GgufWriter w;
    EXPECT_TRUE(w.AddTensor("weight", Iota(DType::kF32, {4})).ok());
    const std::string path = dir + "/x.gguf";
    EXPECT_TRUE(w.Write(path).ok());
    std::string b = *ReadFileToString(path);
    // header 24, name 8+6, n_dims 4, ne 8, type 4, offset 8.
    std::memcpy(&b[24 + 14 + 4 + 8], &type, 4);
    std::memcpy(&b[24 + 14 + 4 + 8 + 4], &offset, 8);
    return ParseBytes(b);
  };
  EXPECT_TRUE(corrupt_tensor(0, 0).ok());
  absl::Status s = corrupt_tensor(0, 1u << 20);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'weight'"));
  s = corrupt_tensor(0, ~0ull & ~31ull);
  EXPECT_FALSE(s.ok());
  s = corrupt_tensor(0, 3);  // Misaligned.
  EXPECT_THAT(std::string(s.message()), HasSubstr("alignment"));
  s = corrupt_tensor(77, 0);
  EXPECT_THAT(std::string(s.message()), HasSubstr("unknown ggml type 77"));
  s = corrupt_tensor(8, 0);  // Q8_0 needs rows of 32.
  EXPECT_FALSE(s.ok());
}

// Found by gguf_fuzzer (UBSan): a leading zero dimension made numel 0, so the
// overflow check passed for the others, whose product (2^80) overflowed later
// in the tensor's shape arithmetic. Such a tensor is now rejected.
TEST(GgufTest, RejectsHugeDimensionsBesideAZeroOne) {
  std::string b;
  auto put = [&](const void* p, size_t n) {
    b.append(static_cast<const char*>(p), n);
  };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  put("GGUF", 4);
  u32(3);
  u64(1);  // tensors
  u64(0);  // kv
  u64(1);
  put("t", 1);
  u32(3);  // n_dims
  u64(0);
  u64(uint64_t{1} << 40);
  u64(uint64_t{1} << 40);
  u32(0);  // F32
  u64(0);  // offset
  while (b.size() % 32 != 0) b.push_back('\0');
  const absl::Status s = ParseBytes(b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("dimensions overflow"));
}

TEST(GgufTest, ReadsBenchTiny) {
  TESSERA_REQUIRE_SHARED(shared);
  absl::StatusOr<std::shared_ptr<GgufFile>> f =
      GgufFile::Open(shared + "/models/bench-tiny/model-f16.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(*g.GetString("general.architecture"), "llama");
  EXPECT_EQ(*g.GetInt("llama.embedding_length"), 256);
  EXPECT_EQ(*g.GetInt("llama.block_count"), 4);
  EXPECT_EQ(g.GetStringArray("tokenizer.ggml.tokens")->size(), 32000u);
  EXPECT_EQ(g.GetFloat32Array("tokenizer.ggml.scores")->size(), 32000u);
  EXPECT_EQ(g.GetInt32Array("tokenizer.ggml.token_type")->size(), 32000u);
  absl::StatusOr<Tensor> emb = g.TensorView("token_embd.weight");
  ASSERT_TRUE(emb.ok()) << emb.status();
  EXPECT_EQ(emb->DebugString(), "f16[32000, 256]");
}

}  // namespace
}  // namespace tessera
