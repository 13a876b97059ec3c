#include "kiln/agent/artifacts.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::vector<std::string> PathsOf(const ArtifactScan& scan) {
  std::vector<std::string> out;
  for (const auto& f : scan.files) out.push_back(f.path);
  return out;
}

class ScanArtifactsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln_artifacts_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    result_ = dir_ + "/result";
  }
  void TearDown() override { (void)base::RemoveAll(dir_); }
  void Write(const std::string& rel, const std::string& bytes) {
    std::string path = result_ + "/" + rel;
    KILN_ASSERT_OK(base::MakeDirs(std::filesystem::path(path).parent_path().string()));
    KILN_ASSERT_OK(base::WriteFileAtomically(path, bytes));
  }

  std::string dir_;
  std::string result_;
};

TEST_F(ScanArtifactsTest, NoModelFolderIsNothingToKeep) {
  Write("val_dict_list.json", "[]");
  ArtifactScan scan = ScanArtifacts(result_);
  EXPECT_THAT(scan.files, IsEmpty());
  EXPECT_THAT(scan.warnings, IsEmpty());
}

TEST_F(ScanArtifactsTest, ListsRegularFilesRecursivelyInPathOrder) {
  Write("model/signature.json", "{}");
  Write("model/model.pt", "weights");
  Write("model/extra/vocab.txt", "a b c");
  Write("other.txt", "not an artifact");
  ArtifactScan scan = ScanArtifacts(result_);
  EXPECT_THAT(PathsOf(scan),
              ElementsAre("model/extra/vocab.txt", "model/model.pt", "model/signature.json"));
  EXPECT_EQ(scan.files[1].size, 7);
  EXPECT_EQ(scan.files[1].file_path, result_ + "/model/model.pt");
  EXPECT_THAT(scan.warnings, IsEmpty());
}

TEST_F(ScanArtifactsTest, LinksAreNeitherFollowedNorKept) {
  Write("model/model.pt", "weights");
  Write("../secret", "outside the result folder");
  std::filesystem::create_directories(dir_ + "/elsewhere");
  Write("../elsewhere/inner.bin", "x");
  ASSERT_EQ(::symlink((dir_ + "/secret").c_str(), (result_ + "/model/leak").c_str()), 0);
  ASSERT_EQ(::symlink((dir_ + "/elsewhere").c_str(), (result_ + "/model/dir").c_str()), 0);
  ArtifactScan scan = ScanArtifacts(result_);
  EXPECT_THAT(PathsOf(scan), ElementsAre("model/model.pt"));
  ASSERT_EQ(scan.warnings.size(), 2u);
  EXPECT_THAT(scan.warnings[0] + scan.warnings[1], HasSubstr("model/leak is a symbolic link"));
  EXPECT_THAT(scan.warnings[0] + scan.warnings[1], HasSubstr("model/dir is a symbolic link"));
}

TEST_F(ScanArtifactsTest, ALinkedModelFolderIsRefused) {
  Write("../real/model.pt", "weights");
  ASSERT_EQ(::symlink((dir_ + "/real").c_str(), (result_ + "/model").c_str()), 0);
  ArtifactScan scan = ScanArtifacts(result_);
  EXPECT_THAT(scan.files, IsEmpty());
  ASSERT_EQ(scan.warnings.size(), 1u);
  EXPECT_THAT(scan.warnings[0], HasSubstr("model/ is a symbolic link"));
}

TEST_F(ScanArtifactsTest, EmptyAndOversizedFilesAreLeftOutWithAWarning) {
  Write("model/model.pt", std::string(100, 'w'));
  Write("model/big.bin", std::string(101, 'b'));
  Write("model/empty", "");
  ArtifactScan scan = ScanArtifacts(result_, ArtifactLimits{100, 64});
  EXPECT_THAT(PathsOf(scan), ElementsAre("model/model.pt"));
  ASSERT_EQ(scan.warnings.size(), 2u);
  EXPECT_THAT(scan.warnings[0] + scan.warnings[1],
              HasSubstr("model/big.bin has 101 bytes, over the limit of 100"));
  EXPECT_THAT(scan.warnings[0] + scan.warnings[1], HasSubstr("model/empty is empty"));
}

TEST_F(ScanArtifactsTest, FilesPastTheCountLimitAreLeftOut) {
  for (char c : std::string("dcba")) Write(std::string("model/") + c, "x");
  ArtifactScan scan = ScanArtifacts(result_, ArtifactLimits{100, 2});
  EXPECT_THAT(PathsOf(scan), ElementsAre("model/a", "model/b"));
  ASSERT_EQ(scan.warnings.size(), 2u);
  EXPECT_THAT(scan.warnings[0], HasSubstr("model/c is past the limit of 2 files"));
}

}  // namespace
}  // namespace kiln::agent
