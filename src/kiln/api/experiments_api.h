// experiments_api.h
//
// `ExperimentsApi` serves Kiln's native hyperparameter search API, /api/v1/experiments
// (docs/api.md, "Experiments"), on top of the `ExperimentController`: create, list, show,
// trials, best, stop, restart, delete, and the algorithm table. Experiments are addressed
// by id or by name. The JSON shapes are built by the functions below, so the CLI, the
// Python client and the docs share one definition.
#pragma once

#include <set>
#include <string>

#include "kiln/auth/authenticator.h"
#include "kiln/base/json.h"
#include "kiln/master/experiment_controller.h"
#include "kiln/net/router.h"
#include "kiln/store/store.h"

namespace kiln::api {

// The experiment record of the native API: id, name, state, reason, algorithm,
// objective, progress counts, best trial with its config, times; with `with_spec` also
// the request as Kiln understood it ("spec", in the request's own shape).
base::Json ExperimentToJson(const master::ExperimentView& view, bool with_spec);

// The names of the parameters `spec` searches (not its fixed values).
std::set<std::string> SearchedParams(const master::ExperimentSpec& spec);

// One trial: number, state, config (what its config.json held), params (its values of the
// `searched` parameters), value, intermediate [{step, value}], budget, job_id, job_ids,
// attempts, reason, times.
base::Json TrialToJson(const store::TrialRow& trial, const std::set<std::string>& searched);

// All handlers run on the master's loop (the HTTP server runs there).
class ExperimentsApi {
 public:
  ExperimentsApi(auth::Authenticator& auth, master::ExperimentController& experiments);

  void Register(net::Router& router);

 private:
  void Create(net::HttpRequest& req, net::Responder res);
  void List(net::HttpRequest& req, net::Responder res);
  void Get(net::HttpRequest& req, net::Responder res);
  void Trials(net::HttpRequest& req, net::Responder res);
  void Best(net::HttpRequest& req, net::Responder res);
  void Stop(net::HttpRequest& req, net::Responder res);
  void Restart(net::HttpRequest& req, net::Responder res);
  void Delete(net::HttpRequest& req, net::Responder res);
  void Algorithms(net::HttpRequest& req, net::Responder res);

  // The caller, who must be a user: task and agent tokens may not use this API.
  absl::StatusOr<auth::Principal> Authenticate(const net::HttpRequest& req);
  // The experiment named by the {id} path segment: digits are an id, anything else a
  // name. NotFound (also for someone else's experiment) as the controller answers.
  absl::StatusOr<master::ExperimentView> Resolve(const auth::Principal& who,
                                                 const net::HttpRequest& req);

  auth::Authenticator& auth_;
  master::ExperimentController& experiments_;
};

}  // namespace kiln::api
