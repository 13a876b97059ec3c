#include "kiln/api/wmla_api.h"

#include <cstdlib>
#include <ctime>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kiln/api/handler_util.h"
#include "kiln/base/clock.h"
#include "kiln/base/status.h"
#include "kiln/hpo/algorithm.h"
#include "kiln/net/http_parsing.h"
#include "kiln/net/http_status.h"

namespace kiln::api {
namespace {

using base::Json;
using net::HttpRequest;
using net::Responder;

constexpr char kBase[] = "/platform/rest/deeplearning/v1";
// What an exec was submitted with, kept in its environment so GET /execs/{id} can echo it
// after a master restart (the script may read them too).
constexpr char kArgsEnv[] = "DLI_EXEC_ARGS";
constexpr char kFrameworkEnv[] = "DLI_FRAMEWORK";
// A log returned by GET /execs/{id}/log is cut here; the native API pages through more.
constexpr size_t kMaxLogBytes = 64 << 20;
constexpr int kLogPage = 5000;
constexpr int kMaxListedExecs = 1000;

const char kFormExample[] =
    "e.g. with Python requests: requests.post(url, files={'file': open('code.modelDir.tar', "
    "'rb')}, data={'data': json.dumps(hpo_input)})";

void NoContent(Responder& res) {
  net::HttpResponse r;
  r.status = 204;
  r.content_type = "text/plain";
  res.Send(std::move(r));
}

absl::Status Prefixed(const absl::Status& status, const std::string& prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, std::string(status.message())));
}

// A job or trial that no agent could ever run is a bad request in WMLA's terms.
absl::Status UnschedulableIsBadRequest(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kFailedPrecondition) {
    return net::WithHttpStatus(status, 400);
  }
  return status;
}

bool Unfinished(store::ExperimentState state) {
  return state == store::ExperimentState::kSubmitted || state == store::ExperimentState::kRunning;
}

// "2021-03-08T03:24:40Z", as WMLA 2.x prints an exec's createTime.
std::string IsoSeconds(int64_t micros) {
  std::time_t seconds = static_cast<std::time_t>(micros / 1'000'000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return absl::StrFormat("%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string Basename(const std::string& path) {
  size_t cut = path.find_last_of("/\\");
  return cut == std::string::npos ? path : path.substr(cut + 1);
}

// Words joined so that SplitArgs reads them back.
std::string JoinArgs(const std::vector<std::string>& words) {
  std::vector<std::string> quoted;
  for (const std::string& w : words) {
    bool plain = !w.empty() && w.find_first_of(" \t\n\r'\"\\$`") == std::string::npos;
    if (plain) {
      quoted.push_back(w);
      continue;
    }
    std::string q = "'";
    for (char c : w) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    quoted.push_back(q + "'");
  }
  return absl::StrJoin(quoted, " ");
}

Json AlgorithmJson(const hpo::AlgorithmInfo& info) {
  return {{"name", info.name},
          {"type", "BUILD_IN"},
          {"remoteExec", false},
          {"params", info.params},
          {"description", info.description}};
}

}  // namespace

WmlaApi::WmlaApi(store::Store& store, auth::Authenticator& auth, master::JobController& jobs,
                 master::ExperimentController& experiments, WmlaApiOptions options)
    : store_(store),
      auth_(auth),
      jobs_(jobs),
      experiments_(experiments),
      options_(std::move(options)) {
  // WMLA installs set DLI_DATA_FS for everything they start; kilnd inherits it the same way
  // (master.cc builds these options without it).
  if (options_.data_fs.empty()) {
    if (const char* fs = std::getenv("DLI_DATA_FS"); fs != nullptr) options_.data_fs = fs;
  }
}

WmlaApi::~WmlaApi() = default;

void WmlaApi::Register(net::Router& router) {
  auto bind = [this](void (WmlaApi::*fn)(HttpRequest&, Responder)) {
    return [this, fn](HttpRequest& req, Responder res) { (this->*fn)(req, std::move(res)); };
  };
  // The form carries the model (up to the package limit) plus the JSON `data`.
  net::RouteOptions upload{options_.max_package_bytes + kMaxJsonBody};
  const std::string b = kBase;
  router.Add("GET", "/auth/v1/logon", bind(&WmlaApi::Logon));
  router.Add("GET", "/platform/rest/conductor/v1/auth/logon", bind(&WmlaApi::Logon));

  router.Add("POST", b + "/hypersearch", bind(&WmlaApi::CreateTask), upload);
  router.Add("GET", b + "/hypersearch", bind(&WmlaApi::ListTasks));
  router.Add("DELETE", b + "/hypersearch", bind(&WmlaApi::DeleteFinishedTasks));
  router.Add("GET", b + "/hypersearch/algorithm", bind(&WmlaApi::ListAlgorithms));
  router.Add("POST", b + "/hypersearch/algorithm", bind(&WmlaApi::RefusePlugin), upload);
  router.Add("POST", b + "/hypersearch/algorithm/install", bind(&WmlaApi::RefusePlugin), upload);
  router.Add("GET", b + "/hypersearch/algorithm/{algoName}", bind(&WmlaApi::GetAlgorithm));
  router.Add("DELETE", b + "/hypersearch/algorithm/{algoName}", bind(&WmlaApi::RefusePlugin));
  router.Add("GET", b + "/hypersearch/{hpoName}", bind(&WmlaApi::GetTask));
  router.Add("PUT", b + "/hypersearch/{hpoName}",
             [this](HttpRequest& req, Responder res) { StopTask(req, std::move(res), false); });
  router.Add("PUT", b + "/hypersearch/{hpoName}/force",
             [this](HttpRequest& req, Responder res) { StopTask(req, std::move(res), true); });
  router.Add("PUT", b + "/hypersearch/{hpoName}/restart", bind(&WmlaApi::RestartTask));
  router.Add("DELETE", b + "/hypersearch/{hpoName}", bind(&WmlaApi::DeleteTask));

  router.Add("POST", b + "/execs", bind(&WmlaApi::SubmitExec), upload);
  router.Add("GET", b + "/execs", bind(&WmlaApi::ListExecs));
  router.Add("GET", b + "/execs/frameworks", bind(&WmlaApi::ListFrameworks));
  router.Add("GET", b + "/execs/{id}", bind(&WmlaApi::GetExec));
  router.Add("DELETE", b + "/execs/{id}", bind(&WmlaApi::DeleteExec));
  router.Add("POST", b + "/execs/{id}/stop", bind(&WmlaApi::StopExec));
  router.Add("GET", b + "/execs/{id}/log", bind(&WmlaApi::ExecLog));
}

// ---------------------------------------------------------------- logon

void WmlaApi::Logon(HttpRequest& req, Responder res) {
  auto creds = net::ParseBasicAuthorization(req.Header("authorization"));
  if (!creds) {
    return SendError(
        res, absl::UnauthenticatedError("logon needs HTTP Basic credentials: Authorization: Basic "
                                        "base64(user:password), e.g. requests.get(url, auth=(user, "
                                        "password))"));
  }
  KILN_API_ASSIGN(auth::IssuedToken token, auth_.Login(creds->first, creds->second));
  // WMLA 2.x clients send it back as X-Auth-Token; Kiln also takes it as a Bearer token.
  SendJson(res, 200, {{"accessToken", token.token}});
}

// ---------------------------------------------------------------- models

absl::StatusOr<WmlaApi::UploadedModel> WmlaApi::FindModel(
    const std::vector<net::MultipartPart>& parts) {
  const net::MultipartPart* model = net::FindPart(parts, "file");
  // CPD 3.5 notebooks name the part after the file: files={'train.py': f}.
  for (size_t i = 0; model == nullptr && i < parts.size(); ++i) {
    if (parts[i].name != "data" && parts[i].filename) model = &parts[i];
  }
  if (model == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("the form has no model file: send it as the field \"file\", a single .py or a "
                     "gzip tar of the code folder named *.modelDir.tar; ",
                     kFormExample));
  }
  UploadedModel out;
  out.name =
      Basename(model->filename && !model->filename->empty() ? *model->filename : model->name);
  out.bytes = model->body;
  if (out.bytes.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the uploaded model file \"", out.name, "\" is empty"));
  }
  return out;
}

absl::Status WmlaApi::AttachModel(const UploadedModel& model, master::JobSpec& spec) {
  bool gzip = model.bytes.size() >= 2 && static_cast<unsigned char>(model.bytes[0]) == 0x1f &&
              static_cast<unsigned char>(model.bytes[1]) == 0x8b;
  if (!gzip && absl::EndsWith(model.name, ".tar")) {
    return absl::InvalidArgumentError(
        absl::StrCat("the uploaded model \"", model.name,
                     "\" is not a gzip-compressed tar: WMLA's .modelDir.tar is one; create it with "
                     "tarfile.open(\"",
                     model.name, "\", \"w:gz\") and add the code folder with arcname=its name"));
  }
  KILN_ASSIGN_OR_RETURN(
      store::PackageRecord package,
      StorePackage(store_, options_.data_dir, model.name, std::string(model.bytes)));
  if (package.kind == "file") {
    // A single script is placed at the root of the job's folder: there is no model
    // folder (WMLA's single-file form sends no --model-dir), and it must be the script.
    spec.workdir.clear();
    if (spec.command.size() >= 2 && spec.command[1] != package.name) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--model-main \"", spec.command[1], "\" is not the uploaded file \"", package.name,
          "\": with a single-file model, --model-main names that file (or upload the code "
          "folder as a gzip tar named *.modelDir.tar)"));
    }
  }
  spec.package = master::PackageRef{package.id, ""};
  return absl::OkStatus();
}

// ---------------------------------------------------------------- hypersearch

absl::StatusOr<master::ExperimentView> WmlaApi::TaskOf(const auth::Principal& who,
                                                       const HttpRequest& req) {
  auto it = req.path_params.find("hpoName");
  return experiments_.GetByName(who, it == req.path_params.end() ? "" : it->second);
}

Json WmlaApi::TaskJson(const auth::Principal& who, const master::ExperimentView& view) {
  std::map<int64_t, TrialJob> jobs;
  for (const store::TrialRow& trial : view.trials) {
    if (!trial.job_id) continue;
    TrialJob& info = jobs[trial.number];
    if (auto job = jobs_.GetJob(who, *trial.job_id); job.ok()) info.job = *std::move(job);
    for (const auto& [name, strategy] : view.spec.additional_metrics) {
      if (auto points = store_.GetMetrics(*trial.job_id, name); points.ok()) {
        info.metrics[name] = *std::move(points);
      }
    }
  }
  return HpoTaskStateToJson(view, jobs, base::SystemClock::Get().NowMicros());
}

void WmlaApi::CreateTask(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(auto parts, net::ParseMultipartRequest(req));
  const net::MultipartPart* data = net::FindPart(parts, "data");
  if (data == nullptr) {
    return SendError(
        res, absl::InvalidArgumentError(absl::StrCat(
                 "the form has no field \"data\": send the hpo_input as JSON, ", kFormExample)));
  }
  KILN_API_ASSIGN(UploadedModel model, FindModel(parts));
  KILN_API_ASSIGN(master::ExperimentSpec spec,
                  ParseHpoData(data->body, WmlaJobOptions{options_.data_fs}));
  if (absl::Status s = AttachModel(model, spec.trial); !s.ok()) return SendError(res, s);
  auto view = experiments_.Create(who, std::move(spec));
  if (!view.ok()) return SendError(res, UnschedulableIsBadRequest(view.status()));
  const std::string& name = view->record.name;
  SendJson(
      res, 200,
      {{"uid", name}, {"href", absl::StrCat(kBase, "/hypersearch/", net::PercentEncode(name))}});
}

void WmlaApi::ListTasks(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(auto views, experiments_.List(who));
  Json out = Json::array();
  for (const master::ExperimentView& view : views) out.push_back(TaskJson(who, view));
  SendJson(res, 200, out);
}

void WmlaApi::DeleteFinishedTasks(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(auto views, experiments_.List(who));
  // The caller's own tasks that have ended; running ones stay (stop them first), and the
  // trials' jobs stay too, as in WMLA.
  for (const master::ExperimentView& view : views) {
    if (view.record.user_id != who.user_id || Unfinished(view.record.state)) continue;
    if (absl::Status s = experiments_.Delete(who, view.record.id); !s.ok()) {
      return SendError(res, s);
    }
  }
  NoContent(res);
}

void WmlaApi::GetTask(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(master::ExperimentView view, TaskOf(who, req));
  SendJson(res, 200, TaskJson(who, view));
}

void WmlaApi::StopTask(HttpRequest& req, Responder res, bool force) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(master::ExperimentView view, TaskOf(who, req));
  if (!Unfinished(view.record.state)) {
    // WMLA's words, which notebooks match.
    return SendError(
        res, absl::InvalidArgumentError(absl::StrCat("Error 400: Model tuning ", view.record.name,
                                                     " is already stopped.")));
  }
  KILN_API_ASSIGN(master::ExperimentView stopped, experiments_.Stop(who, view.record.id, force));
  (void)stopped;
  NoContent(res);
}

void WmlaApi::RestartTask(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(master::ExperimentView view, TaskOf(who, req));
  auto restarted = experiments_.Restart(who, view.record.id);
  if (!restarted.ok()) return SendError(res, restarted.status());
  SendJson(res, 200, TaskJson(who, *restarted));
}

void WmlaApi::DeleteTask(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(master::ExperimentView view, TaskOf(who, req));
  if (absl::Status s = experiments_.Delete(who, view.record.id); !s.ok()) {
    return SendError(res, s);
  }
  NoContent(res);
}

void WmlaApi::ListAlgorithms(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  (void)who;
  std::string type = absl::AsciiStrToUpper(req.Query("type").value_or(""));
  if (!type.empty() && type != "BUILD_IN" && type != "USER_PLUGIN") {
    return SendError(res, absl::InvalidArgumentError(absl::StrCat(
                              "query parameter type=", req.Query("type").value_or(""),
                              " is not an algorithm type; use BUILD_IN or USER_PLUGIN")));
  }
  Json out = Json::array();
  if (type != "USER_PLUGIN") {  // Kiln has no plugins: USER_PLUGIN is always empty
    for (const hpo::AlgorithmInfo& info : hpo::BuiltInAlgorithms()) {
      if (!info.native_only) out.push_back(AlgorithmJson(info));
    }
  }
  SendJson(res, 200, out);
}

void WmlaApi::GetAlgorithm(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  (void)who;
  std::string name = absl::AsciiStrToLower(req.path_params["algoName"]);
  std::vector<std::string> names;
  for (const hpo::AlgorithmInfo& info : hpo::BuiltInAlgorithms()) {
    if (info.native_only) continue;
    if (absl::AsciiStrToLower(info.name) == name) return SendJson(res, 200, AlgorithmJson(info));
    names.push_back(info.name);
  }
  SendError(res,
            absl::NotFoundError(absl::StrCat("no search algorithm \"", req.path_params["algoName"],
                                             "\"; Kiln's are: ", absl::StrJoin(names, ", "))));
}

void WmlaApi::RefusePlugin(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  (void)who;
  SendError(res, absl::UnimplementedError(absl::StrCat(
                     "Kiln runs its built-in search algorithms only (GET ", kBase,
                     "/hypersearch/algorithm lists them); installing or deleting plugin "
                     "algorithms is not supported")));
}

// ---------------------------------------------------------------- execs

Json WmlaApi::ExecJson(const store::JobRecord& job) {
  Json spec = Json::object();
  if (auto parsed = base::ParseJson(job.spec_json); parsed.ok() && parsed->is_object()) {
    spec = *std::move(parsed);
  }
  Json env = spec.value("env", Json::object());
  std::string args;
  if (env.contains(kArgsEnv) && env[kArgsEnv].is_string()) {
    args = env[kArgsEnv].get<std::string>();
  } else if (spec.contains("command") && spec["command"].is_array()) {
    // A job not submitted through /execs: its command, as words.
    std::vector<std::string> words;
    for (const Json& w : spec["command"]) {
      if (w.is_string()) words.push_back(w.get<std::string>());
    }
    args = JoinArgs(words);
  }
  std::string framework = env.value(kFrameworkEnv, Json("")).is_string()
                              ? env.value(kFrameworkEnv, Json("")).get<std::string>()
                              : "";
  std::string app_name = job.name;
  for (const WmlaFramework& f : WmlaFrameworks()) {
    if (f.name == framework) app_name = f.app_name;
  }
  // WMLA 2.x's worker fields, from the job's distributed-job fields (ARCHITECTURE.md §5.1):
  // an elastic job's numWorker is its most workers, as `--numWorker` asked.
  bool elastic = false;
  int64_t num_worker = 1;
  if (spec.contains("max_workers") && spec["max_workers"].is_number_integer()) {
    elastic = true;
    num_worker = spec["max_workers"].get<int64_t>();
  } else if (spec.contains("workers") && spec["workers"].is_number_integer()) {
    num_worker = spec["workers"].get<int64_t>();
  }
  std::string id = std::to_string(job.id);
  Json out = {{"id", id},
              {"appId", id},
              {"submissionId", id},
              {"name", job.name},
              {"state", WmlaJobState(job.state)},
              {"creator", job.username},
              {"userName", job.username},
              {"executionUserName", job.username},
              {"modelFileOwnerName", job.username},
              {"appName", app_name},
              {"framework", framework},
              {"elastic", elastic},
              {"numWorker", num_worker},
              {"args", args},
              {"workDir", spec.value("workdir", Json(""))},
              {"sigName", ""},
              {"nameSpace", ""},
              {"schedulerUrl", ""},
              {"createTime", IsoSeconds(job.created_at)},
              {"startTime", job.started_at ? IsoSeconds(*job.started_at) : std::string()},
              {"endTime", job.finished_at ? IsoSeconds(*job.finished_at) : std::string()},
              {"exitCode", job.exit_code ? Json(*job.exit_code) : Json(nullptr)}};
  if (!job.reason.empty()) out["reason"] = job.reason;
  return out;
}

void WmlaApi::SubmitExec(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  std::optional<std::string> args_text = req.Query("args");
  if (!args_text || args_text->empty()) {
    return SendError(res, absl::InvalidArgumentError(
                              "query parameter \"args\" is required, e.g. ?args=--exec-start "
                              "PyTorch --model-main train.py --epochs 3 (URL-encoded)"));
  }
  KILN_API_ASSIGN(auto parts, net::ParseMultipartRequest(req));
  KILN_API_ASSIGN(UploadedModel model, FindModel(parts));
  auto args = ParseWmlaArgs(*args_text);
  if (!args.ok()) return SendError(res, Prefixed(args.status(), "query parameter args: "));
  master::JobSpec spec = WmlaArgsToJobSpec(*args, WmlaJobOptions{options_.data_fs});
  spec.env[kArgsEnv] = *args_text;
  spec.env[kFrameworkEnv] = args->framework;
  if (absl::Status s = AttachModel(model, spec); !s.ok()) return SendError(res, s);
  auto job = jobs_.Submit(who, std::move(spec));
  if (!job.ok()) return SendError(res, UnschedulableIsBadRequest(job.status()));
  Json out = ExecJson(*job);
  if (!args->notes.empty()) out["warnings"] = args->notes;
  SendJson(res, 200, out);
}

void WmlaApi::ListExecs(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  store::JobFilter filter;
  filter.user_id = who.user_id;  // WMLA lists the caller's own, admins included
  filter.limit = kMaxListedExecs;
  KILN_API_ASSIGN(auto jobs, jobs_.ListJobs(who, filter));
  Json out = Json::array();
  for (const store::JobRecord& job : jobs) out.push_back(ExecJson(job));
  SendJson(res, 200, out);
}

void WmlaApi::GetExec(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(int64_t id, PathId(req, "id", "exec id"));
  KILN_API_ASSIGN(store::JobRecord job, jobs_.GetJob(who, id));
  SendJson(res, 200, ExecJson(job));
}

void WmlaApi::StopExec(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(int64_t id, PathId(req, "id", "exec id"));
  KILN_API_ASSIGN(store::JobRecord job, jobs_.Kill(who, id));
  (void)job;
  NoContent(res);
}

void WmlaApi::DeleteExec(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(int64_t id, PathId(req, "id", "exec id"));
  KILN_API_ASSIGN(store::JobRecord job, jobs_.GetJob(who, id));
  // Kiln keeps every job's record, logs and metrics: deleting stops a job that runs.
  if (!store::IsTerminal(job.state)) {
    KILN_API_ASSIGN(store::JobRecord killed, jobs_.Kill(who, id));
    (void)killed;
  }
  NoContent(res);
}

void WmlaApi::ExecLog(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(int64_t id, PathId(req, "id", "exec id"));
  std::string text;
  int64_t after = 0;
  while (text.size() < kMaxLogBytes) {
    KILN_API_ASSIGN(master::LogPage page, jobs_.GetLogs(who, id, after, kLogPage));
    for (const store::LogLine& line : page.lines) absl::StrAppend(&text, line.text, "\n");
    if (page.lines.empty() || page.done || page.next <= after) break;
    after = page.next;
  }
  // WMLA answers a JSON string; a client that asks for text gets the text itself.
  std::string accept = absl::AsciiStrToLower(req.Header("accept"));
  if (absl::StrContains(accept, "text/plain") && !absl::StrContains(accept, "json")) {
    net::HttpResponse r;
    r.content_type = "text/plain; charset=utf-8";
    r.body = std::move(text);
    return res.Send(std::move(r));
  }
  SendJson(res, 200, Json(std::move(text)));
}

void WmlaApi::ListFrameworks(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  (void)who;
  Json out = Json::array();
  for (const WmlaFramework& f : WmlaFrameworks()) {
    out.push_back({{"name", f.name},
                   {"desc", Json::array({f.supported ? f.desc
                                                     : absl::StrCat(f.desc,
                                                                    " (not supported by Kiln "
                                                                    "yet)")})},
                   {"execMode", f.exec_mode},
                   {"appName", f.app_name},
                   {"numWorkers", 1},
                   {"maxWorkers", f.max_workers},
                   {"supported", f.supported}});
  }
  SendJson(res, 200, out);
}

}  // namespace kiln::api
