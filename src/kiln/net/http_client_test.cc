// http_client_test.cc
//
// HttpClient against scripted loopback servers that misbehave on cue (close kept-alive
// connections, answer halfway, stay silent); the happy paths against the real server are
// in http_server_test.cc.

#include "kiln/net/http_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::net {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ::testing::HasSubstr;

// Runs `script` on a thread against a listening socket on 127.0.0.1; joins on destruction,
// so each script must end on its own.
class ScriptedServer {
 public:
  using Script = std::function<void(tcp::acceptor&)>;
  explicit ScriptedServer(Script script)
      : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this, script = std::move(script)] { script(acceptor_); });
  }
  ~ScriptedServer() { thread_.join(); }
  std::string base_url() const {
    return absl::StrCat("http://127.0.0.1:", acceptor_.local_endpoint().port());
  }

 private:
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::thread thread_;
};

tcp::socket Accept(tcp::acceptor& acceptor) {
  boost::system::error_code ec;
  tcp::socket socket = acceptor.accept(ec);
  return socket;
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

void Write(tcp::socket& socket, std::string_view bytes) {
  boost::system::error_code ec;
  asio::write(socket, asio::buffer(bytes.data(), bytes.size()), ec);
}

std::string Ok(std::string_view body) {
  return absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: ", body.size(), "\r\n\r\n",
                      std::string(body));
}

TEST(HttpClientTest, CreateAcceptsHttpUrls) {
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create("http://127.0.0.1:8080/"));
  EXPECT_EQ(client->base_url(), "http://127.0.0.1:8080");
  KILN_EXPECT_OK(HttpClient::Create("http://localhost"));
  KILN_EXPECT_OK(HttpClient::Create("HTTP://[::1]:9/prefix"));
}

TEST(HttpClientTest, CreateRejectsOtherUrls) {
  EXPECT_THAT(HttpClient::Create("https://example.com"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("https")));
  for (const char* url : {"", "127.0.0.1:80", "ftp://host", "http://", "http://:80",
                          "http://host:0", "http://host:99999", "http://host:8x",
                          "http://user@host", "http://host/a?b", "http://ho st", "http://[::1"}) {
    EXPECT_THAT(HttpClient::Create(url),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad server URL")))
        << url;
  }
}

TEST(HttpClientTest, IsUnavailableWhenNothingListens) {
  int port;
  {
    asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = acceptor.local_endpoint().port();
  }
  std::string url = absl::StrCat("http://127.0.0.1:", port);
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(url));
  EXPECT_THAT(client->Get("/api/v1/jobs"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(url + "/api/v1/jobs")));
}

TEST(HttpClientTest, ReusesTheKeptAliveConnection) {
  std::atomic<int> accepted{0};
  ScriptedServer server([&](tcp::acceptor& acceptor) {
    tcp::socket socket = Accept(acceptor);
    ++accepted;
    for (int i = 0; i < 3; ++i) {
      if (ReadHead(socket).empty()) return;
      Write(socket, Ok(std::to_string(i)));
    }
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  for (int i = 0; i < 3; ++i) {
    KILN_ASSERT_OK_AND_ASSIGN(HttpResponse response, client->Get("/x"));
    EXPECT_EQ(response.body, std::to_string(i));
  }
  EXPECT_EQ(accepted.load(), 1);
}

TEST(HttpClientTest, ReconnectsAfterTheServerClosedAnIdleConnection) {
  ScriptedServer server([](tcp::acceptor& acceptor) {
    for (int i = 0; i < 2; ++i) {
      tcp::socket socket = Accept(acceptor);
      if (ReadHead(socket).empty()) return;
      Write(socket, Ok(absl::StrCat("connection ", i)));
      // Closing right after a keep-alive response is what an idle timeout looks like.
    }
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse first, client->Get("/x"));
  EXPECT_EQ(first.body, "connection 0");
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse second, client->Get("/x"));
  EXPECT_EQ(second.body, "connection 1");
}

TEST(HttpClientTest, RetriesOnceWhenAReusedConnectionDiesBeforeAnyResponseByte) {
  ScriptedServer server([](tcp::acceptor& acceptor) {
    {
      tcp::socket socket = Accept(acceptor);
      if (ReadHead(socket).empty()) return;
      Write(socket, Ok("first"));
      ReadHead(socket);  // the second request arrives ... and the server closes unanswered
    }
    tcp::socket socket = Accept(acceptor);
    std::string head = ReadHead(socket);
    Write(socket, Ok(head.find("POST /second") == 0 ? "second" : "wrong request"));
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse first, client->Get("/first"));
  EXPECT_EQ(first.body, "first");
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse second, client->PostJson("/second", {{"a", 1}}));
  EXPECT_EQ(second.body, "second");
}

TEST(HttpClientTest, DoesNotRetryAfterAPartialResponse) {
  std::atomic<int> accepted{0};
  ScriptedServer server([&](tcp::acceptor& acceptor) {
    tcp::socket socket = Accept(acceptor);
    ++accepted;
    if (ReadHead(socket).empty()) return;
    Write(socket, Ok("first"));
    if (ReadHead(socket).empty()) return;
    Write(socket, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part");
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK(client->Get("/first"));
  EXPECT_THAT(client->Get("/second"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("/second")));
  EXPECT_EQ(accepted.load(), 1);
}

TEST(HttpClientTest, DoesNotRetryOnAFreshConnection) {
  ScriptedServer server([](tcp::acceptor& acceptor) {
    tcp::socket socket = Accept(acceptor);
    ReadHead(socket);  // and close without an answer
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  EXPECT_THAT(client->Get("/x"), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("/x")));
}

TEST(HttpClientTest, TimesOutAsDeadlineExceeded) {
  std::atomic<bool> done{false};
  ScriptedServer server([&](tcp::acceptor& acceptor) {
    tcp::socket socket = Accept(acceptor);
    ReadHead(socket);
    // Say nothing; wait for the client to give up (its close ends this read).
    ReadHead(socket);
    done = true;
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  EXPECT_THAT(client->Request("GET", "/slow", "", "", std::chrono::milliseconds(100)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("100 ms")));
}

TEST(HttpClientTest, SendsHostDefaultHeadersAndBasicAuth) {
  std::string head;
  ScriptedServer server([&](tcp::acceptor& acceptor) {
    tcp::socket socket = Accept(acceptor);
    head = ReadHead(socket);
    Write(socket, Ok(""));
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url() + "/prefix/"));
  client->SetDefaultHeader("X-Trace", "abc");
  client->SetBearerToken("replaced");
  client->SetBasicAuth("user", "pass");
  KILN_ASSERT_OK(client->Get("api?q=1"));
  EXPECT_THAT(head, ::testing::StartsWith("GET /prefix/api?q=1 HTTP/1.1\r\n"));
  EXPECT_THAT(head, HasSubstr("Host: 127.0.0.1:"));
  EXPECT_THAT(head, HasSubstr("X-Trace: abc\r\n"));
  EXPECT_THAT(head, HasSubstr("Authorization: Basic dXNlcjpwYXNz\r\n"));
  EXPECT_THAT(head, ::testing::Not(HasSubstr("Bearer")));
}

TEST(HttpClientTest, RejectsTargetsWithSpacesAndBadMethods) {
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create("http://127.0.0.1:1"));
  EXPECT_THAT(client->Get("/a b"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("spaces")));
  EXPECT_THAT(client->Request("GE T", "/"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("method")));
  client->SetDefaultHeader("X-Bad", "a\r\nInjected: 1");
  EXPECT_THAT(client->Get("/"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("X-Bad")));
}

TEST(HttpClientTest, ReadsNoBodyForHead) {
  ScriptedServer server([](tcp::acceptor& acceptor) {
    tcp::socket socket = Accept(acceptor);
    ReadHead(socket);
    Write(socket, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    ReadHead(socket);
    Write(socket, Ok("after"));
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse head, client->Request("HEAD", "/x"));
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, "");
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse next, client->Get("/x"));
  EXPECT_EQ(next.body, "after");
}

TEST(HttpClientTest, StreamsABodyWithoutChunking) {
  ScriptedServer server([](tcp::acceptor& acceptor) {
    tcp::socket socket = Accept(acceptor);
    ReadHead(socket);
    Write(socket, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nhello");
    Write(socket, "world");
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  std::string collected;
  KILN_ASSERT_OK_AND_ASSIGN(HttpResponse response,
                            client->Stream("GET", "/logs", [&](std::string_view data) {
                              collected += data;
                              return true;
                            }));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.content_type, "text/plain");
  EXPECT_EQ(collected, "helloworld");
}

TEST(HttpClientTest, StreamTimesOutWhenDataStops) {
  ScriptedServer server([](tcp::acceptor& acceptor) {
    tcp::socket socket = Accept(acceptor);
    ReadHead(socket);
    Write(socket, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    ReadHead(socket);  // until the client gives up
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto client, HttpClient::Create(server.base_url()));
  std::string collected;
  EXPECT_THAT(client->Stream(
                  "GET", "/logs",
                  [&](std::string_view data) {
                    collected += data;
                    return true;
                  },
                  std::chrono::milliseconds(100)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("no data for 100 ms")));
  EXPECT_EQ(collected, "abc");
}

}  // namespace
}  // namespace kiln::net
