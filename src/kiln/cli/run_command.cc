#include "kiln/cli/run_command.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <cerrno>
#include <memory>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "kiln/agent/package.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"
#include "kiln/cli/commands_internal.h"
#include "kiln/cli/connection.h"
#include "kiln/cli/job_follow.h"
#include "kiln/cli/output.h"

namespace kiln::cli {
namespace {

constexpr char kCommandHint[] =
    "put the command to run after '--', for example: kiln run --slots 2 -- python3 train.py";

constexpr char kWorkersForms[] =
    "use --workers N for a static job of exactly N workers, or --workers MIN:MAX for an "
    "elastic job of MIN to MAX workers (1 <= MIN <= MAX), e.g. --workers 2 or --workers 1:4";

// A whole count without sign, spaces or other characters; nullopt otherwise (and for
// counts too large for an int, which no cluster has workers for).
std::optional<int> ParseCount(std::string_view text) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

std::string Basename(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

struct UploadedPackage {
  std::string id;
};

// Packages and uploads the code of `options`; nullopt with --no-package.
absl::StatusOr<std::optional<UploadedPackage>> UploadPackage(const RunOptions& options,
                                                             ApiClient& api, Invocation& inv) {
  if (options.no_package) return std::nullopt;
  const std::string path = options.package.empty() ? inv.cwd : options.package;
  KILN_ASSIGN_OR_RETURN(
      std::string id,
      UploadCode(path, "--package",
                 "Choose the folder with --package DIR, list what to leave out in .kilnignore, "
                 "or pass --no-package.",
                 api, inv));
  return UploadedPackage{.id = id};
}

absl::Status RunJob(const RunOptions& options, Invocation& inv) {
  // Check the flags before spending time on packaging.
  KILN_RETURN_IF_ERROR(BuildJobRequest(options, std::nullopt).status());
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  if (!options.no_package) {
    // Packaging a big folder takes a while; learn first that Kiln is there and accepts
    // our credentials.
    KILN_RETURN_IF_ERROR(api->GetJson("/api/v1/me").status());
  }
  KILN_ASSIGN_OR_RETURN(std::optional<UploadedPackage> package, UploadPackage(options, *api, inv));
  KILN_ASSIGN_OR_RETURN(
      base::Json request,
      BuildJobRequest(options, package ? std::optional<std::string>(package->id) : std::nullopt));
  KILN_ASSIGN_OR_RETURN(base::Json job, api->PostJson("/api/v1/jobs", request));
  KILN_ASSIGN_OR_RETURN(int64_t id, base::GetInt(job, "id"));

  if (options.json) {
    *inv.out << base::DumpJson(job, 2) << "\n";
  } else if (!options.follow) {
    *inv.out << id << "\n";
  }
  inv.out->flush();
  if (!options.follow && !options.wait) return absl::OkStatus();

  base::Json final_job;
  if (options.follow) {
    *inv.err << "job " << id
             << " submitted; following its logs (Ctrl-C stops following, the job keeps running)\n"
             << std::flush;
    int64_t last_seq = 0;
    KILN_RETURN_IF_ERROR(FollowLogs(*api, inv, id, &last_seq));
    KILN_ASSIGN_OR_RETURN(final_job, WaitForJobEnd(*api, inv, id));
    *inv.err << JobSummary(final_job) << "\n";
  } else {
    KILN_ASSIGN_OR_RETURN(final_job, WaitForJobEnd(*api, inv, id));
  }
  if (options.wait) inv.exit_code = ExitCodeForJob(final_job);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseEnvAssignments(
    const std::vector<std::string>& assignments) {
  std::map<std::string, std::string> env;
  for (const std::string& assignment : assignments) {
    size_t eq = assignment.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--env expects KEY=VALUE, got \"", assignment,
                                                     "\" (write --env ", assignment,
                                                     "= for an empty value)"));
    }
    if (eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--env expects KEY=VALUE, got \"", assignment, "\" with no KEY"));
    }
    env[assignment.substr(0, eq)] = assignment.substr(eq + 1);
  }
  return env;
}

absl::StatusOr<WorkerCount> ParseWorkersFlag(std::string_view text) {
  const std::string given(text);
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    std::optional<int> n = ParseCount(text);
    if (!n) {
      return absl::InvalidArgumentError(
          absl::StrCat("--workers \"", given, "\" is not a worker count; ", kWorkersForms));
    }
    if (*n < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--workers ", given, ": a job needs at least 1 worker; ", kWorkersForms));
    }
    return WorkerCount{.min = *n, .max = *n, .elastic = false};
  }
  std::optional<int> min = ParseCount(text.substr(0, colon));
  std::optional<int> max = ParseCount(text.substr(colon + 1));
  if (!min || !max) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--workers \"", given, "\" is not MIN:MAX with two whole numbers; ", kWorkersForms));
  }
  if (*min < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--workers ", given, ": MIN must be at least 1; ", kWorkersForms));
  }
  if (*min > *max) {
    return absl::InvalidArgumentError(absl::StrCat("--workers ", given, ": MIN (", *min,
                                                   ") is larger than MAX (", *max, "); ",
                                                   kWorkersForms));
  }
  return WorkerCount{.min = *min, .max = *max, .elastic = true};
}

absl::StatusOr<base::Json> LoadConfigFile(const std::string& path) {
  absl::StatusOr<std::string> text = base::ReadFile(path);
  if (absl::IsNotFound(text.status())) {
    return absl::InvalidArgumentError(absl::StrCat("--config ", path, " does not exist"));
  }
  KILN_RETURN_IF_ERROR(text.status());
  absl::StatusOr<base::Json> json = base::ParseJson(*text);
  if (!json.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--config ", path, " is not valid JSON: ", json.status().message()));
  }
  if (!json->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--config ", path, " must hold a JSON object like {\"lr\": 0.01}, got ",
                     json->type_name()));
  }
  return *std::move(json);
}

absl::StatusOr<base::Json> BuildJobRequest(const RunOptions& options,
                                           const std::optional<std::string>& package_id) {
  if (options.command.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("kiln run needs a command: ", kCommandHint));
  }
  if (options.slots < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--slots must be at least 1, got ", options.slots));
  }
  if (options.gpus < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--gpus must be 0 or more, got ", options.gpus));
  }
  KILN_ASSIGN_OR_RETURN(auto env, ParseEnvAssignments(options.env));
  base::Json request = {
      {"command", options.command},
      {"resources", {{"slots", options.slots}, {"gpus", options.gpus}}},
      {"env", env},
  };
  std::optional<WorkerCount> workers;
  if (!options.workers.empty()) {
    KILN_ASSIGN_OR_RETURN(workers, ParseWorkersFlag(options.workers));
  }
  const bool elastic = workers && workers->elastic;
  if (options.min_workers_timeout_s) {
    if (!elastic) {
      return absl::InvalidArgumentError(
          "--min-workers-timeout applies only to elastic jobs; add --workers MIN:MAX");
    }
    if (*options.min_workers_timeout_s < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--min-workers-timeout must be 0 or more seconds, got ", *options.min_workers_timeout_s));
    }
  }
  if (options.max_worker_failures) {
    if (!elastic) {
      return absl::InvalidArgumentError(
          "--max-worker-failures applies only to elastic jobs; add --workers MIN:MAX");
    }
    if (*options.max_worker_failures < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--max-worker-failures must be 0 or more, got ", *options.max_worker_failures));
    }
  }
  if (elastic) {
    request["min_workers"] = workers->min;
    request["max_workers"] = workers->max;
    if (options.min_workers_timeout_s) {
      request["min_workers_timeout_s"] = *options.min_workers_timeout_s;
    }
    if (options.max_worker_failures) {
      request["max_worker_failures"] = *options.max_worker_failures;
    }
  } else if (workers) {
    request["workers"] = workers->min;
  }
  if (!options.name.empty()) request["name"] = options.name;
  if (package_id) request["package"] = {{"id", *package_id}};
  if (!options.config_file.empty()) {
    KILN_ASSIGN_OR_RETURN(request["config"], LoadConfigFile(options.config_file));
  }
  return request;
}

absl::StatusOr<int64_t> CountPackageFiles(const std::string& tar_gz) {
  std::unique_ptr<archive, decltype(&archive_read_free)> reader(archive_read_new(),
                                                                archive_read_free);
  archive_read_support_filter_gzip(reader.get());
  archive_read_support_format_tar(reader.get());
  if (archive_read_open_memory(reader.get(), tar_gz.data(), tar_gz.size()) != ARCHIVE_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a gzip tar: ", archive_error_string(reader.get())));
  }
  int64_t files = 0;
  archive_entry* entry = nullptr;
  int rc;
  while ((rc = archive_read_next_header(reader.get(), &entry)) == ARCHIVE_OK) {
    if (archive_entry_filetype(entry) == AE_IFREG) ++files;
    archive_read_data_skip(reader.get());
  }
  if (rc != ARCHIVE_EOF) {
    return absl::InvalidArgumentError(
        absl::StrCat("corrupt gzip tar: ", archive_error_string(reader.get())));
  }
  return files;
}

namespace internal {

void RegisterRunCommand(CLI::App& app, Invocation& inv) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* run = app.add_subcommand("run", "Package this folder and run a command as a job");
  run->add_option("--slots", options->slots, "CPU slots for the job (per worker with --workers)")
      ->type_name("N")
      ->capture_default_str();
  run->add_option("--gpus", options->gpus, "GPUs for the job (per worker with --workers)")
      ->type_name("N")
      ->capture_default_str();
  run->add_option("--workers", options->workers,
                  "Distributed job: N workers (static, all placed at once, PyTorch's RANK and "
                  "WORLD_SIZE set) or MIN:MAX (elastic: Kiln runs MIN to MAX workers and may "
                  "add or remove them while it runs)")
      ->type_name("N|MIN:MAX");
  run->add_option_function<int64_t>(
         "--min-workers-timeout",
         [options](const int64_t& seconds) { options->min_workers_timeout_s = seconds; },
         "Elastic jobs: fail after running below MIN workers this long (server default 600)")
      ->type_name("SECONDS");
  run->add_option_function<int64_t>(
         "--max-worker-failures",
         [options](const int64_t& count) { options->max_worker_failures = count; },
         "Elastic jobs: worker crashes tolerated before the job fails (server default "
         "3*MAX+3)")
      ->type_name("N");
  run->add_option("--name", options->name, "Job name (default: the command's first word)")
      ->type_name("NAME");
  run->add_option("--env", options->env, "Extra environment variable for the job; repeatable")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  run->add_option("--config", options->config_file,
                  "JSON object written to config.json in the job's working folder")
      ->type_name("FILE.json");
  CLI::Option* package =
      run->add_option("--package", options->package,
                      "Folder to package (honours .kilnignore) or single file to upload "
                      "(default: the current folder)")
          ->type_name("DIR|FILE");
  run->add_flag("--no-package", options->no_package, "Upload no code")->excludes(package);
  run->add_flag("-f,--follow", options->follow,
                "Print the job's logs until it ends, then a summary line");
  run->add_flag("--wait", options->wait,
                "Wait for the job to end and exit with its exit code (137 if killed)");
  run->add_flag("--json", options->json, "Print the job record as JSON instead of the id");
  AddUrlOption(*run, inv);
  run->footer(
      "The command goes last, after '--': kiln run [OPTIONS] -- CMD [ARGS...]\n"
      "Prints the job id on stdout (id=$(kiln run -- ...)); progress goes to stderr.\n"
      "Examples:\n"
      "  kiln run -- python3 train.py --epochs 2\n"
      "  kiln run --gpus 1 --env OMP_NUM_THREADS=4 --follow -- python3 train.py\n"
      "  kiln run --package train.py --wait -- python3 train.py\n"
      "  kiln run --workers 2 --slots 2 -- python3 ddp_train.py      # static, RANK 0 and 1\n"
      "  kiln run --workers 1:4 -- python3 elastic_train.py         # elastic; see 'kiln job "
      "scale'");
  // Everything from the first word that is not one of our flags on is the command, so
  // `kiln run python3 train.py --epochs 2` works too; after '--' nothing is ours.
  run->prefix_command();
  run->callback([&inv, options, run] {
    inv.command = [&inv, options, run]() -> absl::Status {
      std::vector<std::string> command = run->remaining();
      if (!command.empty() && !command.front().empty() && command.front()[0] == '-') {
        return absl::InvalidArgumentError(absl::StrCat("kiln run has no option ", command.front(),
                                                       "; to pass options to your program, ",
                                                       kCommandHint));
      }
      if (inv.saw_dashes) {
        if (!command.empty()) command.push_back("--");
        command.insert(command.end(), inv.after_dashes.begin(), inv.after_dashes.end());
      }
      options->command = std::move(command);
      return RunJob(*options, inv);
    };
  });
}

}  // namespace internal
absl::StatusOr<std::string> UploadCode(const std::string& path, const std::string& label,
                                       const std::string& fix, ApiClient& api, Invocation& inv) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return absl::InvalidArgumentError(absl::StrCat(label, " ", path, " does not exist"));
    }
    return base::ErrnoStatus("stat " + path, errno);
  }
  std::string bytes;
  std::string name;
  std::string content_type;
  if (S_ISDIR(st.st_mode)) {
    absl::StatusOr<std::string> package = agent::CreatePackage(path);
    if (!package.ok()) {
      return absl::Status(
          package.status().code(),
          absl::StrCat("cannot package ", path, ": ", package.status().message(), ". ", fix));
    }
    bytes = *std::move(package);
    name = Basename(path) + ".tar.gz";
    content_type = "application/gzip";
    absl::StatusOr<int64_t> files = CountPackageFiles(bytes);
    *inv.err << "packaged " << (files.ok() ? absl::StrCat(*files) : std::string("?"))
             << (files.ok() && *files == 1 ? " file" : " files") << " from " << path << ", "
             << FormatBytes(static_cast<int64_t>(bytes.size())) << "\n";
  } else if (S_ISREG(st.st_mode)) {
    KILN_ASSIGN_OR_RETURN(bytes, base::ReadFile(path));
    name = Basename(path);
    content_type = "application/octet-stream";
    *inv.err << "uploading " << path << ", " << FormatBytes(static_cast<int64_t>(bytes.size()))
             << "\n";
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(label, " ", path, " is neither a folder nor a regular file"));
  }
  inv.err->flush();
  KILN_ASSIGN_OR_RETURN(base::Json answer, api.PostBytes(absl::StrCat("/api/v1/packages?name=",
                                                                      EncodeQueryValue(name)),
                                                         std::move(bytes), content_type));
  return base::GetString(answer, "id");
}

}  // namespace kiln::cli
