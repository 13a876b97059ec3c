// run_command.h
//
// `kiln run`: package the code, upload it, submit a job (single, static distributed with
// `--workers N`, or elastic with `--workers MIN:MAX`), and optionally follow its logs and
// wait for its end. The pieces that turn flags into the API request are declared here so
// they can be tested without a server.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/cli/connection.h"
#include "kiln/cli/invocation.h"

namespace kiln::cli {

// How many worker processes `--workers` asks for (ARCHITECTURE.md §5.1).
struct WorkerCount {
  int min = 1;
  int max = 1;
  // true for the MIN:MAX form: an elastic job that may run anywhere from min to max
  // workers; false for N: a static job of exactly N workers (min == max == N).
  bool elastic = false;
};

struct RunOptions {
  int slots = 1;        // per worker for a distributed job
  int gpus = 0;         // per worker for a distributed job
  std::string workers;  // --workers as given; "" → a single-process job
  std::optional<int64_t> min_workers_timeout_s;
  std::optional<int64_t> max_worker_failures;
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

// Parses `--workers`: "N" (static, N >= 1) or "MIN:MAX" (elastic, 1 <= MIN <= MAX).
// InvalidArgument naming the flag and the accepted forms for anything else ("3:1", "0:2",
// "a:b", "2:", "").
[[nodiscard]] absl::StatusOr<WorkerCount> ParseWorkersFlag(std::string_view text);

// Reads `--config FILE.json`; InvalidArgument unless it holds a JSON object.
[[nodiscard]] absl::StatusOr<base::Json> LoadConfigFile(const std::string& path);

// The body of POST /api/v1/jobs for `options`, with `package_id` when code was uploaded:
// `"workers": N` for `--workers N`, `"min_workers"`/`"max_workers"` (and the elastic
// options) for `--workers MIN:MAX`; `resources` are per worker. InvalidArgument for bad
// flags (no command, --slots < 1, --gpus < 0, bad --workers, elastic options without
// --workers MIN:MAX, bad --env or --config).
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
