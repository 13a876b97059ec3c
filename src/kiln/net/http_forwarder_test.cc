// http_forwarder_test.cc
//
// HttpForwarder against real HttpServers on loopback (pass-through, keep-alive reuse,
// the connection cap, timeouts, closed servers) and one scripted server that drops a
// kept-alive connection after reading a request, to show the fresh-connection retry.

#include "kiln/net/http_forwarder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/net/bundle.h"
#include "kiln/net/http_server.h"

namespace kiln::net {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ::testing::HasSubstr;

// A real HttpServer on its own io thread. Handlers may park their Responders in `held`;
// they are dropped before the io_context goes.
class TestServer {
 public:
  explicit TestServer(Router router) {
    auto server = HttpServer::Create(io_, HttpServerOptions{}, std::move(router));
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TestServer() {
    Stop();
    {
      std::lock_guard<std::mutex> lock(mu);
      held.clear();
    }
    io_.stop();
    thread_.join();
  }
  int port() const { return server_->port(); }
  void Stop() { server_->Stop(); }

  std::mutex mu;
  std::vector<Responder> held;

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
};

struct Result {
  absl::StatusOr<HttpResponse> response;
  bool retryable = false;
};

// Forwards and blocks for the callback.
Result ForwardAndWait(HttpForwarder& forwarder, int port, std::shared_ptr<ForwardRequest> request,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  std::promise<Result> promise;
  forwarder.Forward("127.0.0.1", port, std::move(request), timeout,
                    [&](absl::StatusOr<HttpResponse> response, bool retryable) {
                      promise.set_value(Result{std::move(response), retryable});
                    });
  return promise.get_future().get();
}

std::shared_ptr<ForwardRequest> Post(std::string target, std::string body) {
  auto request = std::make_shared<ForwardRequest>();
  request->target = std::move(target);
  request->body = std::move(body);
  return request;
}

Router EchoRouter() {
  Router router;
  router.Add("POST", "/echo", [](HttpRequest& req, Responder res) {
    HttpResponse response;
    response.body = absl::StrCat(req.Header("x-kiln-serve-secret"), "|", req.body);
    response.content_type = "text/plain";
    if (std::string own = req.Header("x-own"); !own.empty()) {
      response.headers.emplace_back("X-Echo", own);
    }
    res.Send(std::move(response));
  });
  router.Add("POST", "/bad", [](HttpRequest&, Responder res) {
    HttpResponse response;
    response.status = 400;
    response.body = R"({"error": "expected image: float32[784]"})";
    res.Send(std::move(response));
  });
  return router;
}

TEST(HttpForwarderTest, PassesStatusContentTypeBodyAndExtraHeaders) {
  TestServer server(EchoRouter());
  HttpForwarder forwarder;
  auto request = Post("/echo", "hello");
  request->headers.emplace_back("X-Kiln-Serve-Secret", "s3cret");
  request->own_headers.emplace_back("X-Own", "mine");  // alone, an ordinary header
  Result ok = ForwardAndWait(forwarder, server.port(), request);
  ASSERT_TRUE(ok.response.ok()) << ok.response.status();
  EXPECT_EQ(ok.response->status, 200);
  EXPECT_EQ(ok.response->content_type, "text/plain");
  EXPECT_EQ(ok.response->body, "s3cret|hello");
  EXPECT_EQ(ok.response->Header("X-Echo"), "mine");

  Result bad = ForwardAndWait(forwarder, server.port(), Post("/bad", "{}"));
  ASSERT_TRUE(bad.response.ok()) << bad.response.status();
  EXPECT_EQ(bad.response->status, 400);
  EXPECT_EQ(bad.response->content_type, "application/json");
  EXPECT_THAT(bad.response->body, HasSubstr("expected image"));
  EXPECT_FALSE(bad.retryable);
}

TEST(HttpForwarderTest, AnEmptyBodyIsSentWithContentLengthZeroAndTheConnectionStaysUsable) {
  TestServer server(EchoRouter());
  HttpForwarder forwarder;
  for (int i = 0; i < 3; ++i) {
    Result r = ForwardAndWait(forwarder, server.port(), Post("/echo", ""));
    ASSERT_TRUE(r.response.ok()) << r.response.status();
    EXPECT_EQ(r.response->body, "|");
  }
  EXPECT_EQ(forwarder.OpenConnections("127.0.0.1", server.port()), 1u);
}

TEST(HttpForwarderTest, AHeadThatWouldEndALineEarlyIsRefusedBeforeAnythingIsSent) {
  std::atomic<int> served{0};
  Router router;
  router.Add("POST", "/echo", [&served](HttpRequest&, Responder res) {
    ++served;
    res.Send(HttpResponse{});
  });
  TestServer server(std::move(router));
  HttpForwarder forwarder;
  auto injected_value = Post("/echo", "x");
  injected_value->headers.emplace_back("X-Kiln-Serve-Secret", "s\r\nX-Admin: 1");
  auto injected_name = Post("/echo", "x");
  injected_name->headers.emplace_back("X-A: b\r\nX-C", "d");
  auto spaced_target = Post("/echo HTTP/1.0\r\n", "x");
  auto bad_type = Post("/echo", "x");
  bad_type->content_type = "text/plain\nX-Admin: 1";
  for (const auto& request : {injected_value, injected_name, spaced_target, bad_type}) {
    Result r = ForwardAndWait(forwarder, server.port(), request);
    ASSERT_FALSE(r.response.ok());
    EXPECT_TRUE(absl::IsInvalidArgument(r.response.status())) << r.response.status();
    EXPECT_FALSE(r.retryable);
  }
  EXPECT_EQ(forwarder.OpenConnections("127.0.0.1", server.port()), 0u);
  EXPECT_EQ(served.load(), 0);
  ASSERT_TRUE(ForwardAndWait(forwarder, server.port(), Post("/echo", "x")).response.ok());
  EXPECT_EQ(served.load(), 1);
}

TEST(HttpForwarderTest, ReusesOneKeptAliveConnectionForSequentialRequests) {
  TestServer server(EchoRouter());
  HttpForwarder forwarder;
  for (int i = 0; i < 20; ++i) {
    Result r = ForwardAndWait(forwarder, server.port(), Post("/echo", std::to_string(i)));
    ASSERT_TRUE(r.response.ok()) << r.response.status();
    EXPECT_EQ(r.response->body, absl::StrCat("|", i));
  }
  EXPECT_EQ(forwarder.OpenConnections("127.0.0.1", server.port()), 1u);
}

TEST(HttpForwarderTest, OpensConnectionsUnderLoadUpToTheCap) {
  constexpr int kCap = 4;
  Router router;
  TestServer* server_ptr = nullptr;
  // Answers only once kCap requests are in at the same time: that needs kCap connections.
  router.Add("POST", "/gather", [&server_ptr](HttpRequest& req, Responder res) {
    std::vector<Responder> release;
    {
      std::lock_guard<std::mutex> lock(server_ptr->mu);
      server_ptr->held.push_back(res);
      if (server_ptr->held.size() < kCap) return;
      release.swap(server_ptr->held);
    }
    (void)req;
    for (Responder& r : release) r.Send(HttpResponse{200, "text/plain", "done", {}});
  });
  TestServer server(std::move(router));
  server_ptr = &server;
  HttpForwarderOptions options;
  options.max_connections_per_endpoint = kCap;
  HttpForwarder forwarder(options);

  constexpr int kRequests = 3 * kCap;
  std::atomic<int> ok{0};
  std::atomic<int> done{0};
  std::promise<void> all_done;
  for (int i = 0; i < kRequests; ++i) {
    forwarder.Forward("127.0.0.1", server.port(), Post("/gather", "x"), std::chrono::seconds(20),
                      [&](absl::StatusOr<HttpResponse> response, bool) {
                        if (response.ok() && response->body == "done") ++ok;
                        if (++done == kRequests) all_done.set_value();
                      });
  }
  all_done.get_future().get();
  EXPECT_EQ(ok.load(), kRequests);
  EXPECT_EQ(forwarder.OpenConnections("127.0.0.1", server.port()), static_cast<size_t>(kCap));
}

TEST(HttpForwarderTest, AClosedServerIsRetryableUnavailable) {
  int port = 0;
  {
    TestServer server(EchoRouter());
    port = server.port();
  }
  HttpForwarder forwarder;
  Result r = ForwardAndWait(forwarder, port, Post("/echo", "x"));
  ASSERT_FALSE(r.response.ok());
  EXPECT_TRUE(absl::IsUnavailable(r.response.status())) << r.response.status();
  EXPECT_THAT(std::string(r.response.status().message()), HasSubstr("cannot connect"));
  EXPECT_TRUE(r.retryable);
}

TEST(HttpForwarderTest, APooledConnectionToAStoppedServerIsNotReusedAndTheErrorIsRetryable) {
  HttpForwarder forwarder;
  auto server = std::make_unique<TestServer>(EchoRouter());
  int port = server->port();
  ASSERT_TRUE(ForwardAndWait(forwarder, port, Post("/echo", "x")).response.ok());
  server.reset();  // closes the pooled connection's other end and the listener
  Result r = ForwardAndWait(forwarder, port, Post("/echo", "x"));
  ASSERT_FALSE(r.response.ok());
  EXPECT_TRUE(absl::IsUnavailable(r.response.status())) << r.response.status();
  EXPECT_TRUE(r.retryable);
}

TEST(HttpForwarderTest, NoAnswerWithinTheTimeoutIsDeadlineExceededAndNotRetryable) {
  Router router;
  TestServer* server_ptr = nullptr;
  router.Add("POST", "/silent", [&server_ptr](HttpRequest&, Responder res) {
    std::lock_guard<std::mutex> lock(server_ptr->mu);
    server_ptr->held.push_back(res);
  });
  TestServer server(std::move(router));
  server_ptr = &server;
  HttpForwarder forwarder;
  Result r = ForwardAndWait(forwarder, server.port(), Post("/silent", "x"),
                            std::chrono::milliseconds(200));
  ASSERT_FALSE(r.response.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(r.response.status())) << r.response.status();
  EXPECT_FALSE(r.retryable);
}

TEST(HttpForwarderTest, StopCancelsWhatIsInFlight) {
  Router router;
  TestServer* server_ptr = nullptr;
  std::promise<void> arrived;
  router.Add("POST", "/silent", [&](HttpRequest&, Responder res) {
    std::lock_guard<std::mutex> lock(server_ptr->mu);
    server_ptr->held.push_back(res);
    arrived.set_value();
  });
  TestServer server(std::move(router));
  server_ptr = &server;
  HttpForwarder forwarder;
  std::promise<Result> result;
  forwarder.Forward("127.0.0.1", server.port(), Post("/silent", "x"), std::chrono::seconds(30),
                    [&](absl::StatusOr<HttpResponse> response, bool retryable) {
                      result.set_value(Result{std::move(response), retryable});
                    });
  arrived.get_future().get();
  forwarder.Stop();
  Result r = result.get_future().get();
  EXPECT_TRUE(absl::IsCancelled(r.response.status())) << r.response.status();

  // After Stop, Forward answers Cancelled at once.
  Result late = ForwardAndWait(forwarder, server.port(), Post("/silent", "x"));
  EXPECT_TRUE(absl::IsCancelled(late.response.status()));
}

// Reads one request head (through the blank line); "" when the client closed first.
std::string ReadHead(tcp::socket& socket) {
  std::string head;
  char c;
  boost::system::error_code ec;
  while (head.find("\r\n\r\n") == std::string::npos) {
    if (asio::read(socket, asio::buffer(&c, 1), ec) != 1) return "";
    head += c;
  }
  return head;
}

TEST(HttpForwarderTest, AKeptAliveConnectionDroppedAfterTheRequestIsRetriedOnAFreshOne) {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  int port = acceptor.local_endpoint().port();
  auto ok = [](std::string_view body) {
    return absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: ", body.size(), "\r\n\r\n",
                        std::string(body));
  };
  std::thread script([&] {
    boost::system::error_code ec;
    tcp::socket first = acceptor.accept(ec);
    ReadHead(first);
    std::string a = ok("a");
    asio::write(first, asio::buffer(a), ec);
    // The second request arrives on the kept-alive connection; drop it unanswered, as a
    // server closing an idle connection at that moment would.
    ReadHead(first);
    first.close();
    tcp::socket second = acceptor.accept(ec);
    ReadHead(second);
    std::string b = ok("b");
    asio::write(second, asio::buffer(b), ec);
    ReadHead(second);  // until the client closes
  });
  {
    HttpForwarder forwarder;
    auto get = std::make_shared<ForwardRequest>();
    get->method = "GET";
    get->target = "/x";
    Result first = ForwardAndWait(forwarder, port, get);
    ASSERT_TRUE(first.response.ok()) << first.response.status();
    EXPECT_EQ(first.response->body, "a");
    Result second = ForwardAndWait(forwarder, port, get);
    ASSERT_TRUE(second.response.ok()) << second.response.status();
    EXPECT_EQ(second.response->body, "b");
  }
  script.join();
}

// ---------------------------------------------------------------- bundles

// A server of bundles: records each bundle's size and answers item i with
// "<secret>|<target>|<body>" (status 400 for the body "bad"). While `hold` is set the
// first bundle's Responder is parked in `held` until Release().
class BundleServer {
 public:
  BundleServer() : server_(MakeRouter()) {}
  int port() const { return server_.port(); }

  std::vector<size_t> sizes() {
    std::lock_guard<std::mutex> lock(mu_);
    return sizes_;
  }
  // Waits until `n` bundles have arrived.
  void WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return sizes_.size() >= n; });
  }
  void Release() {
    std::vector<std::pair<Responder, HttpResponse>> held;
    {
      std::lock_guard<std::mutex> lock(mu_);
      held.swap(held_);
      hold = false;
    }
    for (auto& [res, response] : held) res.Send(std::move(response));
  }

  std::atomic<bool> hold{false};         // set before the first request
  std::atomic<int> whole_status{200};    // other than 200: the whole bundle is refused
  std::atomic<bool> wrong_count{false};  // answer one response too few

 private:
  Router MakeRouter() {
    Router router;
    RouteOptions big;
    big.max_body_bytes = 64 << 20;
    router.Add(
        "POST", "/bundle",
        [this](HttpRequest& req, Responder res) {
          absl::StatusOr<std::vector<BundledRequest>> items = DecodeBundleRequest(req.body);
          EXPECT_TRUE(items.ok()) << items.status();
          EXPECT_EQ(req.Header("content-type"), kBundleContentType);
          HttpResponse response;
          if (whole_status != 200) {
            response.status = whole_status;
            response.body = R"({"error": "refused whole"})";
          } else {
            std::vector<HttpResponse> answers;
            for (const BundledRequest& item : *items) {
              HttpResponse a;
              a.status = item.body == "bad" ? 400 : 200;
              a.content_type = "text/plain";
              a.body =
                  absl::StrCat(req.Header("x-kiln-serve-secret"), "|", item.target, "|", item.body);
              for (const auto& [name, value] : item.headers) {
                if (name == "x-own") a.headers.emplace_back("X-Echo", value);
              }
              answers.push_back(std::move(a));
            }
            if (wrong_count) answers.pop_back();
            response.content_type = std::string(kBundleContentType);
            response.body = EncodeBundleResponse(answers);
          }
          std::lock_guard<std::mutex> lock(mu_);
          sizes_.push_back(items.ok() ? items->size() : 0);
          cv_.notify_all();
          if (hold) {
            held_.emplace_back(std::move(res), std::move(response));
            return;
          }
          res.Send(std::move(response));
        },
        big);
    router.Add("POST", "/alone", [](HttpRequest& req, Responder res) {
      res.Send(HttpResponse{200, "text/plain", absl::StrCat("alone|", req.body.size()), {}});
    });
    return router;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<size_t> sizes_;
  std::vector<std::pair<Responder, HttpResponse>> held_;
  TestServer server_;
};

std::shared_ptr<ForwardRequest> Bundled(std::string target, std::string body) {
  auto request = Post(std::move(target), std::move(body));
  request->bundle_target = "/bundle";
  request->headers.emplace_back("X-Kiln-Serve-Secret", "s3");
  return request;
}

// Forwards without waiting; the results land in `results[i]` and `done` counts down.
struct Pending {
  std::mutex mu;
  std::vector<Result> results;
  std::promise<void> all;
  size_t left = 0;
};
void ForwardAsync(HttpForwarder& forwarder, int port, std::shared_ptr<ForwardRequest> request,
                  Pending& pending, size_t index) {
  forwarder.Forward("127.0.0.1", port, std::move(request), std::chrono::seconds(10),
                    [&pending, index](absl::StatusOr<HttpResponse> response, bool retryable) {
                      std::lock_guard<std::mutex> lock(pending.mu);
                      pending.results[index] = Result{std::move(response), retryable};
                      if (--pending.left == 0) pending.all.set_value();
                    });
}

TEST(HttpForwarderBundleTest, RequestsQueuedWhileTheEndpointIsBusyGoTogether) {
  BundleServer server;
  server.hold = true;
  HttpForwarderOptions options;
  options.max_bundles_in_flight = 1;
  HttpForwarder forwarder(options);
  Pending pending;
  pending.results.resize(6);
  pending.left = 6;
  // An idle endpoint: the first request goes at once, alone.
  ForwardAsync(forwarder, server.port(), Bundled("/v2/models/m/infer", "first"), pending, 0);
  server.WaitFor(1);
  const char* bodies[] = {"a", "b", "bad", "c", "d"};
  for (size_t i = 1; i < 6; ++i) {
    auto request = Bundled(absl::StrCat("/ml/v4/deployments/", i, "/predictions"), bodies[i - 1]);
    // Headers of a request's own travel in its item (and may differ within one bundle).
    if (i % 2 == 0) request->own_headers.emplace_back("X-Own", absl::StrCat("own", i));
    ForwardAsync(forwarder, server.port(), std::move(request), pending, i);
  }
  // A barrier: OpenConnections runs on the forwarder's thread after the Forwards above.
  EXPECT_EQ(forwarder.OpenConnections("127.0.0.1", server.port()), 1u);
  server.Release();
  pending.all.get_future().get();
  EXPECT_THAT(server.sizes(), ::testing::ElementsAre(1, 5));
  ASSERT_TRUE(pending.results[0].response.ok()) << pending.results[0].response.status();
  EXPECT_EQ(pending.results[0].response->body, "s3|/v2/models/m/infer|first");
  for (size_t i = 1; i < 6; ++i) {
    const Result& r = pending.results[i];
    ASSERT_TRUE(r.response.ok()) << r.response.status();
    EXPECT_EQ(r.response->status, i == 3 ? 400 : 200);
    EXPECT_EQ(r.response->content_type, "text/plain");
    EXPECT_EQ(r.response->body,
              absl::StrCat("s3|/ml/v4/deployments/", i, "/predictions|", bodies[i - 1]));
    EXPECT_EQ(r.response->Header("X-Echo"), i % 2 == 0 ? absl::StrCat("own", i) : "");
  }
  // One connection carried all of it.
  EXPECT_EQ(forwarder.OpenConnections("127.0.0.1", server.port()), 1u);
}

TEST(HttpForwarderBundleTest, TheCapsSplitBundlesAndALargeBodyGoesAlone) {
  BundleServer server;
  server.hold = true;
  HttpForwarderOptions options;
  options.max_bundles_in_flight = 1;
  options.max_requests_per_bundle = 2;
  options.max_bundle_bytes = 100;
  HttpForwarder forwarder(options);
  Pending pending;
  pending.results.resize(6);
  pending.left = 6;
  ForwardAsync(forwarder, server.port(), Bundled("/p", "0"), pending, 0);
  server.WaitFor(1);
  for (size_t i = 1; i < 5; ++i)
    ForwardAsync(forwarder, server.port(), Bundled("/p", "x"), pending, i);
  // Over max_bundle_bytes: sent on its own to its own target, not queued behind the others.
  Result alone = ForwardAndWait(forwarder, server.port(), [] {
    auto r = Bundled("/alone", std::string(200, 'y'));
    return r;
  }());
  pending.results[5] = alone;
  --pending.left;
  ASSERT_TRUE(alone.response.ok()) << alone.response.status();
  EXPECT_EQ(alone.response->body, "alone|200");
  server.hold = false;
  server.Release();
  pending.all.get_future().get();
  EXPECT_THAT(server.sizes(), ::testing::ElementsAre(1, 2, 2));
  for (size_t i = 0; i < 5; ++i) EXPECT_TRUE(pending.results[i].response.ok()) << i;
}

TEST(HttpForwarderBundleTest, ARequestMayAskForMoreBundlesInFlight) {
  BundleServer server;
  server.hold = true;
  HttpForwarderOptions options;
  options.max_bundles_in_flight = 1;
  HttpForwarder forwarder(options);
  Pending pending;
  pending.results.resize(3);
  pending.left = 3;
  for (size_t i = 0; i < 3; ++i) {
    auto request = Bundled("/p", "x");
    request->bundles_in_flight = 2;  // a replica with one worker more
    ForwardAsync(forwarder, server.port(), std::move(request), pending, i);
  }
  // Two go at once, each alone; the third waits for one of them.
  server.WaitFor(2);
  EXPECT_EQ(forwarder.OpenConnections("127.0.0.1", server.port()), 2u);
  EXPECT_THAT(server.sizes(), ::testing::ElementsAre(1, 1));
  server.hold = false;
  server.Release();
  pending.all.get_future().get();
  EXPECT_THAT(server.sizes(), ::testing::ElementsAre(1, 1, 1));
}

TEST(HttpForwarderBundleTest, ABundleRefusedWholeGivesEveryRequestThatAnswer) {
  BundleServer server;
  server.whole_status = 401;
  HttpForwarder forwarder;
  Result r = ForwardAndWait(forwarder, server.port(), Bundled("/p", "a"));
  ASSERT_TRUE(r.response.ok()) << r.response.status();
  EXPECT_EQ(r.response->status, 401);
  EXPECT_EQ(r.response->body, R"({"error": "refused whole"})");
}

TEST(HttpForwarderBundleTest, AMalformedAnswerIsAnInternalErrorNotRetried) {
  BundleServer server;
  server.wrong_count = true;
  HttpForwarder forwarder;
  Result r = ForwardAndWait(forwarder, server.port(), Bundled("/p", "a"));
  EXPECT_THAT(r.response.status(),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("0 responses for 1 requests")));
  EXPECT_FALSE(r.retryable);
}

TEST(HttpForwarderBundleTest, AClosedServerIsRetryableForEveryBundledRequest) {
  int port = 0;
  {
    BundleServer server;
    port = server.port();
  }
  HttpForwarder forwarder;
  Result r = ForwardAndWait(forwarder, port, Bundled("/p", "a"));
  EXPECT_THAT(r.response.status(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("connect")));
  EXPECT_TRUE(r.retryable);
}

TEST(HttpForwarderBundleTest, StopCancelsQueuedAndInFlightBundles) {
  BundleServer server;
  server.hold = true;
  HttpForwarderOptions options;
  options.max_bundles_in_flight = 1;
  auto forwarder = std::make_unique<HttpForwarder>(options);
  Pending pending;
  pending.results.resize(3);
  pending.left = 3;
  ForwardAsync(*forwarder, server.port(), Bundled("/p", "a"), pending, 0);
  server.WaitFor(1);
  ForwardAsync(*forwarder, server.port(), Bundled("/p", "b"), pending, 1);
  ForwardAsync(*forwarder, server.port(), Bundled("/p", "c"), pending, 2);
  forwarder->Stop();
  pending.all.get_future().get();
  for (const Result& r : pending.results) {
    EXPECT_THAT(r.response.status(), StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  }
  server.Release();
}

}  // namespace
}  // namespace kiln::net
