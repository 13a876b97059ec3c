// The in-process hub stands in for kilnd in the torch tests: these check that its
// adapter around the master's Rendezvous (blocking joins, the watch, Add and Remove,
// the join timeout) answers workers the way the contract says (ARCHITECTURE.md §5.2).
#include "kiln/elastic/worker/testing/local_rendezvous.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::elastic::worker {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

TEST(LocalRendezvousHubTest, GenerationsFollowJoinsAndLeaves) {
  LocalRendezvousHub hub({1, 2});
  auto one = hub.Connect(1);
  auto two = hub.Connect(2);
  absl::StatusOr<JoinOutcome> first_two = absl::UnknownError("not run");
  std::thread t([&] { first_two = two->Join({.generation = 0, .step = -1, .store_port = 2000}); });
  KILN_ASSERT_OK_AND_ASSIGN(JoinOutcome first_one,
                            one->Join({.generation = 0, .step = -1, .store_port = 1000}));
  t.join();
  KILN_ASSERT_OK(first_two);
  // Both launched workers are waited for; without state the oldest is the source.
  EXPECT_THAT(first_one.assignment.members, ElementsAre(1, 2));
  EXPECT_EQ(first_one.assignment.generation, 1);
  EXPECT_EQ(first_one.assignment.rank, 0);
  EXPECT_EQ(first_one.assignment.world_size, 2);
  EXPECT_EQ(first_one.assignment.reason, "start");
  EXPECT_EQ(first_two->assignment.rank, 1);
  EXPECT_EQ(first_two->assignment.store_host, "127.0.0.1");
  EXPECT_EQ(first_two->assignment.store_port, 1000);

  // A launched worker changes nothing until it joins.
  one->StartWatch(1);
  two->StartWatch(1);
  EXPECT_FALSE(one->next_pending());
  hub.Add(3);
  EXPECT_FALSE(one->next_pending());
  auto three = hub.Connect(3);
  absl::StatusOr<JoinOutcome> second_three = absl::UnknownError("not run");
  std::thread t3(
      [&] { second_three = three->Join({.generation = 0, .step = -1, .store_port = 3000}); });
  hub.AwaitJoin(3);
  EXPECT_TRUE(one->next_pending());
  EXPECT_TRUE(two->next_pending());

  // Task 2 committed a later step than task 1: it becomes the source.
  absl::StatusOr<JoinOutcome> second_two = absl::UnknownError("not run");
  std::thread t2([&] { second_two = two->Join({.generation = 1, .step = 9, .store_port = 2001}); });
  KILN_ASSERT_OK_AND_ASSIGN(JoinOutcome second_one,
                            one->Join({.generation = 1, .step = 8, .store_port = 1001}));
  t2.join();
  t3.join();
  KILN_ASSERT_OK(second_two);
  KILN_ASSERT_OK(second_three);
  EXPECT_THAT(second_one.assignment.members, ElementsAre(2, 1, 3));
  EXPECT_EQ(second_one.assignment.rank, 1);
  EXPECT_EQ(second_one.assignment.store_port, 2001);
  EXPECT_EQ(second_one.assignment.reason, "worker 3 joined");
  EXPECT_EQ(second_three->assignment.generation, 2);
  EXPECT_EQ(second_three->assignment.rank, 2);
  one->StartWatch(2);
  EXPECT_FALSE(one->next_pending());

  // A removed worker is told to leave; the others form the next generation without it.
  hub.Remove(3);
  EXPECT_TRUE(one->next_pending());
  KILN_ASSERT_OK_AND_ASSIGN(JoinOutcome left, three->Join({.generation = 2, .step = 10}));
  EXPECT_TRUE(left.leave);
  EXPECT_EQ(left.reason, "removed by the test");
  std::thread t2b(
      [&] { second_two = two->Join({.generation = 2, .step = 10, .store_port = 2002}); });
  KILN_ASSERT_OK_AND_ASSIGN(JoinOutcome third_one,
                            one->Join({.generation = 2, .step = 10, .store_port = 1002}));
  t2b.join();
  KILN_ASSERT_OK(second_two);
  EXPECT_THAT(third_one.assignment.members, ElementsAre(1, 2));
  EXPECT_EQ(third_one.assignment.reason, "removed by the test");

  EXPECT_THAT(hub.generations(),
              ElementsAre(Pair(1, ElementsAre(1, 2)), Pair(2, ElementsAre(2, 1, 3)),
                          Pair(3, ElementsAre(1, 2))));
}

TEST(LocalRendezvousHubTest, AWorkerAlreadyJoinedIsToldToLeaveWhenRemoved) {
  LocalRendezvousHub hub({1, 2});
  auto two = hub.Connect(2);
  absl::StatusOr<JoinOutcome> outcome = absl::UnknownError("not run");
  std::thread t([&] { outcome = two->Join({.generation = 0, .step = -1, .store_port = 2000}); });
  hub.AwaitJoin(2);  // it waits for task 1, which never comes
  hub.Remove(2);
  t.join();
  KILN_ASSERT_OK(outcome);
  EXPECT_TRUE(outcome->leave);
  EXPECT_TRUE(hub.generations().empty());
}

TEST(LocalRendezvousHubTest, AfterTheJoinTimeoutTheFirstGenerationFormsWithThoseWhoJoined) {
  // Task 2 is launched but never joins: once the timeout has passed, task 1 trains alone.
  LocalRendezvousHub hub({1, 2}, /*join_timeout_micros=*/50'000);
  auto one = hub.Connect(1);
  KILN_ASSERT_OK_AND_ASSIGN(JoinOutcome outcome,
                            one->Join({.generation = 0, .step = -1, .store_port = 1000}));
  EXPECT_FALSE(outcome.leave);
  EXPECT_THAT(outcome.assignment.members, ElementsAre(1));
  EXPECT_EQ(outcome.assignment.world_size, 1);
  EXPECT_THAT(hub.generations(), ElementsAre(Pair(1, ElementsAre(1))));
}

}  // namespace
}  // namespace kiln::elastic::worker
