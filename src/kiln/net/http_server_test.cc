// http_server_test.cc
//
// Exercises HttpServer over real loopback sockets: through HttpClient for the ordinary
// paths and through raw sockets for malformed, pipelined and HTTP/1.0 input.

#include "kiln/net/http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kiln/base/json.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/net/http_client.h"
#include "kiln/net/http_server_internal.h"
#include "kiln/net/http_status.h"
#include "kiln/net/testing/server_thread.h"

namespace kiln::net {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// A minimal blocking queue for handing values between handler threads and the test.
template <class T>
class BlockingQueue {
 public:
  void Push(T value) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.push_back(std::move(value));
    cv_.notify_all();
  }
  T Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !items_.empty(); });
    T value = std::move(items_.front());
    items_.pop_front();
    return value;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
};

// Waits (yielding, no fixed sleep) until `condition` holds; false after 10 s.
template <class Condition>
bool Eventually(Condition condition) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// A blocking socket to the server whose reads give up after 10 s instead of hanging a test.
class RawConnection {
 public:
  explicit RawConnection(int port) : socket_(io_) {
    boost::system::error_code ec;
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
    KILN_CHECK(!ec);
    timeval timeout{10, 0};
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  void Write(std::string_view bytes) {
    boost::system::error_code ec;
    asio::write(socket_, asio::buffer(bytes.data(), bytes.size()), ec);
  }
  void ShutdownSend() {
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
  }
  // Reads until the server closes the connection; `*end` gets the error that ended it.
  std::string ReadToEnd(boost::system::error_code* end = nullptr) {
    std::string data;
    char buffer[4096];
    boost::system::error_code ec;
    while (!ec) {
      size_t n = socket_.read_some(asio::buffer(buffer), ec);
      data.append(buffer, n);
    }
    if (end != nullptr) *end = ec;
    return data;
  }

 private:
  asio::io_context io_;
  tcp::socket socket_;
};

std::string RawExchange(int port, std::string_view bytes) {
  RawConnection connection(port);
  connection.Write(bytes);
  return connection.ReadToEnd();
}

int CountOccurrences(std::string_view text, std::string_view needle) {
  int count = 0;
  for (size_t pos = text.find(needle); pos != std::string_view::npos;
       pos = text.find(needle, pos + 1)) {
    ++count;
  }
  return count;
}

Router TestRouter() {
  Router router;
  router.Add("GET", "/api/v1/jobs/{id}", [](HttpRequest& request, Responder responder) {
    nlohmann::json body = {
        {"id", request.path_params["id"]},    {"state", request.Query("state").value_or("")},
        {"tags", request.QueryValues("tag")}, {"path", request.path},
        {"target", request.target},           {"auth", request.Header("Authorization")},
        {"remote", request.remote_address}};
    responder.Send(JsonResponse(200, body));
  });
  router.Add("DELETE", "/api/v1/jobs/{id}",
             [](HttpRequest&, Responder responder) { responder.Send(HttpResponse{204}); });
  router.Add(
      "POST", "/api/v1/echo",
      [](HttpRequest& request, Responder responder) {
        HttpResponse response;
        response.content_type = request.Header("content-type");
        response.body = request.body;
        response.headers.emplace_back("X-Echo", "yes");
        response.headers.emplace_back("Bad\r\nHeader", "dropped");
        responder.Send(std::move(response));
      },
      RouteOptions{.max_body_bytes = 64});
  router.Add("GET", "/throws", [](HttpRequest&, Responder) { throw std::runtime_error("boom"); });
  router.Add("GET", "/drops", [](HttpRequest&, Responder) {});
  router.Add("GET", "/stream-now", [](HttpRequest&, Responder responder) {
    std::shared_ptr<ResponseStream> stream = responder.StartStream(200, "text/plain");
    stream->Write("x");
    stream->Write("");
    stream->Write("y");
    stream->Finish();
  });
  return router;
}

TEST(HttpServerTest, ServesPathParamsQueryAndHeaders) {
  ServerThread server(TestRouter());
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  client->SetBearerToken("t0k");
  KILN_ASSERT_OK_AND_ASSIGN(
      HttpResponse response,
      client->Get("/api/v1/jobs/my%20job?state=RUNNING&tag=a&tag=b+c&tag=%26"));
  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(response.content_type, "application/json");
  EXPECT_EQ(response.Header("server"), "kiln");
  EXPECT_EQ(response.Header("content-length"), std::to_string(response.body.size()));
  KILN_ASSERT_OK_AND_ASSIGN(base::Json body, base::ParseJson(response.body));
  EXPECT_EQ(body["id"], "my job");
  EXPECT_EQ(body["state"], "RUNNING");
  EXPECT_EQ(body["tags"], nlohmann::json({"a", "b c", "&"}));
  EXPECT_EQ(body["path"], "/api/v1/jobs/my job");
  EXPECT_EQ(body["target"], "/api/v1/jobs/my%20job?state=RUNNING&tag=a&tag=b+c&tag=%26");
  EXPECT_EQ(body["auth"], "Bearer t0k");
  EXPECT_EQ(body["remote"], "127.0.0.1");
}

TEST(HttpServerTest, EchoesBodyAndKeepsOnlyValidExtraHeaders) {
  ServerThread server(TestRouter());
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse response,
                            client->Request("POST", "/api/v1/echo", "hello", "text/plain"));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "hello");
  EXPECT_EQ(response.content_type, "text/plain");
  EXPECT_EQ(response.Header("x-echo"), "yes");
  EXPECT_EQ(response.Header("bad\r\nheader"), "");
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse json_response,
                            client->PostJson("/api/v1/echo", {{"a", 1}}));
  EXPECT_EQ(json_response.body, R"({"a":1})");
  EXPECT_EQ(json_response.content_type, "application/json");
}

TEST(HttpServerTest, Answers204WithoutBody) {
  ServerThread server(TestRouter());
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse response, client->Request("DELETE", "/api/v1/jobs/1"));
  EXPECT_EQ(response.status, 204);
  EXPECT_EQ(response.body, "");
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse next, client->Get("/api/v1/jobs/2"));
  EXPECT_EQ(next.status, 200);
}

// The hand-written head says what Beast's serializer says (the server used it before),
// except where Beast breaks RFC 9110 or prints a placeholder; those cases follow.
TEST(ResponseHeadTest, MatchesBeastForEveryVersionStatusAndKeepAlive) {
  namespace http = boost::beast::http;
  const std::vector<std::pair<std::string, std::string>> extra = {{"X-Request-Id", "7"},
                                                                  {"Location", "/a?b=c"}};
  for (unsigned version : {10u, 11u}) {
    for (unsigned status : {200u, 201u, 400u, 404u, 413u, 500u, 503u}) {
      for (bool keep_alive : {false, true}) {
        for (const std::string body : {"", "{\"a\":1}"}) {
          http::response<http::string_body> beast_message;
          beast_message.version(version);
          beast_message.result(status);
          beast_message.set(http::field::server, "kiln");
          beast_message.set(http::field::content_type, "application/json");
          for (const auto& [name, value] : extra) beast_message.insert(name, value);
          beast_message.body() = body;
          beast_message.keep_alive(keep_alive);
          beast_message.prepare_payload();
          std::ostringstream beast_head;
          beast_head << beast_message.base();
          EXPECT_EQ(internal::ResponseHead(version, status, "application/json", extra, body.size(),
                                           keep_alive),
                    beast_head.str())
              << "HTTP/1." << version % 10 << " " << status << " keep-alive " << keep_alive;
        }
      }
    }
  }
}

TEST(ResponseHeadTest, SendsNoContentLengthWith204Or304) {
  EXPECT_EQ(internal::ResponseHead(11, 204, "", {}, 0, true),
            "HTTP/1.1 204 No Content\r\nServer: kiln\r\n\r\n");
  EXPECT_EQ(internal::ResponseHead(11, 304, "text/plain", {}, 0, false),
            "HTTP/1.1 304 Not Modified\r\nServer: kiln\r\nContent-Type: text/plain\r\n"
            "Connection: close\r\n\r\n");
}

TEST(ResponseHeadTest, LeavesTheReasonOfAnUnknownStatusEmpty) {
  EXPECT_EQ(internal::ResponseHead(11, 299, "", {}, 2, true),
            "HTTP/1.1 299 \r\nServer: kiln\r\nContent-Length: 2\r\n\r\n");
}

TEST(ResponseHeadTest, FramesAStreamByChunksOrByTheClose) {
  EXPECT_EQ(internal::ResponseHead(11, 200, "text/plain", {}, std::nullopt, true),
            "HTTP/1.1 200 OK\r\nServer: kiln\r\nContent-Type: text/plain\r\n"
            "Transfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(internal::ResponseHead(10, 200, "", {}, std::nullopt, false),
            "HTTP/1.0 200 OK\r\nServer: kiln\r\n\r\n");
}

TEST(ResponseHeadTest, DropsInvalidAndServerOwnedFields) {
  std::string head = internal::ResponseHead(11, 200, "text/plain\r\nX-Injected: 1",
                                            {{"X-Ok", "yes"},
                                             {"bad name", "v"},
                                             {"X-Split", "a\r\nX-Injected: 1"},
                                             {"Content-Length", "0"},
                                             {"transfer-encoding", "chunked"},
                                             {"Connection", "close"},
                                             {"Server", "other"},
                                             {"Content-Type", "text/html"}},
                                            5, true);
  EXPECT_EQ(head, "HTTP/1.1 200 OK\r\nServer: kiln\r\nX-Ok: yes\r\nContent-Length: 5\r\n\r\n");
}

TEST(HttpServerTest, AnswersUnknownPathWith404NamingTheRequest) {
  ServerThread server(TestRouter());
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse response, client->PostJson("/api/v1/jbos", {}));
  EXPECT_EQ(response.status, 404);
  EXPECT_THAT(StatusFromHttpResponse(response),
              StatusIs(absl::StatusCode::kNotFound, "no route for POST /api/v1/jbos"));
}

TEST(HttpServerTest, AnswersWrongMethodWith405ListingAllowedMethods) {
  ServerThread server(TestRouter());
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse response, client->PostJson("/api/v1/jobs/3", {}));
  EXPECT_EQ(response.status, 405);
  EXPECT_EQ(response.Header("allow"), "DELETE, GET");
  EXPECT_THAT(StatusFromHttpResponse(response),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("method POST is not allowed for /api/v1/jobs/3")));
}

TEST(HttpServerTest, RejectsBodyOverTheRouteLimitWith413) {
  ServerThread server(TestRouter());
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse response,
                            client->Request("POST", "/api/v1/echo", std::string(1000, 'x')));
  EXPECT_EQ(response.status, 413);
  EXPECT_THAT(StatusFromHttpResponse(response),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("1000 bytes is larger than the limit of 64 bytes")));
  // The connection was closed after the 413; the client reconnects.
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse next, client->Request("POST", "/api/v1/echo", "ok"));
  EXPECT_EQ(next.body, "ok");
}

TEST(HttpServerTest, RejectsChunkedBodyOverTheRouteLimitWith413) {
  ServerThread server(TestRouter());
  std::string reply =
      RawExchange(server.port(),
                  "POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "20\r\n" +
                      std::string(32, 'a') + "\r\n20\r\n" + std::string(32, 'b') + "\r\n20\r\n" +
                      std::string(32, 'c') + "\r\n0\r\n\r\n");
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 413"));
  EXPECT_THAT(reply, HasSubstr("RESOURCE_EXHAUSTED"));
}

TEST(HttpServerTest, AcceptsChunkedBodyWithinTheLimit) {
  ServerThread server(TestRouter());
  std::string reply = RawExchange(server.port(),
                                  "POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n"
                                  "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(reply, HasSubstr("\r\n\r\nabcde"));
}

TEST(HttpServerTest, AnswersMalformedRequestsWith400) {
  ServerThread server(TestRouter());
  for (std::string request : {
           std::string("GARBAGE\r\n\r\n"),
           // Well-framed requests keep the connection; ask for it to be closed.
           std::string("GET /api/v1/jobs/%zz HTTP/1.1\r\nConnection: close\r\n\r\n"),
           std::string("GET /api/v1/jobs/a%2Fb HTTP/1.1\r\nConnection: close\r\n\r\n"),
           std::string("GET http://other/api/v1/jobs/1 HTTP/1.1\r\nConnection: close\r\n\r\n"),
           std::string("POST /api/v1/echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n"),
           std::string("GET / HTTP/9.9\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"),
           std::string("\x00\x01\x02\r\n\r\n", 7),
       }) {
    std::string reply = RawExchange(server.port(), request);
    EXPECT_THAT(reply, StartsWith("HTTP/1.1 400")) << request;
    EXPECT_THAT(reply, HasSubstr("Server: kiln")) << request;
    EXPECT_THAT(reply, HasSubstr("Content-Length: ")) << request;
    EXPECT_THAT(reply, HasSubstr("\"code\":\"INVALID_ARGUMENT\"")) << request;
  }
}

TEST(HttpServerTest, AnswersOversizedHeaderWith431) {
  HttpServerOptions options;
  options.max_header_bytes = 1024;
  ServerThread server(TestRouter(), options);
  std::string reply =
      RawExchange(server.port(),
                  "GET /api/v1/jobs/1 HTTP/1.1\r\nX-Big: " + std::string(4096, 'a') + "\r\n\r\n");
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 431"));
}

TEST(HttpServerTest, ClosesSilentlyWhenTheClientHangsUpMidRequest) {
  ServerThread server(TestRouter());
  RawConnection connection(server.port());
  connection.Write("GET /api/v1/jobs/1 HTTP/1.1\r\nHost");
  connection.ShutdownSend();
  EXPECT_EQ(connection.ReadToEnd(), "");
}

TEST(HttpServerTest, AnswersPipelinedRequestsInOrder) {
  ServerThread server(TestRouter());
  std::string reply =
      RawExchange(server.port(),
                  "GET /api/v1/jobs/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /api/v1/jobs/2 HTTP/1.1\r\nHost: x\r\n\r\n"
                  "GET /api/v1/jobs/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(CountOccurrences(reply, "HTTP/1.1 200 OK"), 3);
  size_t first = reply.find("\"id\":\"1\"");
  size_t second = reply.find("\"id\":\"2\"");
  size_t third = reply.find("\"id\":\"3\"");
  ASSERT_NE(third, std::string::npos);
  EXPECT_LT(first, second);
  EXPECT_LT(second, third);
}

TEST(HttpServerTest, ServesHttp10AndClosesTheConnection) {
  ServerThread server(TestRouter());
  std::string reply = RawExchange(server.port(), "GET /api/v1/jobs/5 HTTP/1.0\r\n\r\n");
  EXPECT_THAT(reply, StartsWith("HTTP/1.0 200 OK"));
  EXPECT_THAT(reply, HasSubstr("\"id\":\"5\""));
}

TEST(HttpServerTest, StreamsToHttp10ClientsWithoutChunking) {
  ServerThread server(TestRouter());
  std::string reply = RawExchange(server.port(), "GET /stream-now HTTP/1.0\r\n\r\n");
  EXPECT_THAT(reply, StartsWith("HTTP/1.0 200 OK"));
  EXPECT_THAT(reply, ::testing::Not(HasSubstr("chunked")));
  EXPECT_THAT(reply, ::testing::EndsWith("\r\n\r\nxy"));
}

TEST(HttpServerTest, SendsChunkedStreams) {
  ServerThread server(TestRouter());
  std::string reply = RawExchange(
      server.port(), "GET /stream-now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(reply, HasSubstr("Transfer-Encoding: chunked"));
  EXPECT_THAT(reply, ::testing::EndsWith("\r\n\r\n1\r\nx\r\n1\r\ny\r\n0\r\n\r\n"));
}

TEST(HttpServerTest, AnswersExpectContinue) {
  ServerThread server(TestRouter());
  std::string reply = RawExchange(server.port(),
                                  "POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                  "Expect: 100-continue\r\nConnection: close\r\n\r\nhello");
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"));
  EXPECT_THAT(reply, ::testing::EndsWith("hello"));
}

TEST(HttpServerTest, AnswersThrowingAndSilentHandlersWith500) {
  ServerThread server(TestRouter());
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse thrown, client->Get("/throws"));
  EXPECT_EQ(thrown.status, 500);
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse dropped, client->Get("/drops"));
  EXPECT_EQ(dropped.status, 500);
  EXPECT_THAT(dropped.body, HasSubstr("without replying"));
}

TEST(HttpServerTest, HandlerRepliesLaterFromAnotherThread) {
  BlockingQueue<Responder> waiting;
  Router router;
  router.Add("GET", "/api/v1/wait",
             [&](HttpRequest&, Responder responder) { waiting.Push(std::move(responder)); });
  ServerThread server(std::move(router));
  absl::StatusOr<HttpResponse> result;
  std::thread client_thread([&] {
    auto client = HttpClient::Create(server.base_url());
    result = (*client)->Get("/api/v1/wait");
  });
  {
    Responder responder = waiting.Pop();
    EXPECT_FALSE(responder.ClientGone());
    responder.Send(JsonResponse(200, {{"late", true}}));
  }
  client_thread.join();
  KILN_ASSERT_OK(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->body, R"({"late":true})");
}

TEST(HttpServerTest, ReportsClientGoneDuringALongPoll) {
  BlockingQueue<Responder> waiting;
  Router router;
  router.Add("GET", "/api/v1/wait",
             [&](HttpRequest&, Responder responder) { waiting.Push(std::move(responder)); });
  ServerThread server(std::move(router));
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  std::thread client_thread([&] {
    absl::StatusOr<HttpResponse> result =
        client->Request("GET", "/api/v1/wait", "", "", std::chrono::milliseconds(200));
    EXPECT_THAT(result, StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("/api/v1/wait")));
  });
  Responder responder = waiting.Pop();
  client_thread.join();  // the client timed out and closed its connection
  EXPECT_TRUE(Eventually([&] { return responder.ClientGone(); }));
  responder.Send(HttpResponse{});  // goes nowhere, harmlessly
}

TEST(HttpServerTest, StreamsChunksIncrementallyAndNoticesEarlyStop) {
  BlockingQueue<std::shared_ptr<ResponseStream>> streams;
  Router router;
  router.Add("GET", "/api/v1/logs", [&](HttpRequest&, Responder responder) {
    streams.Push(responder.StartStream(200, "text/plain"));
  });
  ServerThread server(std::move(router));
  BlockingQueue<std::string> received;
  absl::StatusOr<HttpResponse> result;
  std::thread client_thread([&] {
    auto client = HttpClient::Create(server.base_url());
    int pieces = 0;
    result = (*client)->Stream("GET", "/api/v1/logs", [&](std::string_view data) {
      received.Push(std::string(data));
      return ++pieces < 2;
    });
  });
  std::shared_ptr<ResponseStream> stream = streams.Pop();
  ASSERT_TRUE(stream->Write("first line\n"));
  EXPECT_EQ(received.Pop(), "first line\n");  // arrives while the response is still open
  ASSERT_TRUE(stream->Write("second line\n"));
  EXPECT_EQ(received.Pop(), "second line\n");
  client_thread.join();
  KILN_ASSERT_OK(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->content_type, "text/plain");
  EXPECT_EQ(result->body, "");
  // The client stopped reading and closed: writes start failing.
  EXPECT_TRUE(Eventually([&] { return !stream->Write("more\n"); }));
  EXPECT_TRUE(stream->closed());
}

TEST(HttpServerTest, FinishedStreamLeavesTheConnectionReusable) {
  ServerThread server(TestRouter());
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  std::string collected;
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse response,
                            client->Stream("GET", "/stream-now", [&](std::string_view data) {
                              collected += data;
                              return true;
                            }));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(collected, "xy");
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse next, client->Get("/api/v1/jobs/9"));
  EXPECT_EQ(next.status, 200);
}

TEST(HttpServerTest, StreamCollectsErrorBodiesInsteadOfDeliveringThem) {
  ServerThread server(TestRouter());
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  bool called = false;
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse response,
                            client->Stream("GET", "/nope", [&](std::string_view) {
                              called = true;
                              return true;
                            }));
  EXPECT_FALSE(called);
  EXPECT_EQ(response.status, 404);
  EXPECT_THAT(StatusFromHttpResponse(response),
              StatusIs(absl::StatusCode::kNotFound, "no route for GET /nope"));
}

TEST(HttpServerTest, DroppedStreamCutsTheResponseShort) {
  Router router;
  router.Add("GET", "/api/v1/logs", [](HttpRequest&, Responder responder) {
    responder.StartStream(200, "text/plain")->Write("partial");
  });
  ServerThread server(std::move(router));
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  std::string collected;
  absl::StatusOr<HttpResponse> result =
      client->Stream("GET", "/api/v1/logs", [&](std::string_view data) {
        collected += data;
        return true;
      });
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("streaming")));
  EXPECT_EQ(collected, "partial");
}

TEST(HttpServerTest, StopClosesIdleConnectionsAndRefusesNewOnes) {
  ServerThread server(TestRouter());
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse before, client->Get("/api/v1/jobs/1"));
  EXPECT_EQ(before.status, 200);
  RawConnection idle(server.port());
  server.server().Stop();
  boost::system::error_code end;
  EXPECT_EQ(idle.ReadToEnd(&end), "");
  EXPECT_TRUE(end == asio::error::eof || end == asio::error::connection_reset) << end.message();
  KILN_ASSERT_OK_AND_ASSIGN(auto fresh, HttpClient::Create(server.base_url()));
  EXPECT_THAT(fresh->Get("/api/v1/jobs/1"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(server.base_url())));
  server.server().Stop();  // idempotent
}

TEST(HttpServerTest, StopLetsInFlightHandlersReply) {
  BlockingQueue<Responder> waiting;
  Router router;
  router.Add("GET", "/api/v1/wait",
             [&](HttpRequest&, Responder responder) { waiting.Push(std::move(responder)); });
  ServerThread server(std::move(router));
  absl::StatusOr<HttpResponse> result;
  std::thread client_thread([&] {
    auto client = HttpClient::Create(server.base_url());
    result = (*client)->Get("/api/v1/wait");
  });
  {
    Responder responder = waiting.Pop();
    server.server().Stop();
    responder.Send(JsonResponse(200, {{"ok", true}}));
  }
  client_thread.join();
  KILN_ASSERT_OK(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->Header("connection"), "close");
}

TEST(HttpServerTest, CreateFailsForATakenPortOrABadAddress) {
  ServerThread first(TestRouter());
  asio::io_context io;
  HttpServerOptions options;
  options.port = first.port();
  EXPECT_THAT(HttpServer::Create(io, options, Router()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("already in use")));
  options.port = 0;
  options.address = "not-an-address";
  EXPECT_THAT(HttpServer::Create(io, options, Router()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not-an-address")));
  options.address = "192.0.2.1";  // TEST-NET-1: never an address of this machine
  EXPECT_THAT(HttpServer::Create(io, options, Router()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("192.0.2.1")));
  options.address = "127.0.0.1";
  options.port = 70000;
  EXPECT_THAT(HttpServer::Create(io, options, Router()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("70000")));
}

TEST(HttpServerTest, ServesConcurrentClients) {
  ServerThread server(TestRouter());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto client = HttpClient::Create(server.base_url());
      for (int i = 0; i < 25; ++i) {
        auto response = (*client)->Get("/api/v1/jobs/" + std::to_string(t * 100 + i));
        if (response.ok() && response->status == 200 &&
            response->body.find("\"id\":\"" + std::to_string(t * 100 + i) + "\"") !=
                std::string::npos) {
          ++ok;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), 200);
}

}  // namespace
}  // namespace kiln::net
