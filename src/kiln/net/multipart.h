// multipart.h
//
// A parser for `multipart/form-data` request bodies (RFC 7578 over RFC 2046), the form in
// which WMLA clients upload a model (`file`) together with JSON fields (`data`). Pure and
// binary-safe: parts are views into the body, never copied, so a 512 MiB upload costs no
// second copy; every malformed input is an InvalidArgument saying what is wrong. Driven by
// fuzz/multipart_fuzz.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/net/http_types.h"

namespace kiln::net {

// One part of a form. The views point into the body given to ParseMultipart and are valid
// as long as it is.
struct MultipartPart {
  std::string name;                     // Content-Disposition's `name`
  std::optional<std::string> filename;  // its `filename` (or decoded `filename*`), if any
  std::string content_type;             // the part's Content-Type, "" when absent
  std::string_view body;
};

struct MultipartLimits {
  size_t max_parts = 256;
  // Headers of one part together (a browser sends about 150 bytes).
  size_t max_header_bytes = 16 << 10;
};

// The boundary of a `multipart/form-data; boundary=...` Content-Type (media type and
// parameter name case-insensitive, the value optionally quoted). InvalidArgument when the
// type is not multipart/form-data, or the boundary is missing, empty, longer than the
// RFC's 70 characters, ends in a space or holds a character outside printable ASCII
// (more lenient than RFC 2046's list, which some clients overstep harmlessly).
[[nodiscard]] absl::StatusOr<std::string> MultipartBoundary(std::string_view content_type);

// Splits `body` at `boundary`. The preamble before the first delimiter and the epilogue
// after the closing one are ignored; each part needs a Content-Disposition of type
// form-data with a name. Line ends in a part's headers may be CRLF or LF; the delimiter
// before each boundary must be CRLF, as RFC 2046 requires. InvalidArgument when the
// first boundary is missing, a part is not terminated (the body was cut short), a part
// lacks its name, or a limit is exceeded; the message names the part.
[[nodiscard]] absl::StatusOr<std::vector<MultipartPart>> ParseMultipart(
    std::string_view body, std::string_view boundary, const MultipartLimits& limits = {});

// Both of the above for a request: boundary from its Content-Type, parts of its body.
[[nodiscard]] absl::StatusOr<std::vector<MultipartPart>> ParseMultipartRequest(
    const HttpRequest& request, const MultipartLimits& limits = {});

// The first part called `name`, or nullptr.
const MultipartPart* FindPart(const std::vector<MultipartPart>& parts, std::string_view name);

}  // namespace kiln::net
