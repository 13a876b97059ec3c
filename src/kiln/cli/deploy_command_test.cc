// Tests of `kiln deploy` and `kiln predict`: the wait rule, the renderers, and the
// commands' HTTP flows against a real loopback server answering as docs/api.md documents.
#include "kiln/cli/deploy_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/cli/testing/fake_master.h"

namespace kiln::cli {
namespace {

using base::Json;
using testing::CliHarness;
using testing::FakeMaster;
using ::testing::HasSubstr;

Json Deployment(std::string state, int64_t version, int ready, int want, std::string reason = "") {
  Json replicas = Json::array();
  for (int i = 0; i < ready; ++i) {
    replicas.push_back({{"job_id", 10 + i},
                        {"version", version},
                        {"state", "READY"},
                        {"address", "127.0.0.1:" + std::to_string(9000 + i)}});
  }
  return {{"id", 3},
          {"name", "fm"},
          {"user", "alice"},
          {"model", "fmnist"},
          {"version", version},
          {"state", state},
          {"reason", reason},
          {"ready_replicas", ready},
          {"spec",
           {{"replicas", want}, {"slots", 1}, {"max_batch_size", 32}, {"max_queue_delay_us", 500}}},
          {"replicas", replicas},
          {"endpoints", {{"predict", "/api/v1/deployments/3/predict"}}},
          {"created_at", "2026-11-26T10:00:00.000000Z"}};
}

TEST(DeploymentProgressTest, ServesOnlyWhenEveryReplicaOfTheVersionIsReady) {
  EXPECT_EQ(DeploymentProgressOf(Deployment("PENDING", 1, 0, 2), std::nullopt),
            DeploymentProgress::kWaiting);
  EXPECT_EQ(DeploymentProgressOf(Deployment("READY", 1, 1, 2), std::nullopt),
            DeploymentProgress::kWaiting);
  EXPECT_EQ(DeploymentProgressOf(Deployment("READY", 1, 2, 2), std::nullopt),
            DeploymentProgress::kServing);
  Json rolling = Deployment("READY", 2, 2, 2);
  rolling["replicas"][0]["version"] = 1;
  EXPECT_EQ(DeploymentProgressOf(rolling, 2), DeploymentProgress::kWaiting);
  EXPECT_EQ(DeploymentProgressOf(Deployment("UPDATING", 2, 2, 2), 2), DeploymentProgress::kWaiting);
}

TEST(DeploymentProgressTest, AFailureOrARollbackEndsTheWait) {
  EXPECT_EQ(DeploymentProgressOf(Deployment("FAILED", 1, 0, 1), std::nullopt),
            DeploymentProgress::kFailed);
  EXPECT_EQ(DeploymentProgressOf(Deployment("READY", 1, 1, 1, "rollout to version 2 failed"), 2),
            DeploymentProgress::kFailed);
}

TEST(DeploymentRenderTest, TableAndDetails) {
  std::string table =
      RenderDeploymentsTable(Json::array({Deployment("READY", 2, 1, 2)}), 1'795'687'300'000'000);
  EXPECT_THAT(table, HasSubstr("ID  NAME  MODEL   VERSION  STATE  READY  AGE"));
  EXPECT_THAT(table, HasSubstr("3   fm    fmnist  2        READY  1/2"));
  std::string details =
      RenderDeploymentDetails(Deployment("READY", 2, 1, 2), 1'795'687'300'000'000);
  EXPECT_THAT(details, HasSubstr("model:      fmnist version 2"));
  EXPECT_THAT(details, HasSubstr("1/2 ready"));
  EXPECT_THAT(details, HasSubstr("10   2        READY  127.0.0.1:9000"));
}

class DeployCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.env["KILN_USER"] = "alice";
    h_.env["KILN_PASSWORD"] = "pw";
  }
  void Start() {
    master_.Start();
    h_.env["KILN_URL"] = master_.url();
  }

  FakeMaster master_;
  CliHarness h_;
};

TEST_F(DeployCommandTest, CreatePostsTheFlagsAndWaitsUntilEveryReplicaServes) {
  master_.OnJson("POST", "/api/v1/deployments", 201, Deployment("PENDING", 1, 0, 2));
  std::atomic<int> polls{0};
  master_.On("GET", "/api/v1/deployments/{id}", [&polls](net::HttpRequest&, net::Responder res) {
    int n = ++polls;
    res.Send(net::JsonResponse(200, Deployment(n < 2 ? "PENDING" : "READY", 1, n < 2 ? 0 : 2, 2)));
  });
  Start();
  ASSERT_EQ(h_.Run({"deploy", "create", "fm", "--model", "fmnist", "--replicas", "2",
                    "--max-batch-size", "8", "--wait"}),
            0)
      << h_.err();
  EXPECT_EQ(h_.out(), "3\n");
  EXPECT_THAT(h_.err(), HasSubstr("READY, version 1, 2/2 replicas ready"));
  auto posts = master_.RequestsTo("/api/v1/deployments");
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_EQ(Json::parse(posts[0].body),
            Json({{"name", "fm"}, {"model", "fmnist"}, {"replicas", 2}, {"max_batch_size", 8}}));
}

TEST_F(DeployCommandTest, UpdateWaitFailsWhenTheRolloutWasRolledBack) {
  master_.OnJson("PATCH", "/api/v1/deployments/{id}", 200, Deployment("UPDATING", 2, 2, 2));
  master_.OnJson("GET", "/api/v1/deployments/{id}", 200,
                 Deployment("READY", 1, 2, 2, "rollout to version 2 failed: bad model"));
  Start();
  EXPECT_EQ(h_.Run({"deploy", "update", "fm", "--version", "2", "--wait"}), 1);
  EXPECT_THAT(h_.err(), HasSubstr("rollout to version 2 failed: bad model"));
  auto patches = master_.RequestsTo("/api/v1/deployments/fm");
  ASSERT_FALSE(patches.empty());
  EXPECT_EQ(patches[0].method, "PATCH");
  EXPECT_EQ(Json::parse(patches[0].body), Json({{"version", 2}}));
}

TEST_F(DeployCommandTest, PredictPostsThePayloadAndPrintsTheAnswer) {
  master_.OnJson("POST", "/api/v1/deployments/{id}/predict", 200,
                 {{"model", "fm"}, {"version", "1"}, {"outputs", {{"y", {{1.5}}}}}});
  Start();
  ASSERT_EQ(h_.Run({"predict", "fm", "--data", R"({"inputs": [[1, 2]]})"}), 0) << h_.err();
  EXPECT_EQ(Json::parse(h_.out())["outputs"]["y"][0][0], 1.5);
  KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/p.json", R"({"inputs": [[3, 4]]})"));
  ASSERT_EQ(h_.Run({"predict", "fm", "--file", "p.json"}), 0) << h_.err();
  h_.in.str(R"({"inputs": [[5, 6]]})");
  ASSERT_EQ(h_.Run({"predict", "fm", "-"}), 0) << h_.err();
  auto posts = master_.RequestsTo("/api/v1/deployments/fm/predict");
  ASSERT_EQ(posts.size(), 3u);
  EXPECT_EQ(Json::parse(posts[1].body)["inputs"][0][0], 3);
  EXPECT_EQ(Json::parse(posts[2].body)["inputs"][0][1], 6);
}

TEST_F(DeployCommandTest, PredictRefusesAMissingOrBadPayloadBeforeSendingIt) {
  Start();
  EXPECT_EQ(h_.Run({"predict", "fm"}), 2);
  EXPECT_THAT(h_.err(), HasSubstr("exactly one payload"));
  EXPECT_EQ(h_.Run({"predict", "fm", "--data", "{not json"}), 2);
  EXPECT_THAT(h_.err(), HasSubstr("not JSON"));
  EXPECT_TRUE(master_.requests().empty());
}

}  // namespace
}  // namespace kiln::cli
