// models_api.h
//
// `ModelsApi` serves the native model registry, /api/v1/models (docs/api.md, "Models"),
// on top of `master::ModelRegistry`: register a version from a finished job's saved model,
// from an uploaded TorchScript file (multipart form: `file` + `data`) or from an already
// uploaded package; list, show, download and delete. Models are addressed by name or id.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kiln/auth/authenticator.h"
#include "kiln/master/model_registry.h"
#include "kiln/net/http_types.h"
#include "kiln/net/router.h"
#include "kiln/store/store.h"

namespace kiln::api {

struct ModelsApiOptions {
  std::string data_dir;  // packages live in data_dir/packages
  size_t max_package_bytes = 512 << 20;
};

// All handlers run on the master's loop (the HTTP server runs there).
class ModelsApi {
 public:
  ModelsApi(store::Store& store, auth::Authenticator& auth, master::ModelRegistry& registry,
            ModelsApiOptions options);

  void Register(net::Router& router);

 private:
  void Create(net::HttpRequest& req, net::Responder res);
  void List(net::HttpRequest& req, net::Responder res);
  void Get(net::HttpRequest& req, net::Responder res);
  void GetVersion(net::HttpRequest& req, net::Responder res);
  void Content(net::HttpRequest& req, net::Responder res);
  void Delete(net::HttpRequest& req, net::Responder res);
  void DeleteVersion(net::HttpRequest& req, net::Responder res);

  // The register request of a multipart form: stores the `file` part as a package and
  // reads `data` as the JSON request.
  absl::StatusOr<master::RegisterModelRequest> FromForm(const net::HttpRequest& req);
  // The model in uploaded `bytes` (serving::ModelFromUpload: the TorchScript file, or a
  // .zip/.tar.gz holding one) stored as a file package, its id and (unless the request
  // has one) its signature set in `request`. `name` is the upload's file name, kept for a
  // bare file; errors name `what` ("\"file\"", "package sha256-...") and, for a bad
  // signature.json, `signature_field`, where the signature can be given instead.
  absl::Status TakeModel(std::string_view bytes, const std::string& name, std::string_view what,
                         std::string_view signature_field, master::RegisterModelRequest& request);

  store::Store& store_;
  auth::Authenticator& auth_;
  master::ModelRegistry& registry_;
  ModelsApiOptions options_;
};

}  // namespace kiln::api
