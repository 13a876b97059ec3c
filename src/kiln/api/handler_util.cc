#include "kiln/api/handler_util.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/auth/password.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/net/http_parsing.h"
#include "kiln/net/http_status.h"

namespace kiln::api {

void SendError(net::Responder& res, const absl::Status& status) {
  res.Send(net::ErrorResponse(status));
}

void SendJson(net::Responder& res, int code, const base::Json& body) {
  res.Send(net::JsonResponse(code, body));
}

void SendFile(net::Responder& res, std::string bytes, const std::string& file_name) {
  net::HttpResponse r;
  r.content_type = "application/octet-stream";
  r.headers.emplace_back("Content-Disposition",
                         absl::StrCat("attachment; filename=\"", file_name, "\""));
  r.body = std::move(bytes);
  res.Send(std::move(r));
}

absl::StatusOr<base::Json> ParseBody(const net::HttpRequest& req) {
  if (req.body.empty()) return absl::InvalidArgumentError("the request needs a JSON body");
  return base::ParseJson(req.body, kMaxJsonBody);
}

absl::StatusOr<int64_t> PathId(const net::HttpRequest& req, const char* name, const char* what) {
  auto it = req.path_params.find(name);
  int64_t id = 0;
  if (it == req.path_params.end() || !absl::SimpleAtoi(it->second, &id) || id <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("\"",
                                                   it == req.path_params.end() ? "" : it->second,
                                                   "\" is not a ", what, " (a positive integer)"));
  }
  return id;
}

absl::StatusOr<int64_t> QueryInt(const net::HttpRequest& req, const char* name, int64_t fallback,
                                 int64_t min, int64_t max) {
  auto v = req.Query(name);
  if (!v) return fallback;
  int64_t out = 0;
  if (!absl::SimpleAtoi(*v, &out) || out < min || out > max) {
    return absl::InvalidArgumentError(absl::StrCat("query parameter ", name, "=", *v,
                                                   " must be an integer from ", min, " to ", max));
  }
  return out;
}

bool QueryFlag(const net::HttpRequest& req, const char* name) {
  auto v = req.Query(name);
  return v && (*v == "true" || *v == "1" || v->empty());
}

base::Json TimeOrNull(const std::optional<int64_t>& micros) {
  return micros ? base::Json(base::FormatIso8601(*micros)) : base::Json(nullptr);
}

absl::StatusOr<auth::Principal> AuthenticateRequest(auth::Authenticator& auth,
                                                    const net::HttpRequest& req) {
  std::string authorization = req.Header("authorization");
  if (absl::StartsWithIgnoreCase(authorization, "bearer ")) {
    return auth.AuthenticateToken(std::string(absl::StripAsciiWhitespace(authorization.substr(7))));
  }
  if (absl::StartsWithIgnoreCase(authorization, "basic ")) {
    auto creds = net::ParseBasicAuthorization(authorization);
    if (!creds) return absl::UnauthenticatedError("malformed HTTP Basic credentials");
    return auth.AuthenticateBasic(creds->first, creds->second);
  }
  // WMLA 2.x clients send the logon token this way.
  std::string x_token = req.Header("x-auth-token");
  if (!x_token.empty()) return auth.AuthenticateToken(x_token);
  return absl::UnauthenticatedError(
      "this request needs credentials: HTTP Basic (KILN_USER/KILN_PASSWORD) or a token from "
      "'kiln login' (Authorization: Bearer ...)");
}

absl::StatusOr<store::PackageRecord> StorePackage(store::Store& store, const std::string& data_dir,
                                                  std::string name, const std::string& bytes) {
  bool gzip = bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
              static_cast<unsigned char>(bytes[1]) == 0x8b;
  if (name.empty()) name = gzip ? "package.tar.gz" : "";
  if (name.empty() || name.size() > 255 || name.find('/') != std::string::npos || name == "." ||
      name == "..") {
    return absl::InvalidArgumentError(
        "the package needs a plain file name without '/' (uploads: add ?name=FILENAME)");
  }
  if (bytes.empty()) return absl::InvalidArgumentError("the package is empty");
  store::PackageRecord p;
  // A single file is laid down under its name, so the name is part of what it is: the same
  // bytes uploaded as a.py and as b.py are two packages (one record could hold one name).
  std::string digest = auth::Sha256Hex(bytes);
  if (!gzip) digest = auth::Sha256Hex(absl::StrCat(name, "\n", digest));
  p.id = absl::StrCat("sha256-", digest);
  p.name = std::move(name);
  p.kind = gzip ? "tar.gz" : "file";
  p.size = static_cast<int64_t>(bytes.size());
  p.created_at = base::SystemClock::Get().NowMicros();
  if (auto existing = store.GetPackage(p.id); existing.ok()) return *existing;
  std::string dir = absl::StrCat(data_dir, "/packages");
  // Bytes first, then the record: a record always has its bytes.
  KILN_RETURN_IF_ERROR(base::MakeDirs(dir));
  KILN_RETURN_IF_ERROR(base::WriteFileAtomically(absl::StrCat(dir, "/", p.id), bytes, 0600));
  KILN_RETURN_IF_ERROR(store.PutPackage(p));
  return p;
}

}  // namespace kiln::api
