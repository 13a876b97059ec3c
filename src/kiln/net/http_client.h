// http_client.h
//
// Defines `HttpClient`, the blocking HTTP/1.1 client the CLI, the agent and tests use to
// talk to kilnd: one kept-alive connection to one server, with timeouts, one safe retry
// over a stale kept-alive connection, and streamed bodies for logs and long-polls.
// Beast stays in http_client.cc.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/net/http_types.h"

namespace kiln::net {

struct HttpClientOptions {
  std::chrono::milliseconds connect_timeout{5000};   // name resolution plus TCP connect
  std::chrono::milliseconds request_timeout{60000};  // default for Request: send + response
};

// One keep-alive connection to one server. Not thread-safe: use one per thread.
// Responses of any HTTP status are returned as values; turn them into a Status with
// StatusFromHttpResponse (http_status.h).
class HttpClient {
 public:
  // `base_url` is "http://host[:port][/prefix]" (port defaults to 80; IPv6 hosts in
  // brackets). Returns Unimplemented for https://, InvalidArgument for anything else that
  // is not such a URL. Does not connect yet.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<HttpClient>> Create(
      std::string base_url, HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Headers added to every request (e.g. Authorization). Replaces an earlier value of the
  // same (case-insensitive) name.
  void SetDefaultHeader(std::string name, std::string value);
  // Sets the Authorization default header.
  void SetBasicAuth(const std::string& user, const std::string& password);
  void SetBearerToken(const std::string& token);

  // Sends one request to base_url + `target` and blocks for the whole response. Any HTTP
  // status is a successful result here. Errors: Unavailable (with the URL) when the server
  // cannot be reached or the connection breaks, DeadlineExceeded when connecting takes
  // longer than connect_timeout or the exchange longer than `timeout` (default
  // request_timeout). Reconnects if the kept-alive connection was closed by the server,
  // and retries once only when a reused connection failed before any response byte.
  // Response bodies above 1 GiB fail with ResourceExhausted (use Stream for those).
  [[nodiscard]] absl::StatusOr<HttpResponse> Request(
      std::string_view method, std::string_view target, std::string_view body = "",
      std::string_view content_type = "application/json",
      std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  [[nodiscard]] absl::StatusOr<HttpResponse> Get(std::string_view target);
  [[nodiscard]] absl::StatusOr<HttpResponse> PostJson(std::string_view target,
                                                      const nlohmann::json& body);

  // Streams a response body: calls `on_data` with each piece as it arrives (chunked or
  // not). Stops early, closing the connection, when on_data returns false. Returns the
  // response status and headers with the body left empty for 2xx; for any other status
  // the (error) body is collected into the response instead (up to 1 MiB) and on_data is
  // not called. No overall timeout while data keeps flowing: DeadlineExceeded after
  // `idle_timeout` without a byte. Other errors as for Request.
  [[nodiscard]] absl::StatusOr<HttpResponse> Stream(
      std::string_view method, std::string_view target,
      std::function<bool(std::string_view)> on_data,
      std::chrono::milliseconds idle_timeout = std::chrono::minutes(10));

  // The URL given to Create, without a trailing '/'.
  const std::string& base_url() const { return base_url_; }

 private:
  struct Connection;
  struct Endpoint {
    std::string host;         // without brackets
    std::string port;         // decimal
    std::string host_header;  // as sent in Host:
    std::string path_prefix;  // "" or "/prefix"
  };
  HttpClient(std::string base_url, Endpoint endpoint, HttpClientOptions options);
  // Opens a fresh connection; `what` ("GET http://...") prefixes error messages.
  [[nodiscard]] absl::Status Connect(const std::string& what);

  std::string base_url_;
  Endpoint endpoint_;
  HttpClientOptions options_;
  std::vector<std::pair<std::string, std::string>> default_headers_;
  std::unique_ptr<Connection> connection_;
};

}  // namespace kiln::net
