#include "kiln/api/wmla_args.h"

#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kiln/base/status.h"

namespace kiln::api {
namespace {

constexpr int kMaxGpus = 256;  // as master/job_spec.cc
// Below JobSpec's 4096 command arguments, with room for python3 and the script.
constexpr size_t kMaxWords = 4000;
constexpr size_t kMaxArgsBytes = 128 << 10;
constexpr size_t kMaxNameBytes = 200;  // a job name's limit (master/job_spec.cc)

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

bool EqualsIgnoreCase(const std::string& a, const std::string& b) {
  return absl::AsciiStrToLower(a) == absl::AsciiStrToLower(b);
}

// Jobs are stored as JSON, whose encoder replaces invalid UTF-8: refused up front, so what
// runs is what was asked for.
bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
    for (size_t k = 1; k < n; ++k) {
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}

// At most `max` bytes of `s` (valid UTF-8), cut at a character boundary.
std::string TruncateUtf8(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xc0) == 0x80) --end;
  return s.substr(0, end);
}

// A relative path that stays inside the package.
bool IsInsidePath(const std::string& path) {
  if (path.empty() || path[0] == '/' || path.find('\0') != std::string::npos) return false;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") return false;
  }
  return true;
}

absl::StatusOr<int> ParseCount(const std::string& option, const std::string& value, int min,
                               int max) {
  int n = 0;
  if (!absl::SimpleAtoi(value, &n) || n < min || n > max) {
    return Invalid(absl::StrCat(option, " must be a whole number from ", min, " to ", max,
                                ", got \"", value.substr(0, 32), "\""));
  }
  return n;
}

// `type=fs,data_path=pytorch-mnist`.
absl::Status ParseDatastoreMeta(const std::string& value, WmlaArgs& out) {
  std::string type;
  for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    std::string key(absl::StripAsciiWhitespace(kv.first));
    std::string val(absl::StripAsciiWhitespace(kv.second));
    if (key == "type") {
      type = val;
    } else if (key == "data_path") {
      out.data_path = val;
    } else {
      out.notes.push_back(absl::StrCat("--cs-datastore-meta ", key,
                                       ": ignored (Kiln reads type and data_path only)"));
    }
  }
  if (type.empty()) {
    return Invalid(absl::StrCat("--cs-datastore-meta \"", value.substr(0, 64),
                                "\" needs type=fs, e.g. --cs-datastore-meta "
                                "type=fs,data_path=pytorch-mnist"));
  }
  if (type != "fs") {
    return Invalid(absl::StrCat("--cs-datastore-meta type=", type.substr(0, 32),
                                " is not supported: Kiln reads datasets from a filesystem "
                                "(type=fs[,data_path=DIR])"));
  }
  return absl::OkStatus();
}

// `maxWorkers=2[,key=value...]`: WMLA 1.2.x's options of an elastic job. Returns maxWorkers
// (nullopt when the list does not set it).
absl::StatusOr<std::optional<int>> ParseEdtOptions(const std::string& value) {
  static const char* const kKnown[] = {"maxWorkers"};
  std::optional<int> max_workers;
  for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    std::vector<std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    std::string key(absl::StripAsciiWhitespace(kv[0]));
    if (kv.size() != 2) {
      return Invalid(absl::StrCat("--edt-options \"", std::string(item).substr(0, 64),
                                  "\" is not key=value, e.g. --edt-options maxWorkers=2"));
    }
    std::string val(absl::StripAsciiWhitespace(kv[1]));
    if (EqualsIgnoreCase(key, "maxWorkers")) {
      KILN_ASSIGN_OR_RETURN(max_workers,
                            ParseCount("--edt-options maxWorkers", val, 1, kWmlaMaxWorkers));
    } else {
      return Invalid(absl::StrCat("--edt-options: unknown option \"", key.substr(0, 32),
                                  "\"; Kiln knows: ", absl::StrJoin(kKnown, ", "),
                                  " (e.g. --edt-options maxWorkers=2)"));
    }
  }
  return max_workers;
}

// Decides the workers from the framework and the worker options (given in any order).
absl::Status ResolveWorkers(std::optional<int> num_worker, std::optional<int> edt_max_workers,
                            bool edt_options, std::optional<int> gpus, WmlaArgs& out) {
  const bool edt = out.framework == "edtPyTorch";
  if (edt_options && !edt) {
    return Invalid(
        absl::StrCat("--edt-options is for elastic jobs: add --exec-start edtPyTorch "
                     "(this one is --exec-start ",
                     out.framework, "), or drop it"));
  }
  if (out.framework == "distPyTorch") {
    out.distributed = true;
    out.num_workers = num_worker.value_or(1);
    return absl::OkStatus();
  }
  if (edt) {
    if (num_worker && edt_max_workers && *num_worker != *edt_max_workers) {
      return Invalid(absl::StrCat("--numWorker ", *num_worker,
                                  " and --edt-options maxWorkers=", *edt_max_workers,
                                  " disagree: give the most workers once (--numWorker N, or "
                                  "--edt-options maxWorkers=N)"));
    }
    out.distributed = true;
    out.elastic = true;
    out.num_workers = num_worker.value_or(edt_max_workers.value_or(1));
    // WMLA's EDT scripts read these (engines_number = numWorker * gpuPerWorker); put first,
    // so that the user's own words after them win with argparse.
    std::vector<std::string> forwarded = {"--numWorker", std::to_string(out.num_workers)};
    if (gpus) {
      forwarded.push_back("--gpuPerWorker");
      forwarded.push_back(std::to_string(*gpus));
    }
    out.script_args.insert(out.script_args.begin(), forwarded.begin(), forwarded.end());
    return absl::OkStatus();
  }
  if (num_worker.value_or(1) != 1) {
    return Invalid(absl::StrCat("--numWorker ", *num_worker,
                                " needs a distributed framework: "
                                "--exec-start distPyTorch (exactly ",
                                *num_worker, " workers) or edtPyTorch (elastic, 1 to ", *num_worker,
                                " workers); --exec-start ", out.framework, " runs one worker"));
  }
  return absl::OkStatus();
}

const WmlaFramework* FindFramework(const std::string& name) {
  for (const WmlaFramework& f : WmlaFrameworks()) {
    if (EqualsIgnoreCase(f.name, name)) return &f;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> SplitArgs(std::string_view args) {
  if (args.size() > kMaxArgsBytes) {
    return Invalid(absl::StrCat("the string is longer than ", kMaxArgsBytes / 1024, " KiB"));
  }
  if (args.find('\0') != std::string_view::npos) {
    return Invalid("the string contains a NUL byte");
  }
  if (!IsValidUtf8(args)) return Invalid("the string is not valid UTF-8");
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < args.size(); ++i) {
    char c = args[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\\') {
      if (i + 1 == args.size()) return Invalid("the string ends in a lone backslash");
      word.push_back(args[++i]);
    } else if (c == '\'') {
      size_t close = args.find('\'', i + 1);
      if (close == std::string_view::npos) {
        return Invalid("a single quote (') is not closed");
      }
      word.append(args.substr(i + 1, close - i - 1));
      i = close;
    } else if (c == '"') {
      size_t j = i + 1;
      for (; j < args.size() && args[j] != '"'; ++j) {
        char e = j + 1 < args.size() ? args[j + 1] : '\0';
        if (args[j] == '\\' && (e == '"' || e == '\\' || e == '$' || e == '`')) ++j;
        word.push_back(args[j]);
      }
      if (j == args.size()) return Invalid("a double quote (\") is not closed");
      i = j;
    } else {
      word.push_back(c);
    }
    if (words.size() >= kMaxWords) {
      return Invalid(absl::StrCat("more than ", kMaxWords, " words"));
    }
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

absl::StatusOr<WmlaArgs> ParseWmlaArgs(std::string_view args) {
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> words, SplitArgs(args));
  WmlaArgs out;
  std::optional<int> gpus;
  std::optional<int> num_worker;       // --numWorker
  std::optional<int> edt_max_workers;  // --edt-options maxWorkers
  bool edt_options = false;
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& word = words[i];
    if (word == "--") {
      out.script_args.insert(out.script_args.end(), words.begin() + i + 1, words.end());
      break;
    }
    if (word.size() <= 2 || word.compare(0, 2, "--") != 0) {
      out.script_args.push_back(word);
      continue;
    }
    size_t eq = word.find('=');
    std::string option = word.substr(0, eq);
    static const char* const kValued[] = {"--exec-start",      "--model-main",
                                          "--model-dir",       "--gpuPerWorker",
                                          "--workerDeviceNum", "--workerDeviceType",
                                          "--numWorker",       "--cs-datastore-meta",
                                          "--python-version",  "--debug-level",
                                          "--appName",         "--ig",
                                          "--workerMemory",    "--numPs",
                                          "--edt-options",     "--pbmodel-cmd",
                                          "--pbmodel-name"};
    bool known = false;
    for (const char* k : kValued) known = known || option == k;
    if (!known) {
      // Not a dlicmd option: the script's own (WMLA forwards these unchanged).
      out.script_args.push_back(word);
      continue;
    }
    std::string value;
    if (eq != std::string::npos) {
      value = word.substr(eq + 1);
    } else if (i + 1 < words.size() && words[i + 1].compare(0, 2, "--") != 0) {
      value = words[++i];
    } else {
      return Invalid(
          absl::StrCat(option, " needs a value, e.g. ",
                       option == "--model-main" ? "--model-main train.py" : option + " VALUE"));
    }

    if (option == "--exec-start") {
      const WmlaFramework* f = FindFramework(value);
      if (f == nullptr) {
        std::vector<std::string> names;
        for (const WmlaFramework& k : WmlaFrameworks()) names.push_back(k.name);
        return Invalid(
            absl::StrCat("--exec-start ", value.substr(0, 32),
                         " is not a known framework; known: ", absl::StrJoin(names, ", ")));
      }
      if (!f->supported) {
        return Invalid(absl::StrCat(
            "--exec-start ", f->name, " (", f->desc,
            ") is not supported: Kiln runs distributed PyTorch; use --exec-start distPyTorch "
            "--numWorker N (N workers) or --exec-start edtPyTorch --numWorker N (elastic, up "
            "to N workers)"));
      }
      out.framework = f->name;
    } else if (option == "--model-main") {
      if (!IsInsidePath(value)) {
        return Invalid(absl::StrCat("--model-main \"", value.substr(0, 64),
                                    "\" must name the script inside the model folder, e.g. "
                                    "--model-main train.py"));
      }
      out.model_main = value;
    } else if (option == "--model-dir") {
      while (value.size() > 1 && value.back() == '/') value.pop_back();
      if (!IsInsidePath(value) || !master::ValidateWorkdir(value).ok()) {
        return Invalid(absl::StrCat("--model-dir \"", value.substr(0, 64),
                                    "\" must be the folder at the top of the uploaded "
                                    ".modelDir.tar (relative, without \"..\"), e.g. "
                                    "--model-dir pytorch_hpo"));
      }
      out.model_dir = value;
    } else if (option == "--gpuPerWorker" || option == "--workerDeviceNum") {
      KILN_ASSIGN_OR_RETURN(gpus, ParseCount(option, value, 0, kMaxGpus));
    } else if (option == "--workerDeviceType") {
      std::string type = absl::AsciiStrToLower(value);
      if (type != "cpu" && type != "gpu") {
        return Invalid(absl::StrCat("--workerDeviceType must be cpu or gpu, got \"",
                                    value.substr(0, 32), "\""));
      }
      out.device_type = type;
    } else if (option == "--numWorker") {
      KILN_ASSIGN_OR_RETURN(num_worker, ParseCount(option, value, 1, kWmlaMaxWorkers));
    } else if (option == "--edt-options") {
      KILN_ASSIGN_OR_RETURN(std::optional<int> max, ParseEdtOptions(value));
      if (max) edt_max_workers = max;
      edt_options = true;
    } else if (option == "--cs-datastore-meta") {
      KILN_RETURN_IF_ERROR(ParseDatastoreMeta(value, out));
    } else if (option == "--appName") {
      if (value.size() > kMaxNameBytes) {
        return Invalid(absl::StrCat("--appName is longer than ", kMaxNameBytes, " bytes"));
      }
      out.app_name = value;
    } else if (option == "--python-version") {
      out.notes.push_back(
          absl::StrCat(option, " ", value, ": ignored (Kiln runs the agent's python3)"));
    } else if (option == "--debug-level") {
      out.notes.push_back(
          absl::StrCat(option, " ", value, ": ignored (Kiln keeps every log line)"));
    } else if (option == "--ig") {
      out.notes.push_back(absl::StrCat(
          option, " ", value, ": ignored (Kiln has no instance groups: any agent may run it)"));
    } else if (option == "--workerMemory") {
      out.notes.push_back(
          absl::StrCat(option, " ", value, ": ignored (Kiln does not limit a job's memory yet)"));
    } else if (option == "--numPs") {
      return Invalid(
          "--numPs is for disttensorflow's parameter servers, which Kiln does not run: drop it "
          "(Kiln runs distributed PyTorch: --exec-start distPyTorch or edtPyTorch with "
          "--numWorker N)");
    } else {  // --pbmodel-cmd, --pbmodel-name
      return Invalid(absl::StrCat(option,
                                  ": WMLA's prebuilt models are not available in Kiln; upload "
                                  "your script and name it with --model-main"));
    }
  }
  if (out.model_main.empty()) {
    return Invalid(
        "--model-main is missing: name the script to run, e.g. \"--exec-start PyTorch "
        "--model-main train.py --epochs 3\"");
  }
  KILN_RETURN_IF_ERROR(ResolveWorkers(num_worker, edt_max_workers, edt_options, gpus, out));
  if (out.device_type == "cpu") {
    if (gpus.value_or(0) > 0) {
      out.notes.push_back(
          absl::StrCat("--workerDeviceType cpu: the job gets no GPU (", *gpus, " asked for)"));
    }
    out.gpus = 0;
  } else if (out.device_type == "gpu") {
    out.gpus = std::max(1, gpus.value_or(1));
  } else {
    out.gpus = gpus.value_or(0);
  }
  return out;
}

master::JobSpec WmlaArgsToJobSpec(const WmlaArgs& args, const WmlaJobOptions& options) {
  master::JobSpec spec;
  if (args.distributed) {
    master::WorkersSpec workers;
    workers.elastic = args.elastic;
    workers.min = args.elastic ? 1 : args.num_workers;  // "EDT starts ... with minimal 1 GPU"
    workers.max = args.num_workers;
    workers.max_worker_failures = 3 * workers.max + 3;  // the REST API's default
    spec.workers = workers;
  }
  if (args.elastic) spec.env["FABRIC_HOME"] = "";
  spec.command = {"python3", args.model_main};
  spec.command.insert(spec.command.end(), args.script_args.begin(), args.script_args.end());
  spec.workdir = args.model_dir;
  spec.resources.slots = 1;
  spec.resources.gpus = args.gpus;
  if (!args.app_name.empty()) {
    spec.name = args.app_name;
  } else {
    size_t slash = args.model_main.rfind('/');
    spec.name = TruncateUtf8(
        slash == std::string::npos ? args.model_main : args.model_main.substr(slash + 1),
        kMaxNameBytes);
  }
  if (!options.data_fs.empty()) spec.env["DLI_DATA_FS"] = options.data_fs;
  if (!args.data_path.empty()) {
    spec.env["DATA_DIR"] = args.data_path[0] == '/' || options.data_fs.empty()
                               ? args.data_path
                               : absl::StrCat(options.data_fs, "/", args.data_path);
  }
  return spec;
}

const std::vector<WmlaFramework>& WmlaFrameworks() {
  static const std::vector<WmlaFramework>* frameworks = new std::vector<WmlaFramework>{
      {"PyTorch", "SingleNodePytorchTrain", "single", true, "PyTorch on one worker"},
      {"tensorflow", "SingleNodeTensorflowTrain", "single", true, "TensorFlow on one worker"},
      {"XGboost", "SingleNodeXGboostTrain", "single", true, "XGBoost on one worker"},
      {"distPyTorch", "DistPyTorchTrain", "distributed", true,
       "distributed PyTorch: --numWorker N workers with RANK, WORLD_SIZE, MASTER_ADDR and "
       "MASTER_PORT set",
       kWmlaMaxWorkers},
      {"edtPyTorch", "ElasticPyTorchTrain", "distributed", true,
       "elastic distributed PyTorch: 1 to --numWorker N workers (from fabric_model import "
       "FabricModel)",
       kWmlaMaxWorkers},
      {"disttensorflow", "DistTensorflowTrain", "distributed", false, "distributed TensorFlow"},
      {"edtTensorflow", "ElasticTensorflow1xTrain", "distributed", false,
       "elastic distributed TensorFlow"},
      {"edtKeras", "ElasticKerasTrain", "distributed", false, "elastic distributed Keras"},
  };
  return *frameworks;
}

}  // namespace kiln::api
