// wmla_api.h
//
// `WmlaApi` serves the WMLA dialect (shared/reference/wmla-api.md) so WMLA users can point
// their REST calls at Kiln: the hyperparameter search endpoints under
// /platform/rest/deeplearning/v1/hypersearch, single jobs under .../execs, and the logon
// endpoints (/auth/v1/logon, /platform/rest/conductor/v1/auth/logon).
#pragma once

#include <boost/asio/io_context.hpp>
#include <string>

#include "kiln/auth/authenticator.h"
#include "kiln/master/experiment_controller.h"
#include "kiln/master/job_controller.h"
#include "kiln/net/router.h"
#include "kiln/store/store.h"

namespace kiln::api {

struct WmlaApiOptions {
  std::string data_dir;  // uploaded models are stored as packages in data_dir/packages
  size_t max_package_bytes = 512 << 20;
};

// All handlers run on the master's loop.
class WmlaApi {
 public:
  WmlaApi(boost::asio::io_context& io, store::Store& store, auth::Authenticator& auth,
          master::JobController& jobs, master::ExperimentController& experiments,
          WmlaApiOptions options);
  ~WmlaApi();

  void Register(net::Router& router);

 private:
  boost::asio::io_context& io_;
  store::Store& store_;
  auth::Authenticator& auth_;
  master::JobController& jobs_;
  master::ExperimentController& experiments_;
  WmlaApiOptions options_;
};

}  // namespace kiln::api
