// http_server.cc
//
// One `Connection` per accepted socket, each on its own strand, so a connection's state
// needs no lock: everything that touches it runs on that strand, and Responders on other
// threads only post to it. A connection is a small state machine (see `Phase`).

#include "kiln/net/http_server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/base/logging.h"
#include "kiln/base/status.h"
#include "kiln/net/http_parsing.h"
#include "kiln/net/http_server_internal.h"
#include "kiln/net/http_status.h"

namespace kiln::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// Concrete executor types rather than Asio's default type-erased any_io_executor: every
// read, write and timer of a request copies the stream's executor, and the type-erased
// copies (heap traffic and indirect calls) were about a seventh of the master's CPU per
// forwarded prediction.
using ConnectionExecutor = asio::strand<asio::io_context::executor_type>;
using ConnectionSocket = tcp::socket::rebind_executor<ConnectionExecutor>::other;
using ConnectionStream = beast::basic_stream<tcp, ConnectionExecutor>;

namespace internal {

absl::Status FillRequestFromHeader(const http::request_header<>& header, HttpRequest* request) {
  request->method = std::string(header.method_string());
  request->target = std::string(header.target());
  request->headers.clear();
  for (const auto& field : header) {
    std::string name(field.name_string());
    std::transform(name.begin(), name.end(), name.begin(), [](char c) {
      return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    });
    request->headers.emplace_back(std::move(name), std::string(field.value()));
  }
  return ParseRequestTarget(request->target, request);
}

}  // namespace internal

namespace {

// A streaming handler may run ahead of a slow client by this much before Write fails.
constexpr size_t kMaxQueuedStreamBytes = 64 << 20;
// While a handler works, bytes of a pipelined next request are read (to notice a client
// that hangs up) only up to this bound.
constexpr size_t kMaxBufferedWhileHandling = 64 << 10;
// What one such read may take: a client's next request often arrives while the reply to
// the last one is being written, and a typical scoring request (784 floats in JSON, 7 KB)
// then comes in one read instead of two.
constexpr size_t kWatchReadBytes = 16 << 10;
// Before closing, read and drop what the client still sends (e.g. the body of a request
// refused with 413) so that the close does not turn into a reset that destroys our reply.
constexpr size_t kLingerMaxBytes = 8 << 20;
constexpr std::chrono::seconds kLingerTimeout{2};

bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsValidHeaderName(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), IsTokenChar);
}

bool IsValidHeaderValue(std::string_view value) {
  return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// Fields the server owns: a handler setting them would break message framing.
bool IsReservedHeader(std::string_view name) {
  for (std::string_view reserved :
       {"content-length", "transfer-encoding", "connection", "server", "content-type"}) {
    if (EqualsIgnoreAsciiCase(name, reserved)) return true;
  }
  return false;
}

// A final status a response may carry; anything else from a handler becomes 500.
unsigned ValidFinalStatus(int status) {
  if (status >= 200 && status <= 999) return static_cast<unsigned>(status);
  spdlog::error("HTTP handler replied with invalid status {}; sending 500", status);
  return 500;
}

bool IsHttpError(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category();
}

bool IsEndOfInput(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == http::error::partial_message ||
         ec == http::error::short_read || ec == asio::error::eof;
}

}  // namespace

namespace internal {

std::string ResponseHead(unsigned version, unsigned status, std::string_view content_type,
                         const std::vector<std::pair<std::string, std::string>>& headers,
                         std::optional<size_t> content_length, bool keep_alive) {
  std::string head;
  head.reserve(128 + content_type.size());
  // Beast's names for the codes it knows; the reason phrase is optional (RFC 9112 §4), and
  // an unknown code goes without one.
  boost::beast::string_view beast_reason = http::obsolete_reason(static_cast<http::status>(status));
  std::string_view reason(beast_reason.data(), beast_reason.size());
  if (reason == "<unknown-status>") reason = {};
  absl::StrAppend(&head, version >= 11 ? "HTTP/1.1 " : "HTTP/1.0 ", status, " ",
                  std::string(reason), "\r\nServer: kiln\r\n");
  if (!content_type.empty() && IsValidHeaderValue(content_type)) {
    absl::StrAppend(&head, "Content-Type: ", std::string(content_type), "\r\n");
  }
  for (const auto& [name, value] : headers) {
    if (!IsValidHeaderName(name) || !IsValidHeaderValue(value) || IsReservedHeader(name)) {
      spdlog::error("HTTP handler set invalid or reserved header '{}'; dropped",
                    absl::CEscape(name));
      continue;
    }
    absl::StrAppend(&head, name, ": ", value, "\r\n");
  }
  // HTTP/1.1 connections persist unless closed; HTTP/1.0 ones only when asked to.
  if (version >= 11 && !keep_alive) head += "Connection: close\r\n";
  if (version < 11 && keep_alive) head += "Connection: keep-alive\r\n";
  // RFC 9110 §8.6: no Content-Length on a 204, and on a 304 it would describe the
  // representation not sent.
  if (status != 204 && status != 304) {
    if (content_length) {
      absl::StrAppend(&head, "Content-Length: ", *content_length, "\r\n");
    } else if (version >= 11) {
      head += "Transfer-Encoding: chunked\r\n";
    }
  }
  head += "\r\n";
  return head;
}

}  // namespace internal

namespace {

class Connection;

// Server-wide state shared by the listener and every connection; it outlives the
// HttpServer object while connections still run.
struct ServerShared {
  ServerShared(HttpServerOptions o, Router r) : options(std::move(o)), router(std::move(r)) {}
  const HttpServerOptions options;
  const Router router;

  // std::mutex rather than absl::Mutex: Debian's prebuilt Abseil is not built for
  // ThreadSanitizer, which then cannot see absl::Mutex's synchronization.
  std::mutex mu;
  bool stopped ABSL_GUARDED_BY(mu) = false;
  std::unordered_map<const void*, std::weak_ptr<Connection>> connections ABSL_GUARDED_BY(mu);
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  enum class StreamEnd {
    kFinish,           // send the last chunk; the response is complete
    kAbortAfterFlush,  // send what was written, then close without the last chunk
    kAbortNow,         // close at once
  };

  Connection(ConnectionSocket socket, std::shared_ptr<ServerShared> server)
      : executor_(socket.get_executor()), stream_(std::move(socket)), server_(std::move(server)) {
    beast::error_code ec;
    tcp::endpoint remote = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_address_ = remote.address().to_string();
  }

  ~Connection() {
    std::lock_guard<std::mutex> lock(server_->mu);
    server_->connections.erase(this);
  }

  void Start() {
    asio::dispatch(executor_, [self = shared_from_this()] { self->ReadHeader(); });
  }

  // Any thread. Closes the connection now if it is between requests, else after the reply.
  void CloseIfIdle() {
    asio::post(executor_, [self = shared_from_this()] {
      self->stopping_ = true;
      if (self->phase_ == Phase::kReadingHeader) self->Close();
    });
  }

  // The reply side, called by ConnectionReplySink / ConnectionResponseStream from any
  // thread. `seq` names the request the reply belongs to.
  void PostReply(uint64_t seq, HttpResponse response) {
    asio::post(executor_, [self = shared_from_this(), seq, r = std::move(response)]() mutable {
      self->OnReply(seq, std::move(r));
    });
  }
  void PostStreamStart(uint64_t seq, int status, std::string content_type) {
    asio::post(executor_,
               [self = shared_from_this(), seq, status, ct = std::move(content_type)]() mutable {
                 self->OnStreamStart(seq, status, std::move(ct));
               });
  }
  // Returns false (and ends the stream) if the client is too far behind.
  bool PostStreamChunk(uint64_t seq, std::string chunk) {
    size_t size = chunk.size();
    if (queued_stream_bytes_.fetch_add(size) + size > kMaxQueuedStreamBytes) {
      queued_stream_bytes_.fetch_sub(size);
      spdlog::warn("HTTP client of {} is more than {} bytes behind a stream; closing",
                   remote_address_, kMaxQueuedStreamBytes);
      PostStreamEnd(seq, StreamEnd::kAbortNow);
      return false;
    }
    asio::post(executor_, [self = shared_from_this(), seq, c = std::move(chunk)]() mutable {
      self->OnStreamChunk(seq, std::move(c));
    });
    return true;
  }
  void PostStreamEnd(uint64_t seq, StreamEnd end) {
    asio::post(executor_, [self = shared_from_this(), seq, end] { self->OnStreamEnd(seq, end); });
  }
  bool client_gone() const { return client_gone_.load(); }

 private:
  enum class Phase {
    kReadingHeader,    // waiting for (the rest of) a request header; idle between requests
    kReadingBody,      // header accepted, reading the body (after 100 Continue if asked)
    kHandling,         // the handler has the request; waiting for its reply
    kWriting,          // writing a complete response
    kStreaming,        // writing a chunked response as the handler produces it
    kWaitingForWatch,  // reply done; waiting for the disconnect watch read to stop
    kLingering,        // sent FIN after the last reply; draining input before the close
    kClosed,
  };

  void ReadHeader() {
    if (phase_ == Phase::kClosed) return;
    if (stopping_ || client_gone_) {
      Close();
      return;
    }
    phase_ = Phase::kReadingHeader;
    request_ = HttpRequest();
    route_ = nullptr;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(
        std::min<size_t>(server_->options.max_header_bytes, std::numeric_limits<uint32_t>::max())));
    // No limit yet: the route's limit is applied once the header says which route it is.
    // (Not boost::none: Beast 1.74 compares `len > none` as true and refuses every body
    // that has a Content-Length.)
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    stream_.expires_after(server_->options.idle_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    if (phase_ == Phase::kClosed) return;
    if (ec) {
      keep_alive_ = false;
      if (ec == http::error::header_limit) {
        WriteResponse(ErrorResponse(WithHttpStatus(
            absl::InvalidArgumentError(absl::StrCat("request header is larger than the limit of ",
                                                    server_->options.max_header_bytes, " bytes")),
            431)));
      } else if (IsHttpError(ec) && !IsEndOfInput(ec)) {
        WriteResponse(ErrorResponse(
            absl::InvalidArgumentError(absl::StrCat("malformed HTTP request: ", ec.message()))));
      } else {
        Close();  // the client went away or timed out: nobody to answer
      }
      return;
    }
    const http::request_header<>& header = parser_->get();
    version_ = header.version();
    keep_alive_ = parser_->keep_alive();
    absl::Status filled = internal::FillRequestFromHeader(header, &request_);
    request_.remote_address = remote_address_;
    if (!filled.ok()) {
      ReplyBeforeBody(ErrorResponse(filled));
      return;
    }
    bool method_not_allowed = false;
    route_ = server_->router.Match(request_, &method_not_allowed);
    if (route_ == nullptr) {
      if (method_not_allowed) {
        std::vector<std::string> allowed = server_->router.AllowedMethods(request_.path);
        std::string allowed_list = absl::StrJoin(allowed, ", ");
        HttpResponse response =
            ErrorResponse(WithHttpStatus(absl::InvalidArgumentError(absl::StrCat(
                                             "method ", request_.method, " is not allowed for ",
                                             request_.path, " (allowed: ", allowed_list, ")")),
                                         405));
        response.headers.emplace_back("Allow", allowed_list);
        ReplyBeforeBody(std::move(response));
      } else {
        ReplyBeforeBody(ErrorResponse(absl::NotFoundError(
            absl::StrCat("no route for ", request_.method, " ", request_.path))));
      }
      return;
    }
    const size_t limit = route_->options.max_body_bytes;
    if (boost::optional<std::uint64_t> length = parser_->content_length();
        length.has_value() && *length > limit) {
      ReplyBeforeBody(ErrorResponse(PayloadTooLargeError(
          absl::StrCat("request body of ", *length, " bytes is larger than the limit of ", limit,
                       " bytes for ", route_->method, " ", route_->pattern))));
      return;
    }
    parser_->body_limit(static_cast<std::uint64_t>(limit));
    if (parser_->is_done()) {
      Dispatch();
      return;
    }
    phase_ = Phase::kReadingBody;
    if (version_ >= 11 && EqualsIgnoreAsciiCase(request_.Header("expect"), "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      stream_.expires_after(server_->options.idle_timeout);
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = shared_from_this()](beast::error_code ec, size_t) {
                          if (self->phase_ == Phase::kClosed) return;
                          if (ec) {
                            self->Close();
                            return;
                          }
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    stream_.expires_after(server_->options.idle_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(beast::error_code ec) {
    if (phase_ == Phase::kClosed) return;
    if (!ec) {
      Dispatch();
      return;
    }
    keep_alive_ = false;
    if (ec == http::error::body_limit) {
      WriteResponse(ErrorResponse(PayloadTooLargeError(
          absl::StrCat("request body is larger than the limit of ", route_->options.max_body_bytes,
                       " bytes for ", route_->method, " ", route_->pattern))));
    } else if (IsHttpError(ec) && !IsEndOfInput(ec)) {
      WriteResponse(ErrorResponse(
          absl::InvalidArgumentError(absl::StrCat("malformed HTTP request body: ", ec.message()))));
    } else {
      Close();
    }
  }

  // Answers before the body was read: the connection can only be reused when there was no
  // body left to skip.
  void ReplyBeforeBody(HttpResponse response) {
    if (!parser_->is_done()) keep_alive_ = false;
    WriteResponse(std::move(response));
  }

  void Dispatch() {
    request_.body = std::move(parser_->get().body());
    phase_ = Phase::kHandling;
    ++seq_;
    // A handler may take as long as it likes (long-polls); the watch read notices a client
    // that gives up meanwhile.
    stream_.expires_never();
    StartWatch();
    Responder responder(std::make_shared<ConnectionReplySink>(shared_from_this(), seq_));
    try {
      route_->handler(request_, responder);
    } catch (const std::exception& e) {
      spdlog::error("HTTP handler for {} {} threw: {}", request_.method, request_.path, e.what());
      if (!responder.replied()) {
        responder.Send(ErrorResponse(absl::InternalError("internal error in the handler")));
      }
    } catch (...) {
      spdlog::error("HTTP handler for {} {} threw a non-exception", request_.method, request_.path);
      if (!responder.replied()) {
        responder.Send(ErrorResponse(absl::InternalError("internal error in the handler")));
      }
    }
  }

  void OnReply(uint64_t seq, HttpResponse response) {
    if (phase_ != Phase::kHandling || seq != seq_) return;
    WriteResponse(std::move(response));
  }

  void WriteResponse(HttpResponse response) {
    unsigned status = ValidFinalStatus(response.status);
    // 204 and 304 have no body by definition.
    if (status == 204 || status == 304) response.body.clear();
    keep_alive_ = keep_alive_ && !stopping_ && !client_gone_;
    // Kept here until written: one write at a time, in Phase::kWriting.
    write_head_ = internal::ResponseHead(version_, status, response.content_type, response.headers,
                                         response.body.size(), keep_alive_);
    write_body_ = std::move(response.body);
    phase_ = Phase::kWriting;
    stream_.expires_after(server_->options.idle_timeout);
    std::array<asio::const_buffer, 2> buffers{asio::buffer(write_head_), asio::buffer(write_body_)};
    asio::async_write(stream_, buffers, [self = shared_from_this()](beast::error_code ec, size_t) {
      // Freed now, not at the next reply: a body may be a model download of hundreds of MB,
      // and the connection may then idle for long.
      self->write_head_ = std::string();
      self->write_body_ = std::string();
      if (self->phase_ == Phase::kClosed) return;
      if (ec) {
        self->Close();
        return;
      }
      self->ResponseComplete();
    });
  }

  void OnStreamStart(uint64_t seq, int status, std::string content_type) {
    if (phase_ != Phase::kHandling || seq != seq_) return;
    keep_alive_ = keep_alive_ && !stopping_ && !client_gone_;
    // Chunked for HTTP/1.1; an HTTP/1.0 body without a length ends with the connection.
    if (version_ < 11) keep_alive_ = false;
    std::string head = internal::ResponseHead(version_, ValidFinalStatus(status), content_type, {},
                                              std::nullopt, keep_alive_);
    phase_ = Phase::kStreaming;
    stream_finishing_ = false;
    stream_queue_.push_back({std::move(head), 0});
    PumpStream();
  }

  void OnStreamChunk(uint64_t seq, std::string chunk) {
    if (phase_ != Phase::kStreaming || seq != seq_ || stream_finishing_) {
      queued_stream_bytes_.fetch_sub(chunk.size());
      return;
    }
    size_t size = chunk.size();
    if (version_ >= 11) {
      chunk = absl::StrCat(absl::Hex(size), "\r\n", chunk, "\r\n");
    }
    stream_queue_.push_back({std::move(chunk), size});
    PumpStream();
  }

  void OnStreamEnd(uint64_t seq, StreamEnd end) {
    if (phase_ != Phase::kStreaming || seq != seq_ || stream_finishing_) return;
    if (end == StreamEnd::kAbortNow) {
      Close();
      return;
    }
    if (end == StreamEnd::kFinish && version_ >= 11) stream_queue_.push_back({"0\r\n\r\n", 0});
    // Without the last chunk the client can tell the body is incomplete; for HTTP/1.0
    // (no chunks) it cannot, which is a limit of that protocol.
    if (end == StreamEnd::kAbortAfterFlush) keep_alive_ = false;
    stream_finishing_ = true;
    PumpStream();
  }

  void PumpStream() {
    if (phase_ != Phase::kStreaming || stream_writing_) return;
    if (stream_queue_.empty()) {
      if (stream_finishing_) ResponseComplete();  // closes if the stream was aborted
      return;
    }
    stream_writing_ = true;
    stream_.expires_after(server_->options.idle_timeout);
    const std::string& data = stream_queue_.front().first;
    asio::async_write(
        stream_, asio::buffer(data),
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnStreamWritten(ec); });
  }

  void OnStreamWritten(beast::error_code ec) {
    stream_writing_ = false;
    if (!stream_queue_.empty()) {
      queued_stream_bytes_.fetch_sub(stream_queue_.front().second);
      stream_queue_.pop_front();
    }
    if (phase_ == Phase::kClosed) return;
    if (ec) {
      Close();
      return;
    }
    PumpStream();
  }

  // The reply is fully written: read the next request, or close.
  void ResponseComplete() {
    if (!keep_alive_ || stopping_ || client_gone_) {
      LingerAndClose();
      return;
    }
    if (watch_pending_) {
      // The next header read needs the buffer the watch read is filling: stop it first.
      phase_ = Phase::kWaitingForWatch;
      beast::error_code ec;
      stream_.socket().cancel(ec);
      return;
    }
    ReadHeader();
  }

  // Reads (into `buffer_`) while a handler works or a reply is written, so that a client
  // that hangs up is noticed (Responder::ClientGone) and bytes of a pipelined request are
  // kept for the next ReadHeader. In kLingering it drains and drops input instead.
  void StartWatch() {
    if (watch_pending_ || phase_ == Phase::kClosed) return;
    if (phase_ == Phase::kLingering) {
      buffer_.clear();
    } else if (buffer_.size() >= kMaxBufferedWhileHandling) {
      return;
    }
    watch_pending_ = true;
    stream_.async_read_some(
        buffer_.prepare(kWatchReadBytes),
        [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWatch(ec, n); });
  }

  void OnWatch(beast::error_code ec, size_t n) {
    watch_pending_ = false;
    buffer_.commit(n);
    switch (phase_) {
      case Phase::kClosed:
        return;
      case Phase::kLingering:
        lingered_bytes_ += n;
        // operation_aborted: the watch begun before the linger was cancelled to re-arm it
        // with the linger timeout.
        if ((ec && ec != asio::error::operation_aborted) || lingered_bytes_ > kLingerMaxBytes) {
          Close();
        } else {
          StartWatch();
        }
        return;
      case Phase::kWaitingForWatch:
        if (ec && ec != asio::error::operation_aborted) {
          Close();
        } else {
          ReadHeader();
        }
        return;
      default:
        if (ec) {
          // Our own reply path decides what happens next; it sees client_gone_.
          if (ec != asio::error::operation_aborted) {
            client_gone_ = true;
            keep_alive_ = false;
          }
          return;
        }
        StartWatch();
        return;
    }
  }

  void LingerAndClose() {
    phase_ = Phase::kLingering;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) {
      Close();
      return;
    }
    stream_.expires_after(kLingerTimeout);
    if (watch_pending_) {
      stream_.socket().cancel(ec);  // OnWatch restarts it under the linger timeout
    } else {
      StartWatch();
    }
  }

  void Close() {
    if (phase_ == Phase::kClosed) return;
    phase_ = Phase::kClosed;
    client_gone_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  // The Responder's view of this connection for request `seq`.
  class ConnectionReplySink : public ReplySink {
   public:
    ConnectionReplySink(std::shared_ptr<Connection> connection, uint64_t seq)
        : connection_(std::move(connection)), seq_(seq) {}
    void Send(HttpResponse response) override { connection_->PostReply(seq_, std::move(response)); }
    std::shared_ptr<ResponseStream> StartStream(int status, std::string content_type) override {
      auto stream = std::make_shared<ConnectionResponseStream>(connection_, seq_);
      connection_->PostStreamStart(seq_, status, std::move(content_type));
      return stream;
    }
    bool ClientGone() const override { return connection_->client_gone(); }

   private:
    std::shared_ptr<Connection> connection_;
    uint64_t seq_;
  };

  class ConnectionResponseStream : public ResponseStream {
   public:
    ConnectionResponseStream(std::shared_ptr<Connection> connection, uint64_t seq)
        : connection_(std::move(connection)), seq_(seq) {}
    ~ConnectionResponseStream() override {
      if (!finished_.exchange(true)) {
        connection_->PostStreamEnd(seq_, Connection::StreamEnd::kAbortAfterFlush);
      }
    }
    bool Write(std::string chunk) override {
      if (closed()) return false;
      if (chunk.empty()) return true;
      if (!connection_->PostStreamChunk(seq_, std::move(chunk))) {
        finished_ = true;
        return false;
      }
      return true;
    }
    void Finish() override {
      if (!finished_.exchange(true))
        connection_->PostStreamEnd(seq_, Connection::StreamEnd::kFinish);
    }
    bool closed() const override { return finished_.load() || connection_->client_gone(); }

   private:
    std::shared_ptr<Connection> connection_;
    uint64_t seq_;
    std::atomic<bool> finished_{false};
  };

  // Immutable after construction; read from any thread to post onto the strand.
  const ConnectionExecutor executor_;
  std::string remote_address_;

  // Everything below is touched only on the strand, except the atomics.
  ConnectionStream stream_;
  std::shared_ptr<ServerShared> server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpRequest request_;
  std::string write_head_;  // the response being written
  std::string write_body_;
  const Route* route_ = nullptr;
  Phase phase_ = Phase::kReadingHeader;
  unsigned version_ = 11;
  bool keep_alive_ = false;
  bool stopping_ = false;
  uint64_t seq_ = 0;
  bool watch_pending_ = false;
  size_t lingered_bytes_ = 0;
  // Chunked output: (bytes to write, payload size counted in queued_stream_bytes_).
  std::deque<std::pair<std::string, size_t>> stream_queue_;
  bool stream_writing_ = false;
  bool stream_finishing_ = false;

  std::atomic<bool> client_gone_{false};
  std::atomic<size_t> queued_stream_bytes_{0};
};

}  // namespace

// Owns the listening socket. Accepting runs on the acceptor's strand; `mu` serializes the
// acceptor calls so that Stop can close it from any thread.
struct HttpServer::Listener : public std::enable_shared_from_this<HttpServer::Listener> {
  Listener(asio::io_context& io_context, std::shared_ptr<ServerShared> server_shared)
      : io(io_context),
        acceptor(asio::make_strand(io_context)),
        retry_timer(acceptor.get_executor()),
        shared(std::move(server_shared)) {}

  void Accept() {
    std::lock_guard<std::mutex> lock(mu);
    if (!acceptor.is_open()) return;
    acceptor.async_accept(
        asio::make_strand(io),
        [self = shared_from_this()](beast::error_code ec, ConnectionSocket socket) {
          self->OnAccept(ec, std::move(socket));
        });
  }

  void OnAccept(beast::error_code ec, ConnectionSocket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      // Typically out of file descriptors: back off instead of spinning.
      spdlog::warn("HTTP accept failed: {}", ec.message());
      retry_timer.expires_after(std::chrono::milliseconds(100));
      retry_timer.async_wait([self = shared_from_this()](beast::error_code wait_ec) {
        if (!wait_ec) self->Accept();
      });
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    auto connection = std::make_shared<Connection>(std::move(socket), shared);
    {
      std::lock_guard<std::mutex> lock(shared->mu);
      if (shared->stopped) return;  // `connection` closes its socket as it goes
      shared->connections[connection.get()] = connection;
    }
    connection->Start();
    Accept();
  }

  void Stop() {
    std::vector<std::weak_ptr<Connection>> connections;
    {
      std::lock_guard<std::mutex> lock(shared->mu);
      if (shared->stopped) return;
      shared->stopped = true;
      for (const auto& [key, connection] : shared->connections) connections.push_back(connection);
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      beast::error_code ec;
      acceptor.close(ec);
    }
    for (const auto& weak : connections) {
      if (std::shared_ptr<Connection> connection = weak.lock()) connection->CloseIfIdle();
    }
  }

  asio::io_context& io;
  std::mutex mu;
  tcp::acceptor acceptor ABSL_GUARDED_BY(mu);
  asio::steady_timer retry_timer;  // used on the acceptor's strand only
  std::shared_ptr<ServerShared> shared;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(asio::io_context& io,
                                                               HttpServerOptions options,
                                                               Router router) {
  beast::error_code ec;
  asio::ip::address address = asio::ip::make_address(options.address, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad listen address '", options.address, "': ", ec.message()));
  }
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad listen port ", options.port));
  }
  if (options.idle_timeout.count() <= 0) {
    return absl::InvalidArgumentError("idle_timeout must be positive");
  }
  tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
  std::string where = absl::StrCat(options.address, ":", options.port);
  auto shared = std::make_shared<ServerShared>(std::move(options), std::move(router));
  auto listener = std::make_shared<Listener>(io, shared);
  int port = 0;
  {
    std::lock_guard<std::mutex> lock(listener->mu);
    tcp::acceptor& acceptor = listener->acceptor;
    acceptor.open(endpoint.protocol(), ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot open a socket: ", ec.message()));
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    acceptor.bind(endpoint, ec);
    if (ec == asio::error::address_in_use || ec == boost::system::errc::address_in_use) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", where, ": the port is already in use"));
    }
    if (ec == boost::system::errc::address_not_available) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot listen on ", where, ": the address is not an address of this machine"));
    }
    if (ec) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", ec.message()));
    }
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", ec.message()));
    }
    port = acceptor.local_endpoint(ec).port();
    if (ec) return absl::UnavailableError(absl::StrCat("cannot listen: ", ec.message()));
  }
  listener->Accept();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(listener), port));
}

HttpServer::HttpServer(std::shared_ptr<Listener> listener, int port)
    : listener_(std::move(listener)), port_(port) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() { listener_->Stop(); }

}  // namespace kiln::net
