// connection.h
//
// How `kiln` finds and talks to a Kiln master: resolving the URL and credentials
// (--url, KILN_URL, KILN_USER/KILN_PASSWORD, the token `kiln login` saved), the
// credentials file, and `ApiClient`, which turns transport failures and API error bodies
// into Status messages that tell the user what to do next.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/cli/invocation.h"

namespace kiln::net {
class HttpClient;
}

namespace kiln::cli {

inline constexpr std::string_view kDefaultUrl = "http://127.0.0.1:8470";

// What `kiln login` stores in ~/.config/kiln/credentials.json (mode 0600).
struct SavedCredentials {
  std::string url;
  std::string user;
  std::string token;
};

// "$HOME/.config/kiln/credentials.json". FailedPrecondition if HOME is unset.
absl::StatusOr<std::string> CredentialsPath(const Invocation& inv);

// The saved credentials, nullopt when the file does not exist. InvalidArgument (naming
// the file and saying to log in again) when it is not what `SaveCredentials` writes.
absl::StatusOr<std::optional<SavedCredentials>> LoadCredentials(const std::string& path);

// Writes `creds` atomically with mode 0600, creating the folder (0700) if needed.
absl::Status SaveCredentials(const std::string& path, const SavedCredentials& creds);

// Deletes the file; OK if it did not exist.
absl::Status RemoveCredentials(const std::string& path);

// Adds "http://" when no scheme is given and drops trailing slashes, so URLs compare.
std::string NormalizeUrl(std::string_view url);

enum class AuthMethod { kNone, kBasic, kToken };

// Where to connect and as whom.
struct Connection {
  std::string url;
  AuthMethod auth = AuthMethod::kNone;
  std::string user;      // kBasic, and kToken when known
  std::string password;  // kBasic
  std::string token;     // kToken
};

// Resolves the connection of `inv`. URL: --url, then KILN_URL, then the saved login's
// URL, then http://127.0.0.1:8470. Credentials: KILN_USER + KILN_PASSWORD win; then the
// saved token, but only when it was issued by the same URL (a token is never sent to
// another server); otherwise none, and the server's 401 explains what to do.
// InvalidArgument if KILN_USER is set without KILN_PASSWORD.
absl::StatusOr<Connection> ResolveConnection(const Invocation& inv);

// The CLI's client of the native REST API (docs/api.md). Requests block. Errors:
// Unavailable "cannot reach Kiln at URL (...)" when the master cannot be reached; the
// status in the error body otherwise, with a hint on how to log in for 401s. Not
// thread-safe.
class ApiClient {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ApiClient>> Create(Connection connection);
  ~ApiClient();

  const std::string& url() const { return connection_.url; }

  // GET `target` ("/api/v1/jobs/7"); the parsed JSON body of a 2xx answer.
  [[nodiscard]] absl::StatusOr<base::Json> GetJson(std::string_view target);
  // POST `body` as JSON; the parsed JSON answer.
  [[nodiscard]] absl::StatusOr<base::Json> PostJson(std::string_view target,
                                                    const base::Json& body);
  // PATCH `body` as JSON; the parsed JSON answer.
  [[nodiscard]] absl::StatusOr<base::Json> PatchJson(std::string_view target,
                                                     const base::Json& body);
  // DELETE `target`; the parsed JSON answer.
  [[nodiscard]] absl::StatusOr<base::Json> DeleteJson(std::string_view target);
  // POST raw bytes with `content_type`; the parsed JSON answer.
  [[nodiscard]] absl::StatusOr<base::Json> PostBytes(std::string_view target, std::string body,
                                                     std::string_view content_type);
  // GET `target` as a chunked stream, calling `on_data` with each piece of the body until
  // the server ends it (OK) or `on_data` returns false (OK). Errors as above;
  // DeadlineExceeded when nothing arrived for `idle_timeout_micros`.
  [[nodiscard]] absl::Status Stream(std::string_view target,
                                    const std::function<bool(std::string_view)>& on_data,
                                    int64_t idle_timeout_micros);

 private:
  ApiClient(Connection connection, std::unique_ptr<net::HttpClient> http);

  absl::Status TransportError(const absl::Status& status) const;
  absl::Status ErrorFromResponse(int http_status, std::string_view content_type,
                                 std::string body) const;

  Connection connection_;
  std::unique_ptr<net::HttpClient> http_;
};

// Resolves the connection of `inv` and makes a client for it.
[[nodiscard]] absl::StatusOr<std::unique_ptr<ApiClient>> ConnectApi(const Invocation& inv);

// `text` percent-encoded for a query value.
std::string EncodeQueryValue(std::string_view text);

}  // namespace kiln::cli
