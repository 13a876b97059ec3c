// http_server_internal.h
//
// The conversion from a Beast-parsed request header to `HttpRequest`, shared by the server
// and by fuzz/http_request_fuzz.cc so the fuzzer drives exactly the code the server runs.
// Internal to kiln/net: it exposes Beast types.
#pragma once

#include <boost/beast/http/message.hpp>

#include "absl/status/status.h"
#include "kiln/net/http_types.h"

namespace kiln::net::internal {

// Fills method, target, path, query and headers (names lower-cased) of `request` from
// `header`. Returns InvalidArgument when the target is not a well-formed origin-form path
// (see ParseRequestTarget); `request` may then be partly filled.
[[nodiscard]] absl::Status FillRequestFromHeader(const boost::beast::http::request_header<>& header,
                                                 HttpRequest* request);

}  // namespace kiln::net::internal
