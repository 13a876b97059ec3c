#include "kiln/api/experiments_api.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/api/handler_util.h"
#include "kiln/base/clock.h"
#include "kiln/base/status.h"
#include "kiln/hpo/algorithm.h"
#include "kiln/hpo/search_space.h"
#include "kiln/net/http_status.h"

namespace kiln::api {
namespace {

using base::Json;
using net::HttpRequest;
using net::Responder;

// A stored JSON column, or `fallback` if it does not parse (it always should: the
// controller wrote it).
Json ParseOr(const std::string& text, Json fallback) {
  absl::StatusOr<Json> parsed = base::ParseJson(text);
  return parsed.ok() ? *std::move(parsed) : std::move(fallback);
}

Json ObjectiveToJson(const master::ObjectiveSpec& objective) {
  return {{"metric", objective.metric},
          {"goal", objective.goal == master::ObjectiveGoal::kMaximize ? "maximize" : "minimize"},
          {"reduce", objective.reduce == master::ObjectiveReduce::kLast ? "last" : "best"}};
}

Json LimitOrNull(int64_t value) { return value < 0 ? Json(nullptr) : Json(value); }

// The request as Kiln understood it, in the native request's shape (docs/api.md), so a
// client can read back defaults and resubmit it.
Json SpecToJson(const master::ExperimentView& view) {
  const master::ExperimentSpec& spec = view.spec;
  Json trial = master::JobSpecToJson(spec.trial);
  Json out = {
      {"name", view.record.name},
      {"description", spec.description},
      {"dialect", spec.dialect},
      {"command", trial.value("command", Json::array())},
      {"package", trial.value("package", Json(nullptr))},
      {"resources", trial.value("resources", Json::object())},
      {"env", trial.value("env", Json::object())},
      {"config", trial.value("config", Json::object())},
      {"search_space", spec.search_space},
      {"algorithm",
       {{"name", spec.algorithm},
        {"params", spec.algorithm_params.is_null() ? Json::object() : spec.algorithm_params}}},
      {"pruner", spec.pruner},
      {"objective", ObjectiveToJson(spec.objective)},
      {"max_trials", spec.max_trials},
      {"max_run_minutes", spec.max_run_minutes},
      {"parallelism", spec.parallelism},
      {"max_retries", spec.max_retries},
      {"seed", spec.seed ? Json(*spec.seed) : Json(nullptr)},
  };
  if (!spec.trial.workdir.empty()) out["workdir"] = spec.trial.workdir;
  return out;
}

const store::TrialRow* FindTrial(const master::ExperimentView& view, int64_t number) {
  for (const auto& t : view.trials) {
    if (t.number == number) return &t;
  }
  return nullptr;
}

Json BestToJson(const master::ExperimentView& view) {
  if (!view.best_trial) return nullptr;
  const store::TrialRow* t = FindTrial(view, *view.best_trial);
  if (t == nullptr) return nullptr;
  return {{"number", t->number},
          {"state", store::TrialStateName(t->state)},
          {"value", t->value ? Json(*t->value) : Json(nullptr)},
          {"config", ParseOr(t->config_json, Json::object())},
          {"job_id", t->job_id ? Json(*t->job_id) : Json(nullptr)}};
}

// Bodies are JSON; a YAML experiment file is converted by the CLI (`kiln hpo create -f`),
// and saying so beats a JSON parser's complaint about line 1.
absl::StatusOr<Json> ParseExperimentBody(const HttpRequest& req) {
  std::string type = absl::AsciiStrToLower(req.Header("content-type"));
  if (absl::StrContains(type, "yaml")) {
    return absl::InvalidArgumentError(
        "this endpoint takes JSON (Content-Type: application/json); for a YAML experiment "
        "file use 'kiln hpo create -f FILE.yaml', which converts it");
  }
  return ParseBody(req);
}

}  // namespace

std::set<std::string> SearchedParams(const master::ExperimentSpec& spec) {
  std::set<std::string> out;
  absl::StatusOr<hpo::SearchSpace> space = spec.wmla_space
                                               ? hpo::SearchSpace::FromWmla(spec.search_space)
                                               : hpo::SearchSpace::FromNative(spec.search_space);
  if (!space.ok()) return out;  // stored specs were validated; nothing better to show
  for (const hpo::ParamSpec& p : space->params()) {
    if (p.kind != hpo::ParamKind::kFixed) out.insert(p.name);
  }
  return out;
}

Json TrialToJson(const store::TrialRow& trial, const std::set<std::string>& searched) {
  Json config = ParseOr(trial.config_json, Json::object());
  Json params = Json::object();
  if (config.is_object()) {
    for (const std::string& name : searched) {
      if (auto it = config.find(name); it != config.end()) params[name] = *it;
    }
  }
  // Stored as {"<step>": value}; a list in step order reads better.
  std::vector<std::pair<int64_t, double>> points;
  Json intermediate = ParseOr(trial.intermediate_json, Json::object());
  if (intermediate.is_object()) {
    for (auto it = intermediate.begin(); it != intermediate.end(); ++it) {
      int64_t step = 0;
      if (absl::SimpleAtoi(it.key(), &step) && it.value().is_number()) {
        points.emplace_back(step, it.value().get<double>());
      }
    }
  }
  std::sort(points.begin(), points.end());
  Json steps = Json::array();
  for (const auto& [step, value] : points) steps.push_back({{"step", step}, {"value", value}});
  return {{"number", trial.number},
          {"state", store::TrialStateName(trial.state)},
          {"config", std::move(config)},
          {"params", std::move(params)},
          {"value", trial.value ? Json(*trial.value) : Json(nullptr)},
          {"intermediate", std::move(steps)},
          {"budget", trial.budget},
          {"job_id", trial.job_id ? Json(*trial.job_id) : Json(nullptr)},
          {"job_ids", ParseOr(trial.job_ids_json, Json::array())},
          {"attempts", trial.attempts},
          {"reason", trial.reason},
          {"created_at", base::FormatIso8601(trial.created_at)},
          {"started_at", TimeOrNull(trial.started_at)},
          {"finished_at", TimeOrNull(trial.finished_at)}};
}

Json ExperimentToJson(const master::ExperimentView& view, bool with_spec) {
  const store::ExperimentRecord& r = view.record;
  Json out = {
      {"id", r.id},
      {"name", r.name},
      {"description", view.spec.description},
      {"user", r.username},
      {"state", store::ExperimentStateName(r.state)},
      {"reason", r.reason},
      {"algorithm", view.spec.algorithm},
      {"objective", ObjectiveToJson(view.spec.objective)},
      {"max_trials", LimitOrNull(view.spec.max_trials)},
      {"parallelism", view.spec.parallelism},
      {"progress",
       {{"trials", view.trials.size()},
        {"running", view.running},
        {"complete", view.complete},
        {"pruned", view.pruned},
        {"failed", view.failed},
        {"stopped", view.stopped},
        {"max_trials", LimitOrNull(view.spec.max_trials)}}},
      {"best", BestToJson(view)},
      {"created_at", base::FormatIso8601(r.created_at)},
      {"started_at", TimeOrNull(r.started_at)},
      {"finished_at", TimeOrNull(r.finished_at)},
  };
  if (with_spec) out["spec"] = SpecToJson(view);
  return out;
}

ExperimentsApi::ExperimentsApi(auth::Authenticator& auth, master::ExperimentController& experiments)
    : auth_(auth), experiments_(experiments) {}

void ExperimentsApi::Register(net::Router& router) {
  auto bind = [this](void (ExperimentsApi::*fn)(HttpRequest&, Responder)) {
    return [this, fn](HttpRequest& req, Responder res) { (this->*fn)(req, std::move(res)); };
  };
  router.Add("POST", "/api/v1/experiments", bind(&ExperimentsApi::Create),
             net::RouteOptions{kMaxJsonBody});
  router.Add("GET", "/api/v1/experiments", bind(&ExperimentsApi::List));
  // A literal segment wins over {id}: an experiment named "algorithms" is reached by id.
  router.Add("GET", "/api/v1/experiments/algorithms", bind(&ExperimentsApi::Algorithms));
  router.Add("GET", "/api/v1/experiments/{id}", bind(&ExperimentsApi::Get));
  router.Add("GET", "/api/v1/experiments/{id}/trials", bind(&ExperimentsApi::Trials));
  router.Add("GET", "/api/v1/experiments/{id}/best", bind(&ExperimentsApi::Best));
  router.Add("POST", "/api/v1/experiments/{id}/stop", bind(&ExperimentsApi::Stop));
  router.Add("POST", "/api/v1/experiments/{id}/restart", bind(&ExperimentsApi::Restart));
  router.Add("DELETE", "/api/v1/experiments/{id}", bind(&ExperimentsApi::Delete));
}

absl::StatusOr<auth::Principal> ExperimentsApi::Authenticate(const HttpRequest& req) {
  KILN_ASSIGN_OR_RETURN(auth::Principal who, AuthenticateRequest(auth_, req));
  if (!who.is_user()) {
    return absl::PermissionDeniedError(
        "task and agent tokens cannot use the experiments API; use a user's credentials");
  }
  return who;
}

absl::StatusOr<master::ExperimentView> ExperimentsApi::Resolve(const auth::Principal& who,
                                                               const HttpRequest& req) {
  auto it = req.path_params.find("id");
  if (it == req.path_params.end() || it->second.empty()) {
    return absl::InvalidArgumentError("the path needs an experiment id or name");
  }
  const std::string& ref = it->second;
  if (std::all_of(ref.begin(), ref.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(ref, &id) || id <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", ref, "\" is not an experiment id (a positive integer)"));
    }
    return experiments_.Get(who, id);
  }
  return experiments_.GetByName(who, ref);
}

void ExperimentsApi::Create(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(Json body, ParseExperimentBody(req));
  KILN_API_ASSIGN(master::ExperimentSpec spec, master::ParseExperimentSpec(body));
  KILN_API_ASSIGN(master::ExperimentView view, experiments_.Create(who, std::move(spec)));
  SendJson(res, 201, ExperimentToJson(view, /*with_spec=*/true));
}

void ExperimentsApi::List(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(std::vector<master::ExperimentView> views, experiments_.List(who));
  Json out = Json::array();
  for (const auto& view : views) out.push_back(ExperimentToJson(view, /*with_spec=*/false));
  SendJson(res, 200, {{"experiments", std::move(out)}});
}

void ExperimentsApi::Get(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(master::ExperimentView view, Resolve(who, req));
  SendJson(res, 200, ExperimentToJson(view, /*with_spec=*/true));
}

void ExperimentsApi::Trials(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(master::ExperimentView view, Resolve(who, req));
  std::set<std::string> searched = SearchedParams(view.spec);
  Json trials = Json::array();
  for (const auto& t : view.trials) trials.push_back(TrialToJson(t, searched));
  SendJson(res, 200,
           {{"experiment_id", view.record.id},
            {"objective", ObjectiveToJson(view.spec.objective)},
            {"trials", std::move(trials)}});
}

void ExperimentsApi::Best(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(master::ExperimentView view, Resolve(who, req));
  const store::TrialRow* best = view.best_trial ? FindTrial(view, *view.best_trial) : nullptr;
  if (best == nullptr) {
    return SendError(res, absl::NotFoundError(absl::StrCat(
                              "experiment ", view.record.id, " has no finished trial yet (",
                              view.running, " running, ", view.failed, " failed, state ",
                              store::ExperimentStateName(view.record.state), ")")));
  }
  Json out = TrialToJson(*best, SearchedParams(view.spec));
  out["experiment_id"] = view.record.id;
  out["metric"] = view.spec.objective.metric;
  out["goal"] = ObjectiveToJson(view.spec.objective)["goal"];
  SendJson(res, 200, out);
}

void ExperimentsApi::Stop(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(master::ExperimentView view, Resolve(who, req));
  KILN_API_ASSIGN(master::ExperimentView stopped,
                  experiments_.Stop(who, view.record.id, QueryFlag(req, "force")));
  SendJson(res, 200, ExperimentToJson(stopped, /*with_spec=*/false));
}

void ExperimentsApi::Restart(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(master::ExperimentView view, Resolve(who, req));
  KILN_API_ASSIGN(master::ExperimentView restarted, experiments_.Restart(who, view.record.id));
  SendJson(res, 200, ExperimentToJson(restarted, /*with_spec=*/false));
}

void ExperimentsApi::Delete(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  KILN_API_ASSIGN(master::ExperimentView view, Resolve(who, req));
  absl::Status deleted = experiments_.Delete(who, view.record.id);
  if (!deleted.ok()) return SendError(res, deleted);
  SendJson(res, 200, {{"id", view.record.id}, {"name", view.record.name}, {"deleted", true}});
}

void ExperimentsApi::Algorithms(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, Authenticate(req));
  (void)who;
  Json out = Json::array();
  for (const hpo::AlgorithmInfo& a : hpo::BuiltInAlgorithms()) {
    out.push_back({{"name", a.name},
                   {"native_name", a.native_name},
                   {"params", a.params},
                   {"native_params", a.native_params},
                   {"description", a.description},
                   {"native_only", a.native_only}});
  }
  SendJson(res, 200, {{"algorithms", std::move(out)}});
}

}  // namespace kiln::api
