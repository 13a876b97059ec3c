// Two ranks as two threads over a real TCPStore and real Gloo groups on loopback: the
// gradient all-reduce gives the single-rank gradient of the same global batch, and a rank
// whose peer vanishes gets an error instead of hanging.
#include "kiln/torch/elastic_group.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "kiln/base/testing/status_matchers.h"
#include "kiln/torch/elastic_step.h"

namespace kiln::torch {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr char kHost[] = "127.0.0.1";

GroupOptions Options(const StoreServer& server, int rank, int world,
                     std::chrono::milliseconds timeout = 10s) {
  return {.generation = 1,
          .rank = rank,
          .world_size = world,
          .store_host = kHost,
          .store_port = server.port(),
          .local_host = kHost,
          .timeout = timeout};
}

// Forms a group of `world` ranks on threads, rank 0 hosting the store, and runs `body`
// for each rank on its own thread.
void RunRanks(int world, std::chrono::milliseconds timeout,
              const std::function<void(int rank, std::unique_ptr<ElasticGroup>)>& body) {
  auto server = StoreServer::Open(kHost, timeout);
  KILN_CHECK_OK(server.status());
  const GroupOptions base = Options(**server, 0, world, timeout);
  std::vector<std::thread> threads;
  for (int rank = world - 1; rank >= 0; --rank) {
    std::unique_ptr<StoreServer> own = rank == 0 ? std::move(*server) : nullptr;
    threads.emplace_back([&body, base, rank, own = std::move(own)]() mutable {
      GroupOptions options = base;
      options.rank = rank;
      auto group = ElasticGroup::Connect(options, std::move(own));
      KILN_CHECK_OK(group.status());
      body(rank, std::move(*group));
    });
  }
  for (auto& t : threads) t.join();
}

class ElasticGroupTest : public ::testing::Test {
 protected:
  void SetUp() override { ::torch::set_num_threads(1); }
};

TEST_F(ElasticGroupTest, StoreServersGetFreePorts) {
  KILN_ASSERT_OK_AND_ASSIGN(auto a, StoreServer::Open(kHost, 5s));
  KILN_ASSERT_OK_AND_ASSIGN(auto b, StoreServer::Open(kHost, 5s));
  EXPECT_GT(a->port(), 0);
  EXPECT_GT(b->port(), 0);
  EXPECT_NE(a->port(), b->port());
}

TEST_F(ElasticGroupTest, SharesTileTheGlobalBatch) {
  for (int world : {1, 2, 3, 5}) {
    int64_t expected_begin = 100;
    for (int rank = 0; rank < world; ++rank) {
      const internal::Share share = internal::ShareOf(100, 137, rank, world);
      EXPECT_EQ(share.begin, expected_begin);
      EXPECT_GE(share.size(), 37 / world);
      EXPECT_LE(share.size(), 37 / world + 1);
      expected_begin = share.end;
    }
    EXPECT_EQ(expected_begin, 137);
  }
  EXPECT_EQ(internal::ShareOf(0, 1, 0, 2).size(), 0);
  EXPECT_EQ(internal::ShareOf(0, 1, 1, 2).size(), 1);
}

TEST_F(ElasticGroupTest, TwoRanksSumTheGradientOfOneRankOnTheSameGlobalBatch) {
  // A global batch of 37 (shares of 18 and 19), random images and labels.
  constexpr int64_t kBatch = 37;
  ::torch::manual_seed(7);
  const ::torch::Tensor x = ::torch::randn({kBatch, 1, 28, 28});
  const ::torch::Tensor y = ::torch::randint(0, 10, {kBatch}, ::torch::kInt64);
  auto make_model = [] {
    ::torch::manual_seed(1);
    return internal::MakeClassifier("mlp", 32);
  };

  // One rank, the whole batch.
  auto single_model = make_model();
  internal::TrainState single(*single_model);
  const ::torch::Tensor whole = single.StepVector(x, y, kBatch, /*pending=*/false);
  single.Apply(whole, 0.1, 0.9);
  const int64_t n = single.num_parameters();

  // Two ranks, half a batch each; only rank 1 has a pending generation.
  std::vector<std::shared_ptr<internal::Classifier>> models = {make_model(), make_model()};
  std::vector<::torch::Tensor> summed(2);
  std::vector<::torch::Tensor> after(2);
  RunRanks(2, 10s, [&](int rank, std::unique_ptr<ElasticGroup> group) {
    internal::TrainState state(*models[rank]);
    const internal::Share share = internal::ShareOf(0, kBatch, rank, 2);
    ::torch::Tensor v = state.StepVector(x.slice(0, share.begin, share.end),
                                         y.slice(0, share.begin, share.end), kBatch, rank == 1);
    KILN_CHECK_OK(group->AllreduceSum(v));
    state.Apply(v, 0.1, 0.9);
    summed[rank] = v;
    after[rank] = state.Pack();
  });

  EXPECT_TRUE(::torch::equal(summed[0], summed[1]));
  EXPECT_TRUE(::torch::allclose(summed[0].slice(0, 0, n), whole.slice(0, 0, n), 1e-4, 1e-6))
      << "max difference " << (summed[0] - whole).abs().max().item<float>();
  EXPECT_NEAR(summed[0][n].item<float>(), whole[n].item<float>(), 1e-5);  // the mean loss
  EXPECT_EQ(summed[0][n + 1].item<float>(), 1.0f);                        // one rank pending
  EXPECT_TRUE(::torch::equal(after[0], after[1]));
  EXPECT_TRUE(::torch::allclose(after[0], single.Pack(), 1e-4, 1e-6));
}

TEST_F(ElasticGroupTest, BroadcastCopiesTheRootsTensor) {
  std::vector<::torch::Tensor> got(3);
  RunRanks(3, 10s, [&](int rank, std::unique_ptr<ElasticGroup> group) {
    ::torch::Tensor t = ::torch::full({4}, static_cast<double>(rank), ::torch::kFloat64);
    KILN_CHECK_OK(group->Broadcast(t, 2));
    got[rank] = t;
  });
  for (const auto& t : got)
    EXPECT_TRUE(::torch::equal(t, ::torch::full({4}, 2.0, ::torch::kFloat64)));
}

TEST_F(ElasticGroupTest, ARankWhosePeerVanishesGetsAnError) {
  // Rank 1 takes part in one all-reduce, then its group is destroyed (its connections
  // close, as when its process dies); rank 0's next all-reduce fails instead of hanging.
  absl::Status second;
  std::mutex mu;
  std::condition_variable cv;
  bool gone = false;
  RunRanks(2, 5s, [&](int rank, std::unique_ptr<ElasticGroup> group) {
    ::torch::Tensor t = ::torch::ones({8});
    KILN_CHECK_OK(group->AllreduceSum(t));
    if (rank == 1) {
      group.reset();
      std::lock_guard lock(mu);
      gone = true;
      cv.notify_all();
      return;
    }
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return gone; });
    }
    second = group->AllreduceSum(t);
  });
  EXPECT_THAT(second, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("all-reduce")));
}

TEST_F(ElasticGroupTest, ARankWhosePeerStopsAnsweringTimesOut) {
  // Rank 1 stays connected but never joins the second all-reduce: the Gloo timeout ends
  // rank 0's wait with an error.
  absl::Status second;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  RunRanks(2, 1s, [&](int rank, std::unique_ptr<ElasticGroup> group) {
    ::torch::Tensor t = ::torch::ones({8});
    KILN_CHECK_OK(group->AllreduceSum(t));
    if (rank == 1) {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return done; });  // holds its group open until rank 0 gave up
      return;
    }
    second = group->AllreduceSum(t);
    std::lock_guard lock(mu);
    done = true;
    cv.notify_all();
  });
  EXPECT_THAT(second, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("all-reduce")));
}

TEST_F(ElasticGroupTest, ConnectingToAStoreThatIsGoneFails) {
  int port = 0;
  {
    KILN_ASSERT_OK_AND_ASSIGN(auto server, StoreServer::Open(kHost, 1s));
    port = server->port();
  }
  GroupOptions options{.generation = 1,
                       .rank = 1,
                       .world_size = 2,
                       .store_host = kHost,
                       .store_port = port,
                       .local_host = kHost,
                       .timeout = 1s};
  EXPECT_THAT(ElasticGroup::Connect(options, nullptr),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("connecting to the store")));
  options.rank = 2;
  EXPECT_THAT(ElasticGroup::Connect(options, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank 2")));
}

}  // namespace
}  // namespace kiln::torch
