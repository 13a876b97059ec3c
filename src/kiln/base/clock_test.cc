#include "kiln/base/clock.h"

#include <gtest/gtest.h>

#include "kiln/base/testing/fake_clock.h"

namespace kiln::base {
namespace {

TEST(ClockTest, FormatsIso8601InUtcWithMicroseconds) {
  EXPECT_EQ(FormatIso8601(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(FormatIso8601(1'590'084'048'447'001), "2020-05-21T18:00:48.447001Z");
}

TEST(ClockTest, FakeClockMovesOnlyWhenAdvanced) {
  FakeClock clock(100);
  EXPECT_EQ(clock.NowMicros(), 100);
  clock.AdvanceMicros(50);
  EXPECT_EQ(clock.NowMicros(), 150);
}

}  // namespace
}  // namespace kiln::base
