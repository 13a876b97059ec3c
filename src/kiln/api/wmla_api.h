// wmla_api.h
//
// `WmlaApi` serves the WMLA dialect (shared/reference/wmla-api.md §1) so WMLA users can point
// their notebooks at Kiln: the hyperparameter search endpoints under
// /platform/rest/deeplearning/v1/hypersearch, single jobs under .../execs, and the logon
// endpoints (/auth/v1/logon, /platform/rest/conductor/v1/auth/logon). Requests and
// responses keep IBM's shapes (wmla_hpo.h, wmla_args.h); errors keep Kiln's error body.
//
// Differences from WMLA, each answered with a message rather than silently: plugin
// algorithms cannot be installed (501: Kiln runs its built-ins); distributed and elastic
// frameworks are refused (400); DELETE /execs/{id} stops a running job but Kiln keeps the
// job's record, logs and metrics, so it stays listed.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/api/wmla_args.h"
#include "kiln/api/wmla_hpo.h"
#include "kiln/auth/authenticator.h"
#include "kiln/master/experiment_controller.h"
#include "kiln/master/job_controller.h"
#include "kiln/net/multipart.h"
#include "kiln/net/router.h"
#include "kiln/store/store.h"

namespace kiln::api {

struct WmlaApiOptions {
  std::string data_dir;  // uploaded models are stored as packages in data_dir/packages
  size_t max_package_bytes = 512 << 20;
  // WMLA's shared dataset root, under which a relative `data_path` is found. Empty: taken
  // from kilnd's $DLI_DATA_FS, if set.
  std::string data_fs;
};

// All handlers run on the master's loop. Borrows everything it is given.
class WmlaApi {
 public:
  WmlaApi(store::Store& store, auth::Authenticator& auth, master::JobController& jobs,
          master::ExperimentController& experiments, WmlaApiOptions options);
  ~WmlaApi();

  void Register(net::Router& router);

 private:
  // The model file of a form: its name and bytes (views into the request body).
  struct UploadedModel {
    std::string name;
    std::string_view bytes;
  };

  // Logon.
  void Logon(net::HttpRequest& req, net::Responder res);
  // Hypersearch.
  void CreateTask(net::HttpRequest& req, net::Responder res);
  void ListTasks(net::HttpRequest& req, net::Responder res);
  void DeleteFinishedTasks(net::HttpRequest& req, net::Responder res);
  void GetTask(net::HttpRequest& req, net::Responder res);
  void StopTask(net::HttpRequest& req, net::Responder res, bool force);
  void RestartTask(net::HttpRequest& req, net::Responder res);
  void DeleteTask(net::HttpRequest& req, net::Responder res);
  void ListAlgorithms(net::HttpRequest& req, net::Responder res);
  void GetAlgorithm(net::HttpRequest& req, net::Responder res);
  void RefusePlugin(net::HttpRequest& req, net::Responder res);
  // Execs.
  void SubmitExec(net::HttpRequest& req, net::Responder res);
  void ListExecs(net::HttpRequest& req, net::Responder res);
  void GetExec(net::HttpRequest& req, net::Responder res);
  void StopExec(net::HttpRequest& req, net::Responder res);
  void DeleteExec(net::HttpRequest& req, net::Responder res);
  void ExecLog(net::HttpRequest& req, net::Responder res);
  void ListFrameworks(net::HttpRequest& req, net::Responder res);

  // The model part of a form: `file`, or (CPD 3.5 notebooks) the first other part that
  // carries a file. InvalidArgument saying how to send it when there is none.
  static absl::StatusOr<UploadedModel> FindModel(const std::vector<net::MultipartPart>& parts);
  // Stores `model` as a package and points `spec` at it. A single file runs at the
  // package's root, so it must be the script --model-main names; a .modelDir.tar must be
  // gzip-compressed. InvalidArgument otherwise.
  absl::Status AttachModel(const UploadedModel& model, master::JobSpec& spec);
  // The task `who` names in the path, as WMLA shows it.
  absl::StatusOr<master::ExperimentView> TaskOf(const auth::Principal& who,
                                                const net::HttpRequest& req);
  base::Json TaskJson(const auth::Principal& who, const master::ExperimentView& view);
  base::Json ExecJson(const store::JobRecord& job);

  store::Store& store_;
  auth::Authenticator& auth_;
  master::JobController& jobs_;
  master::ExperimentController& experiments_;
  WmlaApiOptions options_;
};

}  // namespace kiln::api
