// experiments_api.h
//
// `ExperimentsApi` serves Kiln's native hyperparameter search API, /api/v1/experiments
// (docs/api.md, "Experiments"), on top of the `ExperimentController`.
#pragma once

#include "kiln/auth/authenticator.h"
#include "kiln/master/experiment_controller.h"
#include "kiln/net/router.h"
#include "kiln/store/store.h"

namespace kiln::api {

// All handlers run on the master's loop.
class ExperimentsApi {
 public:
  ExperimentsApi(store::Store& store, auth::Authenticator& auth,
                 master::ExperimentController& experiments);

  void Register(net::Router& router);

 private:
  store::Store& store_;
  auth::Authenticator& auth_;
  master::ExperimentController& experiments_;
};

}  // namespace kiln::api
