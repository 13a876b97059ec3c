#include "kiln/serving/model_file.h"

#include <archive.h>
#include <archive_entry.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::serving {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Optional;

struct Item {
  std::string name;
  std::string data;
  unsigned type = AE_IFREG;
};

la_ssize_t Append(archive*, void* out, const void* buf, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

std::string Build(const std::vector<Item>& items, bool tar_gz) {
  std::string out;
  archive* a = archive_write_new();
  if (tar_gz) {
    archive_write_add_filter_gzip(a);
    archive_write_set_format_pax_restricted(a);
  } else {
    archive_write_set_format_zip(a);
  }
  archive_write_open(a, &out, nullptr, Append, nullptr);
  for (const Item& item : items) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, item.name.c_str());
    archive_entry_set_filetype(entry, item.type);
    archive_entry_set_perm(entry, 0644);
    if (item.type == AE_IFLNK) archive_entry_set_symlink(entry, item.data.c_str());
    if (item.type == AE_IFREG) {
      archive_entry_set_size(entry, static_cast<la_int64_t>(item.data.size()));
    }
    archive_write_header(a, entry);
    if (item.type == AE_IFREG) archive_write_data(a, item.data.data(), item.data.size());
    archive_entry_free(entry);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

std::string Zip(const std::vector<Item>& items) { return Build(items, false); }
std::string TarGz(const std::vector<Item>& items) { return Build(items, true); }

// The layout torch.jit.save writes (tests that need a loadable file use the fixture).
std::string TorchScript(const std::string& root, const std::string& signature = "") {
  std::vector<Item> items = {{root + "/data.pkl", "pkl"},
                             {root + "/code/__torch__.py", "def forward(self, x): ..."},
                             {root + "/constants.pkl", "c"},
                             {root + "/data/0", "weights"},
                             {root + "/version", "3\n"}};
  if (!signature.empty()) items.push_back({root + "/extra/signature.json", signature});
  return Zip(items);
}

// Real files from PyTorch (src/kiln/torch/testdata/README.md says how each was made).
std::string Fixture(const std::string& name = "cuda_linear.pt") {
  absl::StatusOr<std::string> bytes = base::ReadFile(std::string(KILN_TORCH_TESTDATA) + "/" + name);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.value_or("");
}

constexpr char kSignature[] = R"({"inputs":[{"name":"x","dtype":"float32","shape":[3]}],)"
                              R"("outputs":[{"name":"y","dtype":"float32","shape":[2]}]})";

TEST(ModelFileTest, TellsTorchScriptFromOtherFiles) {
  EXPECT_TRUE(IsTorchScript(Fixture()));
  EXPECT_TRUE(IsTorchScript(TorchScript("archive")));
  KILN_EXPECT_OK(CheckTorchScript("model.pt", Fixture()));

  // torch.save writes a ZIP too, but with no code in it.
  std::string torch_save =
      Zip({{"archive/data.pkl", "p"}, {"archive/data/0", "w"}, {"archive/version", "3\n"}});
  EXPECT_FALSE(IsTorchScript(torch_save));
  EXPECT_FALSE(IsTorchScript(Fixture("state_dict.pt")));
  EXPECT_THAT(CheckTorchScript("sd.pt", Fixture("state_dict.pt")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("torch.save")));
  EXPECT_THAT(CheckTorchScript("weights.pt", torch_save),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("\"weights.pt\""), HasSubstr("torch.save"),
                             HasSubstr("kiln.save_model"))));
  EXPECT_THAT(CheckTorchScript("m.pt", "\x80\x02 a pickle"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not TorchScript")));
  EXPECT_THAT(CheckTorchScript("m.pt", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is empty")));
  // Entries under two folders: not one archive written by torch.jit.save.
  EXPECT_FALSE(IsTorchScript(Zip(
      {{"a/data.pkl", "p"}, {"a/constants.pkl", "c"}, {"a/code/x.py", "x"}, {"b/other", "o"}})));
  EXPECT_FALSE(IsTorchScript("PK\x03\x04 truncated"));
}

TEST(ModelFileTest, ReadsTheSignatureSavedInsideTheFile) {
  KILN_ASSERT_OK_AND_ASSIGN(std::optional<std::string> signature,
                            EmbeddedSignature(TorchScript("m", kSignature)));
  EXPECT_THAT(signature, Optional(std::string(kSignature)));
  KILN_ASSERT_OK_AND_ASSIGN(signature, EmbeddedSignature(Fixture()));
  EXPECT_EQ(signature, std::nullopt);
  // kiln.save_model's file.
  KILN_ASSERT_OK_AND_ASSIGN(signature, EmbeddedSignature(Fixture("linear_with_signature.pt")));
  ASSERT_TRUE(signature.has_value());
  EXPECT_THAT(*signature, AllOf(HasSubstr("\"probs\""), HasSubstr("\"float32\"")));
  EXPECT_THAT(EmbeddedSignature("not a zip"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a TorchScript")));
  // Another folder's extra/signature.json is not this file's.
  EXPECT_FALSE(IsTorchScript(Zip({{"m/data.pkl", "p"}, {"other/extra/signature.json", "{}"}})));
}

TEST(ModelFileTest, TakesABareTorchScriptFile) {
  std::string bytes = Fixture();
  KILN_ASSERT_OK_AND_ASSIGN(UploadedModel model, ModelFromUpload(bytes));
  EXPECT_EQ(model.file_name, "model.pt");
  EXPECT_EQ(model.torchscript, bytes);
  EXPECT_EQ(model.signature_json, std::nullopt);

  KILN_ASSERT_OK_AND_ASSIGN(model, ModelFromUpload(TorchScript("m", kSignature)));
  EXPECT_THAT(model.signature_json, Optional(std::string(kSignature)));
  EXPECT_THAT(model.signature_source, HasSubstr("inside"));
}

TEST(ModelFileTest, FindsTheModelInAZipOrTarGzWithTheSignatureBesideIt) {
  std::string ts = Fixture();
  // What WMLA's trainings write: the TorchScript file beside an ONNX copy.
  std::vector<Item> items = {{"model/", "", AE_IFDIR},
                             {"model/trained_model.pt", ts},
                             {"model/trained_model.onnx", "onnx protobuf"},
                             {"model/signature.json", kSignature},
                             {"__MACOSX/model/._trained_model.pt", "PK\x03\x04junk"}};
  for (bool tar_gz : {false, true}) {
    SCOPED_TRACE(tar_gz ? "tar.gz" : "zip");
    KILN_ASSERT_OK_AND_ASSIGN(UploadedModel model, ModelFromUpload(Build(items, tar_gz)));
    EXPECT_EQ(model.file_name, "trained_model.pt");
    EXPECT_EQ(model.torchscript, ts);
    EXPECT_THAT(model.signature_json, Optional(std::string(kSignature)));
    EXPECT_THAT(model.signature_source, HasSubstr("model/signature.json"));
  }
  // A signature.json elsewhere is not the model's; the one inside the file is used.
  KILN_ASSERT_OK_AND_ASSIGN(UploadedModel model,
                            ModelFromUpload(Zip({{"out/net.pt", TorchScript("net", kSignature)},
                                                 {"signature.json", "{\"not\": \"it\"}"}})));
  EXPECT_EQ(model.file_name, "net.pt");
  EXPECT_THAT(model.signature_json, Optional(std::string(kSignature)));
  EXPECT_THAT(model.signature_source, HasSubstr("inside net.pt"));
}

TEST(ModelFileTest, RefusesUploadsWithoutExactlyOneTorchScriptFile) {
  EXPECT_THAT(ModelFromUpload(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("the upload is empty")));
  EXPECT_THAT(ModelFromUpload("{\"values\": [1]}"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("neither a TorchScript file nor a .zip or .tar.gz")));
  EXPECT_THAT(
      ModelFromUpload(TarGz({{"model.onnx", "onnx"}, {"inner.zip", Zip({{"a.txt", "a"}})}})),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr(".tar.gz holds no TorchScript file"),
                     HasSubstr("inner.zip are ZIPs but not TorchScript"))));
  EXPECT_THAT(ModelFromUpload(Zip({{"a.pt", TorchScript("a")}, {"b/b.pt", TorchScript("b")}})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("holds 2 TorchScript files (a.pt, b/b.pt)"),
                             HasSubstr("upload one"))));
  EXPECT_THAT(ModelFromUpload(Zip({{"archive/data.pkl", "p"}, {"archive/version", "3"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("torch.save")));
  EXPECT_THAT(ModelFromUpload("\x1f\x8b not really gzip"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a readable .tar.gz")));
}

TEST(ModelFileTest, RefusesLinksClimbingNamesAndOversizedContents) {
  EXPECT_THAT(ModelFromUpload(TarGz({{"../model.pt", TorchScript("m")}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"..\" component")));
  EXPECT_THAT(ModelFromUpload(TarGz({{"model.pt", "/etc/passwd", AE_IFLNK}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("links are not allowed")));
  ModelFileLimits small;
  small.max_total_bytes = 100;
  EXPECT_THAT(ModelFromUpload(Zip({{"m.pt", Fixture()}}), small),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than 100 bytes")));
  small = {};
  small.max_entries = 3;
  EXPECT_THAT(ModelFromUpload(TarGz({{"a", "1"}, {"b", "2"}, {"c", "3"}, {"d", "4"}}), small),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than 3 entries")));
  small = {};
  small.max_signature_bytes = 4;
  EXPECT_THAT(ModelFromUpload(Zip({{"m.pt", Fixture()}, {"signature.json", kSignature}}), small),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("over 4 bytes")));
}

}  // namespace
}  // namespace kiln::serving
