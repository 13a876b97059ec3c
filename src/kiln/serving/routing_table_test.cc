// routing_table_test.cc

#include "kiln/serving/routing_table.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>
#include <vector>

namespace kiln::serving {
namespace {

DeploymentRoute MakeRoute(int64_t id, std::string name, std::vector<int64_t> jobs) {
  DeploymentRoute route;
  route.id = id;
  route.name = std::move(name);
  route.state = "READY";
  route.version = 1;
  for (int64_t job : jobs) {
    route.replicas.push_back(ReplicaEndpoint{job, 1, "127.0.0.1", static_cast<int>(9000 + job)});
  }
  return route;
}

TEST(RoutingTableTest, FindsRoutesByIdAndNameAndForgetsRemovedOnes) {
  RoutingTable table;
  table.Put(MakeRoute(1, "mnist", {10}));
  table.Put(MakeRoute(2, "other", {}));
  ASSERT_NE(table.Find(1), nullptr);
  EXPECT_EQ(table.Find(1)->name, "mnist");
  ASSERT_NE(table.FindByName("other"), nullptr);
  EXPECT_EQ(table.FindByName("other")->id, 2);
  EXPECT_EQ(table.Find(3), nullptr);
  EXPECT_EQ(table.FindByName("nope"), nullptr);

  table.Remove(1);
  EXPECT_EQ(table.Find(1), nullptr);
  EXPECT_EQ(table.FindByName("mnist"), nullptr);
  table.Remove(1);  // unknown: ignored
}

TEST(RoutingTableTest, PutReplacesTheRouteAndItsNameButOldSnapshotsStayUnchanged) {
  RoutingTable table;
  table.Put(MakeRoute(1, "a", {10}));
  auto before = table.Find(1);
  table.Put(MakeRoute(1, "b", {10, 11}));
  EXPECT_EQ(table.FindByName("a"), nullptr);
  ASSERT_NE(table.FindByName("b"), nullptr);
  EXPECT_EQ(table.Find(1)->replicas.size(), 2u);
  EXPECT_EQ(before->name, "a");
  EXPECT_EQ(before->replicas.size(), 1u);
}

TEST(RoutingTableTest, AcquirePicksTheLeastLoadedReplica) {
  RoutingTable table;
  table.Put(MakeRoute(1, "d", {10, 11, 12}));
  auto route = table.Find(1);
  auto a = table.Acquire(*route, {});
  auto b = table.Acquire(*route, {});
  auto c = table.Acquire(*route, {});
  ASSERT_TRUE(a && b && c);
  // Three requests in flight on three idle replicas: one each.
  EXPECT_EQ(table.Outstanding(10), 1);
  EXPECT_EQ(table.Outstanding(11), 1);
  EXPECT_EQ(table.Outstanding(12), 1);
  // Free one replica: the next request goes to it.
  table.Release(*b);
  auto d = table.Acquire(*route, {});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->replica.job_id, b->replica.job_id);
}

TEST(RoutingTableTest, TiesAreBrokenRoundRobin) {
  RoutingTable table;
  table.Put(MakeRoute(1, "d", {10, 11}));
  auto route = table.Find(1);
  std::map<int64_t, int> picks;
  for (int i = 0; i < 10; ++i) {
    auto lease = table.Acquire(*route, {});
    ASSERT_TRUE(lease);
    ++picks[lease->replica.job_id];
    table.Release(*lease);  // always idle: every pick is a tie
  }
  EXPECT_EQ(picks[10], 5);
  EXPECT_EQ(picks[11], 5);
}

TEST(RoutingTableTest, AcquireSkipsTriedReplicasUnlessAllWereTried) {
  RoutingTable table;
  table.Put(MakeRoute(1, "d", {10, 11}));
  auto route = table.Find(1);
  for (int i = 0; i < 4; ++i) {
    auto lease = table.Acquire(*route, {10});
    ASSERT_TRUE(lease);
    EXPECT_EQ(lease->replica.job_id, 11);
    table.Release(*lease);
  }
  // Both tried: a lone survivor may be tried again (after a reconnect).
  auto lease = table.Acquire(*route, {10, 11});
  ASSERT_TRUE(lease);

  table.Put(MakeRoute(2, "empty", {}));
  EXPECT_FALSE(table.Acquire(*table.Find(2), {}));
}

TEST(RoutingTableTest, ReleaseAfterTheReplicaLeftIsHarmless) {
  RoutingTable table;
  table.Put(MakeRoute(1, "d", {10, 11}));
  auto lease = table.Acquire(*table.Find(1), {11});
  ASSERT_TRUE(lease);
  EXPECT_EQ(table.Outstanding(10), 1);
  table.Put(MakeRoute(1, "d", {11}));  // replica 10 crashed
  EXPECT_EQ(table.Outstanding(10), 0);
  table.Release(*lease);
  EXPECT_EQ(table.Outstanding(10), 0);
  EXPECT_EQ(table.Outstanding(11), 0);
}

TEST(RoutingTableTest, ConcurrentReadersWritersAndLeasesKeepCountsExact) {
  RoutingTable table;
  table.Put(MakeRoute(1, "d", {10, 11, 12, 13}));
  constexpr int kThreads = 8;
  constexpr int kIterations = 5000;
  std::atomic<bool> stop{false};
  std::atomic<int> misses{0};
  // A writer keeps replacing the route (same replicas, a changing state), the way the
  // controller re-puts routes; readers must always see a whole route.
  std::thread writer([&] {
    int i = 0;
    while (!stop.load()) {
      DeploymentRoute route = MakeRoute(1, "d", {10, 11, 12, 13});
      route.state = (i++ % 2) ? "READY" : "UPDATING";
      table.Put(std::move(route));
    }
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < kThreads; ++t) {
    readers.emplace_back([&] {
      for (int i = 0; i < kIterations; ++i) {
        auto route = table.FindByName("d");
        if (!route || route->replicas.size() != 4) {
          ++misses;
          continue;
        }
        auto lease = table.Acquire(*route, {});
        if (!lease) {
          ++misses;
          continue;
        }
        table.Release(*lease);
      }
    });
  }
  for (auto& r : readers) r.join();
  stop = true;
  writer.join();
  EXPECT_EQ(misses.load(), 0);
  for (int64_t job : {10, 11, 12, 13}) EXPECT_EQ(table.Outstanding(job), 0) << job;
}

TEST(RoutingTableTest, ConcurrentLeasesSpreadOverReplicas) {
  RoutingTable table;
  table.Put(MakeRoute(1, "d", {10, 11}));
  auto route = table.Find(1);
  // Every thread holds one lease at a time: with 8 holders and two replicas, least
  // outstanding keeps the two within one of each other at every Acquire.
  std::vector<std::thread> threads;
  std::atomic<int> imbalanced{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        auto lease = table.Acquire(*route, {});
        int64_t a = table.Outstanding(10);
        int64_t b = table.Outstanding(11);
        if (a > 8 || b > 8 || a < 0 || b < 0) ++imbalanced;
        table.Release(*lease);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(imbalanced.load(), 0);
  EXPECT_EQ(table.Outstanding(10), 0);
  EXPECT_EQ(table.Outstanding(11), 0);
}

}  // namespace
}  // namespace kiln::serving
