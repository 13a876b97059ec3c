#include "kiln/cli/output.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::cli {
namespace {

constexpr int64_t kSec = 1'000'000;

TEST(FormatDurationTest, ShowsTenthsBelowAMinute) {
  EXPECT_EQ(FormatDuration(0), "0.0 s");
  EXPECT_EQ(FormatDuration(400'000), "0.4 s");
  EXPECT_EQ(FormatDuration(41'200'000), "41.2 s");
  EXPECT_EQ(FormatDuration(-5), "0.0 s");
}

TEST(FormatDurationTest, UsesTwoWholeUnitsAboveAMinute) {
  EXPECT_EQ(FormatDuration(185 * kSec), "3 min 5 s");
  EXPECT_EQ(FormatDuration(60 * kSec), "1 min 0 s");
  EXPECT_EQ(FormatDuration((2 * 3600 + 5 * 60 + 59) * kSec), "2 h 5 min");
  EXPECT_EQ(FormatDuration((3 * 86400 + 4 * 3600) * kSec), "3 d 4 h");
}

TEST(FormatAgeTest, UsesOneCoarseUnit) {
  EXPECT_EQ(FormatAge(41 * kSec), "41 s");
  EXPECT_EQ(FormatAge(185 * kSec), "3 min");
  EXPECT_EQ(FormatAge(7300 * kSec), "2 h");
  EXPECT_EQ(FormatAge(5 * 86400 * kSec), "5 d");
  EXPECT_EQ(FormatAge(-kSec), "0 s");
}

TEST(FormatBytesTest, UsesBinaryUnitsWithOneDecimal) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(3174), "3.1 KiB");
  EXPECT_EQ(FormatBytes(12LL << 20), "12.0 MiB");
  EXPECT_EQ(FormatBytes(3LL << 29), "1.5 GiB");
}

TEST(FormatNumberTest, KeepsSixSignificantDigits) {
  EXPECT_EQ(FormatNumber(0.51), "0.51");
  EXPECT_EQ(FormatNumber(1234.5678), "1234.57");
  EXPECT_EQ(FormatNumber(1e-6), "1e-06");
  EXPECT_EQ(FormatNumber(3), "3");
}

TEST(ParseTimestampTest, ReadsTheApiFormat) {
  KILN_ASSERT_OK_AND_ASSIGN(int64_t t, ParseTimestamp("2026-11-26T10:00:00.000000Z"));
  KILN_ASSERT_OK_AND_ASSIGN(int64_t later, ParseTimestamp("2026-11-26T10:00:41.200000Z"));
  EXPECT_EQ(later - t, 41'200'000);
  EXPECT_THAT(ParseTimestamp("yesterday"),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("yesterday")));
}

TEST(TimestampFieldTest, IsEmptyForNullMissingOrMalformed) {
  base::Json job = {{"a", "2026-11-26T10:00:00Z"}, {"b", nullptr}, {"c", "soon"}};
  EXPECT_TRUE(TimestampField(job, "a").has_value());
  EXPECT_FALSE(TimestampField(job, "b").has_value());
  EXPECT_FALSE(TimestampField(job, "c").has_value());
  EXPECT_FALSE(TimestampField(job, "d").has_value());
}

TEST(FormatCommandTest, QuotesWordsAShellWouldSplit) {
  EXPECT_EQ(FormatCommand({"python3", "train.py", "--lr=0.1"}), "python3 train.py --lr=0.1");
  EXPECT_EQ(FormatCommand({"sh", "-c", "echo $HOME"}), "sh -c 'echo $HOME'");
  EXPECT_EQ(FormatCommand({"echo", "it's", ""}), "echo 'it'\\''s' ''");
}

TEST(TableTest, AlignsColumnsAndTrimsTrailingSpaces) {
  Table table({"ID", "NAME", "STATE"});
  table.AddRow({"7", "fmnist", "RUNNING"});
  table.AddRow({"12", "a", ""});
  EXPECT_EQ(table.Render(),
            "ID  NAME    STATE\n"
            "7   fmnist  RUNNING\n"
            "12  a\n");
}

}  // namespace
}  // namespace kiln::cli
