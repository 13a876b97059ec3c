// http_status.h
//
// The one place where `absl::Status` and HTTP status codes are mapped onto each other:
// the server turns a handler's Status into an error response here, and the client turns
// an error response back into a Status here. Error bodies have one shape everywhere:
//   {"error": {"code": "INVALID_ARGUMENT", "message": "..."}}
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "absl/status/status.h"
#include "kiln/net/http_types.h"

namespace kiln::net {

// InvalidArgument/OutOfRange 400, Unauthenticated 401, PermissionDenied 403, NotFound 404,
// AlreadyExists/FailedPrecondition/Aborted 409, ResourceExhausted 429, Unimplemented 501,
// Unavailable 503, DeadlineExceeded 504, anything else 500. A status made by
// `WithHttpStatus` maps to the HTTP status attached to it instead.
int HttpStatusFromStatus(const absl::Status& status);

// Returns `status` carrying an explicit HTTP status (400..599) that `HttpStatusFromStatus`
// prefers over the code-based mapping; e.g. 413 for a ResourceExhausted body-size error or
// 405 for a wrong method. Other values are ignored (the status is returned unchanged).
[[nodiscard]] absl::Status WithHttpStatus(absl::Status status, int http_status);

// ResourceExhausted with `message`, answered as 413 Payload Too Large.
[[nodiscard]] absl::Status PayloadTooLargeError(std::string_view message);

// The error response for a non-OK `status`: the mapped HTTP status and the JSON error body.
// Adds `WWW-Authenticate: Basic realm="kiln"` on 401. An OK status (a caller bug) gives 500.
HttpResponse ErrorResponse(const absl::Status& status);

// `body` serialized as an application/json response with `status`. Never throws: invalid
// UTF-8 in strings is replaced.
HttpResponse JsonResponse(int status, const nlohmann::json& body);

// OK for 2xx. Otherwise the code named by the error body's "code" (falling back to one
// derived from the HTTP status) with the body's "message" (falling back to the body text,
// truncated). The message says "HTTP <status>" when it had to fall back.
[[nodiscard]] absl::Status StatusFromHttpResponse(const HttpResponse& response);

}  // namespace kiln::net
