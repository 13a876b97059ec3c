#include "kiln/base/files.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::base {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/kiln_files_test.XXXXXX";
  return mkdtemp(tmpl);
}

TEST(FilesTest, AtomicWriteThenReadRoundTrips) {
  std::string dir = TempDir();
  std::string path = dir + "/a/b.txt";
  KILN_ASSERT_OK(MakeDirs(dir + "/a"));
  KILN_ASSERT_OK(WriteFileAtomically(path, "hello"));
  KILN_ASSERT_OK(WriteFileAtomically(path, "world"));
  EXPECT_EQ(ReadFile(path).value(), "world");
  KILN_EXPECT_OK(RemoveAll(dir));
}

TEST(FilesTest, ReadingAMissingFileIsNotFound) {
  EXPECT_THAT(ReadFile("/nonexistent/kiln"),
              StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("/nonexistent/kiln")));
}

}  // namespace
}  // namespace kiln::base
