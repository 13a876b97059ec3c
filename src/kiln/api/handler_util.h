// handler_util.h
//
// What every REST dialect's handlers share (native, WMLA, experiments): replying with
// JSON or an error, reading JSON bodies, path and query parameters, authenticating a
// request, and storing an uploaded code package.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/auth/authenticator.h"
#include "kiln/base/json.h"
#include "kiln/base/status.h"
#include "kiln/net/http_types.h"
#include "kiln/net/responder.h"
#include "kiln/store/records.h"
#include "kiln/store/store.h"

namespace kiln::api {

inline constexpr size_t kMaxJsonBody = 16 << 20;

void SendError(net::Responder& res, const absl::Status& status);
void SendJson(net::Responder& res, int code, const base::Json& body);
// Sends `bytes` as a download named `file_name` (application/octet-stream with a
// Content-Disposition: attachment).
void SendFile(net::Responder& res, std::string bytes, const std::string& file_name);

// The body as JSON; InvalidArgument when empty or malformed.
absl::StatusOr<base::Json> ParseBody(const net::HttpRequest& req);
// Path parameter `name` as a positive integer id; the error calls it a `what` ("job id").
absl::StatusOr<int64_t> PathId(const net::HttpRequest& req, const char* name = "id",
                               const char* what = "job id");
absl::StatusOr<int64_t> QueryInt(const net::HttpRequest& req, const char* name, int64_t fallback,
                                 int64_t min, int64_t max);
// `?name`, `?name=1` and `?name=true` are true.
bool QueryFlag(const net::HttpRequest& req, const char* name);
// ISO-8601 or null.
base::Json TimeOrNull(const std::optional<int64_t>& micros);

// The caller of a request: `Authorization: Bearer`, HTTP Basic, or WMLA's X-Auth-Token.
absl::StatusOr<auth::Principal> AuthenticateRequest(auth::Authenticator& auth,
                                                    const net::HttpRequest& req);

// Stores package bytes under `data_dir`/packages (content-addressed, a single file by its
// name and content; idempotent) and records them; `name` is the uploaded file name. A
// gzip body is a "tar.gz" package, any other a single "file". InvalidArgument for an
// empty body or a name with '/'.
absl::StatusOr<store::PackageRecord> StorePackage(store::Store& store, const std::string& data_dir,
                                                  std::string name, const std::string& bytes);

// Early return for handlers: evaluates to the value or replies with the error (needs a
// `net::Responder res` in scope).
#define KILN_API_ASSIGN(lhs, expr)                                                \
  auto KILN_INTERNAL_CONCAT(api_v_, __LINE__) = (expr);                           \
  if (!KILN_INTERNAL_CONCAT(api_v_, __LINE__).ok()) {                             \
    ::kiln::api::SendError(res, KILN_INTERNAL_CONCAT(api_v_, __LINE__).status()); \
    return;                                                                       \
  }                                                                               \
  lhs = std::move(KILN_INTERNAL_CONCAT(api_v_, __LINE__)).value()

}  // namespace kiln::api
