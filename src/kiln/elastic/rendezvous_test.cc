// rendezvous_test.cc
#include "kiln/elastic/rendezvous.h"

#include <gtest/gtest.h>

namespace kiln::elastic {
namespace {

constexpr int64_t kTimeout = 10'000'000;

JoinRequest Req(int64_t task, int64_t generation = 0, int64_t step = -1) {
  JoinRequest r;
  r.task_id = task;
  r.host = "10.0.0." + std::to_string(task);
  r.store_port = 40000 + static_cast<int>(task);
  r.generation = generation;
  r.step = step;
  return r;
}

// Forms generation 1 of `tasks` (all starting, all joined) and returns it.
Generation Start(Rendezvous& rv, std::vector<int64_t> tasks) {
  for (int64_t t : tasks) rv.AddStarting(t);
  for (int64_t t : tasks) rv.Join(Req(t), 0);
  std::optional<Generation> g = rv.MaybeForm(1, nullptr);
  EXPECT_TRUE(g.has_value());
  return *g;
}

TEST(RendezvousTest, FirstGenerationWaitsForEveryStartingWorker) {
  Rendezvous rv(1, kTimeout);
  rv.AddStarting(1);
  rv.AddStarting(2);
  rv.Join(Req(1), 0);
  EXPECT_FALSE(rv.MaybeForm(1, nullptr));  // 2 is still starting
  EXPECT_EQ(rv.AnswerJoin(1, 0).kind, JoinAnswer::kWait);
  rv.Join(Req(2), 5);
  std::optional<Generation> g = rv.MaybeForm(6, nullptr);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->id, 1);
  EXPECT_EQ(g->members, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(g->store_host, "10.0.0.1");
  EXPECT_EQ(g->store_port, 40001);
  EXPECT_EQ(g->reason, "start");
  JoinAnswer a = rv.AnswerJoin(2, 0);
  EXPECT_EQ(a.kind, JoinAnswer::kAssigned);
  EXPECT_EQ(a.rank, 1);
  EXPECT_EQ(a.generation.world_size(), 2);
}

TEST(RendezvousTest, FirstGenerationFormsWithMinWorkersAfterTimeout) {
  Rendezvous rv(1, kTimeout);
  rv.AddStarting(1);
  rv.AddStarting(2);
  rv.Join(Req(1), 0);
  EXPECT_FALSE(rv.MaybeForm(kTimeout - 1, nullptr));
  std::optional<Generation> g = rv.MaybeForm(kTimeout, nullptr);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->members, (std::vector<int64_t>{1}));
}

TEST(RendezvousTest, NeverFormsBelowMinWorkers) {
  Rendezvous rv(2, kTimeout);
  rv.Join(Req(1), 0);
  EXPECT_FALSE(rv.MaybeForm(10 * kTimeout, nullptr));
  rv.Join(Req(2), 0);
  EXPECT_TRUE(rv.MaybeForm(10 * kTimeout, nullptr));
}

TEST(RendezvousTest, DeadMemberIsDroppedWithoutWaiting) {
  Rendezvous rv(1, kTimeout);
  Start(rv, {1, 2, 3});
  rv.RemoveWorker(2, "worker 2 exited (signal 9)", 100);
  EXPECT_TRUE(rv.AnswerWatch(1, 1).next);
  EXPECT_FALSE(rv.AnswerWatch(1, 1).leave);
  rv.Join(Req(3, 1, 41), 110);
  EXPECT_FALSE(rv.MaybeForm(120, nullptr));  // 1 has not joined yet
  rv.Join(Req(1, 1, 41), 130);
  std::optional<Generation> g = rv.MaybeForm(140, nullptr);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->id, 2);
  EXPECT_EQ(g->members, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(g->reason, "worker 2 exited (signal 9)");
  EXPECT_FALSE(rv.AnswerWatch(1, 2).next);
  EXPECT_TRUE(rv.AnswerWatch(1, 1).next);  // an old generation is over
}

TEST(RendezvousTest, SourceIsTheNewestCommittedStateThenTheOldestWorker) {
  Rendezvous rv(1, kTimeout);
  Start(rv, {4, 5, 6});
  rv.RemoveWorker(4, "gone", 0);
  rv.Join(Req(5, 1, 99), 0);
  rv.Join(Req(6, 1, 100), 0);  // its last all-reduce completed, the others' did not
  std::optional<Generation> g = rv.MaybeForm(1, nullptr);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->members, (std::vector<int64_t>{6, 5}));
  EXPECT_EQ(g->store_port, 40006);

  rv.Join(Req(7, 0, -1), 2);  // a newcomer has no state
  rv.Join(Req(6, 2, 200), 3);
  rv.Join(Req(5, 2, 200), 3);
  g = rv.MaybeForm(4, nullptr);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->members, (std::vector<int64_t>{5, 6, 7}));
  EXPECT_EQ(g->reason, "worker 7 joined");
}

TEST(RendezvousTest, MemberThatDoesNotJoinIsAStragglerAfterTimeout) {
  Rendezvous rv(1, kTimeout);
  Start(rv, {1, 2});
  rv.Join(Req(1, 1, 10), 1000);  // its collective failed; 2 hangs
  EXPECT_FALSE(rv.MaybeForm(1000 + kTimeout - 1, nullptr));
  std::vector<int64_t> stragglers;
  std::optional<Generation> g = rv.MaybeForm(1000 + kTimeout, &stragglers);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->members, (std::vector<int64_t>{1}));
  EXPECT_EQ(stragglers, (std::vector<int64_t>{2}));
  EXPECT_NE(g->reason.find("worker 2 did not join in time"), std::string::npos);
}

TEST(RendezvousTest, LeavingWorkerIsToldToLeaveAndTheRestReform) {
  Rendezvous rv(1, kTimeout);
  Start(rv, {1, 2});
  rv.RequestLeave(2, "scaled to 1 worker", 50);
  EXPECT_TRUE(rv.AnswerWatch(2, 1).leave);
  EXPECT_TRUE(rv.AnswerWatch(1, 1).next);
  rv.Join(Req(2, 1, 7), 60);
  EXPECT_EQ(rv.AnswerJoin(2, 1).kind, JoinAnswer::kLeave);
  EXPECT_EQ(rv.AnswerJoin(2, 1).reason, "scaled to 1 worker");
  rv.Join(Req(1, 1, 7), 60);
  std::optional<Generation> g = rv.MaybeForm(61, nullptr);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->members, (std::vector<int64_t>{1}));
  EXPECT_EQ(g->reason, "scaled to 1 worker");
  // Its exit afterwards changes nothing.
  rv.RemoveWorker(2, "exited", 70);
  EXPECT_FALSE(rv.change_pending());
}

TEST(RendezvousTest, ResentJoinOfAnAssignedMemberGetsTheSameAssignment) {
  Rendezvous rv(1, kTimeout);
  Start(rv, {1, 2});
  rv.Join(Req(2, 0), 5);  // the reply to its first join was lost
  EXPECT_FALSE(rv.change_pending());
  JoinAnswer a = rv.AnswerJoin(2, 0);
  EXPECT_EQ(a.kind, JoinAnswer::kAssigned);
  EXPECT_EQ(a.generation.id, 1);
}

TEST(RendezvousTest, RestoredGenerationContinuesAfterAMasterRestart) {
  Rendezvous rv(1, kTimeout);
  Generation g;
  g.id = 4;
  g.members = {8, 9};
  rv.Restore(g);
  EXPECT_FALSE(rv.AnswerWatch(8, 4).next);
  rv.RemoveWorker(9, "agent lost", 10);
  rv.Join(Req(8, 4, 300), 11);
  std::optional<Generation> next = rv.MaybeForm(12, nullptr);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->id, 5);
  EXPECT_EQ(next->members, (std::vector<int64_t>{8}));
}

TEST(RendezvousTest, ReplacementAfterLosingEveryMemberWaitsForStartingWorkers) {
  Rendezvous rv(1, kTimeout);
  Start(rv, {1});
  rv.RemoveWorker(1, "exited (signal 9)", 10);
  rv.AddStarting(2);
  rv.AddStarting(3);
  rv.Join(Req(2), 20);
  EXPECT_FALSE(rv.MaybeForm(21, nullptr));
  rv.Join(Req(3), 22);
  std::optional<Generation> g = rv.MaybeForm(23, nullptr);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->members, (std::vector<int64_t>{2, 3}));
}

}  // namespace
}  // namespace kiln::elastic
