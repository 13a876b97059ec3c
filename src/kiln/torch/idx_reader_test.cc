#include "kiln/torch/idx_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <string>

#include "kiln/base/files.h"

namespace kiln::torch {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// An IDX file of unsigned bytes with the given sizes, filled with 0, 1, 2, ...
std::string MakeIdx(const std::vector<uint32_t>& dims) {
  std::string bytes = {0, 0, 0x08, static_cast<char>(dims.size())};
  size_t count = 1;
  for (uint32_t d : dims) {
    for (int shift : {24, 16, 8, 0}) bytes.push_back(static_cast<char>((d >> shift) & 0xff));
    count *= d;
  }
  for (size_t i = 0; i < count; ++i) bytes.push_back(static_cast<char>(i % 251));
  return bytes;
}

std::string Gzip(const std::string& data) {
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
                         Z_DEFAULT_STRATEGY),
            Z_OK);
  std::string out(deflateBound(&stream, data.size()) + 32, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

TEST(IdxReaderTest, ParsesDimsAndData) {
  auto array = ParseIdx(MakeIdx({2, 3, 4}));
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_THAT(array->dims, ElementsAre(2, 3, 4));
  ASSERT_EQ(array->data.size(), 24u);
  EXPECT_EQ(array->data[0], 0);
  EXPECT_EQ(array->data[23], 23);
}

TEST(IdxReaderTest, AcceptsAnEmptyArray) {
  auto array = ParseIdx(MakeIdx({0, 28, 28}));
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_TRUE(array->data.empty());
}

TEST(IdxReaderTest, RejectsBadMagic) {
  std::string bytes = MakeIdx({3});
  bytes[0] = 1;
  EXPECT_THAT(ParseIdx(bytes).status().message(), HasSubstr("two zero bytes"));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseIdx("ab").status()));
}

TEST(IdxReaderTest, RejectsUnsupportedTypeAndDimensionCount) {
  std::string bytes = MakeIdx({3});
  bytes[2] = 0x0D;  // float
  EXPECT_THAT(ParseIdx(bytes).status().message(), HasSubstr("type 0x0d"));
  std::string no_dims = {0, 0, 0x08, 0};
  EXPECT_THAT(ParseIdx(no_dims).status().message(), HasSubstr("0 dimensions"));
  std::string too_many = {0, 0, 0x08, 9};
  EXPECT_THAT(ParseIdx(too_many).status().message(), HasSubstr("9 dimensions"));
}

TEST(IdxReaderTest, RejectsTruncatedHeaderAndData) {
  std::string bytes = MakeIdx({2, 5});
  EXPECT_THAT(ParseIdx(bytes.substr(0, 9)).status().message(), HasSubstr("header"));
  auto truncated = ParseIdx(bytes.substr(0, bytes.size() - 1));
  EXPECT_TRUE(absl::IsInvalidArgument(truncated.status()));
  EXPECT_THAT(truncated.status().message(), HasSubstr("2x5 need 10 data bytes; the file has 9"));
  EXPECT_THAT(ParseIdx(bytes + "x").status().message(), HasSubstr("trailing"));
}

TEST(IdxReaderTest, RejectsArraysAboveTheLimitWithoutAllocating) {
  // 4 dims of 2^32-1 overflow 64 bits; the check must catch that, not wrap around.
  std::string bytes = {0, 0, 0x08, 4};
  for (int i = 0; i < 16; ++i) bytes.push_back(static_cast<char>(0xff));
  EXPECT_THAT(ParseIdx(bytes).status().message(), HasSubstr("limit"));
  EXPECT_THAT(ParseIdx(MakeIdx({10, 10}), /*max_bytes=*/99).status().message(),
              HasSubstr("limit of 99"));
}

TEST(IdxReaderTest, GunzipsOnlyGzipData) {
  const std::string raw = MakeIdx({4, 4});
  auto same = MaybeGunzip(raw);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(*same, raw);
  auto unzipped = MaybeGunzip(Gzip(raw));
  ASSERT_TRUE(unzipped.ok()) << unzipped.status();
  EXPECT_EQ(*unzipped, raw);
}

TEST(IdxReaderTest, RejectsCorruptTruncatedOrOversizedGzip) {
  const std::string zipped = Gzip(MakeIdx({100, 100}));
  EXPECT_THAT(MaybeGunzip(zipped.substr(0, zipped.size() / 2)).status().message(),
              HasSubstr("truncated"));
  std::string corrupt = zipped;
  corrupt[3] = static_cast<char>(0xff);  // reserved flag bits
  EXPECT_TRUE(absl::IsInvalidArgument(MaybeGunzip(corrupt).status()));
  EXPECT_THAT(MaybeGunzip(zipped + "junk").status().message(), HasSubstr("4 unexpected bytes"));
  EXPECT_THAT(MaybeGunzip(zipped, /*max_bytes=*/1000).status().message(),
              HasSubstr("limit of 1000"));
}

TEST(IdxReaderTest, ReadsGzippedFilesAndNamesThePathInErrors) {
  const std::string dir = ::testing::TempDir() + "/idx_reader_test";
  ASSERT_TRUE(base::MakeDirs(dir).ok());
  ASSERT_TRUE(base::WriteFileAtomically(dir + "/good.gz", Gzip(MakeIdx({3, 2}))).ok());
  ASSERT_TRUE(base::WriteFileAtomically(dir + "/bad", "\x01\x02\x03\x04").ok());

  auto good = ReadIdxFile(dir + "/good.gz");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_THAT(good->dims, ElementsAre(3, 2));

  auto bad = ReadIdxFile(dir + "/bad");
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status()));
  EXPECT_THAT(bad.status().message(), HasSubstr(dir + "/bad: "));
  EXPECT_TRUE(absl::IsNotFound(ReadIdxFile(dir + "/missing").status()));
}

}  // namespace
}  // namespace kiln::torch
