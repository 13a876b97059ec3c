#include "kiln/cli/jobs_command.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
  Table table({"ID", "NAME", "USER", "STATE", "SLOTS", "GPUS", "AGE", "DURATION", "EXIT"});
  for (const base::Json& job : jobs) {
    std::optional<int64_t> created = TimestampField(job, "created_at");
    table.AddRow({Text(job, "id"), Text(job, "name"), Text(job, "user"), Text(job, "state"),
                  Resource(job, "slots"), Resource(job, "gpus"),
                  created ? FormatAge(now_micros - *created) : "-", Duration(job, now_micros),
                  Text(job, "exit_code")});
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
  rows.emplace_back("resources", absl::StrCat(Resource(job, "slots"), " slots, ",
                                              Resource(job, "gpus"), " GPUs"));
  rows.emplace_back("agent", Text(job, "agent"));
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
  return out;
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

  CLI::App* job = app.add_subcommand("job", "Inspect one job");
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
