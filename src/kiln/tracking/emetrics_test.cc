#include "kiln/tracking/emetrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::tracking {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kDefaultTime = 1'700'000'000'000'000;

MATCHER_P4(Point, name, group, step, value, "") {
  return arg.name == name && arg.group == group && arg.step == step && arg.value == value;
}

// IBM's sample line from wmla-api.md §4.2, joined onto one line as emetrics.py writes it.
constexpr char kIbmSampleLine[] =
    R"({"meta": {"training_id": "$TRAINING_ID", "time": 1590084048447, "rindex": 1, "subid": "<opt>"},)"
    R"( "grouplabel": "test",)"
    R"( "etimes": {"iteration": {"type": 2, "value": "1"}, "time_stamp": {"value": "2020-05-21T18:00:48.<epoch>"}},)"
    R"( "values": {"loss": {"type": 3, "value": "0.033"}, "accuracy": {"type": 3, "value": "98.89"}}})";

TEST(ParseEmetricsLineTest, ParsesIbmSampleLine) {
  KILN_ASSERT_OK_AND_ASSIGN(auto points, ParseEmetricsLine(kIbmSampleLine, kDefaultTime));
  EXPECT_THAT(points,
              ElementsAre(Point("accuracy", "test", 1, 98.89), Point("loss", "test", 1, 0.033)));
  for (const auto& p : points) EXPECT_EQ(p.time_micros, 1590084048447000);
}

TEST(ParseEmetricsLineTest, AcceptsNumbersWhereStringsAreUsual) {
  KILN_ASSERT_OK_AND_ASSIGN(
      auto points,
      ParseEmetricsLine(R"({"grouplabel": "train", "etimes": {"iteration": {"type": 2, "value": 7}},
                            "values": {"loss": {"type": 3, "value": 0.5}, "n": {"type": 2, "value": "12"}}})",
                        kDefaultTime));
  EXPECT_THAT(points, ElementsAre(Point("loss", "train", 7, 0.5), Point("n", "train", 7, 12.0)));
  EXPECT_EQ(points[0].time_micros, kDefaultTime);
}

TEST(ParseEmetricsLineTest, SkipsStringTypedAndNonNumericValues) {
  KILN_ASSERT_OK_AND_ASSIGN(
      auto points,
      ParseEmetricsLine(R"({"etimes": {"iteration": {"type": 2, "value": "2"}}, "values": {
          "label": {"type": 0, "value": "3.5"},
          "blob": {"type": 1, "value": "{\"a\": 1}"},
          "word": {"type": 3, "value": "fast"},
          "flag": {"type": 2, "value": true},
          "missing": {"type": 3},
          "acc": {"type": 3, "value": "0.75"}}})",
                        kDefaultTime));
  EXPECT_THAT(points, ElementsAre(Point("acc", "test", 2, 0.75)));
}

TEST(ParseEmetricsLineTest, KeepsUntypedNumericValuesAsEmetricsPyWritesNumpyFloats) {
  // emetrics.py's encode(): int -> type 2, float -> type 3, anything else (numpy.float32)
  // -> {"value": str(v)} with no type.
  KILN_ASSERT_OK_AND_ASSIGN(
      auto points, ParseEmetricsLine(R"({"etimes": {"iteration": {"type": 2, "value": "4"}},
                                         "values": {"val_acc": {"value": "0.8125"}, "raw": 3}})",
                                     kDefaultTime));
  EXPECT_THAT(points,
              ElementsAre(Point("raw", "test", 4, 3.0), Point("val_acc", "test", 4, 0.8125)));
}

TEST(ParseEmetricsLineTest, ReadsTimeFromTimeStampWhenMetaHasNone) {
  KILN_ASSERT_OK_AND_ASSIGN(auto iso, ParseEmetricsLine(R"({"etimes": {"iteration": {"value": "1"},
                                      "time_stamp": {"value": "2020-05-21T18:00:48.25Z"}},
                                      "values": {"a": {"type": 3, "value": "1"}}})",
                                                        kDefaultTime));
  ASSERT_EQ(iso.size(), 1u);
  EXPECT_EQ(iso[0].time_micros, 1590084048250000);

  // emetrics.py: strftime("%Y-%m-%dT%H:%M:%S.%s"), the suffix being Unix seconds.
  KILN_ASSERT_OK_AND_ASSIGN(auto quirk,
                            ParseEmetricsLine(R"({"etimes": {"iteration": {"value": "1"},
                                        "time_stamp": {"value": "2020-05-21T20:00:48.1590084048"}},
                                        "values": {"a": {"type": 3, "value": "1"}}})",
                                              kDefaultTime));
  ASSERT_EQ(quirk.size(), 1u);
  EXPECT_EQ(quirk[0].time_micros, 1590084048000000);

  KILN_ASSERT_OK_AND_ASSIGN(auto zoned,
                            ParseEmetricsLine(R"({"etimes": {"iteration": {"value": "1"},
                                        "time_stamp": {"value": "2020-05-21T20:00:48+02:00"}},
                                        "values": {"a": {"type": 3, "value": "1"}}})",
                                              kDefaultTime));
  EXPECT_EQ(zoned[0].time_micros, 1590084048000000);

  KILN_ASSERT_OK_AND_ASSIGN(auto unreadable,
                            ParseEmetricsLine(R"({"etimes": {"iteration": {"value": "1"},
                                             "time_stamp": {"value": "yesterday"}},
                                             "values": {"a": {"type": 3, "value": "1"}}})",
                                              kDefaultTime));
  EXPECT_EQ(unreadable[0].time_micros, kDefaultTime);
}

TEST(ParseEmetricsLineTest, ParsesKilnForm) {
  KILN_ASSERT_OK_AND_ASSIGN(
      auto points,
      ParseEmetricsLine(
          R"({"step": 3, "group": "train", "time": 1700000000.5, "metrics": {"loss": 0.5, "lr": 1e-3, "note": "x"}})",
          kDefaultTime));
  EXPECT_THAT(points, ElementsAre(Point("loss", "train", 3, 0.5), Point("lr", "train", 3, 1e-3)));
  EXPECT_EQ(points[0].time_micros, 1700000000500000);

  KILN_ASSERT_OK_AND_ASSIGN(
      auto defaults, ParseEmetricsLine(R"({"step": 9, "metrics": {"acc": 1}})", kDefaultTime));
  EXPECT_THAT(defaults, ElementsAre(Point("acc", "test", 9, 1.0)));
  EXPECT_EQ(defaults[0].time_micros, kDefaultTime);
}

TEST(ParseEmetricsLineTest, RefusesLinesOfNeitherForm) {
  for (const char* line :
       {"", "   ", "garbage", "[1, 2]", "42", "{\"loss\": 1}", "{\"step\": 1",
        R"({"metrics": {"a": 1}})", R"({"step": "x", "metrics": {"a": 1}})",
        R"({"step": 1.5, "metrics": {"a": 1}})", R"({"step": 1, "metrics": [1]})",
        R"({"values": {"a": {"type": 3, "value": "1"}}})",
        R"({"etimes": {"iteration": {"value": "one"}}, "values": {}})",
        R"({"etimes": {"iteration": {"value": "1"}}, "values": 3})",
        R"({"grouplabel": 5, "etimes": {"iteration": {"value": "1"}}, "values": {}})"}) {
    EXPECT_THAT(ParseEmetricsLine(line, kDefaultTime),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a metrics line")))
        << line;
  }
}

TEST(ParseEmetricsLineTest, ErrorQuotesAShortExcerpt) {
  std::string line = "{\"nothing\": \"" + std::string(500, 'z') + "\"}";
  auto result = ParseEmetricsLine(line, kDefaultTime);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("{\"nothing\""));
  EXPECT_LT(result.status().message().size(), 250u);
}

TEST(ParseEmetricsLineTest, RefusesNanAndInfinity) {
  for (
      const char* line :
      {R"({"etimes": {"iteration": {"value": "1"}}, "values": {"loss": {"type": 3, "value": "nan"}}})",
       R"({"etimes": {"iteration": {"value": "1"}}, "values": {"loss": {"type": 3, "value": "inf"}}})",
       R"({"etimes": {"iteration": {"value": "1"}}, "values": {"loss": {"type": 3, "value": "-Infinity"}}})",
       R"({"etimes": {"iteration": {"value": "1"}}, "values": {"loss": {"type": 3, "value": "1e999"}}})",
       R"({"step": 1, "metrics": {"loss": NaN}})"}) {
    EXPECT_THAT(ParseEmetricsLine(line, kDefaultTime),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_))
        << line;
  }
}

TEST(ParseEmetricsLineTest, RefusesOutOfRangeStepsAndTimes) {
  for (
      const char* line :
      {R"({"etimes": {"iteration": {"value": "1e30"}}, "values": {}})",
       R"({"etimes": {"iteration": {"value": 18446744073709551615}}, "values": {}})",
       R"({"meta": {"time": 9223372036854775807}, "etimes": {"iteration": {"value": 1}}, "values": {}})",
       R"({"meta": {"time": "soon"}, "etimes": {"iteration": {"value": 1}}, "values": {}})",
       R"({"step": 1, "time": 1e300, "metrics": {}})"}) {
    EXPECT_THAT(ParseEmetricsLine(line, kDefaultTime),
                StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_))
        << line;
  }
}

TEST(ParseValDictListTest, ParsesMinimalXgboostFile) {
  KILN_ASSERT_OK_AND_ASSIGN(auto points, ParseValDictList(R"([{"mse_val": 12.3}])", kDefaultTime));
  EXPECT_THAT(points, ElementsAre(Point("mse_val", "test", 1, 12.3)));
  EXPECT_EQ(points[0].time_micros, kDefaultTime);
}

TEST(ParseValDictListTest, ReadsStepsStepOrPosition) {
  KILN_ASSERT_OK_AND_ASSIGN(auto points,
                            ParseValDictList(R"([{"steps": 10, "loss": 0.3, "accuracy": 91},
                           {"step": 20, "loss": 0.2},
                           {"loss": 0.1, "name": "last", "ok": true, "extra": null},
                           {"steps": "40", "loss": 0.05}])",
                                             kDefaultTime));
  EXPECT_THAT(points, ElementsAre(Point("accuracy", "test", 10, 91.0),
                                  Point("loss", "test", 10, 0.3), Point("loss", "test", 20, 0.2),
                                  Point("loss", "test", 3, 0.1), Point("loss", "test", 40, 0.05)));
}

TEST(ParseValDictListTest, EmptyListHasNoPoints) {
  KILN_ASSERT_OK_AND_ASSIGN(auto points, ParseValDictList("[]", kDefaultTime));
  EXPECT_THAT(points, IsEmpty());
}

TEST(ParseValDictListTest, RefusesWhatIsNotAListOfObjects) {
  EXPECT_THAT(ParseValDictList(R"({"loss": 1})", kDefaultTime),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JSON array")));
  EXPECT_THAT(ParseValDictList(R"([{"loss": 1}, 3])", kDefaultTime),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("element 1")));
  EXPECT_THAT(ParseValDictList(R"([{"steps": "x", "loss": 1}])", kDefaultTime),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"steps\"")));
  EXPECT_THAT(ParseValDictList(R"([{"loss": 1e999}])", kDefaultTime),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(ParseValDictList("[{", kDefaultTime),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("val_dict_list.json")));
}

class ReadCompleteLinesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln_emetrics_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/evaluation-metrics.txt";
  }
  void TearDown() override { KILN_EXPECT_OK(base::RemoveAll(dir_)); }

  std::string dir_;
  std::string path_;
};

TEST_F(ReadCompleteLinesTest, NotFoundWhenFileIsMissing) {
  EXPECT_THAT(ReadCompleteLines(path_, 0, 1024),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path_)));
}

TEST_F(ReadCompleteLinesTest, LeavesPartialLastLineForLater) {
  KILN_ASSERT_OK(base::WriteFileAtomically(path_, "one\r\ntwo\n\nthr"));
  KILN_ASSERT_OK_AND_ASSIGN(LineChunk chunk, ReadCompleteLines(path_, 0, 1024));
  EXPECT_THAT(chunk.lines, ElementsAre("one", "two"));
  EXPECT_EQ(chunk.next_offset, 10);

  KILN_ASSERT_OK_AND_ASSIGN(LineChunk again, ReadCompleteLines(path_, chunk.next_offset, 1024));
  EXPECT_THAT(again.lines, IsEmpty());
  EXPECT_EQ(again.next_offset, 10);

  KILN_ASSERT_OK(base::WriteFileAtomically(path_, "one\r\ntwo\n\nthree\n"));
  KILN_ASSERT_OK_AND_ASSIGN(LineChunk rest, ReadCompleteLines(path_, chunk.next_offset, 1024));
  EXPECT_THAT(rest.lines, ElementsAre("three"));
  EXPECT_EQ(rest.next_offset, 16);
}

TEST_F(ReadCompleteLinesTest, ReadsAtMostMaxBytes) {
  KILN_ASSERT_OK(base::WriteFileAtomically(path_, "aaaa\nbbbb\ncccc\n"));
  KILN_ASSERT_OK_AND_ASSIGN(LineChunk first, ReadCompleteLines(path_, 0, 12));
  EXPECT_THAT(first.lines, ElementsAre("aaaa", "bbbb"));
  KILN_ASSERT_OK_AND_ASSIGN(LineChunk second, ReadCompleteLines(path_, first.next_offset, 12));
  EXPECT_THAT(second.lines, ElementsAre("cccc"));
  EXPECT_EQ(second.next_offset, 15);
}

TEST_F(ReadCompleteLinesTest, SkipsALineLongerThanMaxBytesOnceComplete) {
  std::string long_line(100, 'x');
  KILN_ASSERT_OK(base::WriteFileAtomically(path_, long_line));
  KILN_ASSERT_OK_AND_ASSIGN(LineChunk waiting, ReadCompleteLines(path_, 0, 16));
  EXPECT_THAT(waiting.lines, IsEmpty());
  EXPECT_EQ(waiting.next_offset, 0);

  KILN_ASSERT_OK(base::WriteFileAtomically(path_, long_line + "\nok\n"));
  KILN_ASSERT_OK_AND_ASSIGN(LineChunk skipped, ReadCompleteLines(path_, 0, 16));
  EXPECT_THAT(skipped.lines, IsEmpty());
  EXPECT_EQ(skipped.next_offset, 101);
  KILN_ASSERT_OK_AND_ASSIGN(LineChunk next, ReadCompleteLines(path_, skipped.next_offset, 16));
  EXPECT_THAT(next.lines, ElementsAre("ok"));
}

TEST_F(ReadCompleteLinesTest, OutOfRangeWhenFileShrank) {
  KILN_ASSERT_OK(base::WriteFileAtomically(path_, "a\n"));
  EXPECT_THAT(ReadCompleteLines(path_, 50, 16),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("truncated")));
  EXPECT_THAT(ReadCompleteLines(path_, -1, 16),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(ReadCompleteLines(path_, 0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST_F(ReadCompleteLinesTest, LinesFeedTheParser) {
  KILN_ASSERT_OK(base::WriteFileAtomically(path_, std::string(kIbmSampleLine) + "\n"));
  KILN_ASSERT_OK_AND_ASSIGN(LineChunk chunk, ReadCompleteLines(path_, 0, 1 << 16));
  ASSERT_EQ(chunk.lines.size(), 1u);
  KILN_ASSERT_OK_AND_ASSIGN(auto points, ParseEmetricsLine(chunk.lines[0], kDefaultTime));
  EXPECT_EQ(points.size(), 2u);
}

}  // namespace
}  // namespace kiln::tracking
