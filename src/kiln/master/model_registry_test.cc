// Tests of the model registry on a real SQLite store: registering from a finished job's
// artifacts (signature, final metrics, lineage) and from an uploaded file, ownership of
// names, visibility, and deletion guarded by deployments.
#include "kiln/master/model_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/base/files.h"
#include "kiln/base/testing/fake_clock.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/master/testing/controller_fixtures.h"
#include "kiln/store/sqlite_store.h"

namespace kiln::master {
namespace {

using base::Json;
using ::testing::HasSubstr;

// Real files written by torch.jit.save: a scripted Linear (no signature inside), and one
// from kiln.save_model, which keeps its signature inside (inputs x float32[4], outputs
// probs float32[3]).
std::string TorchScriptFile(const std::string& name = "cuda_linear.pt") {
  absl::StatusOr<std::string> bytes = base::ReadFile(absl::StrCat(KILN_TORCH_TESTDATA, "/", name));
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.value_or("");
}

constexpr char kSignature[] = R"({
  "inputs": [{"name": "image", "dtype": "float32", "shape": [1, 28, 28]}],
  "outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}]})";

class ModelRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = "/tmp/kiln_model_registry_test_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    data_dir_ = pattern;
    KILN_ASSERT_OK(base::MakeDirs(data_dir_ + "/packages"));
    KILN_ASSERT_OK_AND_ASSIGN(store_, store::SqliteStore::Open(":memory:"));
    auth_ = std::make_unique<auth::Authenticator>(*store_, clock_);
    alice_ = testing::AddUser(*store_, clock_.NowMicros(), "alice", false);
    bob_ = testing::AddUser(*store_, clock_.NowMicros(), "bob", false);
    admin_ = testing::AddUser(*store_, clock_.NowMicros(), "root", true);
    jobs_ = std::make_unique<JobController>(*store_, *auth_, clock_, JobControllerOptions{});
    registry_ = std::make_unique<ModelRegistry>(*store_, *jobs_, clock_, data_dir_);
  }
  void TearDown() override { (void)base::RemoveAll(data_dir_); }

  // A "file" package with `bytes`, as the packages API stores one.
  std::string AddPackage(const std::string& name, const std::string& bytes) {
    std::string id = absl::StrCat("sha256-", name, "-", ++packages_);
    EXPECT_TRUE(base::WriteFileAtomically(data_dir_ + "/packages/" + id, bytes).ok());
    store::PackageRecord p{id, name, "file", static_cast<int64_t>(bytes.size()), 1};
    EXPECT_TRUE(store_->PutPackage(p).ok());
    return id;
  }

  // A job of `who` in `state` whose agent reported model/model.pt (and, when
  // `signature` is not empty, model/signature.json).
  int64_t AddJob(const auth::Principal& who, store::JobState state,
                 const std::string& signature = kSignature, Json spec = Json::object()) {
    store::JobRecord job;
    job.name = "train";
    job.user_id = who.user_id;
    job.state = state;
    if (spec.empty()) {
      spec = {{"command", {"python3", "train.py"}},
              {"config", {{"lr", 0.01}, {"hidden", 64}}},
              {"env", {{"KILN_EXPERIMENT_ID", "3"}, {"KILN_TRIAL_ID", "5"}}}};
    }
    job.spec_json = base::DumpJson(spec);
    job.created_at = clock_.NowMicros();
    auto created = store_->CreateJob(job, store::EventRecord{0, 1, "STATE", "created"});
    EXPECT_TRUE(created.ok()) << created.status();
    std::vector<store::ArtifactRecord> artifacts;
    artifacts.push_back(
        {created->id, "model/model.pt", AddPackage("model.pt", model_bytes_), 7, 1});
    if (!signature.empty()) {
      artifacts.push_back(
          {created->id, "model/signature.json", AddPackage("signature.json", signature), 1, 1});
    }
    EXPECT_TRUE(store_->PutArtifacts(created->id, artifacts).ok());
    return created->id;
  }

  void AddMetric(int64_t job, const std::string& name, const std::string& group, int64_t step,
                 double value, int64_t seq) {
    store::MetricPoint p{name, group, step, value, seq};
    auto added = store_->AppendMetrics(job, "w", seq, {p});
    ASSERT_TRUE(added.ok()) << added.status();
  }

  RegisterModelRequest FromJob(const std::string& name, int64_t job) {
    RegisterModelRequest r;
    r.name = name;
    r.job_id = job;
    return r;
  }

  base::FakeClock clock_{1'795'687'200'000'000};
  std::string data_dir_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::Authenticator> auth_;
  std::unique_ptr<JobController> jobs_;
  std::unique_ptr<ModelRegistry> registry_;
  auth::Principal alice_, bob_, admin_;
  int packages_ = 0;
  std::string model_bytes_ = TorchScriptFile();  // what AddJob's model/model.pt holds
};

TEST_F(ModelRegistryTest, RegistersAFinishedJobsModelWithSignatureMetricsAndLineage) {
  int64_t job = AddJob(alice_, store::JobState::kFinished);
  AddMetric(job, "loss", "train", 100, 0.9, 1);
  AddMetric(job, "loss", "train", 200, 0.5, 2);
  AddMetric(job, "loss", "test", 1, 0.7, 3);
  AddMetric(job, "loss", "test", 2, 0.6, 4);
  AddMetric(job, "accuracy", "test", 1, 0.8, 5);
  AddMetric(job, "accuracy", "test", 2, 0.86, 6);
  AddMetric(job, "lr", "train", 1, 0.01, 7);
  KILN_ASSERT_OK_AND_ASSIGN(ModelView view, registry_->Register(alice_, FromJob("fm", job)));
  ASSERT_EQ(view.versions.size(), 1u);
  Json v = ModelVersionToJson(view.model, view.versions[0]);
  EXPECT_EQ(v["model"], "fm");
  EXPECT_EQ(v["version"], 1);
  EXPECT_EQ(v["signature"], Json::parse(kSignature));
  // Final values; the test group wins over train for "loss".
  EXPECT_EQ(v["metrics"], Json::parse(R"({"accuracy": 0.86, "loss": 0.6, "lr": 0.01})"));
  EXPECT_EQ(v["lineage"]["source"], "job");
  EXPECT_EQ(v["lineage"]["job_id"], job);
  EXPECT_EQ(v["lineage"]["experiment_id"], 3);
  EXPECT_EQ(v["lineage"]["trial"], 5);
  EXPECT_EQ(v["lineage"]["hyperparameters"], Json::parse(R"({"lr": 0.01, "hidden": 64})"));
  EXPECT_EQ(v["file"]["name"], "model.pt");
  EXPECT_EQ(view.model.username, "alice");
}

TEST_F(ModelRegistryTest, VersionsAreNumberedPerModel) {
  int64_t job = AddJob(alice_, store::JobState::kFinished);
  KILN_ASSERT_OK(registry_->Register(alice_, FromJob("a", job)).status());
  KILN_ASSERT_OK_AND_ASSIGN(ModelView first_b, registry_->Register(alice_, FromJob("b", job)));
  KILN_ASSERT_OK_AND_ASSIGN(ModelView second, registry_->Register(alice_, FromJob("a", job)));
  EXPECT_EQ(second.versions[0].version, 2);
  KILN_ASSERT_OK_AND_ASSIGN(ModelView a, registry_->Get(alice_, "a"));
  ASSERT_EQ(a.versions.size(), 2u);
  EXPECT_EQ(a.versions[1].version, 2);
  KILN_ASSERT_OK_AND_ASSIGN(ModelView b, registry_->Get(alice_, std::to_string(first_b.model.id)));
  EXPECT_EQ(b.model.name, "b");
  KILN_ASSERT_OK_AND_ASSIGN(auto list, registry_->List(alice_));
  ASSERT_EQ(list.size(), 2u);
  for (const ModelView& m : list) {
    ASSERT_EQ(m.versions.size(), 1u);  // the latest only
    EXPECT_EQ(m.versions[0].version, m.model.name == "a" ? 2 : 1);
  }
}

TEST_F(ModelRegistryTest, AnotherUsersNameIsTakenAndTheirModelsAreHidden) {
  int64_t job = AddJob(alice_, store::JobState::kFinished);
  KILN_ASSERT_OK(registry_->Register(alice_, FromJob("fm", job)).status());
  int64_t bobs = AddJob(bob_, store::JobState::kFinished);
  EXPECT_THAT(registry_->Register(bob_, FromJob("fm", bobs)).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("model \"fm\" already exists")));
  EXPECT_THAT(registry_->Get(bob_, "fm").status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  KILN_ASSERT_OK_AND_ASSIGN(auto bobs_list, registry_->List(bob_));
  EXPECT_TRUE(bobs_list.empty());
  // Bob cannot register Alice's job either: it reads as missing.
  EXPECT_THAT(registry_->Register(bob_, FromJob("mine", job)).status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  // An admin may add a version to anyone's model, and sees everything.
  KILN_ASSERT_OK_AND_ASSIGN(ModelView v2, registry_->Register(admin_, FromJob("fm", bobs)));
  EXPECT_EQ(v2.versions[0].version, 2);
  EXPECT_EQ(v2.model.user_id, alice_.user_id);
  KILN_ASSERT_OK_AND_ASSIGN(auto all, registry_->List(admin_));
  EXPECT_EQ(all.size(), 1u);
}

TEST_F(ModelRegistryTest, OnlyFinishedJobsThatSavedTheModelCanBeRegistered) {
  int64_t running = AddJob(alice_, store::JobState::kRunning);
  EXPECT_THAT(registry_->Register(alice_, FromJob("fm", running)).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("only a FINISHED job")));
  int64_t job = AddJob(alice_, store::JobState::kFinished);
  RegisterModelRequest other = FromJob("fm", job);
  other.path = "model/other.pt";
  EXPECT_THAT(registry_->Register(alice_, other).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("saved no \"model/other.pt\" (its artifacts: model/model.pt, "
                                 "model/signature.json)")));
  // Nothing was half-written.
  EXPECT_THAT(registry_->Get(alice_, "fm").status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_F(ModelRegistryTest, AModelWithoutSignatureIsRefusedSayingHowToGiveOne) {
  int64_t job = AddJob(alice_, store::JobState::kFinished, /*signature=*/"");
  EXPECT_THAT(registry_->Register(alice_, FromJob("fm", job)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kiln.save_model")));
  RegisterModelRequest given = FromJob("fm", job);
  given.signature = Json::parse(kSignature);
  KILN_EXPECT_OK(registry_->Register(alice_, given).status());
}

TEST_F(ModelRegistryTest, BadSignaturesAreRefusedNamingTheField) {
  int64_t job = AddJob(alice_, store::JobState::kFinished, R"({"inputs": []})");
  EXPECT_THAT(registry_->Register(alice_, FromJob("fm", job)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the job's model/signature.json (pass")));
  RegisterModelRequest r = FromJob("fm", job);
  r.signature = Json::parse(R"({"inputs": [{"name": "x", "dtype": "float16", "shape": [3]}],
                                "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})");
  EXPECT_THAT(registry_->Register(alice_, r).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inputs[0]")));
  EXPECT_THAT(registry_->Get(alice_, "fm").status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_F(ModelRegistryTest, RegistersAnUploadedFile) {
  RegisterModelRequest r;
  r.name = "uploaded";
  r.package_id = AddPackage("net.pt", TorchScriptFile());
  r.signature = Json::parse(kSignature);
  r.metrics = Json{{"accuracy", 0.5}};
  r.description = "by hand";
  KILN_ASSERT_OK_AND_ASSIGN(ModelView view, registry_->Register(alice_, r));
  Json v = ModelVersionToJson(view.model, view.versions[0]);
  EXPECT_EQ(v["lineage"], Json::parse(R"({"source": "upload"})"));
  EXPECT_EQ(v["metrics"], Json::parse(R"({"accuracy": 0.5})"));
  EXPECT_EQ(v["file"]["name"], "net.pt");
  EXPECT_EQ(view.model.description, "by hand");
  KILN_ASSERT_OK_AND_ASSIGN(std::string bytes,
                            base::ReadFile(registry_->ContentPath(view.versions[0])));
  EXPECT_EQ(bytes, TorchScriptFile());
  r.package_id = "sha256-nothing";
  EXPECT_THAT(registry_->Register(alice_, r).status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_F(ModelRegistryTest, DeletingAServedVersionOrModelNamesTheDeployment) {
  int64_t job = AddJob(alice_, store::JobState::kFinished);
  KILN_ASSERT_OK_AND_ASSIGN(ModelView v1, registry_->Register(alice_, FromJob("fm", job)));
  KILN_ASSERT_OK(registry_->Register(alice_, FromJob("fm", job)).status());
  store::DeploymentRecord d;
  d.name = "fm-prod";
  d.user_id = alice_.user_id;
  d.model_id = v1.model.id;
  d.version = 1;
  d.created_at = d.updated_at = clock_.NowMicros();
  KILN_ASSERT_OK(store_->CreateDeployment(d).status());
  EXPECT_THAT(registry_->DeleteVersion(alice_, "fm", 1),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("\"fm-prod\"")));
  EXPECT_THAT(registry_->Delete(alice_, "fm"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("\"fm-prod\"")));
  KILN_EXPECT_OK(registry_->DeleteVersion(alice_, "fm", 2));
  EXPECT_THAT(registry_->GetVersion(alice_, "fm", 2).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("has no version 2")));
  KILN_EXPECT_OK(registry_->GetVersion(alice_, "fm", 1).status());
  EXPECT_THAT(registry_->Delete(bob_, "fm"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST(CheckTorchScriptFileTest, AcceptsZipArchivesAsTorchJitSaveWritesThem) {
  KILN_EXPECT_OK(CheckTorchScriptFile("model.pt", TorchScriptFile()));
  KILN_EXPECT_OK(CheckTorchScriptFile("model.pt", TorchScriptFile("linear_with_signature.pt")));
}

TEST(CheckTorchScriptFileTest, RefusesPicklesArchivesAndEmptyFilesSayingHowToSave) {
  EXPECT_THAT(
      CheckTorchScriptFile("weights.pt", "\x80\x02}q"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"weights.pt\" is not TorchScript")));
  EXPECT_THAT(CheckTorchScriptFile("m.tar.gz", "\x1f\x8b\x08"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("torch.jit.script")));
  EXPECT_THAT(CheckTorchScriptFile("m.pt", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is empty")));
}

TEST_F(ModelRegistryTest, AJobsModelThatIsNotTorchScriptIsRefused) {
  int64_t job = AddJob(alice_, store::JobState::kFinished);
  store::ArtifactRecord pickle{job, "model/weights.pt", AddPackage("weights.pt", "\x80\x02}q."), 5,
                               1};
  KILN_ASSERT_OK(store_->PutArtifacts(job, {pickle}));
  RegisterModelRequest r = FromJob("fm", job);
  r.path = "model/weights.pt";
  EXPECT_THAT(registry_->Register(alice_, r).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("job " + std::to_string(job) + ": the model file")));
}

TEST_F(ModelRegistryTest, AJobsTorchSaveFileIsRefusedNamingTorchSave) {
  model_bytes_ = TorchScriptFile("state_dict.pt");
  int64_t job = AddJob(alice_, store::JobState::kFinished);
  EXPECT_THAT(registry_->Register(alice_, FromJob("fm", job)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("written by torch.save")));
  EXPECT_THAT(registry_->Get(alice_, "fm").status(),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_F(ModelRegistryTest, TheSignatureSavedInsideTheFileIsUsedWhenNoneIsGivenOrBesideIt) {
  constexpr char kInside[] = R"({
    "inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
    "outputs": [{"name": "probs", "dtype": "float32", "shape": [3]}]})";
  model_bytes_ = TorchScriptFile("linear_with_signature.pt");
  // From a job that saved no model/signature.json.
  int64_t job = AddJob(alice_, store::JobState::kFinished, /*signature=*/"");
  KILN_ASSERT_OK_AND_ASSIGN(ModelView view, registry_->Register(alice_, FromJob("fm", job)));
  EXPECT_EQ(ModelVersionToJson(view.model, view.versions[0])["signature"], Json::parse(kInside));
  // signature.json beside the file wins (it is what the workload wrote last).
  job = AddJob(alice_, store::JobState::kFinished);
  KILN_ASSERT_OK_AND_ASSIGN(view, registry_->Register(alice_, FromJob("fm", job)));
  EXPECT_EQ(ModelVersionToJson(view.model, view.versions.back())["signature"],
            Json::parse(kSignature));

  // An uploaded file.
  RegisterModelRequest r;
  r.name = "uploaded";
  r.package_id = AddPackage("model.pt", model_bytes_);
  KILN_ASSERT_OK_AND_ASSIGN(view, registry_->Register(alice_, r));
  EXPECT_EQ(ModelVersionToJson(view.model, view.versions[0])["signature"], Json::parse(kInside));
  // A signature given with the request overrides the one inside.
  r.signature = Json::parse(kSignature);
  KILN_ASSERT_OK_AND_ASSIGN(view, registry_->Register(alice_, r));
  EXPECT_EQ(ModelVersionToJson(view.model, view.versions.back())["signature"],
            Json::parse(kSignature));
  // A file without one still needs one.
  r.signature.reset();
  r.package_id = AddPackage("plain.pt", TorchScriptFile());
  EXPECT_THAT(registry_->Register(alice_, r).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no signature")));
}

TEST(ParseRegisterModelRequestTest, ValidatesNameSourceAndFields) {
  KILN_ASSERT_OK_AND_ASSIGN(
      RegisterModelRequest r,
      ParseRegisterModelRequest(Json::parse(R"({"name": "fm", "job_id": 4})")));
  EXPECT_EQ(r.path, "model/model.pt");
  EXPECT_EQ(*r.job_id, 4);
  auto refused = [](const char* body, const char* why) {
    EXPECT_THAT(ParseRegisterModelRequest(Json::parse(body)).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(why)))
        << body;
  };
  refused(R"({"name": "a b", "job_id": 1})", "name \"a b\" is not allowed");
  refused(R"({"name": "123", "job_id": 1})", "all digits");
  refused(R"({"name": "fm"})", "say where the model comes from");
  refused(R"({"name": "fm", "job_id": 1, "package_id": "x"})", "not both");
  refused(R"({"name": "fm", "job_id": 1, "path": "../x.pt"})", "'..'");
  refused(R"({"name": "fm", "job_id": 1, "metrics": {"a": "x"}})", "metrics.a");
  refused(R"({"name": "fm", "job_id": 1, "colour": 1})", "unknown field \"colour\"");
  KILN_EXPECT_OK(ParseRegisterModelRequest(Json::parse(R"({"name": "fm"})"), true).status());
}

}  // namespace
}  // namespace kiln::master
