#include "kiln/cli/connection.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"
#include "kiln/net/http_client.h"
#include "kiln/net/http_status.h"

namespace kiln::cli {
namespace {

constexpr int64_t kUploadTimeoutMillis = 10 * 60 * 1000;

}  // namespace

absl::StatusOr<std::string> CredentialsPath(const Invocation& inv) {
  std::optional<std::string> home = inv.GetEnv("HOME");
  if (!home) {
    return absl::FailedPreconditionError(
        "HOME is not set, so there is no place for saved credentials; set HOME, or use "
        "KILN_USER and KILN_PASSWORD");
  }
  return absl::StrCat(*home, "/.config/kiln/credentials.json");
}

absl::StatusOr<std::optional<SavedCredentials>> LoadCredentials(const std::string& path) {
  absl::StatusOr<std::string> text = base::ReadFile(path);
  if (absl::IsNotFound(text.status())) return std::nullopt;
  KILN_RETURN_IF_ERROR(text.status());
  auto bad = [&path](const absl::Status& why) {
    return absl::InvalidArgumentError(absl::StrCat("saved credentials in ", path, " are unusable (",
                                                   why.message(),
                                                   "); run 'kiln login' again or delete the file"));
  };
  absl::StatusOr<base::Json> json = base::ParseJson(*text);
  if (!json.ok()) return bad(json.status());
  SavedCredentials creds;
  absl::StatusOr<std::string> url = base::GetString(*json, "url");
  if (!url.ok()) return bad(url.status());
  absl::StatusOr<std::string> token = base::GetString(*json, "token");
  if (!token.ok()) return bad(token.status());
  absl::StatusOr<std::string> user = base::GetStringOr(*json, "user", "");
  if (!user.ok()) return bad(user.status());
  creds.url = NormalizeUrl(*url);
  creds.token = *token;
  creds.user = *user;
  return creds;
}

absl::Status SaveCredentials(const std::string& path, const SavedCredentials& creds) {
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    KILN_RETURN_IF_ERROR(base::MakeDirs(path.substr(0, slash), 0700));
  }
  base::Json json = {{"url", creds.url}, {"user", creds.user}, {"token", creds.token}};
  return base::WriteFileAtomically(path, base::DumpJson(json, 2) + "\n", 0600);
}

absl::Status RemoveCredentials(const std::string& path) {
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return base::ErrnoStatus("remove " + path, errno);
  }
  return absl::OkStatus();
}

std::string NormalizeUrl(std::string_view url) {
  std::string out(absl::StripAsciiWhitespace(absl::string_view(url.data(), url.size())));
  if (!absl::StrContains(out, "://")) out = "http://" + out;
  while (!out.empty() && out.back() == '/') out.pop_back();
  return out;
}

absl::StatusOr<Connection> ResolveConnection(const Invocation& inv) {
  std::optional<SavedCredentials> saved;
  absl::StatusOr<std::string> path = CredentialsPath(inv);
  if (path.ok()) {
    KILN_ASSIGN_OR_RETURN(saved, LoadCredentials(*path));
  }

  Connection conn;
  if (!inv.url_flag.empty()) {
    conn.url = NormalizeUrl(inv.url_flag);
  } else if (auto env_url = inv.GetEnv("KILN_URL")) {
    conn.url = NormalizeUrl(*env_url);
  } else if (saved) {
    conn.url = saved->url;
  } else {
    conn.url = std::string(kDefaultUrl);
  }

  std::optional<std::string> user = inv.GetEnv("KILN_USER");
  if (user) {
    std::optional<std::string> password = inv.GetEnv("KILN_PASSWORD");
    if (!password) {
      return absl::InvalidArgumentError(
          "KILN_USER is set but KILN_PASSWORD is not; set both, or unset KILN_USER and run "
          "'kiln login'");
    }
    conn.auth = AuthMethod::kBasic;
    conn.user = *user;
    conn.password = *password;
  } else if (saved && saved->url == conn.url) {
    conn.auth = AuthMethod::kToken;
    conn.user = saved->user;
    conn.token = saved->token;
  }
  return conn;
}

std::string EncodeQueryValue(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

ApiClient::ApiClient(Connection connection, std::unique_ptr<net::HttpClient> http)
    : connection_(std::move(connection)), http_(std::move(http)) {}

ApiClient::~ApiClient() = default;

absl::StatusOr<std::unique_ptr<ApiClient>> ApiClient::Create(Connection connection) {
  absl::StatusOr<std::unique_ptr<net::HttpClient>> http =
      net::HttpClient::Create(connection.url, net::HttpClientOptions{});
  if (!http.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot use Kiln URL \"", connection.url,
                                                   "\": ", http.status().message(),
                                                   "; fix --url or KILN_URL"));
  }
  switch (connection.auth) {
    case AuthMethod::kBasic:
      (*http)->SetBasicAuth(connection.user, connection.password);
      break;
    case AuthMethod::kToken:
      (*http)->SetBearerToken(connection.token);
      break;
    case AuthMethod::kNone:
      break;
  }
  return std::unique_ptr<ApiClient>(new ApiClient(std::move(connection), *std::move(http)));
}

absl::Status ApiClient::TransportError(const absl::Status& status) const {
  std::string reason = absl::AsciiStrToLower(status.message());
  if (absl::StrContains(reason, "refused")) {
    reason = "connection refused";
  } else if (status.code() == absl::StatusCode::kDeadlineExceeded ||
             absl::StrContains(reason, "timed out") || absl::StrContains(reason, "timeout")) {
    reason = "timed out";
  } else if (absl::StrContains(reason, "resolve") || absl::StrContains(reason, "host not found")) {
    reason = "unknown host";
  } else {
    reason = std::string(status.message());
  }
  return absl::UnavailableError(absl::StrCat("cannot reach Kiln at ", connection_.url, " (", reason,
                                             "). Start one with 'kiln up' or set KILN_URL."));
}

absl::Status ApiClient::ErrorFromResponse(int http_status, std::string_view content_type,
                                          std::string body) const {
  net::HttpResponse response;
  response.status = http_status;
  response.content_type = std::string(content_type);
  response.body = std::move(body);
  absl::Status status = net::StatusFromHttpResponse(response);
  if (status.code() != absl::StatusCode::kUnauthenticated) return status;
  std::string message(status.message());
  // The master's own message may already say how to log in; do not say it twice.
  if (absl::StrContains(message, "kiln login")) return status;
  while (!message.empty() && (message.back() == '.' || message.back() == ' ')) message.pop_back();
  switch (connection_.auth) {
    case AuthMethod::kNone:
      return absl::UnauthenticatedError(absl::StrCat(
          message, ". Kiln at ", connection_.url,
          " needs credentials: set KILN_USER and KILN_PASSWORD, or run 'kiln login'."));
    case AuthMethod::kBasic:
      return absl::UnauthenticatedError(
          absl::StrCat(message, ". Check KILN_USER and KILN_PASSWORD (user \"", connection_.user,
                       "\"), or unset them and run 'kiln login'."));
    case AuthMethod::kToken:
      return absl::UnauthenticatedError(
          absl::StrCat(message, ". Your saved login for ", connection_.url,
                       " has expired or was revoked; run 'kiln login' again, or set KILN_USER "
                       "and KILN_PASSWORD."));
  }
  return status;
}

namespace {

absl::StatusOr<base::Json> ParseBody(const net::HttpResponse& response, std::string_view target) {
  if (response.body.empty()) return base::Json::object();
  absl::StatusOr<base::Json> json = base::ParseJson(response.body);
  if (!json.ok()) {
    return absl::InternalError(
        absl::StrCat("Kiln answered ", std::string(target),
                     " with a body that is not JSON: ", json.status().message()));
  }
  return *std::move(json);
}

}  // namespace

absl::StatusOr<base::Json> ApiClient::GetJson(std::string_view target) {
  absl::StatusOr<net::HttpResponse> response = http_->Get(target);
  if (!response.ok()) return TransportError(response.status());
  if (response->status / 100 != 2) {
    return ErrorFromResponse(response->status, response->content_type, response->body);
  }
  return ParseBody(*response, target);
}

absl::StatusOr<base::Json> ApiClient::PostJson(std::string_view target, const base::Json& body) {
  absl::StatusOr<net::HttpResponse> response =
      http_->Request("POST", target, base::DumpJson(body), "application/json");
  if (!response.ok()) return TransportError(response.status());
  if (response->status / 100 != 2) {
    return ErrorFromResponse(response->status, response->content_type, response->body);
  }
  return ParseBody(*response, target);
}

absl::StatusOr<base::Json> ApiClient::PatchJson(std::string_view target, const base::Json& body) {
  absl::StatusOr<net::HttpResponse> response =
      http_->Request("PATCH", target, base::DumpJson(body), "application/json");
  if (!response.ok()) return TransportError(response.status());
  if (response->status / 100 != 2) {
    return ErrorFromResponse(response->status, response->content_type, response->body);
  }
  return ParseBody(*response, target);
}

absl::StatusOr<base::Json> ApiClient::DeleteJson(std::string_view target) {
  absl::StatusOr<net::HttpResponse> response = http_->Request("DELETE", target);
  if (!response.ok()) return TransportError(response.status());
  if (response->status / 100 != 2) {
    return ErrorFromResponse(response->status, response->content_type, response->body);
  }
  return ParseBody(*response, target);
}

absl::StatusOr<base::Json> ApiClient::PostBytes(std::string_view target, std::string body,
                                                std::string_view content_type) {
  // Packages can be large; give the upload time to finish on a slow link.
  absl::StatusOr<net::HttpResponse> response = http_->Request(
      "POST", target, body, content_type, std::chrono::milliseconds(kUploadTimeoutMillis));
  if (!response.ok()) return TransportError(response.status());
  if (response->status / 100 != 2) {
    return ErrorFromResponse(response->status, response->content_type, response->body);
  }
  return ParseBody(*response, target);
}

absl::Status ApiClient::Stream(std::string_view target,
                               const std::function<bool(std::string_view)>& on_data,
                               int64_t idle_timeout_micros) {
  const std::chrono::milliseconds idle_timeout(std::max<int64_t>(idle_timeout_micros / 1000, 1));
  const int64_t start = base::MonotonicMicros();
  absl::StatusOr<net::HttpResponse> response =
      http_->Stream("GET", std::string(target), on_data, idle_timeout);
  if (!response.ok()) {
    // A quiet stream (the idle timeout) is not an outage; a connect timeout, which comes
    // much sooner, is.
    if (response.status().code() == absl::StatusCode::kDeadlineExceeded &&
        base::MonotonicMicros() - start >= idle_timeout_micros) {
      return absl::DeadlineExceededError(absl::StrCat("no data from Kiln at ", connection_.url,
                                                      " for ", idle_timeout_micros / 1'000'000,
                                                      " s"));
    }
    return TransportError(response.status());
  }
  if (response->status / 100 != 2) {
    return ErrorFromResponse(response->status, response->content_type, response->body);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ApiClient>> ConnectApi(const Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(Connection conn, ResolveConnection(inv));
  return ApiClient::Create(std::move(conn));
}

}  // namespace kiln::cli
