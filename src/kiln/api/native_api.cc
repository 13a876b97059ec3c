#include "kiln/api/native_api.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "fmt/format.h"
#include "kiln/api/agent_protocol.h"
#include "kiln/api/handler_util.h"
#include "kiln/auth/password.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"
#include "kiln/net/http_parsing.h"
#include "kiln/net/http_status.h"
#include "spdlog/spdlog.h"

namespace kiln::api {
namespace {

using base::Json;
using net::HttpRequest;
using net::Responder;

constexpr int kMaxLogPage = 5000;

}  // namespace

base::Json JobToJson(const store::JobRecord& job) {
  Json spec = Json::object();
  if (auto parsed = base::ParseJson(job.spec_json); parsed.ok()) spec = *parsed;
  Json j = {{"id", job.id},
            {"name", job.name},
            {"user", job.username},
            {"state", std::string(store::JobStateName(job.state))},
            {"command", spec.value("command", Json::array())},
            {"resources", spec.value("resources", Json::object())},
            {"env", spec.value("env", Json::object())},
            {"config", spec.value("config", Json::object())},
            {"package", spec.value("package", Json(nullptr))},
            {"agent", job.agent_id.empty() ? Json(nullptr) : Json(job.agent_id)},
            {"exit_code", job.exit_code ? Json(*job.exit_code) : Json(nullptr)},
            {"signal", job.signal ? Json(*job.signal) : Json(nullptr)},
            {"reason", job.reason},
            {"kill_requested", job.kill_requested},
            {"created_at", base::FormatIso8601(job.created_at)},
            {"scheduled_at", TimeOrNull(job.scheduled_at)},
            {"started_at", TimeOrNull(job.started_at)},
            {"finished_at", TimeOrNull(job.finished_at)}};
  if (!spec.value("workdir", "").empty()) j["workdir"] = spec["workdir"];
  if (spec.contains("workers")) {
    int n = spec["workers"].get<int>();
    j["workers"] = {{"elastic", false}, {"min", n}, {"max", n}, {"target", n}};
  } else if (spec.contains("min_workers")) {
    j["workers"] = {
        {"elastic", true},
        {"min", spec["min_workers"]},
        {"max", spec["max_workers"]},
        {"target", job.target_workers ? Json(*job.target_workers) : spec["max_workers"]},
        {"min_workers_timeout_s", spec.value("min_workers_timeout_s", 600)},
        {"max_worker_failures", spec.value("max_worker_failures", 0)}};
  }
  if (job.parent_id) {
    j["parent"] = *job.parent_id;
    j["worker_index"] = job.worker_index;
  }
  return j;
}

absl::Status AddDistributedDetails(store::Store& store, Json& job) {
  if (!job.contains("workers")) return absl::OkStatus();
  const int64_t id = job["id"].get<int64_t>();
  store::JobFilter filter;
  filter.parent_id = id;
  filter.limit = 100'000;
  KILN_ASSIGN_OR_RETURN(auto workers, store.ListJobs(filter));
  Json tasks = Json::array();
  int live = 0;
  for (auto it = workers.rbegin(); it != workers.rend(); ++it) {  // oldest first
    const store::JobRecord& w = *it;
    live += !store::IsTerminal(w.state);
    tasks.push_back({{"id", w.id},
                     {"worker_index", w.worker_index},
                     {"state", std::string(store::JobStateName(w.state))},
                     {"agent", w.agent_id.empty() ? Json(nullptr) : Json(w.agent_id)},
                     {"exit_code", w.exit_code ? Json(*w.exit_code) : Json(nullptr)},
                     {"signal", w.signal ? Json(*w.signal) : Json(nullptr)},
                     {"reason", w.reason},
                     {"started_at", TimeOrNull(w.started_at)},
                     {"finished_at", TimeOrNull(w.finished_at)}});
  }
  job["workers"]["live"] = live;
  job["tasks"] = std::move(tasks);
  KILN_ASSIGN_OR_RETURN(auto generations, store.ListGenerations(id));
  Json gens = Json::array();
  for (const store::GenerationRecord& g : generations) {
    gens.push_back({{"id", g.id},
                    {"world_size", g.members.size()},
                    {"members", g.members},
                    {"store", g.store_address},
                    {"started_at", base::FormatIso8601(g.started_at)},
                    {"reason", g.reason}});
  }
  job["generations"] = std::move(gens);
  return absl::OkStatus();
}

base::Json LogLineToJson(const store::LogLine& line) {
  return {{"seq", line.seq},
          {"time", base::FormatIso8601(line.time)},
          {"stream", line.stream == 'e' ? "stderr" : "stdout"},
          {"text", line.text}};
}

struct NativeApi::ParkedSync {
  Responder responder;
  api::SyncRequest request;
  std::string agent_id;
  boost::asio::steady_timer timer;
  bool answered = false;
  ParkedSync(boost::asio::io_context& io, Responder r) : responder(std::move(r)), timer(io) {}
};

struct NativeApi::LogFollower {
  auth::Principal who;
  int64_t job_id = 0;
  int64_t after = 0;
  bool text = false;
  std::shared_ptr<net::ResponseStream> stream;
};

NativeApi::NativeApi(boost::asio::io_context& io, store::Store& store, auth::Authenticator& auth,
                     master::JobController& jobs, NativeApiOptions options)
    : io_(io), store_(store), auth_(auth), jobs_(jobs), options_(std::move(options)) {}

NativeApi::~NativeApi() {
  for (auto& [id, p] : parked_) p->timer.cancel();
  if (follower_sweep_) follower_sweep_->cancel();
}

void NativeApi::Register(net::Router& router) {
  jobs_.SetObservers([this](const std::string& agent) { WakeAgent(agent); },
                     [this](int64_t job) { PumpFollowers(job); });
  auto bind = [this](void (NativeApi::*fn)(HttpRequest&, Responder)) {
    return [this, fn](HttpRequest& req, Responder res) { (this->*fn)(req, std::move(res)); };
  };
  net::RouteOptions json_body{kMaxJsonBody};
  router.Add("GET", "/api/v1/health", [](HttpRequest&, Responder res) {
    res.Send(net::JsonResponse(200, {{"status", "ok"}, {"version", "0.1.0"}}));
  });
  router.Add("POST", "/api/v1/auth/login", bind(&NativeApi::Login));
  router.Add("POST", "/api/v1/auth/logout", bind(&NativeApi::Logout));
  router.Add("GET", "/api/v1/me", bind(&NativeApi::Me));
  router.Add("POST", "/api/v1/users", bind(&NativeApi::CreateUser));
  router.Add("GET", "/api/v1/users", bind(&NativeApi::ListUsers));
  router.Add("POST", "/api/v1/packages", bind(&NativeApi::UploadPackage),
             net::RouteOptions{options_.max_package_bytes});
  router.Add("GET", "/api/v1/packages/{id}/content", bind(&NativeApi::DownloadPackage));
  router.Add("POST", "/api/v1/jobs", bind(&NativeApi::SubmitJob), json_body);
  router.Add("GET", "/api/v1/jobs", bind(&NativeApi::ListJobs));
  router.Add("GET", "/api/v1/jobs/{id}", bind(&NativeApi::GetJob));
  router.Add("POST", "/api/v1/jobs/{id}/kill", bind(&NativeApi::KillJob));
  router.Add("GET", "/api/v1/jobs/{id}/events", bind(&NativeApi::JobEvents));
  router.Add("GET", "/api/v1/jobs/{id}/logs", bind(&NativeApi::JobLogs));
  router.Add("GET", "/api/v1/jobs/{id}/metrics", bind(&NativeApi::GetMetrics));
  router.Add("GET", "/api/v1/jobs/{id}/artifacts", [this](HttpRequest& req, Responder res) {
    KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
    KILN_API_ASSIGN(int64_t id, PathId(req));
    KILN_API_ASSIGN(auto artifacts, jobs_.ListArtifacts(who, id));
    Json out = Json::array();
    for (const store::ArtifactRecord& a : artifacts) {
      out.push_back({{"path", a.path},
                     {"package_id", a.package_id},
                     {"size", a.size},
                     {"created_at", base::FormatIso8601(a.created_at)}});
    }
    SendJson(res, 200, {{"job_id", id}, {"artifacts", out}});
  });
  router.Add("POST", "/api/v1/jobs/{id}/metrics", bind(&NativeApi::PostMetrics), json_body);
  router.Add("GET", "/api/v1/agents", bind(&NativeApi::ListAgents));
  router.Add("POST", "/api/v1/agents/register", bind(&NativeApi::AgentRegister), json_body);
  router.Add("POST", "/api/v1/agents/{agent}/sync", bind(&NativeApi::AgentSync), json_body);
  router.Add("POST", "/api/v1/agents/{agent}/report", bind(&NativeApi::AgentReportHandler),
             net::RouteOptions{64 << 20});

  // Followers whose clients went away are noticed only when written to; a periodic
  // sweep also ends the streams of quiet jobs whose clients left.
  follower_sweep_ = std::make_shared<boost::asio::steady_timer>(io_);
  auto sweep = std::make_shared<std::function<void()>>();
  *sweep = [this, sweep, timer = std::weak_ptr<boost::asio::steady_timer>(follower_sweep_)]() {
    auto t = timer.lock();
    if (!t) return;
    for (auto it = followers_.begin(); it != followers_.end();) {
      if (it->second->stream->closed()) {
        it = followers_.erase(it);
      } else {
        ++it;
      }
    }
    t->expires_after(std::chrono::seconds(5));
    t->async_wait([sweep](const boost::system::error_code& ec) {
      if (!ec) (*sweep)();
    });
  };
  (*sweep)();
}

// ---------------------------------------------------------------- auth

absl::StatusOr<auth::Principal> NativeApi::Authenticate(const HttpRequest& req) {
  return AuthenticateRequest(auth_, req);
}

absl::StatusOr<auth::Principal> NativeApi::AuthenticateAgent(const HttpRequest& req) {
  KILN_ASSIGN_OR_RETURN(auth::Principal p, Authenticate(req));
  if (p.kind != auth::Principal::Kind::kAgent && !(p.is_user() && p.admin)) {
    return absl::PermissionDeniedError("only agents (or admins) may use the agent protocol");
  }
  return p;
}

void NativeApi::Login(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(Json body, ParseBody(req));
  KILN_API_ASSIGN(std::string user, base::GetString(body, "username"));
  KILN_API_ASSIGN(std::string password, base::GetString(body, "password"));
  KILN_API_ASSIGN(auth::IssuedToken token, auth_.Login(user, password));
  SendJson(res, 200,
           {{"token", token.token},
            {"user", user},
            {"expires_at", base::FormatIso8601(token.expires_at)}});
}

void NativeApi::Logout(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  absl::Status s = auth_.Logout(who);
  if (!s.ok()) return SendError(res, s);
  SendJson(res, 200, {{"logged_out", true}});
}

void NativeApi::Me(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  SendJson(res, 200, {{"user", who.username}, {"admin", who.admin}});
}

void NativeApi::CreateUser(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  if (!who.admin)
    return SendError(res, absl::PermissionDeniedError("only admins can create users"));
  KILN_API_ASSIGN(Json body, ParseBody(req));
  KILN_API_ASSIGN(std::string user, base::GetString(body, "username"));
  KILN_API_ASSIGN(std::string password, base::GetString(body, "password"));
  KILN_API_ASSIGN(bool admin, base::GetBoolOr(body, "admin", false));
  KILN_API_ASSIGN(store::UserRecord created, auth_.CreateUser(user, password, admin));
  SendJson(res, 201,
           {{"username", created.username},
            {"admin", created.admin},
            {"created_at", base::FormatIso8601(created.created_at)}});
}

void NativeApi::ListUsers(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  if (!who.admin) return SendError(res, absl::PermissionDeniedError("only admins can list users"));
  KILN_API_ASSIGN(auto users, store_.ListUsers());
  Json out = Json::array();
  for (const auto& u : users) {
    out.push_back({{"username", u.username},
                   {"admin", u.admin},
                   {"created_at", base::FormatIso8601(u.created_at)}});
  }
  SendJson(res, 200, {{"users", out}});
}

// ---------------------------------------------------------------- packages

void NativeApi::UploadPackage(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  // Agents upload the artifacts their tasks leave (agent/artifacts.h).
  if (!who.is_user() && who.kind != auth::Principal::Kind::kAgent)
    return SendError(res, absl::PermissionDeniedError("tasks cannot upload packages"));
  KILN_API_ASSIGN(store::PackageRecord p, StorePackage(store_, options_.data_dir,
                                                       req.Query("name").value_or(""), req.body));
  SendJson(res, 201, {{"id", p.id}, {"name", p.name}, {"kind", p.kind}, {"size", p.size}});
}

void NativeApi::DownloadPackage(HttpRequest& req, Responder res) {
  // Packages are fetched by agents to start tasks; they are not per-user objects.
  KILN_API_ASSIGN(auth::Principal who, AuthenticateAgent(req));
  (void)who;
  std::string id = req.path_params["id"];
  KILN_API_ASSIGN(store::PackageRecord p, store_.GetPackage(id));
  KILN_API_ASSIGN(std::string bytes,
                  base::ReadFile(absl::StrCat(options_.data_dir, "/packages/", p.id)));
  net::HttpResponse r;
  r.status = 200;
  r.content_type = p.kind == "tar.gz" ? "application/gzip" : "application/octet-stream";
  r.body = std::move(bytes);
  res.Send(std::move(r));
}

// ---------------------------------------------------------------- jobs

void NativeApi::SubmitJob(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(Json body, ParseBody(req));
  KILN_API_ASSIGN(master::JobSpec spec, master::ParseJobSpec(body));
  KILN_API_ASSIGN(store::JobRecord job, jobs_.Submit(who, std::move(spec)));
  SendJson(res, 201, JobToJson(job));
}

void NativeApi::ListJobs(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  store::JobFilter filter;
  KILN_API_ASSIGN(int64_t limit, QueryInt(req, "limit", 50, 1, 1000));
  filter.limit = static_cast<int>(limit);
  if (auto token = req.Query("page_token")) {
    int64_t before = 0;
    if (!absl::SimpleAtoi(*token, &before)) {
      return SendError(res, absl::InvalidArgumentError(
                                "page_token is malformed; pass back next_page_token as is"));
    }
    filter.before_id = before;
  }
  for (const std::string& s : req.QueryValues("state")) {
    KILN_API_ASSIGN(store::JobState state, store::ParseJobState(s));
    filter.states.push_back(state);
  }
  KILN_API_ASSIGN(auto jobs, jobs_.ListJobs(who, filter));
  Json out = Json::array();
  for (const auto& record : jobs) {
    Json j = JobToJson(record);
    if (absl::Status s = AddDistributedDetails(store_, j); !s.ok()) return SendError(res, s);
    out.push_back(std::move(j));
  }
  Json body = {{"jobs", out}};
  if (static_cast<int64_t>(jobs.size()) == limit) {
    body["next_page_token"] = std::to_string(jobs.back().id);
  }
  SendJson(res, 200, body);
}

void NativeApi::GetJob(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(int64_t id, PathId(req));
  KILN_API_ASSIGN(store::JobRecord job, jobs_.GetJob(who, id));
  Json j = JobToJson(job);
  if (absl::Status s = AddDistributedDetails(store_, j); !s.ok()) return SendError(res, s);
  SendJson(res, 200, j);
}

void NativeApi::KillJob(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(int64_t id, PathId(req));
  KILN_API_ASSIGN(store::JobRecord job, jobs_.Kill(who, id));
  SendJson(res, 200, JobToJson(job));
}

void NativeApi::JobEvents(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(int64_t id, PathId(req));
  KILN_API_ASSIGN(store::JobRecord job, jobs_.GetJob(who, id));
  KILN_API_ASSIGN(auto events, store_.ListEvents(job.id));
  Json out = Json::array();
  for (const auto& e : events) {
    out.push_back(
        {{"time", base::FormatIso8601(e.time)}, {"type", e.type}, {"message", e.message}});
  }
  SendJson(res, 200, {{"events", out}});
}

void NativeApi::JobLogs(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(int64_t id, PathId(req));
  KILN_API_ASSIGN(int64_t after, QueryInt(req, "after", 0, 0, INT64_MAX));
  bool text = req.Query("format").value_or("json") == "text";
  if (!QueryFlag(req, "follow")) {
    KILN_API_ASSIGN(int64_t limit, QueryInt(req, "limit", 1000, 1, kMaxLogPage));
    KILN_API_ASSIGN(master::LogPage page, jobs_.GetLogs(who, id, after, static_cast<int>(limit)));
    if (text) {
      net::HttpResponse r;
      r.content_type = "text/plain; charset=utf-8";
      for (const auto& l : page.lines) absl::StrAppend(&r.body, l.text, "\n");
      return res.Send(std::move(r));
    }
    Json lines = Json::array();
    for (const auto& l : page.lines) lines.push_back(LogLineToJson(l));
    return SendJson(res, 200, {{"lines", lines}, {"next", page.next}, {"done", page.done}});
  }
  // Check access before committing to a 200 stream.
  KILN_API_ASSIGN(store::JobRecord job, jobs_.GetJob(who, id));
  (void)job;
  auto follower = std::make_shared<LogFollower>();
  follower->who = who;
  follower->job_id = id;
  follower->after = after;
  follower->text = text;
  follower->stream =
      res.StartStream(200, text ? "text/plain; charset=utf-8" : "application/x-ndjson");
  if (Pump(*follower)) followers_.emplace(id, follower);
}

bool NativeApi::Pump(LogFollower& f) {
  while (!f.stream->closed()) {
    auto page = jobs_.GetLogs(f.who, f.job_id, f.after, kMaxLogPage);
    if (!page.ok()) {
      f.stream->Finish();
      return false;
    }
    std::string chunk;
    for (const auto& l : page->lines) {
      if (f.text) {
        absl::StrAppend(&chunk, l.text, "\n");
      } else {
        absl::StrAppend(&chunk, base::DumpJson(LogLineToJson(l)), "\n");
      }
    }
    f.after = page->next;
    if (!chunk.empty() && !f.stream->Write(std::move(chunk))) return false;
    if (page->done) {
      f.stream->Finish();
      return false;
    }
    if (static_cast<int>(page->lines.size()) < kMaxLogPage) return true;
  }
  return false;
}

void NativeApi::PumpFollowers(int64_t job_id) {
  auto range = followers_.equal_range(job_id);
  for (auto it = range.first; it != range.second;) {
    if (!Pump(*it->second)) {
      it = followers_.erase(it);
    } else {
      ++it;
    }
  }
}

void NativeApi::GetMetrics(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(int64_t id, PathId(req));
  KILN_API_ASSIGN(store::JobRecord job, jobs_.GetJob(who, id));
  KILN_API_ASSIGN(auto points, store_.GetMetrics(job.id, req.Query("name")));
  // Series can hold millions of points: write the JSON directly instead of building a
  // document tree (10x less time and memory than nlohmann::json for this shape).
  std::string body = "{\"series\":[";
  body.reserve(points.size() * 72 + 64);
  bool first_series = true;
  bool first_point = true;
  const store::MetricPoint* prev = nullptr;
  // A workload may report the same point by several paths (say the emetrics file and the
  // native API): points are ordered by (name, group, step, arrival), and the last
  // report of a step wins.
  for (size_t i = 0; i < points.size(); ++i) {
    const store::MetricPoint& p = points[i];
    if (i + 1 < points.size() && points[i + 1].name == p.name && points[i + 1].group == p.group &&
        points[i + 1].step == p.step) {
      continue;
    }
    if (prev == nullptr || p.name != prev->name || p.group != prev->group) {
      if (!first_series) body += "]},";
      first_series = false;
      first_point = true;
      absl::StrAppend(&body, "{\"name\":", base::DumpJson(Json(p.name)),
                      ",\"group\":", base::DumpJson(Json(p.group)), ",\"points\":[");
    }
    if (!first_point) body += ",";
    first_point = false;
    absl::StrAppend(&body, "{\"step\":", p.step, ",\"value\":", fmt::format("{}", p.value),
                    ",\"time\":\"", base::FormatIso8601(p.time), "\"}");
    prev = &p;
  }
  if (!first_series) body += "]}";
  body += "]}";
  net::HttpResponse r;
  r.body = std::move(body);
  res.Send(std::move(r));
}

void NativeApi::PostMetrics(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(int64_t id, PathId(req));
  KILN_API_ASSIGN(Json body, ParseBody(req));
  KILN_API_ASSIGN(int accepted, jobs_.IngestMetrics(who, id, body));
  SendJson(res, 200, {{"accepted", accepted}});
}

// ---------------------------------------------------------------- agents

void NativeApi::ListAgents(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  if (who.kind == auth::Principal::Kind::kTask) {
    return SendError(res, absl::PermissionDeniedError("task tokens cannot list agents"));
  }
  SendJson(res, 200, {{"agents", jobs_.DescribeAgents()}});
}

void NativeApi::AgentRegister(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateAgent(req));
  (void)who;
  KILN_API_ASSIGN(Json body, ParseBody(req));
  KILN_API_ASSIGN(AgentHello hello, AgentHelloFromJson(body));
  KILN_API_ASSIGN(RegisterReply reply, jobs_.RegisterAgent(hello));
  SendJson(res, 200, ToJson(reply));
}

void NativeApi::AgentSync(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateAgent(req));
  (void)who;
  std::string agent_id = req.path_params["agent"];
  KILN_API_ASSIGN(Json body, ParseBody(req));
  KILN_API_ASSIGN(SyncRequest request, SyncRequestFromJson(body));
  KILN_API_ASSIGN(SyncReply reply, jobs_.SyncAgent(agent_id, request));
  if (!reply.launch.empty() || !reply.kill.empty() || request.wait_ms == 0) {
    return SendJson(res, 200, ToJson(reply));
  }
  // Nothing to do now: hold the request until there is, or until wait_ms passes.
  if (auto old = parked_.find(agent_id); old != parked_.end()) {
    old->second->answered = true;
    old->second->timer.cancel();
    auto empty = jobs_.SyncAgent(agent_id, old->second->request);
    old->second->responder.Send(empty.ok() ? net::JsonResponse(200, ToJson(*empty))
                                           : net::ErrorResponse(empty.status()));
    parked_.erase(old);
  }
  auto parked = std::make_shared<ParkedSync>(io_, std::move(res));
  parked->request = request;
  parked->agent_id = agent_id;
  parked->timer.expires_after(
      std::chrono::milliseconds(std::min(request.wait_ms, jobs_.MaxSyncWaitMs())));
  parked->timer.async_wait(
      [this, weak = std::weak_ptr<ParkedSync>(parked)](const boost::system::error_code& ec) {
        auto p = weak.lock();
        if (ec || !p || p->answered) return;
        WakeAgent(p->agent_id);
      });
  parked_[agent_id] = parked;
}

void NativeApi::ReleaseHeldSyncs() {
  std::vector<std::string> agents;
  for (const auto& [id, p] : parked_) agents.push_back(id);
  for (const std::string& id : agents) WakeAgent(id);
}

void NativeApi::WakeAgent(const std::string& agent_id) {
  auto it = parked_.find(agent_id);
  if (it == parked_.end()) return;
  std::shared_ptr<ParkedSync> p = it->second;
  parked_.erase(it);
  p->answered = true;
  p->timer.cancel();
  // Answer on a later turn of the loop: the caller may be in the middle of a state change.
  boost::asio::post(io_, [this, p]() {
    auto reply = jobs_.SyncAgent(p->agent_id, p->request);
    p->responder.Send(reply.ok() ? net::JsonResponse(200, ToJson(*reply))
                                 : net::ErrorResponse(reply.status()));
  });
}

void NativeApi::AgentReportHandler(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateAgent(req));
  (void)who;
  std::string agent_id = req.path_params["agent"];
  KILN_API_ASSIGN(Json body, base::ParseJson(req.body, 64 << 20));
  KILN_API_ASSIGN(AgentReport report, AgentReportFromJson(body));
  KILN_API_ASSIGN(ReportReply reply, jobs_.ApplyReport(agent_id, report));
  SendJson(res, 200, ToJson(reply));
}

}  // namespace kiln::api
