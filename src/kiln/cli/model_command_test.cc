// Tests of `kiln model`: the renderers, and the commands' HTTP flows against a real
// loopback server answering as docs/api.md documents.
#include "kiln/cli/model_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/cli/testing/fake_master.h"

namespace kiln::cli {
namespace {

using base::Json;
using testing::CliHarness;
using testing::FakeMaster;
using ::testing::HasSubstr;

// 2026-11-26T10:01:40Z, the harness's clock: 100 s after the sample was created.
constexpr int64_t kNow = 1'795'687'300'000'000;

Json SampleVersion() {
  return Json::parse(R"({
    "model": "fashion-mlp", "model_id": 1, "version": 2,
    "signature": {"inputs": [{"name": "image", "dtype": "float32", "shape": [1, 28, 28]}],
                  "outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}]},
    "metrics": {"accuracy": 0.8612, "loss": 0.39},
    "lineage": {"source": "job", "job_id": 12, "experiment_id": 3, "trial": 5,
                "hyperparameters": {"lr": 0.01}},
    "file": {"name": "model.pt", "size": 2048, "package_id": "sha256-ab"},
    "created_at": "2026-11-26T10:00:00.000000Z"})");
}

Json SampleModel() {
  Json m = {{"id", 1},
            {"name", "fashion-mlp"},
            {"user", "ada"},
            {"description", "an MLP"},
            {"created_at", "2026-11-26T10:00:00.000000Z"},
            {"latest_version", 2},
            {"latest", SampleVersion()}};
  Json v1 = SampleVersion();
  v1["version"] = 1;
  v1["lineage"] = {{"source", "upload"}};
  v1["metrics"] = Json::object();
  m["versions"] = {v1, SampleVersion()};
  return m;
}

TEST(RenderModelsTest, ListShowsTheLatestVersionsSignatureMetricsAndSource) {
  std::string table = RenderModelsTable(Json::array({SampleModel()}), kNow);
  EXPECT_EQ(table,
            "NAME         USER  LATEST  INPUTS                   OUTPUTS              "
            "METRICS                    SOURCE                         AGE\n"
            "fashion-mlp  ada   2       image: float32[1,28,28]  logits: float32[10]  "
            "accuracy=0.8612 loss=0.39  job 12 (experiment 3 trial 5)  1 min\n");
}

TEST(RenderModelsTest, DetailsListEveryVersion) {
  std::string out = RenderModelDetails(SampleModel(), kNow);
  EXPECT_THAT(out, HasSubstr("name:         fashion-mlp\n"));
  EXPECT_THAT(out, HasSubstr("description:  an MLP\n"));
  EXPECT_THAT(out, HasSubstr("VERSION  INPUTS"));
  EXPECT_THAT(out, HasSubstr("\n1        image: float32[1,28,28]"));
  EXPECT_THAT(out, HasSubstr("upload"));
  EXPECT_THAT(out, HasSubstr("2.0 KiB"));
}

TEST(RenderModelsTest, OneVersionShowsLineageAndFile) {
  std::string out = RenderModelVersion(SampleVersion(), kNow);
  EXPECT_THAT(out, HasSubstr("inputs:           image: float32[1,28,28]\n"));
  EXPECT_THAT(out, HasSubstr("hyperparameters:  {\"lr\":0.01}\n"));
  EXPECT_THAT(out, HasSubstr("file:             model.pt (2.0 KiB, package sha256-ab)\n"));
  EXPECT_EQ(RenderTensors(Json::array()), "-");
}

class ModelCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.env["KILN_USER"] = "admin";
    h_.env["KILN_PASSWORD"] = "pw";
  }
  void Start() {
    master_.Start();
    h_.env["KILN_URL"] = master_.url();
  }

  FakeMaster master_;
  CliHarness h_;
};

TEST_F(ModelCommandTest, RegisterFromAJobPostsItsIdAndPrintsTheVersion) {
  master_.OnJson("POST", "/api/v1/models", 201, SampleVersion());
  Start();
  ASSERT_EQ(h_.Run({"model", "register", "fashion-mlp", "--job", "12"}), 0) << h_.err();
  EXPECT_EQ(h_.out(),
            "model fashion-mlp version 2 registered from job 12 (experiment 3 trial 5)\n");
  auto posts = master_.RequestsTo("/api/v1/models");
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_EQ(Json::parse(posts[0].body), Json::parse(R"({"name": "fashion-mlp", "job_id": 12})"));
}

TEST_F(ModelCommandTest, RegisterAFileUploadsItThenPostsThePackageAndSignature) {
  master_.OnJson("POST", "/api/v1/packages", 201, {{"id", "sha256-ab"}});
  master_.OnJson("POST", "/api/v1/models", 201, SampleVersion());
  Start();
  KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/model.pt", "PK\x03\x04..."));
  // A config.json holding the signature under "signature" is accepted too.
  KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/config.json",
                                           R"({"signature": {"inputs": [], "outputs": []}})"));
  ASSERT_EQ(h_.Run({"model", "register", "fm", "--file", "model.pt", "--signature", "config.json",
                    "--description", "hand-made"}),
            0)
      << h_.err();
  auto uploads = master_.RequestsTo("/api/v1/packages");
  ASSERT_EQ(uploads.size(), 1u);
  EXPECT_EQ(uploads[0].Query("name"), "model.pt");
  EXPECT_EQ(uploads[0].body, "PK\x03\x04...");
  auto posts = master_.RequestsTo("/api/v1/models");
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_EQ(Json::parse(posts[0].body), Json::parse(R"({"name": "fm", "package_id": "sha256-ab",
      "description": "hand-made", "signature": {"inputs": [], "outputs": []}})"));
}

TEST_F(ModelCommandTest, RegisterNeedsExactlyOneSource) {
  Start();
  EXPECT_NE(h_.Run({"model", "register", "fm"}), 0);
  EXPECT_THAT(h_.err(), HasSubstr("--job ID"));
  h_.Clear();
  EXPECT_NE(h_.Run({"model", "register", "fm", "--job", "1", "--file", "x.pt"}), 0);
  EXPECT_TRUE(master_.RequestsTo("/api/v1/models").empty());
}

TEST_F(ModelCommandTest, RegisterShowsTheServersReason) {
  master_.On("POST", "/api/v1/models", [](net::HttpRequest&, net::Responder res) {
    res.Send(testing::ApiError(absl::FailedPreconditionError("job 4 is RUNNING")));
  });
  Start();
  EXPECT_NE(h_.Run({"model", "register", "fm", "--job", "4"}), 0);
  EXPECT_THAT(h_.err(), HasSubstr("job 4 is RUNNING"));
}

TEST_F(ModelCommandTest, ShowAVersionAndDeleteOne) {
  master_.OnJson("GET", "/api/v1/models/fashion-mlp/versions/2", 200, SampleVersion());
  master_.OnJson("DELETE", "/api/v1/models/fashion-mlp/versions/1", 200,
                 {{"deleted", "fashion-mlp"}, {"version", 1}});
  master_.OnJson("GET", "/api/v1/models", 200, {{"models", Json::array()}});
  Start();
  ASSERT_EQ(h_.Run({"model", "show", "fashion-mlp", "--version", "2"}), 0) << h_.err();
  EXPECT_THAT(h_.out(), HasSubstr("metrics:          accuracy=0.8612 loss=0.39\n"));
  h_.Clear();
  ASSERT_EQ(h_.Run({"model", "delete", "fashion-mlp", "--version", "1"}), 0) << h_.err();
  EXPECT_EQ(h_.out(), "model fashion-mlp version 1 deleted\n");
  h_.Clear();
  ASSERT_EQ(h_.Run({"model", "list"}), 0) << h_.err();
  EXPECT_THAT(h_.err(), HasSubstr("No models yet"));
}

}  // namespace
}  // namespace kiln::cli
