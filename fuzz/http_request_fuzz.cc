// http_request_fuzz.cc
//
// Drives the server's request-parsing path with arbitrary bytes: Beast's request parser
// (with the server's header and body limits), the conversion to HttpRequest (target,
// percent-decoding, query), Router matching, and the Authorization parsers. Also checks
// that Base64 round-trips and that StatusFromHttpResponse takes any body.

#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "kiln/base/status.h"
#include "kiln/net/http_parsing.h"
#include "kiln/net/http_server.h"
#include "kiln/net/http_server_internal.h"
#include "kiln/net/http_status.h"

namespace {

namespace http = boost::beast::http;
using kiln::net::HttpRequest;
using kiln::net::Responder;

const kiln::net::Router& TestRouter() {
  static const kiln::net::Router* router = [] {
    auto* r = new kiln::net::Router();
    auto noop = [](HttpRequest&, Responder) {};
    r->Add("GET", "/api/v1/jobs", noop);
    r->Add("POST", "/api/v1/jobs", noop);
    r->Add("GET", "/api/v1/jobs/{id}", noop);
    r->Add("GET", "/api/v1/jobs/search", noop);
    r->Add("GET", "/api/v1/jobs/{id}/logs", noop);
    r->Add("DELETE", "/api/v1/{kind}/{id}", noop);
    r->Add("GET", "/", noop);
    return r;
  }();
  return *router;
}

void ParseAsServer(std::string_view data) {
  http::request_parser<http::string_body> parser;
  parser.header_limit(16 << 10);
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  parser.eager(true);
  boost::beast::error_code ec;
  bool routed = false;
  // Feed in two pieces to exercise the parser's incremental path like a socket would.
  size_t split = data.empty() ? 0 : static_cast<unsigned char>(data[0]) % (data.size() + 1);
  std::string_view pieces[2] = {data.substr(0, split), data.substr(split)};
  std::string pending;
  for (std::string_view piece : pieces) {
    pending.append(piece);
    while (!pending.empty() && !parser.is_done()) {
      size_t used = parser.put(boost::asio::buffer(pending.data(), pending.size()), ec);
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (ec) return;
      pending.erase(0, used);
      if (parser.is_header_done() && !routed) {
        routed = true;
        HttpRequest request;
        if (!kiln::net::internal::FillRequestFromHeader(parser.get().base(), &request).ok()) {
          return;
        }
        bool method_not_allowed = false;
        const kiln::net::Route* route = TestRouter().Match(request, &method_not_allowed);
        KILN_CHECK(route == nullptr || !method_not_allowed);
        if (route == nullptr && method_not_allowed) return;
        (void)TestRouter().AllowedMethods(request.path);
        std::string authorization = request.Header("authorization");
        (void)kiln::net::ParseBasicAuthorization(authorization);
        (void)kiln::net::ParseBearerAuthorization(authorization);
        parser.body_limit(1 << 20);
      }
      if (used == 0) break;
    }
  }
  if (parser.is_done()) (void)parser.get().body().size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);
  ParseAsServer(data);

  (void)kiln::net::ParseQuery(data);
  (void)kiln::net::ParseBasicAuthorization(data);
  absl::StatusOr<std::string> decoded = kiln::net::PercentDecode(data, /*plus_as_space=*/true);
  HttpRequest request;
  (void)kiln::net::ParseRequestTarget(data, &request);

  // Base64: encoding then decoding is the identity; decoding never crashes.
  absl::StatusOr<std::string> round_trip = kiln::net::Base64Decode(kiln::net::Base64Encode(data));
  KILN_CHECK(round_trip.ok() && *round_trip == data);
  absl::StatusOr<std::string> base64 = kiln::net::Base64Decode(data);
  if (base64.ok()) KILN_CHECK(kiln::net::Base64Decode(kiln::net::Base64Encode(*base64)).ok());

  // Percent-encoding round-trips too.
  absl::StatusOr<std::string> percent = kiln::net::PercentDecode(kiln::net::PercentEncode(data));
  KILN_CHECK(data.find('\0') != std::string_view::npos || (percent.ok() && *percent == data));

  kiln::net::HttpResponse response;
  response.status = size > 0 ? 100 + bytes[0] * 2 : 500;
  response.body = std::string(data);
  (void)kiln::net::StatusFromHttpResponse(response);
  return 0;
}
