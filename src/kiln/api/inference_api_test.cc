// inference_api_test.cc
//
// The master's prediction routes end to end over loopback: a real HttpServer serving
// InferenceApi (with a real Authenticator on a real SQLite store and a real HttpForwarder)
// in front of real HttpServers standing in as replicas. The stand-ins answer fixed JSON
// saying who they are and what they received: these tests are about routing, auth,
// retries and error shapes, not the model (tests/integration/test_inference_routing.py
// runs real kiln-serve replicas).

#include "kiln/api/inference_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/base/clock.h"
#include "kiln/base/json.h"
#include "kiln/net/bundle.h"
#include "kiln/net/http_client.h"
#include "kiln/net/http_server.h"
#include "kiln/net/http_status.h"
#include "kiln/store/sqlite_store.h"

namespace kiln::api {
namespace {

namespace asio = boost::asio;
using base::Json;
using ::testing::HasSubstr;

constexpr char kSignature[] =
    R"({"inputs": [{"name": "image", "dtype": "float32", "shape": [4]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [2]}]})";

// An HTTP server on its own io thread.
class ServerThread {
 public:
  explicit ServerThread(net::Router router) {
    auto server = net::HttpServer::Create(io_, net::HttpServerOptions{}, std::move(router));
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~ServerThread() {
    server_->Stop();
    io_.stop();
    thread_.join();
  }
  int port() const { return server_->port(); }
  asio::io_context& io() { return io_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<net::HttpServer> server_;
  std::thread thread_;
};

// A stand-in replica: answers every prediction path with {"replica", "secret", "target",
// "body"}, and 400 when the body is "bad" (as kiln-serve does for a payload that does not
// fit the signature). It also takes bundles (POST /kiln/v1/bundle), answering each
// request in one as if it came alone, as kiln-serve does.
class FakeReplicaServer {
 public:
  explicit FakeReplicaServer(std::string tag) : tag_(std::move(tag)) {
    net::Router router;
    auto answer = [this](net::HttpRequest& req, net::Responder res) {
      res.Send(Answer(req.Header("x-kiln-serve-secret"), req.target, req.body,
                      req.Header("inference-header-content-length")));
    };
    for (const char* pattern :
         {"/api/v1/predict", "/ml/v4/deployments/{id}/predictions", "/v2/models/{name}/infer",
          "/v2/models/{name}/versions/{v}/infer"}) {
      router.Add("POST", pattern, answer);
    }
    router.Add("POST", "/kiln/v1/bundle", [this](net::HttpRequest& req, net::Responder res) {
      ++bundles;
      auto items = net::DecodeBundleRequest(req.body);
      ASSERT_TRUE(items.ok()) << items.status();
      std::vector<net::HttpResponse> answers;
      for (const net::BundledRequest& item : *items) {
        std::string json_length;
        for (const auto& [name, value] : item.headers) {
          if (name == "inference-header-content-length") json_length = value;
        }
        answers.push_back(
            Answer(req.Header("x-kiln-serve-secret"), item.target, item.body, json_length));
      }
      net::HttpResponse bundle;
      bundle.content_type = std::string(net::kBundleContentType);
      bundle.body = net::EncodeBundleResponse(answers);
      res.Send(std::move(bundle));
    });
    server_ = std::make_unique<ServerThread>(std::move(router));
  }
  int port() const { return server_->port(); }
  std::atomic<int> hits{0};     // predictions answered
  std::atomic<int> bundles{0};  // bundles among the exchanges that carried them

 private:
  // A KServe binary request (its JSON's length given) is answered in kind: the JSON
  // answer, then 4 bytes of "binary" data.
  net::HttpResponse Answer(const std::string& secret, const std::string& target,
                           const std::string& body, const std::string& json_length) {
    ++hits;
    if (body == "bad") return net::JsonResponse(400, {{"error", "expected image: float32[4]"}});
    net::HttpResponse response = net::JsonResponse(200, {{"replica", tag_},
                                                         {"secret", secret},
                                                         {"target", target},
                                                         {"body", body},
                                                         {"json_length", json_length}});
    if (!json_length.empty()) {
      response.headers.emplace_back("Inference-Header-Content-Length",
                                    std::to_string(response.body.size()));
      response.content_type = "application/octet-stream";
      response.body += "\x01\x02\x03\x04";
    }
    return response;
  }

  std::string tag_;
  std::unique_ptr<ServerThread> server_;
};

// A port nothing listens on (a replica that died).
int DeadPort() {
  net::Router router;
  ServerThread server(std::move(router));
  return server.port();
}

class InferenceApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln_inference_api_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto opened = store::SqliteStore::Open(dir_ + "/kiln.db");
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(opened).value();
    auth_ = std::make_unique<auth::Authenticator>(*store_, base::SystemClock::Get());
    auto alice = auth_->CreateUser("alice", "alice-password", false);
    ASSERT_TRUE(alice.ok()) << alice.status();
    alice_id_ = alice->id;
    ASSERT_TRUE(auth_->CreateUser("bob", "bob-password", false).ok());
    ASSERT_TRUE(auth_->CreateUser("root", "root-password", true).ok());
  }

  void StartMaster(InferenceApiOptions options = {}) {
    forwarder_ = std::make_unique<net::HttpForwarder>();
    net::Router router;
    master_io_holder_ = std::make_unique<asio::io_context>();
    api_ =
        std::make_unique<InferenceApi>(*master_io_holder_, *auth_, routes_, *forwarder_, options);
    api_->SetReplicaUnreachableObserver([this](int64_t deployment, int64_t job) {
      std::lock_guard<std::mutex> lock(mu_);
      unreachable_.emplace_back(deployment, job);
    });
    api_->Register(router);
    auto server = net::HttpServer::Create(*master_io_holder_, {}, std::move(router));
    ASSERT_TRUE(server.ok()) << server.status();
    master_server_ = std::move(server).value();
    master_thread_ = std::thread([this] {
      auto work = asio::make_work_guard(*master_io_holder_);
      master_io_holder_->run();
    });
  }

  void TearDown() override {
    if (master_server_) master_server_->Stop();
    if (forwarder_) forwarder_->Stop();
    if (master_io_holder_) {
      master_io_holder_->stop();
      master_thread_.join();
    }
    master_server_.reset();
    api_.reset();
    forwarder_.reset();
    master_io_holder_.reset();
  }

  std::unique_ptr<net::HttpClient> Client(const std::string& user, const std::string& password) {
    auto client =
        net::HttpClient::Create(absl::StrCat("http://127.0.0.1:", master_server_->port()));
    EXPECT_TRUE(client.ok());
    if (!user.empty()) (*client)->SetBasicAuth(user, password);
    return std::move(client).value();
  }

  serving::DeploymentRoute Route(int64_t id, std::string name,
                                 std::vector<std::pair<int64_t, int>> replicas) {
    serving::DeploymentRoute route;
    route.id = id;
    route.name = std::move(name);
    route.user_id = alice_id_;
    route.secret = "s3cret";
    route.model_name = "mnist";
    route.version = 2;
    route.signature_json = kSignature;
    route.state = "READY";
    for (auto [job, port] : replicas) {
      route.replicas.push_back(serving::ReplicaEndpoint{job, 2, "127.0.0.1", port});
    }
    return route;
  }

  std::vector<std::pair<int64_t, int64_t>> Unreachable() {
    std::lock_guard<std::mutex> lock(mu_);
    return unreachable_;
  }

  std::string dir_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::Authenticator> auth_;
  int64_t alice_id_ = 0;
  serving::RoutingTable routes_;
  std::unique_ptr<net::HttpForwarder> forwarder_;
  std::unique_ptr<asio::io_context> master_io_holder_;
  std::unique_ptr<InferenceApi> api_;
  std::unique_ptr<net::HttpServer> master_server_;
  std::thread master_thread_;
  std::mutex mu_;
  std::vector<std::pair<int64_t, int64_t>> unreachable_;
};

TEST_F(InferenceApiTest, NativePredictReachesAReplicaWithTheSecretAndPassesItsAnswerThrough) {
  FakeReplicaServer replica("r1");
  routes_.Put(Route(7, "digits", {{70, replica.port()}}));
  StartMaster();
  auto alice = Client("alice", "alice-password");
  for (const char* key : {"7", "digits"}) {
    auto response = alice->Request("POST", absl::StrCat("/api/v1/deployments/", key, "/predict"),
                                   R"({"inputs": [[1, 2, 3, 4]]})");
    ASSERT_TRUE(response.ok()) << response.status();
    ASSERT_EQ(response->status, 200) << response->body;
    Json body = Json::parse(response->body);
    EXPECT_EQ(body["replica"], "r1");
    EXPECT_EQ(body["secret"], "s3cret");
    EXPECT_EQ(body["target"], "/api/v1/predict");
    EXPECT_EQ(body["body"], R"({"inputs": [[1, 2, 3, 4]]})");
  }
  // The replica's 400 (a payload that does not fit the signature) comes back unchanged.
  auto bad = alice->Request("POST", "/api/v1/deployments/7/predict", "bad");
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(Json::parse(bad->body)["error"], "expected image: float32[4]");
}

TEST_F(InferenceApiTest, OnlyTheOwnerOrAnAdminMayPredictAndUnknownDeploymentsAre404) {
  FakeReplicaServer replica("r1");
  routes_.Put(Route(7, "digits", {{70, replica.port()}}));
  StartMaster();
  auto anonymous = Client("", "");
  auto no_auth = anonymous->Request("POST", "/api/v1/deployments/7/predict", "{}");
  ASSERT_TRUE(no_auth.ok());
  EXPECT_EQ(no_auth->status, 401);

  auto bob = Client("bob", "bob-password");
  auto other = bob->Request("POST", "/api/v1/deployments/7/predict", "{}");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->status, 404);
  EXPECT_THAT(other->body, HasSubstr("no deployment \\\"7\\\""));

  auto root = Client("root", "root-password");
  auto admin = root->Request("POST", "/api/v1/deployments/digits/predict", "{}");
  ASSERT_TRUE(admin.ok());
  EXPECT_EQ(admin->status, 200);

  auto alice = Client("alice", "alice-password");
  auto unknown = alice->Request("POST", "/api/v1/deployments/nope/predict", "{}");
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(replica.hits.load(), 1);
}

TEST_F(InferenceApiTest, SpreadsRequestsOverReadyReplicas) {
  FakeReplicaServer a("a");
  FakeReplicaServer b("b");
  routes_.Put(Route(7, "digits", {{70, a.port()}, {71, b.port()}}));
  StartMaster();
  auto alice = Client("alice", "alice-password");
  for (int i = 0; i < 20; ++i) {
    auto response = alice->Request("POST", "/api/v1/deployments/7/predict", "{}");
    ASSERT_TRUE(response.ok());
    ASSERT_EQ(response->status, 200);
  }
  // One request at a time: every choice is a tie, broken round robin.
  EXPECT_EQ(a.hits.load(), 10);
  EXPECT_EQ(b.hits.load(), 10);
  EXPECT_EQ(routes_.Outstanding(70), 0);
  EXPECT_EQ(routes_.Outstanding(71), 0);
}

TEST_F(InferenceApiTest, AnUnreachableReplicaIsRetriedOnAnotherAndReported) {
  FakeReplicaServer alive("alive");
  routes_.Put(Route(7, "digits", {{70, DeadPort()}, {71, alive.port()}}));
  StartMaster();
  auto alice = Client("alice", "alice-password");
  for (int i = 0; i < 10; ++i) {
    auto response = alice->Request("POST", "/api/v1/deployments/7/predict", "{}");
    ASSERT_TRUE(response.ok());
    ASSERT_EQ(response->status, 200) << response->body;
    EXPECT_EQ(Json::parse(response->body)["replica"], "alive");
  }
  EXPECT_EQ(alive.hits.load(), 10);
  auto reports = Unreachable();
  ASSERT_FALSE(reports.empty());
  for (auto [deployment, job] : reports) {
    EXPECT_EQ(deployment, 7);
    EXPECT_EQ(job, 70);
  }
}

TEST_F(InferenceApiTest, NoReplicaAnsweringIs503NamingTheLastError) {
  routes_.Put(Route(7, "digits", {{70, DeadPort()}, {71, DeadPort()}}));
  StartMaster();
  auto alice = Client("alice", "alice-password");
  auto response = alice->Request("POST", "/api/v1/deployments/7/predict", "{}");
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 503);
  EXPECT_THAT(response->body, HasSubstr("no ready replica of deployment \\\"digits\\\" could "
                                        "answer"));
  EXPECT_THAT(response->body, HasSubstr("cannot connect"));
}

TEST_F(InferenceApiTest, NoReadyReplicaIs503SayingWhyFromTheState) {
  serving::DeploymentRoute pending = Route(7, "starting", {});
  pending.state = "PENDING";
  routes_.Put(pending);
  serving::DeploymentRoute failed = Route(8, "broken", {});
  failed.state = "FAILED";
  failed.reason = "the model does not accept its signature";
  routes_.Put(failed);
  StartMaster();
  auto alice = Client("alice", "alice-password");
  auto starting = alice->Request("POST", "/api/v1/deployments/starting/predict", "{}");
  ASSERT_TRUE(starting.ok());
  EXPECT_EQ(starting->status, 503);
  EXPECT_THAT(starting->body, HasSubstr("still starting"));
  auto broken = alice->Request("POST", "/ml/v4/deployments/8/predictions", "{}");
  ASSERT_TRUE(broken.ok());
  EXPECT_EQ(broken->status, 503);
  EXPECT_THAT(broken->body, HasSubstr("the model does not accept its signature"));
  // Watson ML's error shape on its route.
  Json wml = Json::parse(broken->body);
  EXPECT_EQ(wml["status_code"], 503);
  ASSERT_TRUE(wml["errors"].is_array());
}

TEST_F(InferenceApiTest, WatsonMlPredictionsPassThroughWithTheirPath) {
  FakeReplicaServer replica("r1");
  routes_.Put(Route(7, "digits", {{70, replica.port()}}));
  StartMaster();
  auto alice = Client("alice", "alice-password");
  auto response = alice->Request("POST", "/ml/v4/deployments/7/predictions?version=2020-09-01",
                                 R"({"input_data": [{"values": [[1, 2, 3, 4]]}]})");
  ASSERT_TRUE(response.ok());
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_EQ(Json::parse(response->body)["target"],
            "/ml/v4/deployments/7/predictions?version=2020-09-01");
  auto unknown = alice->Request("POST", "/ml/v4/deployments/99/predictions", "{}");
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(Json::parse(unknown->body)["status_code"], 404);
}

TEST_F(InferenceApiTest, KserveInferMetadataAndReadinessByDeploymentName) {
  FakeReplicaServer replica("r1");
  routes_.Put(Route(7, "digits", {{70, replica.port()}}));
  serving::DeploymentRoute pending = Route(8, "starting", {});
  pending.state = "PENDING";
  routes_.Put(pending);
  StartMaster();
  auto alice = Client("alice", "alice-password");

  auto infer = alice->Request("POST", "/v2/models/digits/infer", R"({"inputs": []})");
  ASSERT_TRUE(infer.ok());
  ASSERT_EQ(infer->status, 200) << infer->body;
  EXPECT_EQ(Json::parse(infer->body)["target"], "/v2/models/digits/infer");
  auto versioned = alice->Request("POST", "/v2/models/digits/versions/2/infer", "{}");
  ASSERT_TRUE(versioned.ok());
  EXPECT_EQ(versioned->status, 200);
  auto wrong_version = alice->Request("POST", "/v2/models/digits/versions/1/infer", "{}");
  ASSERT_TRUE(wrong_version.ok());
  EXPECT_EQ(wrong_version->status, 404);
  EXPECT_THAT(Json::parse(wrong_version->body)["error"].get<std::string>(),
              HasSubstr("no version \"1\""));
  // Routing by name only: "7" is not a model name.
  auto by_id = alice->Request("POST", "/v2/models/7/infer", "{}");
  ASSERT_TRUE(by_id.ok());
  EXPECT_EQ(by_id->status, 404);
  EXPECT_THAT(Json::parse(by_id->body)["error"].get<std::string>(), HasSubstr("unknown model"));

  auto metadata = alice->Get("/v2/models/digits");
  ASSERT_TRUE(metadata.ok());
  ASSERT_EQ(metadata->status, 200) << metadata->body;
  Json meta = Json::parse(metadata->body);
  EXPECT_EQ(meta["name"], "digits");
  EXPECT_EQ(meta["versions"], Json::parse(R"(["2"])"));
  EXPECT_EQ(meta["inputs"][0]["name"], "image");
  EXPECT_EQ(meta["inputs"][0]["datatype"], "FP32");

  auto ready = alice->Get("/v2/models/digits/ready");
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(ready->status, 200);
  auto not_ready = alice->Get("/v2/models/starting/versions/2/ready");
  ASSERT_TRUE(not_ready.ok());
  EXPECT_EQ(not_ready->status, 503);

  auto anonymous = Client("", "");
  auto live = anonymous->Get("/v2/health/live");
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(live->status, 200);
  auto server_ready = anonymous->Get("/v2/health/ready");
  ASSERT_TRUE(server_ready.ok());
  EXPECT_EQ(server_ready->status, 200);
  EXPECT_EQ(replica.hits.load(), 2);
}

TEST_F(InferenceApiTest, KserveBinaryTensorDataKeepsItsHeaderBothWays) {
  FakeReplicaServer replica("r1");
  routes_.Put(Route(7, "digits", {{70, replica.port()}}));
  StartMaster();
  auto alice = Client("alice", "alice-password");
  alice->SetDefaultHeader("Inference-Header-Content-Length", "13");
  const std::string body = std::string(R"({"inputs":[]})") + std::string("\0\x7f", 2);
  auto infer = alice->Request("POST", "/v2/models/digits/infer", body, "application/octet-stream");
  ASSERT_TRUE(infer.ok());
  ASSERT_EQ(infer->status, 200) << infer->body;
  EXPECT_EQ(infer->Header("content-type"), "application/octet-stream");
  size_t json_length = 0;
  ASSERT_TRUE(absl::SimpleAtoi(infer->Header("Inference-Header-Content-Length"), &json_length));
  ASSERT_EQ(infer->body.size(), json_length + 4);
  EXPECT_EQ(infer->body.substr(json_length), "\x01\x02\x03\x04");
  Json answer = Json::parse(infer->body.substr(0, json_length));
  EXPECT_EQ(answer["json_length"], "13");
  EXPECT_EQ(answer["body"], body);
  // The header means nothing to the other dialects: it is not passed on.
  auto native = alice->Request("POST", "/api/v1/deployments/7/predict", "{}");
  ASSERT_TRUE(native.ok());
  ASSERT_EQ(native->status, 200) << native->body;
  EXPECT_EQ(Json::parse(native->body)["json_length"], "");
  EXPECT_EQ(native->Header("Inference-Header-Content-Length"), "");
  // Clients that check the server's extensions find it.
  auto server = Client("", "")->Get("/v2");
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(Json::parse(server->body)["extensions"], Json::parse(R"(["binary_tensor_data"])"));
}

TEST_F(InferenceApiTest, ABodyOverTheLimitIs413) {
  FakeReplicaServer replica("r1");
  routes_.Put(Route(7, "digits", {{70, replica.port()}}));
  InferenceApiOptions options;
  options.max_body_bytes = 1024;
  StartMaster(options);
  auto alice = Client("alice", "alice-password");
  auto response = alice->Request("POST", "/api/v1/deployments/7/predict", std::string(4096, ' '));
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 413);
  EXPECT_EQ(replica.hits.load(), 0);
}

TEST_F(InferenceApiTest, ConcurrentClientsAllGetAnswersAndCountsReturnToZero) {
  FakeReplicaServer a("a");
  FakeReplicaServer b("b");
  routes_.Put(Route(7, "digits", {{70, a.port()}, {71, b.port()}}));
  StartMaster();
  constexpr int kClients = 8;
  constexpr int kEach = 25;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      auto alice = Client("alice", "alice-password");
      for (int i = 0; i < kEach; ++i) {
        auto response = alice->Request("POST", "/api/v1/deployments/7/predict", "{}");
        if (response.ok() && response->status == 200) ++ok;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kClients * kEach);
  EXPECT_GT(a.hits.load(), 0);
  EXPECT_GT(b.hits.load(), 0);
  EXPECT_EQ(routes_.Outstanding(70), 0);
  EXPECT_EQ(routes_.Outstanding(71), 0);
}

}  // namespace
}  // namespace kiln::api
