// http_server_internal.h
//
// The conversion from a Beast-parsed request header to `HttpRequest`, shared by the server
// and by fuzz/http_request_fuzz.cc so the fuzzer drives exactly the code the server runs,
// and the server's response head, exposed for its tests. Internal to kiln/net: it exposes
// Beast types.
#pragma once

#include <boost/beast/http/message.hpp>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kiln/net/http_types.h"

namespace kiln::net::internal {

// Fills method, target, path, query and headers (names lower-cased) of `request` from
// `header`. Returns InvalidArgument when the target is not a well-formed origin-form path
// (see ParseRequestTarget); `request` may then be partly filled.
[[nodiscard]] absl::Status FillRequestFromHeader(const boost::beast::http::request_header<>& header,
                                                 HttpRequest* request);

// The status line and header fields of a response, ending with the empty line:
// `Server: kiln`, the content type, `headers` (those that are not valid field lines, or that
// name a field the server owns, are dropped and logged), `Connection` as `keep_alive` and
// the HTTP version need, then the framing. With a `content_length` the body follows in
// full; without one it is chunked (HTTP/1.1) or ends with the connection (HTTP/1.0, which
// the caller must then close). A 204 or 304 answer carries no body and no Content-Length.
// Written by hand: Beast's serializer walks its field list through layers of buffer views,
// which cost about a tenth of the master's CPU per forwarded prediction.
std::string ResponseHead(unsigned version, unsigned status, std::string_view content_type,
                         const std::vector<std::pair<std::string, std::string>>& headers,
                         std::optional<size_t> content_length, bool keep_alive);

}  // namespace kiln::net::internal
