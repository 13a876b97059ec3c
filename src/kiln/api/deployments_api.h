// deployments_api.h
//
// `DeploymentsApi` serves the native deployment routes (docs/api.md, "Deployments") on
// top of the `DeploymentController`:
//
//   POST   /api/v1/deployments                         create (201)          users
//   GET    /api/v1/deployments                         list                  users
//   GET    /api/v1/deployments/{id}                    show (id or name)     users
//   PATCH  /api/v1/deployments/{id}                    update (rolling)      users
//   DELETE /api/v1/deployments/{id}                    drain, stop, delete   users
//   POST   /api/v1/deployments/{id}/replicas/{job}/ready   {"port", "address"?}  replica task
//   POST   /api/v1/deployments/{id}/replicas/{job}/failed  {"reason"}            replica task
//
// Predictions (`/api/v1/deployments/{id}/predict`) are the InferenceApi's.
#pragma once

#include "absl/status/statusor.h"
#include "kiln/auth/authenticator.h"
#include "kiln/base/json.h"
#include "kiln/master/deployment_controller.h"
#include "kiln/net/router.h"

namespace kiln::api {

// The create request: {"name", "model", "version"?, "replicas"?, "slots"?,
// "max_batch_size"?, "max_queue_delay_us"?}. InvalidArgument naming the field; unknown
// fields are refused (a misspelt knob would otherwise be silently ignored).
absl::StatusOr<master::DeploymentSpec> DeploymentSpecFromJson(const base::Json& body);
// The update request: any of {"version", "replicas", "max_batch_size",
// "max_queue_delay_us"}; at least one.
absl::StatusOr<master::DeploymentUpdate> DeploymentUpdateFromJson(const base::Json& body);

// All handlers run on the master's loop (the HTTP server runs there).
class DeploymentsApi {
 public:
  DeploymentsApi(auth::Authenticator& auth, master::DeploymentController& deployments);

  void Register(net::Router& router);

 private:
  void Create(net::HttpRequest& req, net::Responder res);
  void List(net::HttpRequest& req, net::Responder res);
  void Get(net::HttpRequest& req, net::Responder res);
  void Update(net::HttpRequest& req, net::Responder res);
  void Delete(net::HttpRequest& req, net::Responder res);
  void ReplicaReady(net::HttpRequest& req, net::Responder res);
  void ReplicaFailed(net::HttpRequest& req, net::Responder res);

  // The deployment named by the {id} path segment (digits: id, else name).
  absl::StatusOr<store::DeploymentRecord> Resolve(const auth::Principal& who,
                                                  const net::HttpRequest& req);

  auth::Authenticator& auth_;
  master::DeploymentController& deployments_;
};

}  // namespace kiln::api
