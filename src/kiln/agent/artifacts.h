// artifacts.h
//
// What the agent keeps of a task once it exits: every regular file the task left under
// `$RESULT_DIR/model/` (a trained model and its signature, by convention) is uploaded to
// the master as a "file" package and named in the task's exit report, so the model
// registry can register it after the node (and its task folder) is gone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/net/http_client.h"
#include "kiln/store/records.h"

namespace kiln::agent {

struct ArtifactLimits {
  int64_t max_file_bytes = int64_t{256} << 20;
  size_t max_files = 64;
};

struct ArtifactFile {
  std::string path;       // relative to the result folder: "model/model.pt"
  std::string file_path;  // where it is on this node
  int64_t size = 0;
};

struct ArtifactScan {
  std::vector<ArtifactFile> files;    // by path
  std::vector<std::string> warnings;  // one line per file left out, saying why
};

// The regular files under `result_dir`/model/, recursively, in path order. Symbolic
// links are neither followed nor uploaded (a task must not make the agent read files
// outside its folder); empty files, files over the size limit and files past the count
// limit are left out with a warning. No model folder: nothing, no warning.
ArtifactScan ScanArtifacts(const std::string& result_dir, const ArtifactLimits& limits = {});

// Uploads each file of `scan` with POST /api/v1/packages?name=<base name> and returns
// one record per uploaded file (job_id and created_at left 0). A file the master refuses
// (a 4xx: too large for its limit, ...) or that vanished is left out with a line in
// `warnings`; Unavailable / DeadlineExceeded / Internal (a 5xx) are returned as errors so
// the caller retries later. Uploading is idempotent: a package's id is its content's.
absl::StatusOr<std::vector<store::ArtifactRecord>> UploadArtifacts(
    net::HttpClient& client, const ArtifactScan& scan, std::vector<std::string>& warnings);

}  // namespace kiln::agent
