// http_client.cc
//
// The client drives Beast's asynchronous operations on a private io_context and runs it
// until they finish: that is how Beast gives blocking calls timeouts (tcp_stream's
// expiry closes the socket when it passes).

#include "kiln/net/http_client.h"

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kiln/base/json.h"
#include "kiln/base/status.h"
#include "kiln/net/http_parsing.h"

namespace kiln::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::uint32_t kMaxResponseHeaderBytes = 64 << 10;
constexpr std::uint64_t kMaxResponseBodyBytes = std::uint64_t{1} << 30;
constexpr size_t kMaxStreamErrorBodyBytes = 1 << 20;
constexpr size_t kStreamPieceBytes = 64 << 10;

bool IsValidToken(std::string_view text) {
  if (text.empty()) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

bool HasControlOrSpace(std::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) <= ' ' || c == 0x7f; });
}

bool HasLineBreak(std::string_view text) {
  return text.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

std::string LowerAscii(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  });
  return out;
}

HttpResponse ResponseFromHeader(const http::response_header<>& header) {
  HttpResponse response;
  response.status = static_cast<int>(header.result_int());
  response.content_type = std::string(header[http::field::content_type]);
  for (const auto& field : header) {
    beast::string_view name = field.name_string();
    response.headers.emplace_back(LowerAscii(std::string_view(name.data(), name.size())),
                                  std::string(field.value()));
  }
  return response;
}

bool IsTimeout(const beast::error_code& ec) { return ec == beast::error::timeout; }

}  // namespace

// The socket and its private io_context. `connected` is false until a connect succeeds and
// again after any failure or a response that ends the connection.
struct HttpClient::Connection {
  asio::io_context io;
  beast::tcp_stream stream{io};
  beast::flat_buffer buffer;
  bool connected = false;

  // Runs the io_context until every started operation has completed.
  void Run() {
    io.restart();
    io.run();
  }

  void Close() {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream.close();
    buffer.clear();
    connected = false;
  }

  // True when an idle kept-alive connection can no longer carry a request: the server has
  // closed it (EOF or reset), or sent bytes nobody asked for.
  bool LooksDead() {
    tcp::socket& socket = stream.socket();
    beast::error_code ec;
    socket.non_blocking(true, ec);
    if (ec) return true;
    char byte;
    size_t n = socket.receive(asio::buffer(&byte, 1), tcp::socket::message_peek, ec);
    beast::error_code restore_ec;
    socket.non_blocking(false, restore_ec);
    // would_block: nothing to read, the connection is alive and idle. Anything else (EOF
    // as n == 0, stray bytes as n > 0, an error) means it must not be reused.
    (void)n;
    return ec != asio::error::would_block;
  }
};

HttpClient::HttpClient(std::string base_url, Endpoint endpoint, HttpClientOptions options)
    : base_url_(std::move(base_url)),
      endpoint_(std::move(endpoint)),
      options_(options),
      connection_(std::make_unique<Connection>()) {}

HttpClient::~HttpClient() {
  if (connection_->connected) connection_->Close();
}

absl::StatusOr<std::unique_ptr<HttpClient>> HttpClient::Create(std::string base_url,
                                                               HttpClientOptions options) {
  std::string_view url = base_url;
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad server URL '", base_url, "': expected http://host:port"));
  }
  std::string scheme = LowerAscii(url.substr(0, scheme_end));
  if (scheme == "https") {
    return absl::UnimplementedError(absl::StrCat(
        "bad server URL '", base_url,
        "': https is not supported by Kiln's client; use http:// (terminate TLS in a proxy)"));
  }
  if (scheme != "http") {
    return absl::InvalidArgumentError(
        absl::StrCat("bad server URL '", base_url, "': the scheme must be http://"));
  }
  std::string_view rest = url.substr(scheme_end + 3);
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad server URL '", base_url, "': ", std::string(why)));
  };
  if (authority.empty()) return invalid("no host");
  if (authority.find('@') != std::string_view::npos) return invalid("user info is not supported");
  if (HasControlOrSpace(url)) return invalid("it contains spaces or control characters");
  if (path.find_first_of("?#") != std::string_view::npos) {
    return invalid("it must not have a query or fragment");
  }
  Endpoint endpoint;
  std::string_view host;
  std::string_view port;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return invalid("unterminated '[' in the host");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return invalid("unexpected text after ']'");
      port = after.substr(1);
    } else {
      port = "80";
    }
  } else {
    size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    port = colon == std::string_view::npos ? std::string_view("80") : authority.substr(colon + 1);
  }
  if (host.empty()) return invalid("no host");
  int port_number = 0;
  auto [port_end, port_ec] = std::from_chars(port.data(), port.data() + port.size(), port_number);
  if (port.empty() || port_ec != std::errc() || port_end != port.data() + port.size() ||
      port_number < 1 || port_number > 65535) {
    return invalid("the port must be a number from 1 to 65535");
  }
  endpoint.host = std::string(host);
  endpoint.port = std::string(port);
  endpoint.host_header = std::string(authority);
  endpoint.path_prefix = std::string(path);
  std::string normalized(url);
  while (!normalized.empty() && normalized.back() == '/') normalized.pop_back();
  return std::unique_ptr<HttpClient>(
      new HttpClient(std::move(normalized), std::move(endpoint), options));
}

void HttpClient::SetDefaultHeader(std::string name, std::string value) {
  for (auto& [existing, existing_value] : default_headers_) {
    if (EqualsIgnoreAsciiCase(existing, name)) {
      existing_value = std::move(value);
      return;
    }
  }
  default_headers_.emplace_back(std::move(name), std::move(value));
}

void HttpClient::SetBasicAuth(const std::string& user, const std::string& password) {
  SetDefaultHeader("Authorization", "Basic " + Base64Encode(user + ":" + password));
}

void HttpClient::SetBearerToken(const std::string& token) {
  SetDefaultHeader("Authorization", "Bearer " + token);
}

namespace {

// `what` is "<METHOD> <url>".
absl::Status TransportError(const beast::error_code& ec, const std::string& what,
                            std::chrono::milliseconds timeout) {
  if (IsTimeout(ec)) {
    return absl::DeadlineExceededError(
        absl::StrCat(what, ": no answer within ", timeout.count(), " ms"));
  }
  return absl::UnavailableError(absl::StrCat(what, ": ", ec.message()));
}

// Validates `method` and `target`, and fills the start line and the headers every
// request carries (Host, User-Agent, the client's default headers). Shared by Request and
// Stream, whose bodies differ. `*what` gets "METHOD http://host/path" for messages.
template <typename Body>
absl::Status PrepareRequest(std::string_view method, std::string_view target,
                            const std::string& path_prefix, const std::string& host_header,
                            const std::vector<std::pair<std::string, std::string>>& defaults,
                            http::request<Body>* request, std::string* what) {
  if (!IsValidToken(method)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad HTTP method '", std::string(method.substr(0, 100)), "'"));
  }
  std::string path = path_prefix;
  if (target.empty() || target.front() != '/') path += '/';
  path += target;
  *what = absl::StrCat(std::string(method), " http://", host_header, path);
  if (HasControlOrSpace(target)) {
    return absl::InvalidArgumentError(absl::StrCat("bad request target for ", *what,
                                                   ": it contains spaces or control characters"));
  }
  request->version(11);
  request->method_string(beast::string_view(method.data(), method.size()));
  request->target(path);
  request->set(http::field::host, host_header);
  request->set(http::field::user_agent, "kiln");
  for (const auto& [name, value] : defaults) {
    if (!IsValidToken(name) || HasLineBreak(value)) {
      return absl::InvalidArgumentError(absl::StrCat("bad default header '", name, "'"));
    }
    request->set(name, value);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HttpResponse> HttpClient::Request(std::string_view method, std::string_view target,
                                                 std::string_view body,
                                                 std::string_view content_type,
                                                 std::optional<std::chrono::milliseconds> timeout) {
  std::chrono::milliseconds deadline = timeout.value_or(options_.request_timeout);
  http::request<http::string_body> request;
  std::string what;
  KILN_RETURN_IF_ERROR(PrepareRequest(method, target, endpoint_.path_prefix, endpoint_.host_header,
                                      default_headers_, &request, &what));
  if (HasLineBreak(content_type)) return absl::InvalidArgumentError("bad content type");
  if (!body.empty() && !content_type.empty()) {
    request.set(http::field::content_type,
                beast::string_view(content_type.data(), content_type.size()));
  }
  request.body() = std::string(body);
  request.keep_alive(true);
  request.prepare_payload();

  Connection& c = *connection_;
  for (int attempt_number = 0;; ++attempt_number) {
    bool reused = c.connected && !c.LooksDead();
    if (!reused) {
      if (c.connected) c.Close();
      KILN_RETURN_IF_ERROR(Connect(what));
    }
    http::response_parser<http::string_body> parser;
    parser.header_limit(kMaxResponseHeaderBytes);
    parser.body_limit(kMaxResponseBodyBytes);
    // A response to HEAD announces a length but carries no body.
    parser.skip(request.method() == http::verb::head);
    bool write_done = false;
    bool read_done = false;
    beast::error_code write_ec;
    beast::error_code read_ec;
    c.stream.expires_after(deadline);
    // Reading while writing lets an early answer (413 before the whole body was sent) be
    // received even if the server then stops reading the body.
    http::async_write(c.stream, request, [&](beast::error_code ec, size_t) {
      write_ec = ec;
      write_done = true;
    });
    http::async_read(c.stream, c.buffer, parser, [&](beast::error_code ec, size_t) {
      read_ec = ec;
      read_done = true;
      if (!ec && !write_done) c.stream.socket().cancel(ec);
    });
    c.Run();
    bool request_fully_sent = write_done && !write_ec;
    if (!read_ec) {
      HttpResponse response = ResponseFromHeader(parser.get().base());
      response.body = std::move(parser.get().body());
      if (!request_fully_sent || !parser.get().keep_alive()) c.Close();
      return response;
    }
    bool got_response_bytes = parser.got_some();
    c.Close();
    if (read_ec == http::error::body_limit) {
      return absl::ResourceExhaustedError(
          absl::StrCat("response to ", what, " is larger than ", kMaxResponseBodyBytes, " bytes"));
    }
    beast::error_code ec = IsTimeout(write_ec) ? write_ec : read_ec;
    if (reused && !got_response_bytes && !IsTimeout(ec) && attempt_number == 0) continue;
    return TransportError(ec, what, deadline);
  }
}

absl::Status HttpClient::Connect(const std::string& what) {
  Connection& c = *connection_;
  beast::error_code ec;
  tcp::resolver::results_type endpoints;
  tcp::resolver resolver(c.io);
  // Name resolution is blocking (getaddrinfo); for the literal addresses and "localhost"
  // Kiln uses it is immediate.
  endpoints = resolver.resolve(endpoint_.host, endpoint_.port, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat(what, ": cannot resolve host '", endpoint_.host, "': ", ec.message()));
  }
  c.stream.expires_after(options_.connect_timeout);
  beast::error_code connect_ec;
  c.stream.async_connect(endpoints,
                         [&](beast::error_code e, const tcp::endpoint&) { connect_ec = e; });
  c.Run();
  if (connect_ec) {
    c.Close();
    if (IsTimeout(connect_ec)) {
      return absl::DeadlineExceededError(
          absl::StrCat(what, ": no connection within ", options_.connect_timeout.count(), " ms"));
    }
    return absl::UnavailableError(absl::StrCat(what, ": cannot connect: ", connect_ec.message()));
  }
  c.stream.socket().set_option(tcp::no_delay(true), ec);
  c.buffer.clear();
  c.connected = true;
  return absl::OkStatus();
}

absl::StatusOr<HttpResponse> HttpClient::Get(std::string_view target) {
  return Request("GET", target, "", "");
}

absl::StatusOr<HttpResponse> HttpClient::PostJson(std::string_view target,
                                                  const nlohmann::json& body) {
  return Request("POST", target, base::DumpJson(body), "application/json");
}

absl::StatusOr<HttpResponse> HttpClient::Stream(std::string_view method, std::string_view target,
                                                std::function<bool(std::string_view)> on_data,
                                                std::chrono::milliseconds idle_timeout) {
  http::request<http::empty_body> request;
  std::string what;
  KILN_RETURN_IF_ERROR(PrepareRequest(method, target, endpoint_.path_prefix, endpoint_.host_header,
                                      default_headers_, &request, &what));
  request.keep_alive(true);
  request.prepare_payload();

  Connection& c = *connection_;
  for (int attempt_number = 0;; ++attempt_number) {
    bool reused = c.connected && !c.LooksDead();
    if (!reused) {
      if (c.connected) c.Close();
      KILN_RETURN_IF_ERROR(Connect(what));
    }
    http::response_parser<http::buffer_body> parser;
    parser.header_limit(kMaxResponseHeaderBytes);
    // Not boost::none: Beast 1.74 treats an empty limit as exceeded by any Content-Length.
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    beast::error_code ec;
    c.stream.expires_after(idle_timeout);
    http::async_write(c.stream, request, [&](beast::error_code e, size_t) { ec = e; });
    c.Run();
    if (!ec) {
      c.stream.expires_after(idle_timeout);
      http::async_read_header(c.stream, c.buffer, parser,
                              [&](beast::error_code e, size_t) { ec = e; });
      c.Run();
    }
    if (ec) {
      bool got_response_bytes = parser.got_some();
      c.Close();
      if (reused && !got_response_bytes && !IsTimeout(ec) && attempt_number == 0) continue;
      return TransportError(ec, what, idle_timeout);
    }

    HttpResponse response = ResponseFromHeader(parser.get().base());
    const bool deliver = response.status >= 200 && response.status < 300;
    std::string piece(kStreamPieceBytes, '\0');
    while (!parser.is_done()) {
      parser.get().body().data = piece.data();
      parser.get().body().size = piece.size();
      c.stream.expires_after(idle_timeout);
      http::async_read_some(c.stream, c.buffer, parser,
                            [&](beast::error_code e, size_t) { ec = e; });
      c.Run();
      if (ec == http::error::need_buffer) ec = {};
      size_t n = piece.size() - parser.get().body().size;
      if (n > 0) {
        std::string_view data(piece.data(), n);
        if (deliver) {
          if (!on_data(data)) {
            c.Close();  // the rest of the body is unwanted; the connection cannot be reused
            return response;
          }
        } else if (response.body.size() < kMaxStreamErrorBodyBytes) {
          response.body.append(data.substr(0, kMaxStreamErrorBodyBytes - response.body.size()));
        }
      }
      if (ec) {
        c.Close();
        if (IsTimeout(ec)) {
          return absl::DeadlineExceededError(absl::StrCat(
              what, ": no data for ", idle_timeout.count(), " ms while streaming the response"));
        }
        return absl::UnavailableError(
            absl::StrCat(what, ": connection broke while streaming the response: ", ec.message()));
      }
    }
    if (!parser.get().keep_alive()) c.Close();
    return response;
  }
}

}  // namespace kiln::net
