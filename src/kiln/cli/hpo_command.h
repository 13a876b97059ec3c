// hpo_command.h
//
// `kiln hpo`: hyperparameter searches through the native experiments API (docs/api.md,
// "Experiments"). `create -f exp.yaml` reads a YAML (or JSON) experiment file, uploads the
// folder its `code:` names and posts the rest as JSON; `list`, `show`, `trials`, `best`,
// `stop`, `restart`, `delete` and `algorithms` read and manage searches. The file reader
// and the renderers are declared here so tests pin them down without a server.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"

namespace kiln::cli {

// Converts one YAML document to JSON. Plain scalars are typed as YAML 1.2's core schema
// says (null, true/false, integers, floats such as 1e-4; anything else is a string);
// quoted scalars are strings; `!!str`, `!!int`, `!!float`, `!!bool` and `!!null` tags are
// honoured. InvalidArgument "SOURCE:LINE:COLUMN: ..." (1-based) for a syntax error, a
// duplicate key, a non-scalar key, an unknown tag, or a number JSON cannot hold (.inf,
// .nan, an integer out of range).
[[nodiscard]] absl::StatusOr<base::Json> YamlToJson(std::string_view text,
                                                    std::string_view source_name);

// An experiment file read for `kiln hpo create`.
struct ExperimentFile {
  // The body of POST /api/v1/experiments, without a package when `code_path` is set.
  base::Json request;
  // The folder (or single file) that `code:` names, resolved against the file's folder
  // and made canonical; "" when the file has no `code:` (it may give `package:` itself).
  std::string code_path;
};

// Reads `path`: YAML, or JSON when it ends in ".json". The document must be a mapping
// with the fields of the JSON request, plus an optional `code: DIR` (relative to the
// file) meaning "package and upload this". InvalidArgument naming the file for a missing
// or unreadable file, bad syntax (with line and column), a document that is not a
// mapping, a `code` that is not a string or does not exist, or both `code` and `package`.
[[nodiscard]] absl::StatusOr<ExperimentFile> LoadExperimentFile(const std::string& path);

// Whether `state` is FINISHED, FAILED or STOPPED: an experiment that changes no more
// until someone restarts it.
bool IsExperimentEnded(std::string_view state);

// "3/12 trials done (2 complete, 1 pruned), 2 running, best 0.8512 (trial 1)": the one
// progress line of `--wait` and `show`.
std::string ExperimentProgress(const base::Json& experiment);

// The `kiln hpo list` table: ID NAME USER STATE ALGORITHM TRIALS BEST AGE.
std::string RenderExperimentsTable(const base::Json& experiments, int64_t now_micros);

// The `kiln hpo show` view of an experiment record: one "key: value" line per field.
std::string RenderExperimentDetails(const base::Json& experiment, int64_t now_micros);

// The `kiln hpo trials` table of a trials answer {"trials": [...]}: #, STATE, VALUE,
// STEPS, BUDGET (multi-fidelity searches only), one column per searched parameter, JOB,
// REASON.
std::string RenderTrialsTable(const base::Json& trials);

// The `kiln hpo algorithms` table: NAME WMLA-NAME PARAMETERS DESCRIPTION.
std::string RenderAlgorithmsTable(const base::Json& algorithms);

}  // namespace kiln::cli
