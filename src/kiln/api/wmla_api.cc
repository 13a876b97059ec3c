#include "kiln/api/wmla_api.h"

namespace kiln::api {

// Placeholder until the WMLA dialect lands: no routes yet.
WmlaApi::WmlaApi(boost::asio::io_context& io, store::Store& store, auth::Authenticator& auth,
                 master::JobController& jobs, master::ExperimentController& experiments,
                 WmlaApiOptions options)
    : io_(io),
      store_(store),
      auth_(auth),
      jobs_(jobs),
      experiments_(experiments),
      options_(std::move(options)) {}

WmlaApi::~WmlaApi() = default;

void WmlaApi::Register(net::Router& router) { (void)router; }

}  // namespace kiln::api
