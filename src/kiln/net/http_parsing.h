// http_parsing.h
//
// Pure parsers for the parts of HTTP that come from outside the process and that Beast
// leaves to us: percent-encoding, query strings, request targets, Base64 and the
// Authorization header. No Beast or Asio here; each function is total over its input
// (bad input is a Status or nullopt, never a crash) and is driven by fuzz/http_request_fuzz.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/net/http_types.h"

namespace kiln::net {

// Decodes "%XX" escapes (and '+' as a space when `plus_as_space`, as in query strings).
// InvalidArgument for a truncated or non-hex escape, or an escaped NUL ("%00"), which no
// Kiln name or value may contain.
[[nodiscard]] absl::StatusOr<std::string> PercentDecode(std::string_view text,
                                                        bool plus_as_space = false);

// Encodes everything but RFC 3986 unreserved characters (A-Z a-z 0-9 - . _ ~) as "%XX".
// Safe for one path segment or one query key or value.
std::string PercentEncode(std::string_view text);

// Parses "a=1&b=x%20y&flag&b=2" into decoded pairs in order; a key without '=' has an
// empty value and empty pieces ("&&") are skipped. InvalidArgument on a bad escape.
[[nodiscard]] absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQuery(
    std::string_view query);

// Fills `request->path` and `request->query` from a raw origin-form target
// ("/jobs/7?x=1"). InvalidArgument when the target does not start with '/', has a bad
// escape, or its path contains an encoded '/' ("%2F"), a "." or ".." segment or an
// empty segment, none of which any Kiln route uses.
[[nodiscard]] absl::Status ParseRequestTarget(std::string_view target, HttpRequest* request);

// Standard Base64 (RFC 4648 section 4) with '=' padding.
std::string Base64Encode(std::string_view data);

// Decodes standard Base64; padding is optional. InvalidArgument on characters outside the
// alphabet, misplaced padding or an impossible length.
[[nodiscard]] absl::StatusOr<std::string> Base64Decode(std::string_view text);

// Parses an Authorization header value "Basic <base64(user:password)>" (scheme
// case-insensitive). Returns {user, password} (the password may contain ':'), or nullopt
// when the scheme is not Basic, the Base64 is malformed, there is no ':', or the user
// name is empty.
std::optional<std::pair<std::string, std::string>> ParseBasicAuthorization(
    std::string_view header_value);

// Parses "Bearer <token>" (scheme case-insensitive). Returns the token, or nullopt when
// the scheme is not Bearer or the token is empty or contains whitespace.
std::optional<std::string> ParseBearerAuthorization(std::string_view header_value);

}  // namespace kiln::net
