#include "kiln/scheduler/resource_pool.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ResourcePoolTest, BestFitPacksOntoTheFullestAgentThatFits) {
  ResourcePool pool;
  pool.SetAgent("big", 8, {});
  pool.SetAgent("small", 2, {});
  auto p = pool.FindPlacement({2, 0});
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->agent_id, "small");
  KILN_ASSERT_OK(pool.Allocate(1, *p));
  p = pool.FindPlacement({2, 0});
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->agent_id, "big");
}

TEST(ResourcePoolTest, ReleaseFreesSlotsAndGpus) {
  ResourcePool pool;
  pool.SetAgent("a", 2, {0, 1});
  auto p = pool.FindPlacement({2, 2});
  ASSERT_TRUE(p.has_value());
  EXPECT_THAT(p->gpu_indices, ElementsAre(0, 1));
  KILN_ASSERT_OK(pool.Allocate(1, *p));
  EXPECT_FALSE(pool.FindPlacement({1, 0}).has_value());
  pool.Release(1);
  EXPECT_TRUE(pool.FindPlacement({1, 1}).has_value());
}

TEST(ResourcePoolTest, AllocateRefusesMoreThanTheAgentHasFree) {
  ResourcePool pool;
  pool.SetAgent("a", 1, {});
  KILN_ASSERT_OK(pool.Allocate(1, {"a", 1, {}}));
  EXPECT_THAT(pool.Allocate(2, {"a", 1, {}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("0 free slots")));
  EXPECT_THAT(pool.Allocate(3, {"nope", 1, {}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not registered")));
}

TEST(ResourcePoolTest, UnsatisfiableRequestsNameTheLargestAgent) {
  ResourcePool pool;
  KILN_EXPECT_OK(pool.CheckSatisfiable({64, 8}));  // no agents yet: one may come
  pool.SetAgent("a", 2, {});
  EXPECT_THAT(pool.CheckSatisfiable({1, 1}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("largest agent has 2 slots and 0 GPUs")));
  KILN_EXPECT_OK(pool.CheckSatisfiable({2, 0}));
}

TEST(ResourcePoolTest, RemovingAnAgentReportsItsJobs) {
  ResourcePool pool;
  pool.SetAgent("a", 4, {});
  KILN_ASSERT_OK(pool.Allocate(1, {"a", 1, {}}));
  KILN_ASSERT_OK(pool.Allocate(2, {"a", 1, {}}));
  EXPECT_THAT(pool.RemoveAgent("a"), ElementsAre(1, 2));
  EXPECT_FALSE(pool.AllocationOf(1).has_value());
}

}  // namespace
}  // namespace kiln::scheduler

namespace kiln::scheduler {
namespace {

TEST(ResourcePoolGangTest, PlacementsCountAgainstEachOther) {
  ResourcePool pool;
  pool.SetAgent("a", 2, {});
  pool.SetAgent("b", 1, {});
  std::vector<Allocation> three = pool.FindPlacements({1, 0}, 5);
  ASSERT_EQ(three.size(), 3u);
  int on_a = 0;
  for (const Allocation& a : three) on_a += a.agent_id == "a";
  EXPECT_EQ(on_a, 2);
  EXPECT_TRUE(pool.Allocate(1, three[0]).ok());
  EXPECT_EQ(pool.FindPlacements({1, 0}, 5).size(), 2u);
  EXPECT_TRUE(pool.FindPlacements({2, 0}, 1).empty() ||
              pool.FindPlacements({2, 0}, 1)[0].agent_id == "a");
}

TEST(ResourcePoolGangTest, FitsWithoutSaysWhetherGivingBackHelps) {
  ResourcePool pool;
  pool.SetAgent("a", 2, {});
  pool.SetAgent("b", 1, {});
  ASSERT_TRUE(pool.Allocate(1, {"a", 1, {}}).ok());
  ASSERT_TRUE(pool.Allocate(2, {"a", 1, {}}).ok());
  ASSERT_TRUE(pool.Allocate(3, {"b", 1, {}}).ok());
  EXPECT_TRUE(pool.FitsWithout({3}, {1, 0}));
  EXPECT_FALSE(pool.FitsWithout({3}, {2, 0}));  // b is too small even when empty
  EXPECT_FALSE(pool.FitsWithout({1}, {2, 0}));  // a keeps job 2's slot
  EXPECT_TRUE(pool.FitsWithout({1, 2}, {2, 0}));
  EXPECT_FALSE(pool.FitsWithout({1, 2, 3}, {1, 1}));  // no GPU anywhere
  EXPECT_EQ(pool.Usage()["a"].used_slots, 2);         // nothing was released for real
}

TEST(ResourcePoolGangTest, CheckSatisfiableCountsAllAgentsTogether) {
  ResourcePool pool;
  pool.SetAgent("a", 2, {});
  pool.SetAgent("b", 2, {});
  EXPECT_TRUE(pool.CheckSatisfiable({1, 0}, 4).ok());
  EXPECT_TRUE(pool.Allocate(7, {"a", 2, {}}).ok());  // busy now, but could run when idle
  EXPECT_TRUE(pool.CheckSatisfiable({1, 0}, 4).ok());
  absl::Status s = pool.CheckSatisfiable({1, 0}, 5);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("can never run 5 workers"), std::string::npos) << s;
  EXPECT_NE(s.message().find("hold 4"), std::string::npos) << s;
}

}  // namespace
}  // namespace kiln::scheduler
