// bundle_fuzz.cc
//
// Feeds arbitrary bytes to the bundle decoders (net/bundle.h): the body of kiln-serve's
// POST /kiln/v1/bundle, and a replica's answer as the master reads it. Decoding must
// return a Status, never crash or read past the input; what decodes must encode back to
// bytes of the same length that decode to the same items (the format has one spelling per
// bundle but for the case of header names, which decoding lower-cases).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/net/bundle.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "bundle_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the side and, for answers, how many responses are expected.
  const uint8_t selector = data[0];
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((selector & 1) == 0) {
    auto requests = kiln::net::DecodeBundleRequest(bytes);
    if (!requests.ok()) return 0;
    Check(!requests->empty() && requests->size() <= kiln::net::kMaxBundleItems,
          "a decoded bundle's item count is out of bounds");
    auto encode = [](const std::vector<kiln::net::BundledRequest>& items) {
      std::string out;
      for (const auto& r : items) {
        kiln::net::AppendBundledRequest(out, r.target, r.content_type, r.headers, r.body);
      }
      return out;
    };
    for (const auto& r : *requests) {
      Check(!r.target.empty() && r.target.front() == '/', "a decoded target is not a path");
    }
    std::string again = encode(*requests);
    Check(again.size() == bytes.size(), "a decoded request bundle encodes to another length");
    auto redecoded = kiln::net::DecodeBundleRequest(again);
    Check(redecoded.ok() && encode(*redecoded) == again,
          "a re-encoded request bundle does not decode to the same items");
  } else {
    const size_t expected = selector >> 1;
    auto responses = kiln::net::DecodeBundleResponse(bytes, expected);
    if (!responses.ok()) return 0;
    Check(responses->size() == expected, "a decoded answer has the wrong count");
    for (const auto& r : *responses) Check(r.status >= 100 && r.status <= 599, "bad status");
    std::string again = kiln::net::EncodeBundleResponse(*responses);
    Check(again.size() == bytes.size(), "a decoded answer bundle encodes to another length");
    auto redecoded = kiln::net::DecodeBundleResponse(again, expected);
    Check(redecoded.ok() && kiln::net::EncodeBundleResponse(*redecoded) == again,
          "a re-encoded answer bundle does not decode to the same responses");
  }
  return 0;
}
