// run_command.h
//
// `kiln run`: package the code, upload it, submit a job, and optionally follow its logs
// and wait for its end. The pieces that turn flags into the API request are declared
// here so they can be tested without a server.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/cli/connection.h"
#include "kiln/cli/invocation.h"

namespace kiln::cli {

struct RunOptions {
  int slots = 1;
  int gpus = 0;
  std::string name;
  std::vector<std::string> env;  // "KEY=VALUE" as given
  std::string config_file;
  std::string package;  // folder or file; "" → the current folder
  bool no_package = false;
  bool follow = false;
  bool wait = false;
  bool json = false;
  std::vector<std::string> command;
};

// Parses repeated `--env KEY=VALUE` flags (the value may be empty or hold '='). Later
// values of a key win. InvalidArgument naming the flag when '=' or the key is missing.
[[nodiscard]] absl::StatusOr<std::map<std::string, std::string>> ParseEnvAssignments(
    const std::vector<std::string>& assignments);

// Reads `--config FILE.json`; InvalidArgument unless it holds a JSON object.
[[nodiscard]] absl::StatusOr<base::Json> LoadConfigFile(const std::string& path);

// The body of POST /api/v1/jobs for `options`, with `package_id` when code was uploaded.
// InvalidArgument for bad flags (no command, --slots < 1, --gpus < 0, bad --env or
// --config).
[[nodiscard]] absl::StatusOr<base::Json> BuildJobRequest(
    const RunOptions& options, const std::optional<std::string>& package_id);

// Packages `path` (a folder, as a .tar.gz honouring .kilnignore, or one regular file),
// uploads it and returns the package id, saying on stderr what it sent. `label` names
// where the path came from in errors ("--package", "code"); `fix` is appended to a
// packaging error to say what the user can do.
[[nodiscard]] absl::StatusOr<std::string> UploadCode(const std::string& path,
                                                     const std::string& label,
                                                     const std::string& fix, ApiClient& api,
                                                     Invocation& inv);

// Counts the regular files in a gzip tar (for the "packaged 12 files" line).
[[nodiscard]] absl::StatusOr<int64_t> CountPackageFiles(const std::string& tar_gz);

}  // namespace kiln::cli
