// elastic_api.h
//
// `ElasticApi` serves the distributed-job routes (ARCHITECTURE.md §5.1, §5.2) on top of
// the `ElasticController`:
//
//   POST /api/v1/jobs/{id}/scale                {"workers": N}      users
//   POST /api/v1/jobs/{id}/rendezvous/join      JoinRequest         workers (long-poll)
//   GET  /api/v1/jobs/{id}/rendezvous?task_id=&generation=&wait_ms= workers (long-poll)
//
// It holds the long-polls and answers them when the controller reports a change of the
// job's rendezvous, or with {"retry": true} / {"next": false} when wait_ms passes.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <map>
#include <memory>

#include "kiln/auth/authenticator.h"
#include "kiln/base/json.h"
#include "kiln/elastic/rendezvous.h"
#include "kiln/master/elastic_controller.h"
#include "kiln/net/router.h"
#include "kiln/store/store.h"

namespace kiln::api {

// Wire forms of the rendezvous messages (ARCHITECTURE.md §5.2). InvalidArgument naming
// the field for bad input.
absl::StatusOr<elastic::JoinRequest> JoinRequestFromJson(const base::Json& body);
base::Json JoinAnswerToJson(const elastic::JoinAnswer& answer);
// `generation`: the generation the worker asked about.
base::Json WatchAnswerToJson(const elastic::WatchAnswer& answer, int64_t generation);

// All handlers run on the master's loop (`io`).
class ElasticApi {
 public:
  ElasticApi(boost::asio::io_context& io, store::Store& store, auth::Authenticator& auth,
             master::ElasticController& elastic);
  ~ElasticApi();

  // Adds the routes and registers the controller's change observer.
  void Register(net::Router& router);
  // Answers every held request now (shutdown).
  void ReleaseHeld();

 private:
  struct Held;

  void Scale(net::HttpRequest& req, net::Responder res);
  void Join(net::HttpRequest& req, net::Responder res);
  void Watch(net::HttpRequest& req, net::Responder res);
  void Hold(int64_t job_id, std::shared_ptr<Held> held, int64_t wait_ms);
  // Answers the held requests of `job_id` that have an answer now.
  void Wake(int64_t job_id);
  // Answers `held` with its current answer (a timed-out join's is {"retry": true}, a
  // watch's {"next": false}).
  void Answer(Held& held);

  boost::asio::io_context& io_;
  store::Store& store_;
  auth::Authenticator& auth_;
  master::ElasticController& elastic_;
  std::multimap<int64_t, std::shared_ptr<Held>> held_;  // by job id
};

}  // namespace kiln::api
