#include "kiln/agent/artifacts.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "kiln/base/files.h"
#include "kiln/base/json.h"
#include "kiln/base/status.h"
#include "kiln/net/http_parsing.h"
#include "kiln/net/http_status.h"

namespace kiln::agent {

namespace fs = std::filesystem;

ArtifactScan ScanArtifacts(const std::string& result_dir, const ArtifactLimits& limits) {
  ArtifactScan scan;
  const fs::path root = fs::path(result_dir) / "model";
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(root, ec))) {
    if (fs::is_symlink(fs::symlink_status(root, ec))) {
      scan.warnings.push_back("model/ is a symbolic link; its files are not kept as artifacts");
    }
    return scan;
  }
  // recursive_directory_iterator does not descend into linked folders by default.
  std::vector<ArtifactFile> found;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    std::error_code st_ec;
    fs::file_status st = entry.symlink_status(st_ec);
    if (st_ec || fs::is_directory(st)) continue;
    std::string rel =
        absl::StrCat("model/", entry.path().lexically_relative(root).generic_string());
    if (fs::is_symlink(st)) {
      scan.warnings.push_back(absl::StrCat(rel, " is a symbolic link; not kept"));
      continue;
    }
    if (!fs::is_regular_file(st)) {
      scan.warnings.push_back(absl::StrCat(rel, " is not a regular file; not kept"));
      continue;
    }
    int64_t size = static_cast<int64_t>(entry.file_size(st_ec));
    if (st_ec) continue;
    if (size == 0) {
      scan.warnings.push_back(absl::StrCat(rel, " is empty; not kept"));
      continue;
    }
    if (size > limits.max_file_bytes) {
      scan.warnings.push_back(absl::StrCat(rel, " has ", size, " bytes, over the limit of ",
                                           limits.max_file_bytes, "; not kept"));
      continue;
    }
    found.push_back({rel, entry.path().string(), size});
  }
  if (ec) scan.warnings.push_back(absl::StrCat("could not read all of model/: ", ec.message()));
  std::sort(found.begin(), found.end(),
            [](const ArtifactFile& a, const ArtifactFile& b) { return a.path < b.path; });
  if (found.size() > limits.max_files) {
    for (size_t i = limits.max_files; i < found.size(); ++i) {
      scan.warnings.push_back(absl::StrCat(found[i].path, " is past the limit of ",
                                           limits.max_files, " files; not kept"));
    }
    found.resize(limits.max_files);
  }
  scan.files = std::move(found);
  return scan;
}

absl::StatusOr<std::vector<store::ArtifactRecord>> UploadArtifacts(
    net::HttpClient& client, const ArtifactScan& scan, std::vector<std::string>& warnings) {
  std::vector<store::ArtifactRecord> out;
  for (const ArtifactFile& file : scan.files) {
    auto bytes = base::ReadFile(file.file_path);
    if (!bytes.ok()) {
      warnings.push_back(
          absl::StrCat(file.path, " could not be read (", bytes.status().message(), "); not kept"));
      continue;
    }
    if (bytes->empty()) {
      warnings.push_back(absl::StrCat(file.path, " is empty; not kept"));
      continue;
    }
    std::string name = fs::path(file.path).filename().string();
    // Large files take a while over a slow link; the default timeout is for small requests.
    KILN_ASSIGN_OR_RETURN(
        net::HttpResponse resp,
        client.Request("POST", absl::StrCat("/api/v1/packages?name=", net::PercentEncode(name)),
                       *bytes, "application/octet-stream", std::chrono::minutes(10)));
    // 4xx: this file will never be taken (408 and 429 are worth another try).
    if (resp.status >= 400 && resp.status < 500 && resp.status != 408 && resp.status != 429) {
      warnings.push_back(absl::StrCat(file.path, " was refused by the master (HTTP ", resp.status,
                                      ": ", resp.body.substr(0, 300), "); not kept"));
      continue;
    }
    KILN_RETURN_IF_ERROR(net::StatusFromHttpResponse(resp));
    KILN_ASSIGN_OR_RETURN(base::Json body, base::ParseJson(resp.body));
    KILN_ASSIGN_OR_RETURN(std::string id, base::GetString(body, "id"));
    store::ArtifactRecord record;
    record.path = file.path;
    record.package_id = std::move(id);
    record.size = static_cast<int64_t>(bytes->size());
    out.push_back(std::move(record));
  }
  return out;
}

}  // namespace kiln::agent
