// job_spec.h
//
// `JobSpec`, what a user asks to run: command, code package, resources, environment and
// hyperparameters. Parsed and validated from REST bodies here, stored as JSON in the job
// record, and turned into the task an agent launches.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/scheduler/resource_pool.h"

namespace kiln::master {

struct PackageRef {
  std::string id;    // an uploaded package ("sha256-..."), or
  std::string path;  // a folder on a filesystem shared with the agents
};

// A distributed job's workers (ARCHITECTURE.md §5.1). Resources are per worker.
struct WorkersSpec {
  bool elastic = false;  // false: static, exactly `min` (= `max`) workers, gang-placed
  int min = 1;
  int max = 1;
  int64_t min_workers_timeout_s = 600;  // elastic: how long below `min` before failing
  int max_worker_failures = 6;          // elastic: worker crashes tolerated
};

struct JobSpec {
  std::string name;
  std::vector<std::string> command;
  std::optional<PackageRef> package;
  scheduler::Resources resources;
  std::map<std::string, std::string> env;
  base::Json config = base::Json::object();  // written to config.json
  // Where the command runs, relative to the unpacked package ("" = its root). WMLA's
  // `--model-dir` names the one folder inside a `.modelDir.tar`.
  std::string workdir;
  std::optional<WorkersSpec> workers;  // set for distributed jobs
};

// Validates a job request body (docs/api.md). InvalidArgument naming the field and the fix.
absl::StatusOr<JobSpec> ParseJobSpec(const base::Json& body);
base::Json JobSpecToJson(const JobSpec& spec);
// Reads back what JobSpecToJson stored: the same checks as ParseJobSpec, except that the
// KILN_* environment Kiln itself set (trials' KILN_EXPERIMENT_ID...) is allowed.
absl::StatusOr<JobSpec> JobSpecFromStoredJson(const base::Json& stored);
// OK for "" or a relative path inside the package (no "..", ".", or leading '/').
absl::Status ValidateWorkdir(const std::string& workdir);

}  // namespace kiln::master
