// multipart_fuzz.cc
//
// Feeds arbitrary bytes to the multipart/form-data parser the way an upload reaches it:
// the input's first line is the Content-Type header, the rest is the body. Nothing may
// crash or hang, and what is accepted must make sense: every part has a name and its body
// lies inside the request body.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "kiln/net/multipart.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t nl = input.find('\n');
  if (nl == std::string_view::npos) return 0;
  std::string_view content_type = input.substr(0, nl);
  std::string_view body = input.substr(nl + 1);
  auto boundary = kiln::net::MultipartBoundary(content_type);
  if (!boundary.ok()) return 0;
  auto parts = kiln::net::ParseMultipart(body, *boundary, kiln::net::MultipartLimits{});
  if (!parts.ok()) return 0;
  for (const kiln::net::MultipartPart& part : *parts) {
    if (part.name.empty()) {
      std::fprintf(stderr, "multipart_fuzz: a part without a name was accepted\n");
      std::abort();
    }
    if (part.body.data() < body.data() ||
        part.body.data() + part.body.size() > body.data() + body.size()) {
      std::fprintf(stderr, "multipart_fuzz: a part's body lies outside the request body\n");
      std::abort();
    }
  }
  return 0;
}
