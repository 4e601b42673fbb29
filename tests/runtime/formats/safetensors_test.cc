#include "runtime/formats/safetensors.h"

#include <cstring>
#include <filesystem>
#include <string>

#include "base/mapped_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/test_util.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

Tensor Iota(DType dtype, Shape shape) {
  Tensor t = Tensor::Empty(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = 0.25f * i - 1;
    switch (dtype) {
      case DType::kF32:
        t.data<float>()[i] = v;
        break;
      case DType::kF16:
        t.data<uint16_t>()[i] = FloatToHalf(v);
        break;
      case DType::kBF16:
        t.data<uint16_t>()[i] = FloatToBF16(v);
        break;
      case DType::kI32:
        t.data<int32_t>()[i] = static_cast<int32_t>(i) - 5;
        break;
      default:
        break;
    }
  }
  return t;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

TEST(SafetensorsTest, RoundTrip) {
  const std::string dir = testing::MakeTempDir();
  SafetensorsWriter w;
  w.SetMetadata("format", "pt");
  const Tensor a = Iota(DType::kF32, {3, 4});
  const Tensor b = Iota(DType::kF16, {5});
  const Tensor c = Iota(DType::kBF16, {2, 3});
  const Tensor d = Iota(DType::kI32, {3});
  ASSERT_TRUE(w.AddTensor("a", a).ok());
  ASSERT_TRUE(w.AddTensor("b", b).ok());
  ASSERT_TRUE(w.AddTensor("c", c).ok());
  ASSERT_TRUE(w.AddTensor("d", d).ok());
  ASSERT_TRUE(w.Write(dir + "/x.safetensors").ok());
  auto f = SafetensorsFile::Open(dir + "/x.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  ASSERT_EQ((*f)->tensors().size(), 4u);
  EXPECT_EQ((*f)->tensors()[0].name, "a");
  EXPECT_TRUE(SameBytes(*(*f)->TensorView("a"), a));
  EXPECT_TRUE(SameBytes(*(*f)->TensorView("b"), b));
  EXPECT_TRUE(SameBytes(*(*f)->TensorView("c"), c));
  EXPECT_TRUE(SameBytes(*(*f)->TensorView("d"), d));
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*f)->TensorView("a")->raw_data()) % 8,
            0u);
  EXPECT_EQ((*f)->TensorView("zz").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, ShardedIndex) {
  const std::string dir = testing::MakeTempDir();
  const Tensor a = Iota(DType::kF32, {4});
  const Tensor b = Iota(DType::kF16, {6});
  SafetensorsWriter w1, w2;
  ASSERT_TRUE(w1.AddTensor("a", a).ok());
  ASSERT_TRUE(w2.AddTensor("b", b).ok());
  ASSERT_TRUE(w1.Write(dir + "/model-00001-of-00002.safetensors").ok());
  ASSERT_TRUE(w2.Write(dir + "/model-00002-of-00002.safetensors").ok());
  ASSERT_TRUE(WriteStringToFile(dir + "/model.safetensors.index.json",
                                R"({"metadata": {"total_size": 20},
  "weight_map": {"a": "model-00001-of-00002.safetensors",
                 "b": "model-00002-of-00002.safetensors"}})")
                  .ok());
  auto ck = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_THAT(ck->TensorNames(), ::testing::ElementsAre("a", "b"));
  EXPECT_TRUE(SameBytes(*ck->TensorView("a"), a));
  EXPECT_TRUE(SameBytes(*ck->TensorView("b"), b));
  EXPECT_EQ(ck->files().size(), 2u);

  // An index naming a tensor its shard lacks.
  ASSERT_TRUE(
      WriteStringToFile(
          dir + "/model.safetensors.index.json",
          R"({"weight_map": {"c": "model-00001-of-00002.safetensors"}})")
          .ok());
  absl::Status s = SafetensorsCheckpoint::Open(dir).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'c'"));
}

absl::Status ParseBytes(const std::string& bytes) {
  return SafetensorsFile::Parse(
             {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()},
             "mem.safetensors", nullptr)
      .status();
}

std::string Build(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data_bytes, '\0');
}

TEST(SafetensorsTest, EveryTruncationIsAnError) {
  const std::string dir = testing::MakeTempDir();
  SafetensorsWriter w;
  ASSERT_TRUE(w.AddTensor("a", Iota(DType::kF32, {3, 4})).ok());
  ASSERT_TRUE(w.AddTensor("b", Iota(DType::kF16, {5})).ok());
  ASSERT_TRUE(w.Write(dir + "/x.safetensors").ok());
  const std::string bytes = *ReadFileToString(dir + "/x.safetensors");
  ASSERT_TRUE(ParseBytes(bytes).ok());
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::Status s = ParseBytes(bytes.substr(0, n));
    ASSERT_FALSE(s.ok()) << n;
    EXPECT_THAT(std::string(s.message()), HasSubstr("mem.safetensors"));
  }
}

TEST(SafetensorsTest, RejectsBadHeaders) {
  auto msg = [](const std::string& b) {
    return std::string(ParseBytes(b).message());
  };
  std::string huge(8, '\xff');
  EXPECT_THAT(msg(huge + "{}"), HasSubstr("header length"));
  EXPECT_THAT(msg(Build("[1,2]", 0)), HasSubstr("not a JSON object"));
  EXPECT_THAT(msg(Build("{\"a\": ", 0)), HasSubstr("not a JSON object"));
  EXPECT_THAT(
      msg(Build(R"({"w":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})", 8)),
      HasSubstr("unknown dtype"));
  EXPECT_THAT(
      msg(Build(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                8)),
      HasSubstr("'w'"));
  EXPECT_THAT(
      msg(Build(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                4)),
      HasSubstr("outside"));
  EXPECT_THAT(
      msg(Build(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                8)),
      HasSubstr("non-integer"));
  EXPECT_THAT(
      msg(Build(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                            "v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                12)),
      HasSubstr("overlap"));
  EXPECT_THAT(msg(Build(R"({"__metadata__":{"a":1}})", 0)),
              HasSubstr("not a string"));
  EXPECT_THAT(
      msg(Build(
          R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})",
          8)),
      HasSubstr("overflow"));
  // Unsupported but known dtypes parse; viewing them fails.
  const std::string f64 =
      Build(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8);
  auto f = SafetensorsFile::Parse(
      {reinterpret_cast<const uint8_t*>(f64.data()), f64.size()}, "x", nullptr);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(std::string((*f)->TensorView("w").status().message()),
              HasSubstr("F64 is not supported"));
}

TEST(SafetensorsTest, ReadsBenchTinyHf) {
  TESSERA_REQUIRE_SHARED(shared);
  auto ck = SafetensorsCheckpoint::Open(shared + "/models/bench-tiny/hf");
  ASSERT_TRUE(ck.ok()) << ck.status();
  auto emb = ck->TensorView("model.embed_tokens.weight");
  ASSERT_TRUE(emb.ok());
  EXPECT_EQ(emb->DebugString(), "f16[32000, 256]");
  EXPECT_EQ(
      ck->TensorView("model.layers.0.input_layernorm.weight")->DebugString(),
      "f32[256]");
}

}  // namespace
}  // namespace tessera
