#include "kiln/cli/jobs_command.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kiln/base/status.h"
#include "kiln/cli/commands_internal.h"
#include "kiln/cli/connection.h"
#include "kiln/cli/job_follow.h"
#include "kiln/cli/output.h"

namespace kiln::cli {
namespace {

constexpr const char* kStates[] = {"QUEUED",   "SCHEDULED", "RUNNING",
                                   "FINISHED", "FAILED",    "KILLED"};

// A field as display text: strings as is, numbers and others as JSON, "-" when absent.
std::string Text(const base::Json& obj, std::string_view field) {
  if (!obj.is_object()) return "-";
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return "-";
  if (it->is_string()) {
    std::string s = it->get<std::string>();
    return s.empty() ? "-" : s;
  }
  return base::DumpJson(*it);
}

std::string Resource(const base::Json& job, std::string_view field) {
  auto it = job.find("resources");
  if (it == job.end()) return "-";
  return Text(*it, field);
}

std::string Duration(const base::Json& job, int64_t now_micros) {
  std::optional<int64_t> started = TimestampField(job, "started_at");
  if (!started) return "-";
  std::optional<int64_t> finished = TimestampField(job, "finished_at");
  return FormatDuration((finished ? *finished : now_micros) - *started);
}

std::string TimeWithAge(const base::Json& job, std::string_view field, int64_t now_micros) {
  std::optional<int64_t> at = TimestampField(job, field);
  if (!at) return Text(job, field);
  return absl::StrCat(Text(job, field), " (", FormatAge(now_micros - *at), " ago)");
}

// The job's `workers` object ({"min","max","target","live"}), or nullptr for a
// single-process job.
const base::Json* WorkersOf(const base::Json& job) {
  if (!job.is_object()) return nullptr;
  auto it = job.find("workers");
  if (it == job.end() || !it->is_object()) return nullptr;
  return &*it;
}

// "2 live (min 1, max 4, target 2)" for an elastic job, "2 live (static, 2 workers)" for
// a static one (the record says which with `"elastic"`).
std::string WorkersSummary(const base::Json& workers) {
  if (auto it = workers.find("elastic"); it != workers.end() && it->is_boolean() && !*it) {
    return absl::StrCat(Text(workers, "live"), " live (static, ", Text(workers, "max"),
                        " workers)");
  }
  return absl::StrCat(Text(workers, "live"), " live (min ", Text(workers, "min"), ", max ",
                      Text(workers, "max"), ", target ", Text(workers, "target"), ")");
}

// A list of ids (or other scalars) as "8,9,12".
std::string JoinList(const base::Json& list) {
  if (!list.is_array() || list.empty()) return "-";
  std::vector<std::string> words;
  for (const base::Json& item : list) {
    words.push_back(item.is_string() ? item.get<std::string>() : base::DumpJson(item));
  }
  return absl::StrJoin(words, ",");
}

// The rendered `table` indented under a "title:" line; long lists keep their newest
// `max_rows` rows (the API lists oldest first) and say how many were left out.
std::string Section(const std::string& title, const base::Json& items, size_t max_rows, Table table,
                    const std::function<std::vector<std::string>(const base::Json&)>& row) {
  const size_t skipped = items.size() > max_rows ? items.size() - max_rows : 0;
  for (size_t i = skipped; i < items.size(); ++i) table.AddRow(row(items[i]));
  std::string out = absl::StrCat(title, ":\n");
  for (absl::string_view line : absl::StrSplit(table.Render(), '\n', absl::SkipEmpty())) {
    absl::StrAppend(&out, "  ", line, "\n");
  }
  if (skipped > 0) {
    absl::StrAppend(&out, "  (", skipped, " older not shown; --json lists all ", items.size(),
                    ")\n");
  }
  return out;
}

std::string JobIdArg(int64_t id) { return absl::StrCat("/api/v1/jobs/", id); }

struct JobsOptions {
  std::vector<std::string> states;
  int limit = 0;  // 0: 20, or 100 per page with --all
  bool all = false;
  bool json = false;
};

absl::Status ListJobs(const JobsOptions& options, Invocation& inv) {
  std::string query;
  for (const std::string& state : options.states) {
    std::string upper = absl::AsciiStrToUpper(state);
    if (std::find(std::begin(kStates), std::end(kStates), upper) == std::end(kStates)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--state ", state, " is not a job state; use one of ", absl::StrJoin(kStates, ", ")));
    }
    absl::StrAppend(&query, "state=", upper, "&");
  }
  if (options.limit < 0) return absl::InvalidArgumentError("--limit must be positive");
  const int limit = options.limit > 0 ? options.limit : (options.all ? 100 : 20);
  absl::StrAppend(&query, "limit=", limit);

  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  base::Json jobs = base::Json::array();
  std::string page_token;
  bool more = false;
  while (true) {
    std::string target = absl::StrCat("/api/v1/jobs?", query);
    if (!page_token.empty()) absl::StrAppend(&target, "&page_token=", EncodeQueryValue(page_token));
    KILN_ASSIGN_OR_RETURN(base::Json page, api->GetJson(target));
    auto it = page.find("jobs");
    if (it != page.end() && it->is_array()) {
      for (auto& job : *it) jobs.push_back(std::move(job));
    }
    page_token = base::GetStringOr(page, "next_page_token", "").value_or("");
    more = !page_token.empty();
    if (!options.all || !more) break;
  }

  if (options.json) {
    *inv.out << base::DumpJson(base::Json{{"jobs", jobs}}, 2) << "\n";
    return absl::OkStatus();
  }
  if (jobs.empty()) {
    *inv.err << (options.states.empty() ? "No jobs yet. Start one with 'kiln run -- CMD'.\n"
                                        : "No jobs in that state.\n");
    return absl::OkStatus();
  }
  *inv.out << RenderJobsTable(jobs, inv.clock->NowMicros());
  if (more) {
    *inv.err << "(newest " << jobs.size() << " shown; --all lists every job, --limit N more)\n";
  }
  return absl::OkStatus();
}

absl::Status ShowJob(int64_t id, bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(base::Json job, api->GetJson(JobIdArg(id)));
  if (json) {
    *inv.out << base::DumpJson(job, 2) << "\n";
  } else {
    *inv.out << RenderJobDetails(job, inv.clock->NowMicros());
  }
  return absl::OkStatus();
}

absl::Status ScaleJob(int64_t id, int64_t workers, bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(base::Json job, api->PostJson(absl::StrCat(JobIdArg(id), "/scale"),
                                                      base::Json{{"workers", workers}}));
  if (json) {
    *inv.out << base::DumpJson(job, 2) << "\n";
    return absl::OkStatus();
  }
  *inv.out << RenderScaleResult(id, workers, job) << "\n";
  *inv.err << "Kiln starts workers as slots free up and asks the newest to leave when "
              "shrinking; 'kiln job show "
           << id << "' shows them\n";
  return absl::OkStatus();
}

absl::Status KillJob(int64_t id, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(base::Json job,
                        api->PostJson(absl::StrCat(JobIdArg(id), "/kill"), base::Json::object()));
  std::string state = Text(job, "state");
  *inv.out << "job " << id << " " << state << "\n";
  if (!IsTerminalState(state)) {
    *inv.err << "stop requested: the job gets SIGTERM, then SIGKILL after the grace period; "
                "'kiln job show "
             << id << "' shows when it has stopped\n";
  }
  return absl::OkStatus();
}

absl::Status ShowMetrics(int64_t id, bool json, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  KILN_ASSIGN_OR_RETURN(base::Json metrics, api->GetJson(absl::StrCat(JobIdArg(id), "/metrics")));
  if (json) {
    *inv.out << base::DumpJson(metrics, 2) << "\n";
    return absl::OkStatus();
  }
  auto series = metrics.find("series");
  if (series == metrics.end() || !series->is_array() || series->empty()) {
    *inv.err << "job " << id << " has reported no metrics yet\n";
    return absl::OkStatus();
  }
  *inv.out << RenderMetricsTable(metrics);
  return absl::OkStatus();
}

void AddJobId(CLI::App& command, int64_t& id) {
  command.add_option("ID", id, "Job id (as printed by 'kiln run')")
      ->required()
      ->check(CLI::PositiveNumber);
}

}  // namespace

std::string RenderJobsTable(const base::Json& jobs, int64_t now_micros) {
  // The WORKERS column appears only when it says something, so a cluster that runs no
  // distributed jobs keeps its narrower table.
  const bool any_distributed =
      std::any_of(jobs.begin(), jobs.end(), [](const base::Json& j) { return WorkersOf(j); });
  std::vector<std::string> header = {"ID", "NAME", "USER", "STATE", "SLOTS", "GPUS"};
  if (any_distributed) header.push_back("WORKERS");
  header.insert(header.end(), {"AGE", "DURATION", "EXIT"});
  Table table(std::move(header));
  for (const base::Json& job : jobs) {
    std::optional<int64_t> created = TimestampField(job, "created_at");
    std::vector<std::string> row = {Text(job, "id"),        Text(job, "name"),
                                    Text(job, "user"),      Text(job, "state"),
                                    Resource(job, "slots"), Resource(job, "gpus")};
    if (any_distributed) {
      const base::Json* workers = WorkersOf(job);
      row.push_back(workers ? absl::StrCat(Text(*workers, "live"), "/", Text(*workers, "max"))
                            : "-");
    }
    row.insert(row.end(), {created ? FormatAge(now_micros - *created) : "-",
                           Duration(job, now_micros), Text(job, "exit_code")});
    table.AddRow(std::move(row));
  }
  return table.Render();
}

std::string RenderJobDetails(const base::Json& job, int64_t now_micros) {
  std::vector<std::pair<std::string, std::string>> rows = {
      {"id", Text(job, "id")},
      {"name", Text(job, "name")},
      {"user", Text(job, "user")},
      {"state", Text(job, "state")},
  };
  if (Text(job, "reason") != "-") rows.emplace_back("reason", Text(job, "reason"));
  rows.emplace_back("exit code", Text(job, "exit_code"));
  if (auto it = job.find("command"); it != job.end() && it->is_array()) {
    std::vector<std::string> words;
    for (const auto& w : *it)
      words.push_back(w.is_string() ? w.get<std::string>() : base::DumpJson(w));
    rows.emplace_back("command", FormatCommand(words));
  }
  const base::Json* workers = WorkersOf(job);
  if (workers) rows.emplace_back("workers", WorkersSummary(*workers));
  if (Text(job, "parent") != "-") {
    // A worker (task) of a distributed job: say whose, and where its logs are.
    rows.emplace_back("parent", absl::StrCat(Text(job, "parent"),
                                             " (this is one of its workers; "
                                             "'kiln logs ",
                                             Text(job, "parent"), "' has every worker's output)"));
  }
  rows.emplace_back("resources",
                    absl::StrCat(Resource(job, "slots"), " slots, ", Resource(job, "gpus"), " GPUs",
                                 workers ? " per worker" : ""));
  // A distributed job runs nowhere itself; its tasks table says where its workers run.
  if (!workers) rows.emplace_back("agent", Text(job, "agent"));
  if (auto it = job.find("package"); it != job.end() && it->is_object()) {
    rows.emplace_back("package", it->contains("id") ? Text(*it, "id") : Text(*it, "path"));
  }
  rows.emplace_back("created", TimeWithAge(job, "created_at", now_micros));
  rows.emplace_back("scheduled", TimeWithAge(job, "scheduled_at", now_micros));
  rows.emplace_back("started", TimeWithAge(job, "started_at", now_micros));
  rows.emplace_back("finished", TimeWithAge(job, "finished_at", now_micros));
  rows.emplace_back("duration", Duration(job, now_micros));
  if (auto it = job.find("env"); it != job.end() && it->is_object() && !it->empty()) {
    std::vector<std::string> pairs;
    for (const auto& [k, v] : it->items()) {
      pairs.push_back(
          absl::StrCat(k, "=", v.is_string() ? v.get<std::string>() : base::DumpJson(v)));
    }
    rows.emplace_back("env", absl::StrJoin(pairs, " "));
  }
  if (auto it = job.find("config"); it != job.end() && it->is_object() && !it->empty()) {
    rows.emplace_back("config", base::DumpJson(*it));
  }
  size_t width = 0;
  for (const auto& [key, value] : rows) width = std::max(width, key.size());
  std::string out;
  for (const auto& [key, value] : rows) {
    absl::StrAppend(&out, key, ":", std::string(width - key.size() + 2, ' '), value, "\n");
  }
  if (auto it = job.find("tasks"); it != job.end() && it->is_array() && !it->empty()) {
    absl::StrAppend(
        &out, Section("tasks", *it, kMaxTaskRows, Table({"ID", "STATE", "AGENT", "EXIT", "REASON"}),
                      [](const base::Json& task) -> std::vector<std::string> {
                        return {Text(task, "id"), Text(task, "state"), Text(task, "agent"),
                                Text(task, "exit_code"), Text(task, "reason")};
                      }));
  }
  if (auto it = job.find("generations"); it != job.end() && it->is_array() && !it->empty()) {
    absl::StrAppend(
        &out, Section("generations", *it, kMaxGenerationRows,
                      Table({"ID", "WORLD SIZE", "MEMBERS", "STARTED", "REASON"}),
                      [now_micros](const base::Json& generation) -> std::vector<std::string> {
                        std::optional<int64_t> started = TimestampField(generation, "started_at");
                        auto members = generation.find("members");
                        return {Text(generation, "id"), Text(generation, "world_size"),
                                members == generation.end() ? "-" : JoinList(*members),
                                started ? FormatAge(now_micros - *started) + " ago" : "-",
                                Text(generation, "reason")};
                      }));
  }
  return out;
}

std::string RenderScaleResult(int64_t id, int64_t requested, const base::Json& job) {
  const base::Json* workers = WorkersOf(job);
  if (!workers) return absl::StrCat("job ", id, ": target ", requested, " workers");
  std::string line =
      absl::StrCat("job ", id, ": target ", Text(*workers, "target"), " workers (min ",
                   Text(*workers, "min"), ", max ", Text(*workers, "max"));
  // The scale answer may leave out the live count (it is the job record without its
  // tasks); say nothing rather than "-".
  if (Text(*workers, "live") != "-")
    absl::StrAppend(&line, "; ", Text(*workers, "live"), " live now");
  return line + ")";
}

std::string RenderMetricsTable(const base::Json& metrics) {
  Table table({"NAME", "GROUP", "LAST", "STEP", "MIN", "MAX", "POINTS"});
  auto series = metrics.find("series");
  if (series == metrics.end() || !series->is_array()) return table.Render();
  for (const base::Json& s : *series) {
    auto points = s.find("points");
    size_t count = 0;
    double min = std::numeric_limits<double>::infinity();
    double max = -std::numeric_limits<double>::infinity();
    std::string last = "-";
    std::string last_step = "-";
    if (points != s.end() && points->is_array()) {
      for (const base::Json& p : *points) {
        auto value = p.find("value");
        if (value == p.end() || !value->is_number()) continue;
        double v = value->get<double>();
        ++count;
        min = std::min(min, v);
        max = std::max(max, v);
        last = FormatNumber(v);
        last_step = Text(p, "step");
      }
    }
    table.AddRow({Text(s, "name"), Text(s, "group"), last, last_step,
                  count ? FormatNumber(min) : "-", count ? FormatNumber(max) : "-",
                  absl::StrCat(count)});
  }
  return table.Render();
}

namespace internal {

void RegisterJobCommands(CLI::App& app, Invocation& inv) {
  auto list = std::make_shared<JobsOptions>();
  CLI::App* jobs = app.add_subcommand("jobs", "List jobs, newest first");
  jobs->add_option("--state", list->states,
                   "Only jobs in this state (QUEUED, SCHEDULED, RUNNING, FINISHED, FAILED, "
                   "KILLED); repeatable")
      ->type_name("STATE")
      ->allow_extra_args(false);
  jobs->add_option("--limit", list->limit, "How many jobs (default 20; page size with --all)")
      ->type_name("N");
  jobs->add_flag("--all", list->all, "List every job, page by page");
  jobs->add_flag("--json", list->json, "Print {\"jobs\": [records]} as JSON");
  AddUrlOption(*jobs, inv);
  jobs->callback([&inv, list] { inv.command = [&inv, list] { return ListJobs(*list, inv); }; });

  CLI::App* job = app.add_subcommand("job", "Inspect one job, or scale a distributed one");
  job->require_subcommand(1);
  auto show_id = std::make_shared<int64_t>(0);
  auto show_json = std::make_shared<bool>(false);
  CLI::App* show = job->add_subcommand("show", "Show a job's state, reason, command and times");
  AddJobId(*show, *show_id);
  show->add_flag("--json", *show_json, "Print the job record as JSON");
  AddUrlOption(*show, inv);
  show->callback([&inv, show_id, show_json] {
    inv.command = [&inv, show_id, show_json] { return ShowJob(*show_id, *show_json, inv); };
  });

  auto scale_id = std::make_shared<int64_t>(0);
  auto scale_workers = std::make_shared<int64_t>(0);
  auto scale_json = std::make_shared<bool>(false);
  CLI::App* scale = job->add_subcommand(
      "scale", "Set how many workers an elastic job should run (MIN <= N <= MAX)");
  AddJobId(*scale, *scale_id);
  scale->add_option("N", *scale_workers, "The new target number of workers")
      ->required()
      ->check(CLI::PositiveNumber);
  scale->add_flag("--json", *scale_json, "Print the job record as JSON");
  AddUrlOption(*scale, inv);
  scale->footer(
      "Kiln grows the job toward N as slots free up, and shrinks it by asking its newest\n"
      "workers to leave; the others keep training. Example: kiln job scale 7 3");
  scale->callback([&inv, scale_id, scale_workers, scale_json] {
    inv.command = [&inv, scale_id, scale_workers, scale_json] {
      return ScaleJob(*scale_id, *scale_workers, *scale_json, inv);
    };
  });

  auto kill_id = std::make_shared<int64_t>(0);
  CLI::App* kill = app.add_subcommand(
      "kill", "Stop a job (SIGTERM, then SIGKILL after the grace period) and print its state");
  AddJobId(*kill, *kill_id);
  AddUrlOption(*kill, inv);
  kill->callback(
      [&inv, kill_id] { inv.command = [&inv, kill_id] { return KillJob(*kill_id, inv); }; });

  auto metrics_id = std::make_shared<int64_t>(0);
  auto metrics_json = std::make_shared<bool>(false);
  CLI::App* metrics = app.add_subcommand(
      "metrics", "Show a job's metrics: last value and step, min, max, point count");
  AddJobId(*metrics, *metrics_id);
  metrics->add_flag("--json", *metrics_json, "Print the series with every point as JSON");
  AddUrlOption(*metrics, inv);
  metrics->callback([&inv, metrics_id, metrics_json] {
    inv.command = [&inv, metrics_id, metrics_json] {
      return ShowMetrics(*metrics_id, *metrics_json, inv);
    };
  });
}

}  // namespace internal
}  // namespace kiln::cli
