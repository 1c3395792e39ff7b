// safetensors reading and writing: round trips, the header's padding, F16/BF16 conversion,
// and one test per kind of corrupt file (each must give a vacc::Error naming the file and,
// where there is one, the tensor).
#include "vacc/io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "vacc/core/error.h"

namespace vacc {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("vacc_safetensors_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // A file with the given header text (its length written in front) and `data_bytes` bytes of
  // data after it.
  std::string write_raw(const std::string& header, size_t data_bytes,
                        const std::string& name = "bad.safetensors") {
    std::string path = file(name);
    std::ofstream out(path, std::ios::binary);
    uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(header.data(), std::streamsize(header.size()));
    std::string data(data_bytes, '\0');
    out.write(data.data(), std::streamsize(data.size()));
    return path;
  }

  // Expects opening `path` to throw a vacc::Error whose message names the file and contains
  // every one of `parts`.
  static void expect_open_error(const std::string& path, const std::vector<std::string>& parts) {
    try {
      SafetensorsFile::open(path);
      FAIL() << "opening " << path << " did not fail";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
      for (const std::string& p : parts)
        EXPECT_NE(msg.find(p), std::string::npos) << "message lacks \"" << p << "\": " << msg;
    }
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, RoundTripF32Bf16I32AndMetadata) {
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 1e-20f, 7.0f, -0.0f};
  std::vector<bf16> b = {float_to_bf16(0.5f), float_to_bf16(-3.0f), float_to_bf16(1.0f / 3.0f)};
  std::vector<int32_t> c = {-100, 0, 151643, 7};
  std::string path = file("round.safetensors");
  write_safetensors(path,
                    {{"model.a.weight", "F32", {2, 3}, a.data()},
                     {"b", safetensors_dtype(DType::BF16), {3}, b.data()},
                     {"empty", "F32", {0, 4}, nullptr},
                     {"ids", safetensors_dtype(DType::I32), {2, 2}, c.data()}},
                    {{"format", "pt"}, {"note", "hello"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hello");
  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_THROW(f.at("missing"), Error);

  const SafetensorsEntry& ea = f.at("model.a.weight");
  EXPECT_EQ(ea.dtype, "F32");
  EXPECT_EQ(ea.shape, (Shape{2, 3}));
  EXPECT_EQ(f.read_f32(ea), a);

  const SafetensorsEntry& eb = f.at("b");
  EXPECT_EQ(eb.dtype, "BF16");
  std::vector<float> got_b = f.read_f32(eb);
  ASSERT_EQ(got_b.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(got_b[i], bf16_to_float(b[i]));
  EXPECT_EQ(std::memcmp(f.data(eb), b.data(), 6), 0);

  EXPECT_EQ(f.at("empty").numel(), 0);
  EXPECT_EQ(f.at("empty").nbytes(), 0u);

  std::vector<int32_t> got_c(4);
  f.read_i32(f.at("ids"), got_c.data());
  EXPECT_EQ(got_c, c);
  EXPECT_THROW(f.read_f32(f.at("ids")), Error);
  std::vector<int32_t> scratch(6);
  EXPECT_THROW(f.read_i32(ea, scratch.data()), Error);

  // Moving keeps the mapping valid.
  SafetensorsFile moved = std::move(f);
  EXPECT_EQ(moved.read_f32(moved.at("model.a.weight")), a);
}

TEST_F(SafetensorsTest, HeaderIsPaddedWithSpacesToAMultipleOf8) {
  std::vector<float> v(5, 1.0f);
  for (int len = 1; len <= 9; ++len) {
    std::string path = file("pad" + std::to_string(len) + ".safetensors");
    write_safetensors(path, {{std::string(size_t(len), 'x'), "F32", {5}, v.data()}});
    std::ifstream in(path, std::ios::binary);
    uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    EXPECT_EQ(n % 8, 0u) << "name length " << len;
    std::string header(n, '\0');
    in.read(header.data(), std::streamsize(n));
    size_t last = header.find_last_not_of(' ');
    ASSERT_NE(last, std::string::npos);
    EXPECT_EQ(header[last], '}');
    EXPECT_LT(n - 1 - last, 8u);
    EXPECT_EQ(fs::file_size(path), 8 + n + 20);
    EXPECT_EQ(SafetensorsFile::open(path).read_f32(
                  SafetensorsFile::open(path).at(std::string(size_t(len), 'x'))),
              v);
  }
}

TEST_F(SafetensorsTest, F16IsConvertedToF32) {
  // 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), -0, +inf, 0.333008 (0x3555).
  std::vector<uint16_t> h = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8000, 0x7c00, 0x3555};
  std::string path = file("f16.safetensors");
  write_safetensors(path, {{"h", "F16", {8}, h.data()}});
  SafetensorsFile f = SafetensorsFile::open(path);
  std::vector<float> got = f.read_f32(f.at("h"));
  EXPECT_EQ(got[0], 1.0f);
  EXPECT_EQ(got[1], -2.0f);
  EXPECT_EQ(got[2], 0.5f);
  EXPECT_EQ(got[3], 65504.0f);
  EXPECT_EQ(got[4], std::ldexp(1.0f, -24));
  EXPECT_EQ(got[5], 0.0f);
  EXPECT_TRUE(std::signbit(got[5]));
  EXPECT_TRUE(std::isinf(got[6]) && got[6] > 0);
  EXPECT_FLOAT_EQ(got[7], 0.333251953125f);
}

TEST_F(SafetensorsTest, ReadsAFileWrittenByHand) {
  // Unpadded header, tensors listed out of offset order, __metadata__ present.
  std::string path = write_raw(
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}})",
      12, "hand.safetensors");
  SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "a");  // sorted by offset
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST_F(SafetensorsTest, FileShorterThan8Bytes) {
  std::string path = file("short.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  expect_open_error(path, {"8-byte"});
}

TEST_F(SafetensorsTest, MissingFile) {
  expect_open_error(file("nope.safetensors"), {"cannot open"});
}

TEST_F(SafetensorsTest, HeaderLengthBeyondTheFile) {
  std::string path = file("long.safetensors");
  {
    std::ofstream out(path, std::ios::binary);
    uint64_t n = 1000;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  }
  expect_open_error(path, {"beyond the end"});
}

TEST_F(SafetensorsTest, HeaderLengthOverTheCap) {
  std::string path = file("huge.safetensors");
  {
    std::ofstream out(path, std::ios::binary);
    uint64_t n = uint64_t(1) << 40;
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << "{}";
  }
  expect_open_error(path, {"over the limit"});
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  expect_open_error(write_raw(R"({"a": {"dtype": "F32", )", 0), {"not valid JSON"});
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  expect_open_error(write_raw(R"([1, 2, 3])", 0), {"not a JSON object"});
}

TEST_F(SafetensorsTest, UnknownDtype) {
  expect_open_error(write_raw(R"({"layer.w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4),
                    {"layer.w", "unknown dtype", "F33"});
}

TEST_F(SafetensorsTest, NegativeShape) {
  expect_open_error(
      write_raw(R"({"layer.w":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}})", 8),
      {"layer.w", "negative"});
}

TEST_F(SafetensorsTest, NonIntegerShape) {
  expect_open_error(
      write_raw(R"({"layer.w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
      {"layer.w", "non-integer"});
}

TEST_F(SafetensorsTest, OffsetsNotAPair) {
  expect_open_error(write_raw(R"({"layer.w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
                    {"layer.w", "data_offsets"});
  expect_open_error(write_raw(R"({"layer.w":{"dtype":"F32","shape":[1]}})", 4, "b2"),
                    {"layer.w", "data_offsets"});
  expect_open_error(
      write_raw(R"({"layer.w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4, "b3"),
      {"layer.w", "data_offsets"});
}

TEST_F(SafetensorsTest, OffsetsEndBeforeTheyBegin) {
  expect_open_error(write_raw(R"({"layer.w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8),
                    {"layer.w", "end before they begin"});
}

TEST_F(SafetensorsTest, OffsetsBeyondTheDataArea) {
  // A truncated file: the header promises 16 bytes, 8 are there.
  expect_open_error(
      write_raw(R"({"layer.w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
      {"layer.w", "beyond the data area"});
}

TEST_F(SafetensorsTest, ByteSizeDoesNotMatchShape) {
  expect_open_error(
      write_raw(R"({"layer.w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8),
      {"layer.w", "needs 6 bytes"});
}

TEST_F(SafetensorsTest, HoleBetweenTensors) {
  expect_open_error(write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                              12),
                    {"\"b\"", "hole"});
}

TEST_F(SafetensorsTest, HoleAtTheStart) {
  expect_open_error(write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                    {"\"a\"", "hole"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  expect_open_error(write_raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              12),
                    {"\"a\"", "\"b\"", "overlaps"});
}

TEST_F(SafetensorsTest, UnusedBytesAfterTheLastTensor) {
  expect_open_error(write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12),
                    {"\"a\"", "cover 4 bytes"});
}

TEST_F(SafetensorsTest, DuplicateTensorNames) {
  expect_open_error(write_raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                              8),
                    {"\"a\"", "more than once"});
}

TEST_F(SafetensorsTest, DuplicateKeyInsideAnEntry) {
  expect_open_error(
      write_raw(R"({"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", 4),
      {"\"dtype\""});
}

TEST_F(SafetensorsTest, MetadataMustMapStringsToStrings) {
  expect_open_error(write_raw(R"({"__metadata__":{"format":1}})", 0), {"__metadata__", "format"});
  expect_open_error(write_raw(R"({"__metadata__":["pt"]})", 0, "m2"), {"__metadata__"});
}

TEST_F(SafetensorsTest, EntryNotAnObject) {
  expect_open_error(write_raw(R"({"a":[0,4]})", 4), {"\"a\"", "expected an object"});
}

TEST_F(SafetensorsTest, WriterUsesATemporaryFileAndRenames) {
  std::vector<float> old_v = {1, 2, 3}, new_v = {4, 5, 6, 7};
  std::string path = file("model.safetensors");
  write_safetensors(path, {{"w", "F32", {3}, old_v.data()}});

  // A failed write (the temporary file cannot be created: a directory is in its way) leaves
  // the existing file intact.
  fs::create_directory(path + ".tmp");
  try {
    write_safetensors(path, {{"w", "F32", {4}, new_v.data()}});
    FAIL() << "the write did not fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  {
    SafetensorsFile f = SafetensorsFile::open(path);
    EXPECT_EQ(f.read_f32(f.at("w")), old_v);
  }
  fs::remove(path + ".tmp");

  // So does one rejected before writing (an unknown dtype, a duplicated name).
  EXPECT_THROW(write_safetensors(path, {{"w", "F31", {4}, new_v.data()}}), Error);
  EXPECT_THROW(
      write_safetensors(path, {{"w", "F32", {1}, new_v.data()}, {"w", "F32", {1}, new_v.data()}}),
      Error);
  {
    SafetensorsFile f = SafetensorsFile::open(path);
    EXPECT_EQ(f.read_f32(f.at("w")), old_v);
  }

  // A file still mapped keeps its old contents when the new one is renamed over it.
  SafetensorsFile mapped = SafetensorsFile::open(path);
  write_safetensors(path, {{"w", "F32", {4}, new_v.data()}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(mapped.read_f32(mapped.at("w")), old_v);
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.read_f32(f.at("w")), new_v);
}

TEST_F(SafetensorsTest, WriteIntoAMissingDirectoryFails) {
  std::vector<float> v = {1};
  std::string path = file("no/such/dir/x.safetensors");
  try {
    write_safetensors(path, {{"w", "F32", {1}, v.data()}});
    FAIL() << "the write did not fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vacc
