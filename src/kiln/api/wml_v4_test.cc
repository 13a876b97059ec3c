// wml_v4_test.cc

#include "kiln/api/wml_v4.h"

#include <archive.h>
#include <archive_entry.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::api::wml {
namespace {

using base::Json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

struct ZipEntry {
  std::string name;
  std::string data;
  mode_t type = AE_IFREG;
};

la_ssize_t Append(archive*, void* client, const void* buf, size_t n) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

std::string BuildZip(const std::vector<ZipEntry>& entries) {
  std::string out;
  archive* a = archive_write_new();
  archive_write_set_format_zip(a);
  archive_write_open(a, &out, nullptr, Append, nullptr);
  for (const ZipEntry& e : entries) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.name.c_str());
    archive_entry_set_filetype(entry, e.type);
    archive_entry_set_perm(entry, 0644);
    if (e.type == AE_IFLNK) archive_entry_set_symlink(entry, e.data.c_str());
    if (e.type == AE_IFREG) archive_entry_set_size(entry, static_cast<la_int64_t>(e.data.size()));
    archive_write_header(a, entry);
    if (e.type == AE_IFREG) archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(entry);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

// The regular files of a .tar.gz: name → content.
std::map<std::string, std::string> ReadTarGz(const std::string& tar_gz) {
  std::map<std::string, std::string> files;
  archive* a = archive_read_new();
  archive_read_support_filter_gzip(a);
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_memory(a, tar_gz.data(), tar_gz.size()), ARCHIVE_OK);
  archive_entry* entry = nullptr;
  while (archive_read_next_header(a, &entry) == ARCHIVE_OK) {
    if (archive_entry_filetype(entry) != AE_IFREG) continue;
    std::string data(static_cast<size_t>(archive_entry_size(entry)), '\0');
    archive_read_data(a, data.data(), data.size());
    files[archive_entry_pathname(entry)] = data;
  }
  archive_read_free(a);
  return files;
}

TEST(WmlIdsTest, NewIdIsAVersion4Uuid) {
  std::string id = NewId();
  EXPECT_THAT(id,
              MatchesRegex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"));
  EXPECT_NE(id, NewId());
}

TEST(WmlErrorTest, BodyHasWmlShapeAndKilnStatus) {
  net::HttpResponse r = ErrorResponse(absl::NotFoundError("no space \"x\""));
  EXPECT_EQ(r.status, 404);
  KILN_ASSERT_OK_AND_ASSIGN(Json body, base::ParseJson(r.body));
  EXPECT_EQ(body["status_code"], 404);
  EXPECT_EQ(body["errors"][0]["code"], "not_found");
  EXPECT_EQ(body["errors"][0]["message"], "no space \"x\"");
  EXPECT_TRUE(body["trace"].is_string());
  EXPECT_EQ(ErrorResponse(absl::InvalidArgumentError("bad")).status, 400);
  EXPECT_EQ(ErrorCode(400), "invalid_request_entity");
}

TEST(WmlSpaceTest, NameIsRequiredAndStateIsActive) {
  KILN_ASSERT_OK_AND_ASSIGN(Json e, ParseSpaceRequest({{"name", "curl_DL_1"}}));
  EXPECT_EQ(e["name"], "curl_DL_1");
  EXPECT_EQ(e["status"]["state"], "active");
  EXPECT_THAT(ParseSpaceRequest(Json::object()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("name: is required")));
  EXPECT_THAT(ParseSpaceRequest({{"name", 3}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("name: must be a string")));
  EXPECT_THAT(ParseSpaceRequest(Json::array()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JSON object")));
}

TEST(WmlModelDefinitionTest, KeepsTheNotebookFields) {
  Json body = {{"name", "mnist"},
               {"space_id", "s"},
               {"description", "d"},
               {"tags", {"DL", "PyTorch"}},
               {"version", "v1"},
               {"platform", {{"name", "python"}, {"versions", {"3.7"}}}},
               {"command", "pytorch_mnist.py --epochs 10 --debug-level debug"}};
  KILN_ASSERT_OK_AND_ASSIGN(Json e, ParseModelDefinitionRequest(body));
  EXPECT_EQ(e["command"], "pytorch_mnist.py --epochs 10 --debug-level debug");
  EXPECT_EQ(e["platform"]["name"], "python");
  EXPECT_EQ(e["tags"][1], "PyTorch");
  EXPECT_EQ(e["version"], "v1");
  body["command"] = "train.py 'unclosed";
  EXPECT_THAT(ParseModelDefinitionRequest(body),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("command:")));
  body["command"] = "x.py";
  body["platform"] = "python";
  EXPECT_THAT(
      ParseModelDefinitionRequest(body),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("platform: must be an object")));
}

TEST(WmlZipTest, ConvertsFilesAndFindsTheRootFolder) {
  std::string zip = BuildZip({{"code/", "", AE_IFDIR},
                              {"code/train.py", "print(1)\n"},
                              {"code/lib/util.py", "X = 2\n"},
                              {"__MACOSX/code/._train.py", "junk"}});
  KILN_ASSERT_OK_AND_ASSIGN(ConvertedCode code, ZipToTarGz(zip));
  EXPECT_EQ(code.root_folder, "code");
  EXPECT_EQ(code.files, 2);
  auto files = ReadTarGz(code.tar_gz);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files["code/train.py"], "print(1)\n");
  EXPECT_EQ(files["code/lib/util.py"], "X = 2\n");

  KILN_ASSERT_OK_AND_ASSIGN(ConvertedCode flat,
                            ZipToTarGz(BuildZip({{"train.py", "a"}, {"emetrics.py", "b"}})));
  EXPECT_EQ(flat.root_folder, "");
  EXPECT_EQ(ReadTarGz(flat.tar_gz).size(), 2u);
}

TEST(WmlZipTest, RefusesWhatCouldEscapeOrIsNotAZip) {
  EXPECT_THAT(ZipToTarGz("\x1f\x8b not a zip"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ZIP signature")));
  EXPECT_THAT(ZipToTarGz(BuildZip({{"../evil.py", "x"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"..\"")));
  EXPECT_THAT(ZipToTarGz(BuildZip({{"/etc/passwd", "x"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("absolute")));
  EXPECT_THAT(ZipToTarGz(BuildZip({{"link", "/etc/passwd", AE_IFLNK}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("links are not allowed")));
  EXPECT_THAT(ZipToTarGz(BuildZip({{"d/", "", AE_IFDIR}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no files")));
  ZipLimits small;
  small.max_total_bytes = 10;
  EXPECT_THAT(ZipToTarGz(BuildZip({{"big.py", std::string(100, 'a')}}), small),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("uncompressed")));
}

Json NotebookTraining() {
  return {{"name", "PyTorch training"},
          {"space_id", "s1"},
          {"training_data_references",
           {{{"name", "training_input_data"},
             {"type", "fs"},
             {"connection", Json::object()},
             {"location", {{"path", "pytorch-mnist"}}}}}},
          {"results_reference",
           {{"name", "MNIST results"},
            {"connection", Json::object()},
            {"location", {{"path", "spaces/s1/assets/experiment"}}},
            {"type", "fs"}}},
          {"model_definition",
           {{"id", "def-1"},
            {"command", "pytorch_mnist.py --epochs 1"},
            {"hardware_spec", {{"name", "K80"}, {"nodes", 1}}},
            {"software_spec", {{"name", "pytorch-onnx_1.3-py3.7"}}},
            {"parameters", {{"name", "p"}, {"description", "d"}}}}}};
}

TEST(WmlTrainingTest, ParsesTheNotebookRequest) {
  KILN_ASSERT_OK_AND_ASSIGN(TrainingRequest r, ParseTrainingRequest(NotebookTraining()));
  EXPECT_EQ(r.definition_id, "def-1");
  ASSERT_TRUE(r.command.has_value());
  EXPECT_EQ(*r.command, "pytorch_mnist.py --epochs 1");
  EXPECT_EQ(r.data_path, "pytorch-mnist");
  EXPECT_EQ(r.space_id, "s1");
  EXPECT_EQ(r.entity["results_reference"]["location"]["path"], "spaces/s1/assets/experiment");
}

TEST(WmlTrainingTest, RefusesWhatKilnCannotRun) {
  Json body = NotebookTraining();
  body.erase("model_definition");
  EXPECT_THAT(ParseTrainingRequest(body), StatusIs(absl::StatusCode::kInvalidArgument,
                                                   HasSubstr("model_definition: is required")));
  body = NotebookTraining();
  body["model_definition"]["hardware_spec"]["nodes"] = 4;
  EXPECT_THAT(ParseTrainingRequest(body),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("model_definition.hardware_spec.nodes")));
  body = NotebookTraining();
  body["training_data_references"][0]["type"] = "s3";
  EXPECT_THAT(ParseTrainingRequest(body), StatusIs(absl::StatusCode::kInvalidArgument,
                                                   HasSubstr("training_data_references[0].type")));
  body = NotebookTraining();
  body["model_definition"].erase("id");
  EXPECT_THAT(ParseTrainingRequest(body),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_definition.id")));
}

TEST(WmlTrainingTest, DataDirIsAbsoluteOrUnderTheDataRoot) {
  std::string root = ::testing::TempDir() + "/wml_data_root";
  std::filesystem::create_directories(root + "/pytorch-mnist");
  KILN_ASSERT_OK_AND_ASSIGN(std::string dir, ResolveDataDir("pytorch-mnist", root));
  EXPECT_EQ(dir, root + "/pytorch-mnist");
  KILN_ASSERT_OK_AND_ASSIGN(std::string abs, ResolveDataDir(root, "/nowhere"));
  EXPECT_EQ(abs, root);
  KILN_ASSERT_OK_AND_ASSIGN(std::string none, ResolveDataDir("", root));
  EXPECT_EQ(none, "");
  EXPECT_THAT(ResolveDataDir("missing", root),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("training_data_references[0].location.path: no folder")));
  EXPECT_THAT(ResolveDataDir("../etc", root),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("..")));
  EXPECT_THAT(ResolveDataDir("/no/such/folder", root),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no folder /no/such/folder")));
}

TEST(WmlTrainingTest, JobRunsTheCommandWithPython) {
  KILN_ASSERT_OK_AND_ASSIGN(TrainingRequest r, ParseTrainingRequest(NotebookTraining()));
  KILN_ASSERT_OK_AND_ASSIGN(master::JobSpec spec,
                            TrainingJobSpec(r, *r.command, "sha256-abc", "code", "/data/x"));
  EXPECT_THAT(spec.command, ElementsAre("python3", "pytorch_mnist.py", "--epochs", "1"));
  EXPECT_EQ(spec.package->id, "sha256-abc");
  EXPECT_EQ(spec.workdir, "code");
  EXPECT_EQ(spec.env["DATA_DIR"], "/data/x");
  EXPECT_EQ(spec.env["WML_SPACE_ID"], "s1");
  EXPECT_EQ(spec.config["name"], "p");
  KILN_ASSERT_OK_AND_ASSIGN(master::JobSpec py, TrainingJobSpec(r, "python t.py", "p", "", ""));
  EXPECT_THAT(py.command, ElementsAre("python3", "t.py"));
  EXPECT_EQ(py.env.count("DATA_DIR"), 0u);
  KILN_ASSERT_OK_AND_ASSIGN(master::JobSpec sh, TrainingJobSpec(r, "./run.sh 3", "p", "", ""));
  EXPECT_THAT(sh.command, ElementsAre("./run.sh", "3"));
  EXPECT_THAT(TrainingJobSpec(r, "  ", "p", "", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a command")));
}

TEST(WmlTrainingTest, StatesMapToWhatNotebooksPoll) {
  EXPECT_STREQ(TrainingState(store::JobState::kQueued), "pending");
  EXPECT_STREQ(TrainingState(store::JobState::kScheduled), "pending");
  EXPECT_STREQ(TrainingState(store::JobState::kRunning), "running");
  EXPECT_STREQ(TrainingState(store::JobState::kFinished), "completed");
  EXPECT_STREQ(TrainingState(store::JobState::kFailed), "failed");
  EXPECT_STREQ(TrainingState(store::JobState::kKilled), "canceled");
}

TEST(WmlTrainingTest, MetricsAreGroupedByIteration) {
  std::vector<store::MetricPoint> points = {{"accuracy", "test", 1, 75.5, 1'000'000},
                                            {"loss", "test", 1, 0.7, 1'000'000},
                                            {"loss", "train", 1, 0.9, 900'000},
                                            {"accuracy", "test", 2, 80.0, 2'000'000},
                                            {"lr", "train", 2, 0.01, 2'000'000}};
  Json m = TrainingMetrics(points);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0]["iteration"], 1);
  EXPECT_EQ(m[0]["ml_metrics"]["accuracy"], 75.5);
  EXPECT_EQ(m[0]["ml_metrics"]["loss"], 0.7);
  EXPECT_EQ(m[0]["ml_metrics"]["train_loss"], 0.9);
  EXPECT_EQ(m[1]["ml_metrics"]["lr"], 0.01);
  EXPECT_TRUE(m[1]["timestamp"].is_string());
}

TEST(WmlTrainingTest, EntityCarriesStatusAndWhereTheModelIs) {
  KILN_ASSERT_OK_AND_ASSIGN(TrainingRequest r, ParseTrainingRequest(NotebookTraining()));
  store::JobRecord job;
  job.id = 12;
  job.state = store::JobState::kFinished;
  job.started_at = 1'000'000;
  job.finished_at = 5'000'000;
  Json e = TrainingEntity("12", r.entity, job, {{"accuracy", "test", 1, 86.0, 2'000'000}});
  EXPECT_EQ(e["status"]["state"], "completed");
  EXPECT_TRUE(e["status"]["running_at"].is_string());
  EXPECT_TRUE(e["status"]["completed_at"].is_string());
  EXPECT_EQ(e["status"]["metrics"][0]["ml_metrics"]["accuracy"], 86.0);
  EXPECT_THAT(e["status"]["message"]["text"].get<std::string>(), HasSubstr("Kiln job 12"));
  EXPECT_EQ(e["results_reference"]["location"]["model"],
            "spaces/s1/assets/experiment/12/data/model");
  // What the Python client's store_model sends back names the training.
  Json store_model = {{"name", "m"},
                      {"training_data_references", Json::array({e["results_reference"]})}};
  EXPECT_EQ(TrainingIdOf(store_model), "12");
  job.state = store::JobState::kFailed;
  job.reason = "exit code 1";
  Json failed = TrainingEntity("12", r.entity, job, {});
  EXPECT_EQ(failed["status"]["state"], "failed");
  EXPECT_EQ(failed["status"]["failure"]["errors"][0]["message"], "exit code 1");
}

TEST(WmlModelTest, FindsTheTrainingInEveryForm) {
  EXPECT_EQ(TrainingIdOf({{"training_id", "7"}}), "7");
  EXPECT_EQ(TrainingIdOf({{"training", {{"id", "8"}}}}), "8");
  Json wmla_import = {
      {"content_location",
       {{"contents",
         {{{"content_format", "native"},
           {"file_name", "twmla-1314.zip"},
           {"location", "spaces/s/assets/experiment/9/assets/9/resources/wml_model/x.zip"}}}},
        {"type", "fs"}}}};
  EXPECT_EQ(TrainingIdOf(wmla_import), "9");
  EXPECT_EQ(TrainingIdOf({{"name", "x"}}), "");

  KILN_ASSERT_OK_AND_ASSIGN(
      ModelRequest m,
      ParseModelRequest({{"name", "mnist"}, {"training_id", "7"}, {"type", "pytorch-onnx_1.3"}}));
  EXPECT_EQ(m.training_id, "7");
  EXPECT_EQ(m.entity["type"], "pytorch-onnx_1.3");
  // No training: the file comes next with PUT .../content.
  KILN_ASSERT_OK_AND_ASSIGN(m, ParseModelRequest({{"name", "mnist"}, {"type", "pytorch"}}));
  EXPECT_EQ(m.training_id, "");
  EXPECT_EQ(m.signature, std::nullopt);
  Json signature = Json::parse(R"({"inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
                                   "outputs": [{"name": "y", "dtype": "float32", "shape": [2]}]})");
  KILN_ASSERT_OK_AND_ASSIGN(
      m, ParseModelRequest({{"name", "mnist"}, {"custom", {{"signature", signature}}}}));
  EXPECT_EQ(m.signature, signature);
  signature["inputs"][0]["dtype"] = "float16";
  EXPECT_THAT(ParseModelRequest({{"name", "mnist"}, {"custom", {{"signature", signature}}}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("custom.signature: signature.inputs[0].dtype")));
  // A content_location Kiln cannot read.
  EXPECT_THAT(
      ParseModelRequest(
          {{"name", "mnist"}, {"content_location", {{"type", "s3"}, {"contents", Json::array()}}}}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr("content_location: names no Kiln training"),
                     HasSubstr("/ml/v4/models/{id}/content"))));
  EXPECT_THAT(ParseModelRequest({{"training_id", "7"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("name: is required")));
}

// Step 7 of WMLA's REST flow: the import request, which step 8 POSTs back unchanged.
TEST(WmlModelTest, ImportRequestOfATrainingIsWhatStoresItsModel) {
  Json body = NotebookTraining();
  body["model_definition"]["software_spec"] = {{"name", "pytorch-onnx_1.3-py3.7"}};
  KILN_ASSERT_OK_AND_ASSIGN(TrainingRequest training, ParseTrainingRequest(body));
  const Json& entity = training.entity;  // what the training keeps of its request
  Json request = ModelImportRequest("12", "s1", entity, "model.pt");
  const Json& content = request["content_location"]["contents"][0];
  EXPECT_EQ(content["content_format"], "native");
  EXPECT_EQ(content["file_name"], "model.pt");
  EXPECT_EQ(content["location"],
            "spaces/s1/assets/experiment/12/assets/12/resources/wml_model/model.pt");
  EXPECT_EQ(request["content_location"]["type"], "fs");
  EXPECT_EQ(request["name"], "model_12");
  EXPECT_EQ(request["space_id"], "s1");
  EXPECT_EQ(request["type"], "pytorch-onnx_1.3");
  EXPECT_EQ(request["software_spec"]["name"], "pytorch-onnx_1.3-py3.7");
  EXPECT_EQ(request["model_definition"]["id"], entity["model_definition"]["id"]);
  EXPECT_EQ(request["training_data_references"], entity["training_data_references"]);
  KILN_ASSERT_OK_AND_ASSIGN(ModelRequest stored, ParseModelRequest(request));
  EXPECT_EQ(stored.training_id, "12");
  EXPECT_EQ(stored.space_id, "s1");

  // A training without results_reference or spec: still one Kiln can store from.
  Json bare = ModelImportRequest("13", "", Json::object(), "model.pt");
  EXPECT_FALSE(bare.contains("space_id"));
  EXPECT_FALSE(bare.contains("type"));
  KILN_ASSERT_OK_AND_ASSIGN(stored, ParseModelRequest(bare));
  EXPECT_EQ(stored.training_id, "13");
}

TEST(WmlDeploymentTest, ParsesOnlineDeployments) {
  KILN_ASSERT_OK_AND_ASSIGN(
      DeploymentRequest d,
      ParseDeploymentRequest({{"space_id", "s"},
                              {"name", "Pytorch MNIST deployment"},
                              {"online", Json::object()},
                              {"hardware_spec", {{"name", "M"}, {"num_nodes", 2}}},
                              {"asset", {{"id", "m-1"}}}}));
  EXPECT_EQ(d.asset_id, "m-1");
  EXPECT_EQ(d.replicas, 2);
  EXPECT_EQ(d.slots, 2);
  EXPECT_EQ(d.entity["deployed_asset_type"], "model");
  EXPECT_THAT(ParseDeploymentRequest({{"batch", Json::object()}, {"asset", {{"id", "m"}}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("online deployments only")));
  EXPECT_THAT(ParseDeploymentRequest({{"online", Json::object()}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("asset: is required")));
  EXPECT_THAT(ParseDeploymentRequest({{"online", Json::object()},
                                      {"asset", {{"id", "m"}}},
                                      {"hardware_spec", {{"name", "GPU-9"}}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hardware_spec.name")));
}

TEST(WmlDeploymentTest, NamesAndStates) {
  EXPECT_EQ(KilnDeploymentName("Pytorch MNIST deployment", "ab12"),
            "pytorch-mnist-deployment-ab12");
  EXPECT_EQ(KilnDeploymentName("  ", "ab12"), "wml-ab12");
  EXPECT_EQ(KilnDeploymentName("1st!", ""), "wml-1st");
  EXPECT_STREQ(DeploymentState("PENDING"), "initializing");
  EXPECT_STREQ(DeploymentState("UPDATING"), "initializing");
  EXPECT_STREQ(DeploymentState("READY"), "ready");
  EXPECT_STREQ(DeploymentState("FAILED"), "failed");
}

TEST(WmlCatalogTest, ListsTheNamesNotebooksAskForAndTheDeploymentSizes) {
  bool found = false;
  for (const Json& spec : SoftwareSpecifications()) {
    found |= spec["metadata"]["name"] == "pytorch-onnx_1.3-py3.7" &&
             spec["metadata"]["id"] == "pytorch-onnx_1.3-py3.7";
  }
  EXPECT_TRUE(found);
  // Every listed size is one ParseDeploymentRequest takes.
  for (const Json& hw : HardwareSpecifications()) {
    std::string name = hw["metadata"]["name"];
    EXPECT_TRUE(ParseDeploymentRequest({{"online", Json::object()},
                                        {"asset", {{"id", "m"}}},
                                        {"hardware_spec", {{"name", name}}}})
                    .ok())
        << name;
  }
}

}  // namespace
}  // namespace kiln::api::wml
