// http_types.h
//
// Defines `HttpRequest` and `HttpResponse`, the plain values every REST handler sees.
// They carry no Beast or Asio types, so handlers (src/kiln/api) and their tests compile
// without the networking headers. The server fills requests; handlers fill responses.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::net {

// One request as a handler sees it. A value type; not synchronized.
struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // raw request target, e.g. "/api/v1/jobs?state=RUNNING"
  std::string path;    // percent-decoded path, no query
  std::vector<std::pair<std::string, std::string>> query;    // decoded, in order
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::map<std::string, std::string> path_params;  // filled by Router from "{name}" segments
  std::string remote_address;                      // "127.0.0.1"

  // First header with this (case-insensitive) name, or "".
  std::string Header(std::string_view name) const;
  // First query value for `name`, or nullopt. QueryValues returns all (for repeated keys).
  std::optional<std::string> Query(std::string_view name) const;
  std::vector<std::string> QueryValues(std::string_view name) const;
};

// One response. `body` is sent as is with `content_type`; `headers` are extra header
// fields (Content-Type, Content-Length and Server are set by the server itself).
struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers

  // First header in `headers` with this (case-insensitive) name, or "". Useful on the
  // client side, where `headers` holds every response header with lower-cased names.
  std::string Header(std::string_view name) const;
};

// ASCII case-insensitive equality, as HTTP header names compare.
bool EqualsIgnoreAsciiCase(std::string_view a, std::string_view b);

}  // namespace kiln::net
