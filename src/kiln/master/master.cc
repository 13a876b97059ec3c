#include "kiln/master/master.h"

#include <signal.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <functional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "kiln/agent/agent.h"
#include "kiln/api/deployments_api.h"
#include "kiln/api/elastic_api.h"
#include "kiln/api/experiments_api.h"
#include "kiln/api/inference_api.h"
#include "kiln/api/models_api.h"
#include "kiln/api/native_api.h"
#include "kiln/api/wml_api.h"
#include "kiln/api/wmla_api.h"
#include "kiln/auth/authenticator.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/base/random.h"
#include "kiln/base/status.h"
#include "kiln/master/deployment_controller.h"
#include "kiln/master/elastic_controller.h"
#include "kiln/master/experiment_controller.h"
#include "kiln/master/job_controller.h"
#include "kiln/master/model_registry.h"
#include "kiln/net/http_forwarder.h"
#include "kiln/net/http_server.h"
#include "kiln/serving/routing_table.h"
#include "kiln/store/sqlite_store.h"
#include "spdlog/spdlog.h"

namespace kiln::master {

struct Master::Impl {
  MasterOptions options;
  boost::asio::io_context io;
  std::unique_ptr<store::SqliteStore> store;
  std::unique_ptr<auth::Authenticator> auth;
  std::unique_ptr<JobController> jobs;
  std::unique_ptr<ExperimentController> experiments;
  std::unique_ptr<ElasticController> elastic;
  // Where predictions may go: written by the deployment controller, read by the
  // prediction routes.
  std::unique_ptr<serving::RoutingTable> routes;
  std::unique_ptr<DeploymentController> deployments;
  std::unique_ptr<api::NativeApi> api;
  std::unique_ptr<api::ExperimentsApi> experiments_api;
  std::unique_ptr<ModelRegistry> models;
  std::unique_ptr<api::ModelsApi> models_api;
  std::unique_ptr<api::ElasticApi> elastic_api;
  std::unique_ptr<api::DeploymentsApi> deployments_api;
  // Passes predictions on to replicas from its own io thread; stopped in ~Master before
  // the prediction routes it calls back into are destroyed.
  std::unique_ptr<net::HttpForwarder> forwarder;
  std::unique_ptr<api::InferenceApi> inference_api;
  std::unique_ptr<api::WmlaApi> wmla_api;
  std::unique_ptr<api::WmlApi> wml_api;
  std::unique_ptr<net::HttpServer> server;
  std::unique_ptr<agent::Agent> local_agent;
  std::string agent_token;
  std::unique_ptr<boost::asio::steady_timer> sweep_timer;
  std::unique_ptr<boost::asio::signal_set> signals;
  std::function<void()> sweep;
};

namespace {

// The secret agents present; created once per data dir, readable only by its owner.
absl::StatusOr<std::string> LoadOrCreateAgentToken(const std::string& data_dir) {
  std::string path = data_dir + "/agent-token";
  auto existing = base::ReadFile(path);
  if (existing.ok()) {
    std::string token(absl::StripAsciiWhitespace(*existing));
    if (!token.empty()) return token;
  }
  std::string token = base::RandomHexToken();
  KILN_RETURN_IF_ERROR(base::WriteFileAtomically(path, token + "\n", 0600));
  return token;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Master>> Master::Create(MasterOptions options) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("kilnd needs --data-dir");
  KILN_RETURN_IF_ERROR(base::MakeDirs(options.data_dir, 0700));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  KILN_ASSIGN_OR_RETURN(impl->store, store::SqliteStore::Open(options.data_dir + "/kiln.db"));
  impl->auth = std::make_unique<auth::Authenticator>(*impl->store, base::SystemClock::Get());
  KILN_ASSIGN_OR_RETURN(std::optional<std::string> admin_password,
                        impl->auth->EnsureAdmin(options.admin_password));
  if (admin_password && options.admin_password.empty()) {
    std::printf(
        "Created the admin user. Its password, shown only this once:\n\n    %s\n\n"
        "Use it as KILN_USER=admin KILN_PASSWORD=... or with 'kiln login'.\n",
        admin_password->c_str());
    std::fflush(stdout);
  }
  KILN_ASSIGN_OR_RETURN(impl->agent_token, LoadOrCreateAgentToken(options.data_dir));
  KILN_RETURN_IF_ERROR(impl->auth->RegisterAgentToken(impl->agent_token));

  JobControllerOptions jc;
  jc.agent_timeout_micros = options.agent_timeout_seconds * 1'000'000;
  jc.kill_grace_ms = options.kill_grace_ms;
  impl->jobs =
      std::make_unique<JobController>(*impl->store, *impl->auth, base::SystemClock::Get(), jc);
  KILN_RETURN_IF_ERROR(impl->jobs->Recover());
  impl->experiments =
      std::make_unique<ExperimentController>(*impl->store, *impl->jobs, base::SystemClock::Get());
  ElasticControllerOptions elastic_options;
  elastic_options.join_timeout_micros = options.rendezvous_timeout_seconds * 1'000'000;
  impl->elastic = std::make_unique<ElasticController>(*impl->store, *impl->jobs,
                                                      base::SystemClock::Get(), elastic_options);
  KILN_RETURN_IF_ERROR(impl->elastic->Recover());
  impl->routes = std::make_unique<serving::RoutingTable>();
  impl->deployments = std::make_unique<DeploymentController>(
      *impl->store, *impl->jobs, *impl->routes, base::SystemClock::Get(),
      DeploymentControllerOptions{});
  KILN_RETURN_IF_ERROR(impl->deployments->Recover());
  // JobController fires these from inside its own calls (a kill ends a queued job at once):
  // posted, so the experiment driver runs after that call returns and never re-enters it.
  Impl* m = impl.get();
  impl->jobs->AddJobEndObserver([m](int64_t job_id) {
    boost::asio::post(m->io, [m, job_id]() {
      m->experiments->OnJobEnded(job_id);
      m->elastic->OnJobEnded(job_id);
      m->deployments->OnJobEnded(job_id);
    });
  });
  impl->jobs->SetJobStartedObserver([m](int64_t job_id) {
    boost::asio::post(m->io, [m, job_id]() { m->elastic->OnJobStarted(job_id); });
  });
  impl->jobs->SetJobMetricsObserver([m](int64_t job_id) {
    boost::asio::post(m->io, [m, job_id]() { m->experiments->OnJobMetrics(job_id); });
  });
  KILN_RETURN_IF_ERROR(impl->experiments->Recover());

  api::NativeApiOptions api_options;
  api_options.data_dir = options.data_dir;
  impl->api = std::make_unique<api::NativeApi>(impl->io, *impl->store, *impl->auth, *impl->jobs,
                                               api_options);
  net::Router router;
  impl->api->Register(router);
  impl->experiments_api = std::make_unique<api::ExperimentsApi>(*impl->auth, *impl->experiments);
  impl->experiments_api->Register(router);
  impl->models = std::make_unique<ModelRegistry>(*impl->store, *impl->jobs,
                                                 base::SystemClock::Get(), options.data_dir);
  api::ModelsApiOptions models_options;
  models_options.data_dir = options.data_dir;
  impl->models_api =
      std::make_unique<api::ModelsApi>(*impl->store, *impl->auth, *impl->models, models_options);
  impl->models_api->Register(router);
  impl->elastic_api =
      std::make_unique<api::ElasticApi>(impl->io, *impl->store, *impl->auth, *impl->elastic);
  impl->elastic_api->Register(router);
  impl->deployments_api = std::make_unique<api::DeploymentsApi>(*impl->auth, *impl->deployments);
  impl->deployments_api->Register(router);
  // Predictions leave this loop at once: it pays only auth, a route lookup and the
  // hand-over; the forwarder's thread does the outgoing HTTP and the retries.
  impl->forwarder = std::make_unique<net::HttpForwarder>();
  impl->inference_api =
      std::make_unique<api::InferenceApi>(impl->io, *impl->auth, *impl->routes, *impl->forwarder);
  impl->inference_api->SetReplicaUnreachableObserver([m](int64_t deployment_id, int64_t job_id) {
    m->deployments->OnReplicaUnreachable(deployment_id, job_id);
  });
  impl->inference_api->Register(router);
  api::WmlaApiOptions wmla_options;
  wmla_options.data_dir = options.data_dir;
  impl->wmla_api = std::make_unique<api::WmlaApi>(*impl->store, *impl->auth, *impl->jobs,
                                                  *impl->experiments, wmla_options);
  impl->wmla_api->Register(router);
  api::WmlApiOptions wml_options;
  wml_options.data_dir = options.data_dir;
  impl->wml_api = std::make_unique<api::WmlApi>(*impl->store, *impl->auth, *impl->jobs,
                                                *impl->models, *impl->deployments, wml_options);
  impl->wml_api->Register(router);
  net::HttpServerOptions server_options;
  server_options.address = options.address;
  server_options.port = options.port;
  KILN_ASSIGN_OR_RETURN(impl->server,
                        net::HttpServer::Create(impl->io, server_options, std::move(router)));

  if (options.local_agent) {
    agent::AgentOptions a;
    a.master_url = absl::StrCat("http://127.0.0.1:", impl->server->port());
    a.token = impl->agent_token;
    a.data_dir = options.data_dir + "/agent";
    a.agent_id = "local";
    a.slots = options.local_agent_slots;
    a.shim_path = options.shim_path;
    a.python_path = options.python_path;
    a.discover_gpus = options.discover_gpus;
    KILN_ASSIGN_OR_RETURN(impl->local_agent, agent::Agent::Create(a));
  }
  return std::unique_ptr<Master>(new Master(std::move(impl)));
}

Master::Master(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Master::~Master() {
  if (impl_->forwarder) impl_->forwarder->Stop();
  if (impl_->local_agent) impl_->local_agent->Stop();
}

int Master::port() const { return impl_->server->port(); }

std::string Master::url() const {
  std::string host = impl_->options.address == "0.0.0.0" ? "127.0.0.1" : impl_->options.address;
  return absl::StrCat("http://", host, ":", port());
}

void Master::Run() {
  Impl& m = *impl_;
  m.signals = std::make_unique<boost::asio::signal_set>(m.io, SIGINT, SIGTERM);
  m.signals->async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info(
        "signal {}: stopping; running tasks keep running and are re-attached at the next start",
        signo);
    Stop();
  });
  m.sweep_timer = std::make_unique<boost::asio::steady_timer>(m.io);
  m.sweep = [&m]() {
    m.jobs->SweepAgents();
    m.experiments->Tick();
    m.elastic->Tick();
    m.deployments->Tick();
    m.sweep_timer->expires_after(std::chrono::seconds(1));
    m.sweep_timer->async_wait([&m](const boost::system::error_code& ec) {
      if (!ec) m.sweep();
    });
  };
  m.sweep();
  if (m.local_agent) m.local_agent->Start();
  std::printf("kilnd listening on %s\n", url().c_str());
  std::fflush(stdout);
  (void)base::WriteFileAtomically(m.options.data_dir + "/kilnd.url", url() + "\n");
  m.io.run();
  // The loop is done; the local agent's threads may be blocked on a request the loop will
  // never answer, and the server is closed, so they fail fast.
  if (m.local_agent) m.local_agent->Stop();
}

void Master::Stop() {
  Impl& m = *impl_;
  boost::asio::post(m.io, [&m]() {
    // Let the local agent's held long-poll return before the loop stops, so its threads
    // can be joined at once.
    if (m.local_agent) m.local_agent->RequestStop();
    m.api->ReleaseHeldSyncs();
    m.elastic_api->ReleaseHeld();
    m.server->Stop();
    if (m.sweep_timer) m.sweep_timer->cancel();
    if (m.signals) m.signals->cancel();
    auto drain = std::make_shared<boost::asio::steady_timer>(m.io, std::chrono::milliseconds(200));
    drain->async_wait([&m, drain](const boost::system::error_code&) { m.io.stop(); });
  });
}

}  // namespace kiln::master
