#include "kiln/api/experiments_api.h"

namespace kiln::api {

// Placeholder until the native experiments API lands: no routes yet.
ExperimentsApi::ExperimentsApi(store::Store& store, auth::Authenticator& auth,
                               master::ExperimentController& experiments)
    : store_(store), auth_(auth), experiments_(experiments) {}

void ExperimentsApi::Register(net::Router& router) { (void)router; }

}  // namespace kiln::api
