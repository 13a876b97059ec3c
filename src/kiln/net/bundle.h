// bundle.h
//
// A bundle carries several HTTP requests to one server in one request body, and their
// responses back in one response body, in the same order. The master bundles the
// predictions it has queued for a replica when the replica is busy (HttpForwarder), so
// the replica reads, decodes and batches them together: one exchange instead of N, and
// one forward for the lot. A request travels with its target, content type, body and the
// few headers of its own (KServe's Inference-Header-Content-Length); the bundle's headers
// (the replica's secret) stand for every request in it. A response travels with its
// status, content type, extra headers and body.
//
// Wire format (all integers unsigned 32-bit little-endian), content type kBundleContentType:
//   request:  repeated { target_len, target, content_type_len, content_type, headers, body_len,
//   body } response: repeated { status, content_type_len, content_type, headers, body_len, body }
//   headers:  count, then count times { name_len, name, value_len, value }
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/net/http_types.h"

namespace kiln::net {

inline constexpr std::string_view kBundleContentType = "application/x-kiln-bundle";
// Most requests in one bundle, and headers in one item; more are refused by the decoder.
inline constexpr size_t kMaxBundleItems = 4096;
inline constexpr size_t kMaxBundleItemHeaders = 64;

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct BundledRequest {
  std::string target;  // "/v2/models/m/infer?x=1": path and query, as sent alone
  std::string content_type;
  HeaderList headers;  // names lower-cased, as in HttpRequest
  std::string body;
};

// Appends one request to a bundle body being built.
void AppendBundledRequest(std::string& bundle, std::string_view target,
                          std::string_view content_type, const HeaderList& headers,
                          std::string_view body);
// The requests of a bundle body. InvalidArgument naming the item and what is wrong: a
// length running past the end, an empty target, a header name that is not an HTTP token
// or a value with CR, LF or NUL, more than kMaxBundleItemHeaders headers in an item or
// kMaxBundleItems items, or an empty bundle.
absl::StatusOr<std::vector<BundledRequest>> DecodeBundleRequest(std::string_view bundle);

// A response bundle: one item per response, in order (status, content type, `headers`
// and body).
std::string EncodeBundleResponse(const std::vector<HttpResponse>& responses);
// Its responses, header names lower-cased (as HttpForwarder gives them); InvalidArgument
// unless it holds exactly `expected` well-formed items with statuses 100-599.
absl::StatusOr<std::vector<HttpResponse>> DecodeBundleResponse(std::string_view bundle,
                                                               size_t expected);

}  // namespace kiln::net
