// http_forwarder.cc
//
// Each shard is one io thread with its own pools, so a pool's state (idle connections,
// the open count, the waiting queue) is touched only on that thread and needs no lock.
// An exchange writes the request and reads the response at the same time, so an early
// answer (a 413 before the whole body was sent) is still received.

#include "kiln/net/http_forwarder.h"

#include <algorithm>
#include <array>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <future>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "kiln/base/logging.h"
#include "kiln/net/bundle.h"

namespace kiln::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint32_t kMaxResponseHeaderBytes = 64 << 10;
constexpr std::chrono::seconds kPeekAfterIdle{1};

std::string LowerAscii(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string EndpointKey(const std::string& host, int port) { return absl::StrCat(host, ":", port); }

// The request head is written as given, so nothing in it may end a line early.
bool SafeInHead(std::string_view text) {
  return text.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

absl::Status CheckHead(const ForwardRequest& request) {
  bool ok = !request.method.empty() && SafeInHead(request.method) &&
            request.method.find(' ') == std::string::npos && !request.target.empty() &&
            SafeInHead(request.target) && request.target.find(' ') == std::string::npos &&
            SafeInHead(request.content_type) && SafeInHead(request.bundle_target) &&
            request.bundle_target.find(' ') == std::string::npos;
  for (const auto* list : {&request.headers, &request.own_headers}) {
    for (const auto& [name, value] : *list) {
      ok = ok && !name.empty() && SafeInHead(name) &&
           name.find_first_of(" :") == std::string::npos && SafeInHead(value);
    }
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      "the request to forward has an empty or malformed method, target or header (a space, "
      "CR, LF or NUL where none may be)");
}

}  // namespace

// One Forward call, from the hand-over to its callback.
struct Pending {
  std::shared_ptr<const ForwardRequest> request;
  ForwardCallback done;
  Clock::time_point deadline;
  std::chrono::milliseconds timeout{0};
  std::string what;  // "POST http://host:port/target", for messages
  bool fresh_retry_used = false;
  bool finished = false;
  std::unique_ptr<asio::steady_timer> wait_timer;  // while queued for a connection

  void Finish(absl::StatusOr<HttpResponse> response, bool retryable) {
    if (finished) return;
    finished = true;
    if (wait_timer) wait_timer->cancel();
    ForwardCallback callback = std::move(done);
    callback(std::move(response), retryable);
  }
};

struct Pool;

struct Connection {
  explicit Connection(asio::io_context& io) : stream(io.get_executor()) {}
  // The io_context's own executor type, not Asio's type-erased default: its copies on
  // every operation would cost more than the rest of the exchange's bookkeeping.
  beast::basic_stream<tcp, asio::io_context::executor_type> stream;
  beast::flat_buffer buffer;
  Clock::time_point idle_since;

  void Close() {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream.close();
  }

  // True when an idle kept-alive connection can no longer carry a request: the server
  // closed it (EOF or reset) or sent bytes nobody asked for.
  bool LooksDead() {
    auto& socket = stream.socket();
    if (!socket.is_open()) return true;
    beast::error_code ec;
    socket.non_blocking(true, ec);
    if (ec) return true;
    char byte;
    socket.receive(asio::buffer(&byte, 1), tcp::socket::message_peek, ec);
    // would_block: nothing to read, the connection is alive and idle.
    return ec != asio::error::would_block;
  }
};

// Connections to one host:port on one shard.
struct Pool {
  std::string host;
  int port = 0;
  std::string host_header;
  std::vector<tcp::endpoint> endpoints;           // resolved once; empty until then
  std::vector<std::shared_ptr<Connection>> idle;  // most recently used last
  std::unordered_set<Connection*> busy;
  size_t open = 0;  // connecting + busy + idle
  std::deque<std::shared_ptr<Pending>> waiting;
  // Bundled requests waiting for the next bundle, and the bundles out.
  std::deque<std::shared_ptr<Pending>> bundle_queue;
  size_t bundles_in_flight = 0;
};

// The state of one request on one connection.
struct Exchange {
  std::shared_ptr<Pending> pending;
  std::shared_ptr<Connection> connection;
  std::shared_ptr<Pool> pool;
  bool reused = false;
  std::string head;  // request line and fields; the body is the ForwardRequest's
  std::optional<http::response_parser<http::string_body>> parser;
  bool write_done = false;
  beast::error_code write_ec;
};

struct HttpForwarder::Shard {
  explicit Shard(const HttpForwarderOptions& options)
      : options(options), work(asio::make_work_guard(io)), sweep_timer(io) {}

  const HttpForwarderOptions& options;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  asio::steady_timer sweep_timer;
  std::thread thread;
  bool stopping = false;
  // io thread only.
  std::unordered_map<std::string, std::shared_ptr<Pool>> pools;

  void Start() {
    ScheduleSweep();
    thread = std::thread([this] { io.run(); });
  }

  // Runs on the io thread.
  void Dispatch(const std::shared_ptr<Pool>& pool, const std::shared_ptr<Pending>& pending) {
    const ForwardRequest& request = *pending->request;
    if (!request.bundle_target.empty() && !stopping &&
        request.body.size() <= options.max_bundle_bytes) {
      pool->bundle_queue.push_back(pending);
      PumpBundles(pool);
      return;
    }
    if (stopping) {
      pending->Finish(absl::CancelledError("the forwarder is stopping"), false);
      return;
    }
    if (Clock::now() >= pending->deadline) {
      pending->Finish(absl::DeadlineExceededError(absl::StrCat(pending->what, ": no answer within ",
                                                               pending->timeout.count(), " ms")),
                      false);
      return;
    }
    while (!pool->idle.empty()) {
      std::shared_ptr<Connection> connection = std::move(pool->idle.back());
      pool->idle.pop_back();
      // A connection back in the pool for under a second is taken as it is (no peek, which
      // costs a system call per request): if its server closed it meanwhile, the send
      // fails before any answer and goes again on a fresh connection (see OnRead).
      Clock::duration idle = Clock::now() - connection->idle_since;
      if (idle > options.idle_timeout || (idle > kPeekAfterIdle && connection->LooksDead())) {
        connection->Close();
        --pool->open;
        continue;
      }
      Send(pool, std::move(connection), pending, /*reused=*/true);
      return;
    }
    if (pool->open < options.max_connections_per_endpoint) {
      ++pool->open;
      Connect(pool, pending);
      return;
    }
    // At the cap: wait for a connection to come free, but not past the deadline.
    pending->wait_timer = std::make_unique<asio::steady_timer>(io, pending->deadline);
    std::weak_ptr<Pending> weak = pending;
    std::weak_ptr<Pool> weak_pool = pool;
    pending->wait_timer->async_wait([weak, weak_pool](const beast::error_code& ec) {
      if (ec) return;  // cancelled: it got a connection or finished
      auto p = weak.lock();
      auto pl = weak_pool.lock();
      if (!p || p->finished) return;
      if (pl) {
        auto& q = pl->waiting;
        q.erase(std::remove(q.begin(), q.end(), p), q.end());
      }
      p->Finish(absl::DeadlineExceededError(absl::StrCat(
                    p->what, ": no connection came free within ", p->timeout.count(), " ms")),
                false);
    });
    pool->waiting.push_back(pending);
  }

  // Sends bundles while fewer than max_bundles_in_flight are out: each takes the queued
  // requests (oldest first) that share the first one's bundle_target and headers.
  void PumpBundles(const std::shared_ptr<Pool>& pool) {
    auto& queue = pool->bundle_queue;
    auto depth = [&] {
      size_t asked = queue.front()->request->bundles_in_flight;
      return asked > 0 ? asked : options.max_bundles_in_flight;
    };
    while (!stopping && !queue.empty() && pool->bundles_in_flight < depth()) {
      auto members = std::make_shared<std::vector<std::shared_ptr<Pending>>>();
      auto bundle = std::make_shared<ForwardRequest>();
      Clock::time_point deadline = Clock::time_point::max();
      const auto now = Clock::now();
      for (auto it = queue.begin();
           it != queue.end() && members->size() < options.max_requests_per_bundle;) {
        const std::shared_ptr<Pending>& p = *it;
        const ForwardRequest& r = *p->request;
        if (p->finished) {
          it = queue.erase(it);
          continue;
        }
        if (now >= p->deadline) {
          p->Finish(absl::DeadlineExceededError(
                        absl::StrCat(p->what, ": no answer within ", p->timeout.count(), " ms")),
                    false);
          it = queue.erase(it);
          continue;
        }
        if (!members->empty() &&
            (r.bundle_target != bundle->target || r.headers != bundle->headers ||
             bundle->body.size() + r.body.size() > options.max_bundle_bytes)) {
          ++it;
          continue;
        }
        if (members->empty()) {
          bundle->target = r.bundle_target;
          bundle->headers = r.headers;
        }
        AppendBundledRequest(bundle->body, r.target, r.content_type, r.own_headers, r.body);
        deadline = std::min(deadline, p->deadline);
        members->push_back(p);
        it = queue.erase(it);
      }
      if (members->empty()) continue;  // all were finished or expired

      bundle->content_type = std::string(kBundleContentType);
      auto sent = std::make_shared<Pending>();
      sent->what = absl::StrCat("POST http://", pool->host_header, bundle->target, " (",
                                members->size(), " bundled requests)");
      sent->request = std::move(bundle);
      sent->deadline = deadline;
      sent->timeout = members->front()->timeout;
      sent->done = [this, pool, members](absl::StatusOr<HttpResponse> response, bool retryable) {
        --pool->bundles_in_flight;
        Unbundle(*members, std::move(response), retryable);
        PumpBundles(pool);
      };
      ++pool->bundles_in_flight;
      Dispatch(pool, sent);
    }
  }

  // Hands each bundled request its own answer, or the bundle's error.
  static void Unbundle(std::vector<std::shared_ptr<Pending>>& members,
                       absl::StatusOr<HttpResponse> response, bool retryable) {
    if (!response.ok()) {
      for (auto& m : members) m->Finish(response.status(), retryable);
      return;
    }
    if (response->status != 200 || response->content_type != kBundleContentType) {
      // Refused as a whole (a wrong secret, a draining replica): the same answer to all.
      for (auto& m : members) m->Finish(*response, false);
      return;
    }
    absl::StatusOr<std::vector<HttpResponse>> answers =
        DecodeBundleResponse(response->body, members.size());
    if (!answers.ok()) {
      for (auto& m : members) {
        m->Finish(absl::InternalError(absl::StrCat(m->what, ": ", answers.status().message())),
                  false);
      }
      return;
    }
    for (size_t i = 0; i < members.size(); ++i) members[i]->Finish(std::move((*answers)[i]), false);
  }

  // A connection slot came free (or a connection did): serve the oldest waiter.
  void Pump(const std::shared_ptr<Pool>& pool) {
    while (!pool->waiting.empty() &&
           (!pool->idle.empty() || pool->open < options.max_connections_per_endpoint)) {
      std::shared_ptr<Pending> next = std::move(pool->waiting.front());
      pool->waiting.pop_front();
      if (next->finished) continue;
      if (next->wait_timer) next->wait_timer->cancel();
      Dispatch(pool, next);
    }
  }

  absl::Status Resolve(Pool& pool) {
    if (!pool.endpoints.empty()) return absl::OkStatus();
    beast::error_code ec;
    asio::ip::address address = asio::ip::make_address(pool.host, ec);
    if (!ec) {
      pool.endpoints.emplace_back(address, static_cast<unsigned short>(pool.port));
      return absl::OkStatus();
    }
    // A name: resolved once for the pool (blocking, but replicas announce addresses, so
    // this is the rare case).
    tcp::resolver resolver(io);
    auto results = resolver.resolve(pool.host, std::to_string(pool.port), ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot resolve host '", pool.host, "': ", ec.message()));
    }
    for (const auto& entry : results) pool.endpoints.push_back(entry.endpoint());
    return absl::OkStatus();
  }

  // Opens a connection (the slot is already counted in pool->open) and sends on it.
  void Connect(const std::shared_ptr<Pool>& pool, const std::shared_ptr<Pending>& pending) {
    if (absl::Status resolved = Resolve(*pool); !resolved.ok()) {
      --pool->open;
      pending->Finish(absl::UnavailableError(absl::StrCat(pending->what, ": ", resolved.message())),
                      true);
      Pump(pool);
      return;
    }
    auto connection = std::make_shared<Connection>(io);
    auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(pending->deadline - Clock::now());
    connection->stream.expires_after(std::min(remaining, options.connect_timeout));
    pool->busy.insert(connection.get());
    connection->stream.async_connect(
        pool->endpoints,
        [this, pool, pending, connection](const beast::error_code& ec, const tcp::endpoint&) {
          pool->busy.erase(connection.get());
          if (ec) {
            connection->Close();
            --pool->open;
            if (stopping) {
              pending->Finish(absl::CancelledError("the forwarder is stopping"), false);
            } else if (ec == beast::error::timeout) {
              pending->Finish(
                  absl::UnavailableError(absl::StrCat(pending->what, ": no connection within ",
                                                      options.connect_timeout.count(), " ms")),
                  Clock::now() < pending->deadline);
            } else {
              pending->Finish(absl::UnavailableError(
                                  absl::StrCat(pending->what, ": cannot connect: ", ec.message())),
                              true);
            }
            Pump(pool);
            return;
          }
          beast::error_code option_ec;
          connection->stream.socket().set_option(tcp::no_delay(true), option_ec);
          Send(pool, connection, pending, /*reused=*/false);
        });
  }

  void Send(const std::shared_ptr<Pool>& pool, std::shared_ptr<Connection> connection,
            const std::shared_ptr<Pending>& pending, bool reused) {
    auto exchange = std::make_shared<Exchange>();
    exchange->pending = pending;
    exchange->connection = std::move(connection);
    exchange->pool = pool;
    exchange->reused = reused;
    // The request head is written by hand: Beast's serializer walks its field list through
    // layers of buffer views, which cost more than the rest of the hand-over.
    const ForwardRequest& in = *pending->request;
    std::string& head = exchange->head;
    head.reserve(160 + in.target.size());
    absl::StrAppend(&head, in.method, " ", in.target, " HTTP/1.1\r\nHost: ", pool->host_header,
                    "\r\n");
    if (!in.body.empty() && !in.content_type.empty()) {
      absl::StrAppend(&head, "Content-Type: ", in.content_type, "\r\n");
    }
    for (const auto& [name, value] : in.headers) absl::StrAppend(&head, name, ": ", value, "\r\n");
    for (const auto& [name, value] : in.own_headers) {
      absl::StrAppend(&head, name, ": ", value, "\r\n");
    }
    if (!in.body.empty() || in.method == "POST" || in.method == "PUT" || in.method == "PATCH") {
      absl::StrAppend(&head, "Content-Length: ", in.body.size(), "\r\n");
    }
    head += "\r\n";
    exchange->parser.emplace();
    exchange->parser->header_limit(kMaxResponseHeaderBytes);
    exchange->parser->body_limit(options.max_response_bytes);
    exchange->parser->skip(in.method == "HEAD");

    Connection& c = *exchange->connection;
    pool->busy.insert(&c);
    c.stream.expires_at(pending->deadline);
    std::array<asio::const_buffer, 2> buffers{asio::buffer(exchange->head),
                                              asio::buffer(in.body.data(), in.body.size())};
    asio::async_write(c.stream, buffers, [exchange](const beast::error_code& ec, size_t) {
      exchange->write_done = true;
      exchange->write_ec = ec;
    });
    http::async_read(
        c.stream, c.buffer, *exchange->parser,
        [this, exchange](const beast::error_code& ec, size_t) { OnRead(exchange, ec); });
  }

  void OnRead(const std::shared_ptr<Exchange>& exchange, beast::error_code ec) {
    Pool& pool = *exchange->pool;
    Connection& c = *exchange->connection;
    pool.busy.erase(&c);
    const std::shared_ptr<Pending>& pending = exchange->pending;
    if (!ec) {
      auto& message = exchange->parser->get();
      HttpResponse response;
      response.status = static_cast<int>(message.result_int());
      response.content_type = std::string(message[http::field::content_type]);
      for (const auto& field : message) {
        beast::string_view name = field.name_string();
        response.headers.emplace_back(LowerAscii(std::string_view(name.data(), name.size())),
                                      std::string(field.value()));
      }
      response.body = std::move(message.body());
      bool reusable =
          exchange->write_done && !exchange->write_ec && message.keep_alive() && !stopping;
      if (reusable) {
        c.stream.expires_never();
        c.idle_since = Clock::now();
        pool.idle.push_back(exchange->connection);
      } else {
        // The write may still be pending (an early answer): closing aborts it.
        c.Close();
        --pool.open;
      }
      pending->Finish(std::move(response), false);
      Pump(exchange->pool);
      return;
    }
    bool got_response_bytes = exchange->parser->got_some();
    c.Close();
    --pool.open;
    if (stopping) {
      pending->Finish(absl::CancelledError("the forwarder is stopping"), false);
    } else if (ec == beast::error::timeout) {
      pending->Finish(absl::DeadlineExceededError(absl::StrCat(pending->what, ": no answer within ",
                                                               pending->timeout.count(), " ms")),
                      false);
    } else if (ec == http::error::body_limit) {
      pending->Finish(absl::ResourceExhaustedError(
                          absl::StrCat("response to ", pending->what, " is larger than ",
                                       options.max_response_bytes, " bytes")),
                      false);
    } else if (!got_response_bytes && exchange->reused && !pending->fresh_retry_used) {
      // A pooled connection the server had closed just as we sent: try once more on a new
      // connection to the same server before calling it unreachable.
      pending->fresh_retry_used = true;
      ++pool.open;
      Connect(exchange->pool, pending);
      return;
    } else {
      pending->Finish(absl::UnavailableError(absl::StrCat(
                          pending->what, ": ",
                          got_response_bytes ? "connection broke during the response: "
                                             : "connection broke before any response: ",
                          ec.message())),
                      !got_response_bytes);
    }
    Pump(exchange->pool);
  }

  void ScheduleSweep() {
    sweep_timer.expires_after(std::max(options.idle_timeout / 2, std::chrono::milliseconds(100)));
    sweep_timer.async_wait([this](const beast::error_code& ec) {
      if (ec || stopping) return;
      Sweep();
      ScheduleSweep();
    });
  }

  // Closes idle connections past idle_timeout or closed by their server, and forgets pools
  // with nothing open or waiting (replicas that went away).
  void Sweep() {
    auto now = Clock::now();
    for (auto it = pools.begin(); it != pools.end();) {
      Pool& pool = *it->second;
      auto& idle = pool.idle;
      for (auto c = idle.begin(); c != idle.end();) {
        if (now - (*c)->idle_since > options.idle_timeout || (*c)->LooksDead()) {
          (*c)->Close();
          --pool.open;
          c = idle.erase(c);
        } else {
          ++c;
        }
      }
      if (pool.open == 0 && pool.waiting.empty() && pool.bundle_queue.empty() &&
          pool.bundles_in_flight == 0) {
        it = pools.erase(it);
      } else {
        ++it;
      }
    }
  }

  // On the io thread: fail what waits, close every socket (pending operations then end
  // with errors and report Cancelled) and let io.run return once they have.
  void BeginStop() {
    stopping = true;
    sweep_timer.cancel();
    for (auto& [key, pool] : pools) {
      auto waiting = std::move(pool->waiting);
      pool->waiting.clear();
      for (auto& p : waiting) p->Finish(absl::CancelledError("the forwarder is stopping"), false);
      auto queued = std::move(pool->bundle_queue);
      pool->bundle_queue.clear();
      for (auto& p : queued) p->Finish(absl::CancelledError("the forwarder is stopping"), false);
      for (auto& c : pool->idle) c->Close();
      pool->open -= pool->idle.size();
      pool->idle.clear();
      for (Connection* c : pool->busy) c->Close();
    }
    work.reset();
  }
};

HttpForwarder::HttpForwarder(HttpForwarderOptions options) : options_(std::move(options)) {
  int threads = std::max(1, options_.threads);
  for (int i = 0; i < threads; ++i) {
    shards_.push_back(std::make_unique<Shard>(options_));
    shards_.back()->Start();
  }
}

HttpForwarder::~HttpForwarder() { Stop(); }

void HttpForwarder::Stop() {
  if (stopped_.exchange(true)) return;
  for (auto& shard : shards_) {
    Shard* s = shard.get();
    asio::post(s->io, [s] { s->BeginStop(); });
  }
  for (auto& shard : shards_) {
    if (shard->thread.joinable()) shard->thread.join();
    // A Forward that passed its stopped_ check just before Stop posted after the loop
    // ended: run it here so its callback still gets its Cancelled.
    shard->io.restart();
    shard->io.poll();
  }
}

void HttpForwarder::Forward(std::string host, int port,
                            std::shared_ptr<const ForwardRequest> request,
                            std::chrono::milliseconds timeout, ForwardCallback done) {
  auto pending = std::make_shared<Pending>();
  pending->what = absl::StrCat(request->method, " http://", host, ":", port, request->target);
  pending->request = std::move(request);
  pending->done = std::move(done);
  pending->timeout = timeout;
  pending->deadline = Clock::now() + timeout;
  if (stopped_.load()) {
    pending->Finish(absl::CancelledError("the forwarder is stopped"), false);
    return;
  }
  Shard* shard = shards_[next_shard_.fetch_add(1) % shards_.size()].get();
  asio::post(shard->io, [shard, host = std::move(host), port, pending]() {
    if (absl::Status head = CheckHead(*pending->request); !head.ok()) {
      pending->Finish(absl::InvalidArgumentError(absl::StrCat(pending->what, ": ", head.message())),
                      false);
      return;
    }
    std::string key = EndpointKey(host, port);
    auto& pool = shard->pools[key];
    if (!pool) {
      pool = std::make_shared<Pool>();
      pool->host = host;
      pool->port = port;
      pool->host_header =
          host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port) : key;
    }
    shard->Dispatch(pool, pending);
  });
}

size_t HttpForwarder::OpenConnections(const std::string& host, int port) const {
  size_t total = 0;
  for (const auto& shard : shards_) {
    if (stopped_.load()) break;
    std::promise<size_t> count;
    Shard* s = shard.get();
    asio::post(s->io, [s, &count, key = EndpointKey(host, port)] {
      auto it = s->pools.find(key);
      count.set_value(it == s->pools.end() ? 0 : it->second->open);
    });
    total += count.get_future().get();
  }
  return total;
}

}  // namespace kiln::net
