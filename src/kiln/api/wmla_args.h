// wmla_args.h
//
// WMLA's `args` string (`dlicmd.py --exec-start` options, wmla-api.md §1.9), as sent with
// `POST /execs?args=...` and in an HPO task's `modelSpec.args`, turned into the job Kiln
// runs. Kiln honours the options it has a meaning for (the script, its folder, GPUs, the
// dataset, the workers of distPyTorch and edtPyTorch), accepts and records the WMLA-only
// ones, and passes every other word to the user's script, as WMLA does.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/master/job_spec.h"

namespace kiln::api {

// The most workers of a distPyTorch or edtPyTorch job: a job's limit (master/job_spec.cc),
// also WMLA's for distPyTorch.
inline constexpr int kWmlaMaxWorkers = 1024;

// Splits `args` into words the way a POSIX shell would, without expansions: blanks
// separate words; '...' is literal; "..." keeps blanks and resolves \" \\ \$ \`; a
// backslash outside quotes escapes the next character. InvalidArgument for an unclosed
// quote, a trailing backslash, a NUL byte, invalid UTF-8, more than 4000 words or 128 KiB.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> SplitArgs(std::string_view args);

// The options of one `args` string.
struct WmlaArgs {
  std::string framework = "PyTorch";  // --exec-start, as written
  std::string model_main;             // --model-main: the script, relative to model_dir
  std::string model_dir;              // --model-dir: the folder inside the package
  int gpus = 0;                       // --gpuPerWorker / --workerDeviceNum
  std::string device_type;            // --workerDeviceType: "cpu", "gpu" or ""
  // Workers: a distPyTorch job's exact count (--numWorker); an edtPyTorch job's most
  // (--numWorker, or --edt-options maxWorkers); 1 for the single-node frameworks.
  int num_workers = 1;
  bool distributed = false;  // distPyTorch or edtPyTorch: a job of `num_workers` workers
  bool elastic = false;      // edtPyTorch: from 1 up to `num_workers` workers
  std::string data_path;     // --cs-datastore-meta data_path ("" = none)
  std::string app_name;      // --appName
  std::vector<std::string> script_args;  // everything else, for the script, in order
  // Options accepted without effect, each with the reason ("--python-version 3.6: Kiln
  // runs the agent's python3"), for the submitter to see.
  std::vector<std::string> notes;
};

// Parses `args`. Options take their value as the next word or after '=' (`--opt=value`);
// `--` ends the options (the words after it go to the script). `--exec-start distPyTorch
// --numWorker N` is a static job of N workers; `--exec-start edtPyTorch` with
// `--numWorker N` (WMLA 2.x) or `--edt-options maxWorkers=N` (WMLA 1.2.x) an elastic job
// of 1 to N workers, whose script also gets `--numWorker N` (and `--gpuPerWorker G` when
// given), which WMLA's EDT scripts read. InvalidArgument naming the option and the fix
// for: no --model-main, a missing or malformed value, an unknown --exec-start framework,
// the TensorFlow and Keras distributed frameworks (Kiln runs the PyTorch ones),
// --numWorker above 1 with a single-node framework, --edt-options with another framework
// than edtPyTorch or with an unknown key, --numWorker and maxWorkers that disagree, --numPs,
// --cs-datastore-meta with a type other than fs, or prebuilt models (--pbmodel-*).
// Messages do not say where the string came from: callers prefix that ("modelSpec.args: ").
[[nodiscard]] absl::StatusOr<WmlaArgs> ParseWmlaArgs(std::string_view args);

struct WmlaJobOptions {
  // kilnd's $DLI_DATA_FS (WMLA's shared dataset root): a relative data_path is taken
  // under it. Empty: a relative data_path stays relative to the script's folder.
  std::string data_fs;
};

// The job `args` describe (without its package): command [python3, model_main,
// script_args...] (the agent resolves python3), workdir = model_dir, one slot and `gpus`
// GPUs (per worker), env DATA_DIR from data_path (and DLI_DATA_FS when set), name =
// app_name or the script's file name (its first 200 bytes). Distributed: `workers` static
// (min = max = num_workers) or elastic (min 1, max num_workers, the REST API's defaults
// for the rest); elastic jobs also get FABRIC_HOME="" so WMLA 1.2.x scripts' sys.path line
// (os.path.join(os.getenv("FABRIC_HOME"), "libs", "fabric.zip")) runs.
master::JobSpec WmlaArgsToJobSpec(const WmlaArgs& args, const WmlaJobOptions& options);

// WMLA's framework plugins (`GET /execs/frameworks`, wmla-api.md §2.3) and whether Kiln
// runs them.
struct WmlaFramework {
  std::string name;       // "PyTorch", "edtPyTorch", ...
  std::string app_name;   // "SingleNodePytorchTrain", ...
  std::string exec_mode;  // "single" or "distributed"
  bool supported = false;
  std::string desc;
  int max_workers = 1;  // the most --numWorker Kiln takes (1 for single-node ones)
};
const std::vector<WmlaFramework>& WmlaFrameworks();

}  // namespace kiln::api
