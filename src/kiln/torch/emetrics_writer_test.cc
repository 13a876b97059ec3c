#include "kiln/torch/emetrics_writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kiln/base/files.h"
#include "kiln/base/testing/fake_clock.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/tracking/emetrics.h"

namespace kiln::torch {
namespace {

using ::testing::SizeIs;

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/emetrics_writer_test/" + name;
  KILN_CHECK_OK(base::RemoveAll(dir));
  return dir;
}

std::vector<base::Json> ReadLines(const std::string& path) {
  auto text = base::ReadFile(path);
  KILN_CHECK_OK(text.status());
  std::vector<base::Json> lines;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    auto json = base::ParseJson(std::string(line));
    KILN_CHECK_OK(json.status());
    lines.push_back(*json);
  }
  return lines;
}

TEST(EmetricsWriterTest, WritesWmlaJsonLinesWithExactFields) {
  const std::string dir = FreshDir("lines");
  base::FakeClock clock(1'590'084'048'447'000);
  KILN_ASSERT_OK_AND_ASSIGN(
      auto writer,
      EmetricsWriter::Create({.log_dir = dir + "/logs", .training_id = "training-7", .subid = "3"},
                             clock));
  writer->Report(100, "train", {{"loss", 0.5}});
  clock.AdvanceMicros(1000);
  writer->Report(1, "test", {{"loss", 0.033}, {"accuracy", 0.9889}});
  // Lines are flushed as written, before Close().
  const std::vector<base::Json> lines = ReadLines(dir + "/logs/evaluation-metrics.txt");
  ASSERT_THAT(lines, SizeIs(2));

  const base::Json expected_train = base::Json::parse(R"({
    "meta": {"training_id": "training-7", "time": 1590084048447, "rindex": 1, "subid": "3"},
    "grouplabel": "train",
    "etimes": {"iteration": {"type": 2, "value": "100"},
               "time_stamp": {"value": "2020-05-21T18:00:48.447000Z"}},
    "values": {"loss": {"type": 3, "value": "0.5"}}})");
  EXPECT_EQ(lines[0], expected_train) << lines[0].dump();

  const base::Json& test = lines[1];
  EXPECT_EQ(test["meta"]["rindex"], 2);
  EXPECT_EQ(test["meta"]["time"], 1590084048448);
  EXPECT_EQ(test["grouplabel"], "test");
  EXPECT_EQ(test["etimes"]["iteration"]["value"], "1");
  EXPECT_EQ(test["values"]["loss"]["value"], "0.033");
  EXPECT_EQ(test["values"]["accuracy"]["value"], "0.9889");
  EXPECT_EQ(test["values"]["accuracy"]["type"], 3);
  KILN_EXPECT_OK(writer->Close());
}

// The agent's reader (kiln::tracking) must understand every line this writer produces.
TEST(EmetricsWriterTest, LinesAndValDictListParseWithTheAgentsReader) {
  const std::string dir = FreshDir("round_trip");
  base::FakeClock clock;
  KILN_ASSERT_OK_AND_ASSIGN(auto writer,
                            EmetricsWriter::Create({.log_dir = dir, .result_dir = dir}, clock));
  writer->Report(2, "test", {{"loss", 0.25}, {"accuracy", 0.875}});
  KILN_ASSERT_OK(writer->Close());
  KILN_ASSERT_OK_AND_ASSIGN(std::string lines, base::ReadFile(dir + "/evaluation-metrics.txt"));
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<tracking::MetricPoint> points,
                            tracking::ParseEmetricsLine(lines.substr(0, lines.size() - 1), 0));
  ASSERT_THAT(points, SizeIs(2));
  for (const tracking::MetricPoint& point : points) {
    EXPECT_EQ(point.group, "test");
    EXPECT_EQ(point.step, 2);
    EXPECT_EQ(point.time_micros, clock.NowMicros() / 1000 * 1000);
    EXPECT_EQ(point.value, point.name == "loss" ? 0.25 : 0.875) << point.name;
  }
  KILN_ASSERT_OK_AND_ASSIGN(std::string list, base::ReadFile(dir + "/val_dict_list.json"));
  KILN_ASSERT_OK_AND_ASSIGN(points, tracking::ParseValDictList(list, 0));
  EXPECT_THAT(points, SizeIs(2));
}

TEST(EmetricsWriterTest, OmitsSubidWhenEmpty) {
  const base::Json record =
      EmetricsWriter::FormatRecord({.training_id = "t"}, 0, 1, 1, "test", {{"loss", 1.0}});
  EXPECT_FALSE(record["meta"].contains("subid"));
  EXPECT_EQ(record["meta"]["training_id"], "t");
}

TEST(EmetricsWriterTest, CloseWritesValDictListFromTestRecords) {
  const std::string dir = FreshDir("val_dict");
  base::FakeClock clock;
  KILN_ASSERT_OK_AND_ASSIGN(auto writer,
                            EmetricsWriter::Create({.result_dir = dir + "/result"}, clock));
  writer->Report(10, "train", {{"loss", 2.0}});
  writer->Report(1, "test", {{"loss", 0.5}, {"accuracy", 0.8}});
  writer->Report(2, "test", {{"loss", 0.4}, {"accuracy", 0.85}});
  KILN_ASSERT_OK(writer->Close());
  KILN_ASSERT_OK_AND_ASSIGN(std::string text, base::ReadFile(dir + "/result/val_dict_list.json"));
  KILN_ASSERT_OK_AND_ASSIGN(base::Json list, base::ParseJson(text));
  EXPECT_EQ(list, base::Json::parse(R"([{"steps": 1, "loss": 0.5, "accuracy": 0.8},
                                        {"steps": 2, "loss": 0.4, "accuracy": 0.85}])"));
  KILN_EXPECT_OK(writer->Close());  // a second Close is a no-op
}

TEST(EmetricsWriterTest, AppendsToAnExistingFile) {
  const std::string dir = FreshDir("append");
  base::FakeClock clock;
  for (int run = 0; run < 2; ++run) {
    KILN_ASSERT_OK_AND_ASSIGN(auto writer, EmetricsWriter::Create({.log_dir = dir}, clock));
    writer->Report(run, "test", {{"loss", 1.0}});
    KILN_ASSERT_OK(writer->Close());
  }
  EXPECT_THAT(ReadLines(dir + "/evaluation-metrics.txt"), SizeIs(2));
}

TEST(EmetricsWriterTest, FailsToCreateUnderAFile) {
  const std::string dir = FreshDir("blocked");
  KILN_ASSERT_OK(base::MakeDirs(dir));
  KILN_ASSERT_OK(base::WriteFileAtomically(dir + "/file", "x"));
  base::FakeClock clock;
  EXPECT_FALSE(EmetricsWriter::Create({.log_dir = dir + "/file/logs"}, clock).ok());
}

class RecordingSink final : public MetricsSink {
 public:
  void Report(int64_t step, std::string_view group,
              const std::vector<std::pair<std::string, double>>& metrics) override {
    reports.push_back(absl::StrCat(std::string(group), "@", step, ":", metrics.size()));
  }
  std::vector<std::string> reports;
};

TEST(TeeSinkTest, ForwardsEachReportToEverySink) {
  RecordingSink a;
  RecordingSink b;
  TeeSink tee;
  tee.Add(a);
  tee.Add(b);
  tee.Report(3, "test", {{"loss", 1}, {"accuracy", 0.5}});
  EXPECT_THAT(a.reports, ::testing::ElementsAre("test@3:2"));
  EXPECT_EQ(a.reports, b.reports);
}

}  // namespace
}  // namespace kiln::torch
