// The in-process hub stands in for kilnd in the torch tests; these check it forms
// generations the way the contract says (ARCHITECTURE.md §5.2).
#include "kiln/elastic/worker/testing/local_rendezvous.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::elastic::worker {
namespace {

using ::testing::ElementsAre;

TEST(LocalRendezvousHubTest, SourceIsTheHighestStepThenTheOldest) {
  LocalRendezvousHub hub({1, 2});
  auto one = hub.Connect(1);
  auto two = hub.Connect(2);
  JoinOutcome first_one, first_two;
  std::thread t([&] { first_two = *two->Join({.generation = 0, .step = -1, .store_port = 2000}); });
  first_one = *one->Join({.generation = 0, .step = -1, .store_port = 1000});
  t.join();
  EXPECT_THAT(first_one.assignment.members, ElementsAre(1, 2));
  EXPECT_EQ(first_one.assignment.rank, 0);
  EXPECT_EQ(first_two.assignment.rank, 1);
  EXPECT_EQ(first_two.assignment.store_port, 1000);

  one->StartWatch(1);
  EXPECT_FALSE(one->next_pending());
  hub.Add(3);
  EXPECT_TRUE(one->next_pending());

  // Task 2 committed a later step than task 1: it becomes the source.
  auto three = hub.Connect(3);
  JoinOutcome second_two, second_three;
  std::thread t2(
      [&] { second_two = *two->Join({.generation = 1, .step = 9, .store_port = 2001}); });
  std::thread t3(
      [&] { second_three = *three->Join({.generation = 0, .step = -1, .store_port = 3000}); });
  JoinOutcome second_one = *one->Join({.generation = 1, .step = 8, .store_port = 1001});
  t2.join();
  t3.join();
  EXPECT_THAT(second_one.assignment.members, ElementsAre(2, 1, 3));
  EXPECT_EQ(second_one.assignment.store_port, 2001);
  EXPECT_EQ(second_three.assignment.generation, 2);

  hub.Remove(3);
  KILN_ASSERT_OK_AND_ASSIGN(JoinOutcome left, three->Join({.generation = 2, .step = 10}));
  EXPECT_TRUE(left.leave);
}

}  // namespace
}  // namespace kiln::elastic::worker
