#include "kiln/agent/gpu_discovery.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(ParseNvidiaSmiCsvTest, ParsesSeveralGpuModels) {
  constexpr char kCsv[] =
      "0, GPU-5f3c9a4e-1b2d-4c5e-8f90-123456789abc, NVIDIA H100 80GB HBM3, 81559\n"
      "1, GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9, NVIDIA A100-SXM4-40GB, 40960\n"
      "2, GPU-11111111-2222-3333-4444-555555555555, Tesla V100-SXM2-16GB, 16160\n"
      "3, GPU-66666666-7777-8888-9999-000000000000, NVIDIA GeForce RTX 3090, 24576\n";
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<GpuInfo> gpus, ParseNvidiaSmiCsv(kCsv));
  ASSERT_EQ(gpus.size(), 4u);
  EXPECT_EQ(gpus[0].index, 0);
  EXPECT_EQ(gpus[0].uuid, "GPU-5f3c9a4e-1b2d-4c5e-8f90-123456789abc");
  EXPECT_EQ(gpus[0].name, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(gpus[0].memory_mib, 81559);
  EXPECT_EQ(gpus[2].name, "Tesla V100-SXM2-16GB");
  EXPECT_EQ(gpus[3].index, 3);
  EXPECT_EQ(gpus[3].memory_mib, 24576);
}

TEST(ParseNvidiaSmiCsvTest, ToleratesWhitespaceBlankLinesAndCrlf) {
  KILN_ASSERT_OK_AND_ASSIGN(
      std::vector<GpuInfo> gpus,
      ParseNvidiaSmiCsv("\n  0 ,GPU-aa ,  Tesla T4 ,15360  \r\n\n\t1,GPU-bb,Tesla T4,15360"));
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[0].uuid, "GPU-aa");
  EXPECT_EQ(gpus[0].name, "Tesla T4");
  EXPECT_EQ(gpus[0].memory_mib, 15360);
  EXPECT_EQ(gpus[1].index, 1);
}

TEST(ParseNvidiaSmiCsvTest, KeepsACommaInsideTheName) {
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<GpuInfo> gpus,
                            ParseNvidiaSmiCsv("0, GPU-aa, Odd, Name, 1024\n"));
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].name, "Odd, Name");
  EXPECT_EQ(gpus[0].memory_mib, 1024);
}

TEST(ParseNvidiaSmiCsvTest, UnknownMemoryIsZero) {
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<GpuInfo> gpus,
                            ParseNvidiaSmiCsv("0, GPU-aa, NVIDIA GH200 480GB, [N/A]\n"));
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].memory_mib, 0);
}

TEST(ParseNvidiaSmiCsvTest, EmptyOutputMeansNoGpus) {
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<GpuInfo> gpus, ParseNvidiaSmiCsv(""));
  EXPECT_THAT(gpus, IsEmpty());
}

TEST(ParseNvidiaSmiCsvTest, NamesTheBadLine) {
  EXPECT_THAT(
      ParseNvidiaSmiCsv("0, GPU-aa, Tesla T4, 15360\n1, GPU-bb, Tesla T4\n"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 2 (\"1, GPU-bb, Tesla T4\")")));
  EXPECT_THAT(ParseNvidiaSmiCsv("x, GPU-aa, Tesla T4, 15360"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("index")));
  EXPECT_THAT(ParseNvidiaSmiCsv("-1, GPU-aa, Tesla T4, 15360"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("index")));
  EXPECT_THAT(ParseNvidiaSmiCsv("0, GPU-aa, Tesla T4, 15360 MiB"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("memory.total")));
  EXPECT_THAT(ParseNvidiaSmiCsv("0, , Tesla T4, 15360"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("uuid")));
  EXPECT_THAT(ParseNvidiaSmiCsv("0, GPU-aa, , 15360"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("name")));
  EXPECT_THAT(ParseNvidiaSmiCsv("No devices were found"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 1")));
}

class DiscoverGpusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln_gpu_discovery_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { KILN_EXPECT_OK(base::RemoveAll(dir_)); }

  // Writes an executable shell script standing in for nvidia-smi; returns its path.
  std::string WriteFakeNvidiaSmi(const std::string& body) {
    std::string path = dir_ + "/nvidia-smi";
    EXPECT_TRUE(base::WriteFileAtomically(path, "#!/bin/sh\n" + body, 0755).ok());
    return path;
  }

  std::string dir_;
};

TEST_F(DiscoverGpusTest, AbsentBinaryMeansNoGpus) {
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<GpuInfo> gpus, DiscoverGpus(dir_ + "/no-such-nvidia-smi"));
  EXPECT_THAT(gpus, IsEmpty());
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<GpuInfo> by_name,
                            DiscoverGpus("kiln-test-no-such-program-in-path"));
  EXPECT_THAT(by_name, IsEmpty());
}

TEST_F(DiscoverGpusTest, RunsTheProgramWithTheQueryAndParsesItsOutput) {
  // The fake answers only when asked exactly what DiscoverGpus should ask.
  std::string path = WriteFakeNvidiaSmi(
      "[ \"$1\" = --query-gpu=index,uuid,name,memory.total ] || exit 3\n"
      "[ \"$2\" = --format=csv,noheader,nounits ] || exit 4\n"
      "echo '0, GPU-aaaa, NVIDIA A100-SXM4-80GB, 81920'\n"
      "echo '1, GPU-bbbb, NVIDIA A100-SXM4-80GB, 81920'\n");
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<GpuInfo> gpus, DiscoverGpus(path));
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[1].uuid, "GPU-bbbb");
  EXPECT_EQ(gpus[1].memory_mib, 81920);
}

TEST_F(DiscoverGpusTest, FindsTheProgramInPath) {
  WriteFakeNvidiaSmi("echo '0, GPU-cccc, Tesla T4, 15360'\n");
  const char* old = std::getenv("PATH");
  std::string saved = old != nullptr ? old : "";
  ::setenv("PATH", (dir_ + ":" + saved).c_str(), 1);
  auto gpus = DiscoverGpus();
  ::setenv("PATH", saved.c_str(), 1);
  KILN_ASSERT_OK(gpus);
  ASSERT_EQ(gpus->size(), 1u);
  EXPECT_EQ((*gpus)[0].uuid, "GPU-cccc");
}

TEST_F(DiscoverGpusTest, FailureCarriesTheFirstLineOfStderr) {
  std::string path = WriteFakeNvidiaSmi(
      "echo 'Failed to initialize NVML: Driver/library version mismatch' >&2\n"
      "echo 'second line' >&2\nexit 9\n");
  EXPECT_THAT(DiscoverGpus(path),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr("exited with status 9"),
                                        HasSubstr("Driver/library version mismatch"),
                                        ::testing::Not(HasSubstr("second line")))));
}

TEST_F(DiscoverGpusTest, FailureFallsBackToStdoutWhenStderrIsEmpty) {
  // Real nvidia-smi prints this one on stdout.
  std::string path = WriteFakeNvidiaSmi(
      "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\n"
      "exit 9\n");
  EXPECT_THAT(DiscoverGpus(path),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("couldn't communicate")));
}

TEST_F(DiscoverGpusTest, NonExecutableFileIsAnError) {
  std::string path = dir_ + "/nvidia-smi";
  KILN_ASSERT_OK(base::WriteFileAtomically(path, "#!/bin/sh\n", 0644));
  EXPECT_THAT(DiscoverGpus(path), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(path)));
}

TEST_F(DiscoverGpusTest, GarbageOutputIsInvalidArgument) {
  std::string path = WriteFakeNvidiaSmi("echo 'No devices were found'\n");
  EXPECT_THAT(DiscoverGpus(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("No devices were found")));
}

TEST_F(DiscoverGpusTest, HungProgramIsKilledAtTheDeadline) {
  // `exec` so the shell itself is what sleeps and the kill reaches it.
  std::string path = WriteFakeNvidiaSmi("exec sleep 30\n");
  EXPECT_THAT(DiscoverGpus(path, std::chrono::milliseconds(200)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("200 ms")));
}

}  // namespace
}  // namespace kiln::agent
