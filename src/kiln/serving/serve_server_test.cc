#include "kiln/serving/serve_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "kiln/base/json.h"
#include "kiln/net/bundle.h"
#include "kiln/net/http_client.h"
#include "kiln/net/testing/server_thread.h"

namespace kiln::serving {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Doubles its float32 input ([b, 3] -> [b, 3]) and records the batch sizes it saw, so
// tests check both the answers and the batching. Fails when asked to (`fail`).
class DoublingEngine : public Engine {
 public:
  absl::StatusOr<std::vector<Tensor>> Run(const std::vector<Tensor>& inputs) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      batches_.push_back(inputs[0].shape[0]);
    }
    if (fail) return absl::InternalError("the model failed: out of cheese");
    Tensor out = inputs[0];
    std::vector<float> v(out.bytes.size() / sizeof(float));
    std::memcpy(v.data(), out.bytes.data(), out.bytes.size());
    for (float& x : v) x *= 2;
    std::memcpy(out.bytes.data(), v.data(), out.bytes.size());
    return std::vector<Tensor>{std::move(out)};
  }
  std::vector<int64_t> batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }
  std::atomic<bool> fail{false};

 private:
  std::mutex mu_;
  std::vector<int64_t> batches_;
};

ServeOptions Options() {
  ServeOptions options;
  options.model_name = "doubler";
  options.version = "3";
  options.signature.inputs.push_back({"x", DType::kFloat32, {3}});
  options.signature.outputs.push_back({"y", DType::kFloat32, {3}});
  options.batching.max_batch_size = 8;
  options.batching.max_queue_delay = std::chrono::microseconds(0);
  return options;
}

class ServeServerTest : public ::testing::Test {
 protected:
  void Start(ServeOptions options = Options()) {
    serve_ = std::make_unique<ServeServer>(engine_, std::move(options));
    serve_->SetReady(true);
    server_ = std::make_unique<net::ServerThread>(serve_->BuildRouter());
    auto client = net::HttpClient::Create(server_->base_url());
    KILN_CHECK_OK(client.status());
    client_ = std::move(client).value();
  }
  void TearDown() override {
    if (serve_) serve_->Drain();
    server_.reset();
  }

  net::HttpResponse Post(const std::string& target, const std::string& body) {
    auto r = client_->Request("POST", target, body);
    KILN_CHECK_OK(r.status());
    return *r;
  }
  net::HttpResponse Get(const std::string& target) {
    auto r = client_->Get(target);
    KILN_CHECK_OK(r.status());
    return *r;
  }
  static base::Json Body(const net::HttpResponse& r) { return base::Json::parse(r.body); }

  DoublingEngine engine_;
  std::unique_ptr<ServeServer> serve_;
  std::unique_ptr<net::ServerThread> server_;
  std::unique_ptr<net::HttpClient> client_;
};

TEST_F(ServeServerTest, NativePredictionsComeFromTheEngine) {
  Start();
  net::HttpResponse r = Post("/api/v1/predict", R"({"inputs": [[1, 2, 3], [0.5, 0, -1]]})");
  ASSERT_EQ(r.status, 200) << r.body;
  base::Json body = Body(r);
  EXPECT_EQ(body["model"], "doubler");
  EXPECT_EQ(body["version"], "3");
  EXPECT_EQ(body["outputs"]["y"], base::Json::parse("[[2,4,6],[1,0,-2]]"));
}

TEST_F(ServeServerTest, WatsonMlPredictionsUseAnyDeploymentId) {
  Start();
  net::HttpResponse r = Post("/ml/v4/deployments/abc-123/predictions?version=2020-08-01",
                             R"({"input_data": [{"values": [[1, 1, 1]]}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  base::Json body = Body(r);
  EXPECT_EQ(body["predictions"][0]["values"], base::Json::parse("[[2,2,2]]"));
}

TEST_F(ServeServerTest, KserveInferAndMetadataAnswerOnlyForThisModel) {
  Start();
  const std::string infer =
      R"({"id": "r1", "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
          "data": [1, 2, 3]}]})";
  net::HttpResponse r = Post("/v2/models/doubler/infer", infer);
  ASSERT_EQ(r.status, 200) << r.body;
  base::Json body = Body(r);
  EXPECT_EQ(body["id"], "r1");
  EXPECT_EQ(body["outputs"][0]["data"], base::Json::parse("[2,4,6]"));
  EXPECT_EQ(Post("/v2/models/doubler/versions/3/infer", infer).status, 200);

  net::HttpResponse other = Post("/v2/models/tripler/infer", infer);
  EXPECT_EQ(other.status, 404);
  EXPECT_THAT(Body(other)["error"].get<std::string>(), HasSubstr("serves \"doubler\""));
  EXPECT_EQ(Post("/v2/models/doubler/versions/2/infer", infer).status, 404);

  net::HttpResponse meta = Get("/v2/models/doubler");
  ASSERT_EQ(meta.status, 200);
  EXPECT_EQ(Body(meta)["name"], "doubler");
  EXPECT_EQ(Body(meta)["inputs"][0]["datatype"], "FP32");
  EXPECT_EQ(Get("/v2/models/doubler/ready").status, 200);
  EXPECT_EQ(Get("/v2/models/nope").status, 404);
  EXPECT_EQ(Get("/v2").status, 200);
}

TEST_F(ServeServerTest, BadPayloadsAre400WithTheSignatureInEachDialectsShape) {
  Start();
  net::HttpResponse native = Post("/api/v1/predict", R"({"inputs": [[1, 2]]})");
  EXPECT_EQ(native.status, 400);
  EXPECT_THAT(Body(native)["error"]["message"].get<std::string>(),
              HasSubstr("expected x: float32[3]"));

  net::HttpResponse wml =
      Post("/ml/v4/deployments/1/predictions", R"({"input_data": [{"values": [["a"]]}]})");
  EXPECT_EQ(wml.status, 400);
  EXPECT_THAT(Body(wml)["errors"][0]["message"].get<std::string>(),
              HasSubstr("expected x: float32[3]"));

  net::HttpResponse kserve = Post("/v2/models/doubler/infer", "{not json");
  EXPECT_EQ(kserve.status, 400);
  EXPECT_THAT(Body(kserve)["error"].get<std::string>(), HasSubstr("expected x: float32[3]"));
  EXPECT_TRUE(engine_.batches().empty());  // nothing reached the model
}

TEST_F(ServeServerTest, AFailingForwardIs500WithTheReason) {
  Start();
  engine_.fail = true;
  net::HttpResponse r = Post("/api/v1/predict", R"({"inputs": [[1, 2, 3]]})");
  EXPECT_EQ(r.status, 500);
  EXPECT_THAT(r.body, HasSubstr("out of cheese"));
}

TEST_F(ServeServerTest, NotReadyAndDrainedServersAnswer503ButStayLive) {
  Start();
  serve_->SetReady(false);
  EXPECT_EQ(Post("/api/v1/predict", R"({"inputs": [[1, 2, 3]]})").status, 503);
  EXPECT_EQ(Get("/v2/health/ready").status, 503);
  EXPECT_EQ(Get("/v2/models/doubler/ready").status, 503);
  EXPECT_EQ(Get("/v2/health/live").status, 200);
  serve_->SetReady(true);
  EXPECT_EQ(Get("/v2/health/ready").status, 200);
  serve_->Drain();
  net::HttpResponse r = Post("/api/v1/predict", R"({"inputs": [[1, 2, 3]]})");
  EXPECT_EQ(r.status, 503);
  EXPECT_THAT(r.body, HasSubstr("shutting down"));
  EXPECT_EQ(Get("/v2/health/ready").status, 503);
}

TEST_F(ServeServerTest, TheSecretGuardsEverythingButHealthAndMetrics) {
  ServeOptions options = Options();
  options.secret = "s3cret";
  Start(options);
  EXPECT_EQ(Post("/api/v1/predict", R"({"inputs": [[1, 2, 3]]})").status, 401);
  EXPECT_EQ(Get("/v2/models/doubler").status, 401);
  EXPECT_EQ(Get("/v2/health/ready").status, 200);
  EXPECT_EQ(Get("/metrics").status, 200);
  client_->SetDefaultHeader("X-Kiln-Serve-Secret", "wrong!");
  EXPECT_EQ(Post("/api/v1/predict", R"({"inputs": [[1, 2, 3]]})").status, 401);
  client_->SetDefaultHeader("X-Kiln-Serve-Secret", "s3cret");
  EXPECT_EQ(Post("/api/v1/predict", R"({"inputs": [[1, 2, 3]]})").status, 200);
  EXPECT_EQ(Get("/v2/models/doubler").status, 200);
}

TEST_F(ServeServerTest, ConcurrentRequestsShareOneForward) {
  ServeOptions options = Options();
  options.batching.max_batch_size = 4;
  options.batching.max_queue_delay = std::chrono::hours(1);  // only a full batch runs
  Start(options);
  std::vector<std::thread> clients;
  std::vector<int> statuses(4);
  std::vector<std::string> bodies(4);
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      auto client = net::HttpClient::Create(server_->base_url());
      auto r = (*client)->Request("POST", "/api/v1/predict",
                                  absl::StrCat(R"({"inputs": [[)", i, ",", i, ",", i, "]]}"));
      statuses[i] = r.ok() ? r->status : -1;
      bodies[i] = r.ok() ? r->body : "";
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_THAT(engine_.batches(), ElementsAre(4));
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(statuses[i], 200) << bodies[i];
    EXPECT_EQ(Body(net::HttpResponse{200, "", bodies[i], {}})["outputs"]["y"][0][0], 2 * i);
  }
}

// KServe's binary tensor data extension, as tritonclient sends it by default: the JSON's
// length in Inference-Header-Content-Length, the tensors' raw bytes after it.
TEST_F(ServeServerTest, KserveBinaryTensorDataBothWaysAloneAndInABundle) {
  Start();
  EXPECT_EQ(Body(Get("/v2"))["extensions"], base::Json::parse(R"(["binary_tensor_data"])"));
  const std::string json =
      R"({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
          "parameters": {"binary_data_size": 24}}], "parameters": {"binary_data_output": true}})";
  const float x[6] = {1, 2, 3, 0.5f, 0, -1};
  const std::string request = json + std::string(reinterpret_cast<const char*>(x), sizeof(x));
  client_->SetDefaultHeader("Inference-Header-Content-Length", std::to_string(json.size()));
  net::HttpResponse r = Post("/v2/models/doubler/infer", request);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Header("content-type"), "application/octet-stream");
  size_t json_length = 0;
  ASSERT_TRUE(absl::SimpleAtoi(r.Header("Inference-Header-Content-Length"), &json_length));
  ASSERT_EQ(r.body.size(), json_length + 24);
  base::Json head = base::Json::parse(r.body.substr(0, json_length));
  EXPECT_EQ(head["outputs"][0]["parameters"]["binary_data_size"], 24);
  EXPECT_EQ(head["outputs"][0]["shape"], base::Json::parse("[2,3]"));
  float y[6];
  std::memcpy(y, r.body.data() + json_length, sizeof(y));
  EXPECT_THAT(y, ElementsAre(2, 4, 6, 1, 0, -2));
  const std::string direct = r.body;

  // Bad input is still a 400 that says what is wrong.
  r = Post("/v2/models/doubler/infer", request.substr(0, request.size() - 4));
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Body(r)["error"].get<std::string>(),
              HasSubstr("binary_data_size is 24 bytes but only 20 bytes"));
  client_->SetDefaultHeader("Inference-Header-Content-Length", "lots");
  r = Post("/v2/models/doubler/infer", request);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Body(r)["error"].get<std::string>(),
              HasSubstr("must be the length in bytes of the JSON"));
  client_->SetDefaultHeader("Inference-Header-Content-Length", "2");
  r = Post("/api/v1/predict", R"({"inputs": [[1, 2, 3]]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Body(r)["error"]["message"].get<std::string>(),
              HasSubstr("is for /v2/models/{name}/infer only"));

  // In a bundle the header travels inside the item, both ways.
  client_->SetDefaultHeader("Inference-Header-Content-Length", "");
  std::string bundle;
  net::AppendBundledRequest(bundle, "/v2/models/doubler/infer", "application/octet-stream",
                            {{"inference-header-content-length", std::to_string(json.size())}},
                            request);
  net::AppendBundledRequest(bundle, "/v2/models/doubler/infer", "application/json", {},
                            R"({"inputs": [{"name": "x", "shape": [1, 3], "data": [1, 1, 1]}]})");
  auto b = client_->Request("POST", "/kiln/v1/bundle", bundle, net::kBundleContentType);
  KILN_CHECK_OK(b.status());
  ASSERT_EQ(b->status, 200) << b->body;
  auto answers = net::DecodeBundleResponse(b->body, 2);
  ASSERT_TRUE(answers.ok()) << answers.status();
  const net::HttpResponse& binary = (*answers)[0];
  ASSERT_EQ(binary.status, 200) << binary.body;
  EXPECT_EQ(binary.body, direct);
  EXPECT_EQ(binary.content_type, "application/octet-stream");
  EXPECT_EQ(binary.Header("Inference-Header-Content-Length"), std::to_string(json_length));
  EXPECT_EQ((*answers)[1].Header("Inference-Header-Content-Length"), "");
  EXPECT_EQ(Body((*answers)[1])["outputs"][0]["data"], base::Json::parse("[2,2,2]"));
}

// A bundle from the master: each request routed as if alone, the good ones queued together
// (one forward), every answer back in order in one bundle.
TEST_F(ServeServerTest, ABundleIsAnsweredPerRequestInOrderWithOneForward) {
  ServeOptions options = Options();
  options.secret = "s3cret";
  Start(options);
  std::string bundle;
  net::AppendBundledRequest(bundle, "/api/v1/predict", "application/json", {},
                            R"({"inputs": [[1, 2, 3]]})");
  net::AppendBundledRequest(bundle, "/ml/v4/deployments/7/predictions?version=2020-08-01",
                            "application/json", {},
                            R"({"input_data": [{"values": [[1, 1, 1], [2, 2, 2]]}]})");
  net::AppendBundledRequest(bundle, "/v2/models/tripler/infer", "application/json", {}, "{}");
  net::AppendBundledRequest(bundle, "/api/v1/predict", "application/json", {},
                            R"({"inputs": [[1, 2]]})");
  net::AppendBundledRequest(bundle, "/api/v1/jobs", "application/json", {}, "{}");
  net::AppendBundledRequest(bundle, "/v2/models/doubler/versions/3/infer", "application/json", {},
                            R"({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                "data": [0, 0, 5]}]})");
  // Without the secret the whole bundle is refused.
  EXPECT_EQ(Post("/kiln/v1/bundle", bundle).status, 401);
  client_->SetDefaultHeader("X-Kiln-Serve-Secret", "s3cret");
  auto r = client_->Request("POST", "/kiln/v1/bundle", bundle, net::kBundleContentType);
  KILN_CHECK_OK(r.status());
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->Header("content-type"), net::kBundleContentType);
  auto answers = net::DecodeBundleResponse(r->body, 6);
  ASSERT_TRUE(answers.ok()) << answers.status();
  const auto& a = *answers;
  ASSERT_EQ(a[0].status, 200) << a[0].body;
  EXPECT_EQ(Body(a[0])["outputs"]["y"], base::Json::parse("[[2,4,6]]"));
  ASSERT_EQ(a[1].status, 200) << a[1].body;
  EXPECT_EQ(Body(a[1])["predictions"][0]["values"], base::Json::parse("[[2,2,2],[4,4,4]]"));
  EXPECT_EQ(a[2].status, 404);
  EXPECT_THAT(Body(a[2])["error"].get<std::string>(), HasSubstr("serves \"doubler\""));
  EXPECT_EQ(a[3].status, 400);
  EXPECT_THAT(a[3].body, HasSubstr("expected x: float32[3]"));
  EXPECT_EQ(a[4].status, 404);
  EXPECT_THAT(Body(a[4])["error"]["message"].get<std::string>(),
              HasSubstr("no prediction route for \"/api/v1/jobs\""));
  ASSERT_EQ(a[5].status, 200) << a[5].body;
  EXPECT_EQ(Body(a[5])["outputs"][0]["data"], base::Json::parse("[0,0,10]"));
  // The three good requests (4 samples) ran as one forward.
  EXPECT_THAT(engine_.batches(), ElementsAre(4));
  // Each request is counted as itself.
  const std::string metrics = Get("/metrics").body;
  EXPECT_THAT(metrics, HasSubstr("kiln_serve_requests_total{dialect=\"native\",code=\"200\"} 1"));
  // The bundle, as one of 6 (the one refused for its secret is not counted).
  EXPECT_THAT(metrics, HasSubstr("kiln_serve_bundle_requests_bucket{le=\"4\"} 0\n"));
  EXPECT_THAT(metrics, HasSubstr("kiln_serve_bundle_requests_bucket{le=\"8\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("kiln_serve_bundle_requests_count 1\n"));

  EXPECT_EQ(Post("/kiln/v1/bundle", std::string("\x05\x00\x00\x00/a", 6)).status, 400);
}

TEST_F(ServeServerTest, AFullQueueIs503AndTheDrainAnswersWhatItHolds) {
  ServeOptions options = Options();
  options.batching.max_batch_size = 100;
  options.batching.max_queue_delay = std::chrono::hours(1);  // nothing runs until the drain
  options.batching.max_queued_samples = 1;
  Start(options);
  int first_status = 0;
  std::thread first([&] {
    auto client = net::HttpClient::Create(server_->base_url());
    auto r = (*client)->Request("POST", "/api/v1/predict", R"({"inputs": [[1, 2, 3]]})");
    first_status = r.ok() ? r->status : -1;
  });
  while (Get("/metrics").body.find("kiln_serve_queue_depth 1\n") == std::string::npos) {
    std::this_thread::yield();
  }
  net::HttpResponse full = Post("/api/v1/predict", R"({"inputs": [[1, 2, 3]]})");
  EXPECT_EQ(full.status, 503);
  EXPECT_THAT(full.body, HasSubstr("queue is full"));
  serve_->Drain();
  first.join();
  EXPECT_EQ(first_status, 200);
}

TEST_F(ServeServerTest, MetricsCountRequestsBatchesAndQueue) {
  Start();
  ASSERT_EQ(Post("/api/v1/predict", R"({"inputs": [[1, 2, 3], [1, 2, 3]]})").status, 200);
  ASSERT_EQ(Post("/api/v1/predict", R"({"inputs": [[1]]})").status, 400);
  ASSERT_EQ(Post("/v2/models/doubler/infer",
                 R"({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                     "data": [1, 2, 3]}]})")
                .status,
            200);
  net::HttpResponse m = Get("/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_THAT(m.content_type, HasSubstr("text/plain"));
  EXPECT_THAT(m.body, HasSubstr("kiln_serve_requests_total{dialect=\"native\",code=\"200\"} 1\n"));
  EXPECT_THAT(m.body, HasSubstr("kiln_serve_requests_total{dialect=\"native\",code=\"400\"} 1\n"));
  EXPECT_THAT(m.body, HasSubstr("kiln_serve_requests_total{dialect=\"kserve\",code=\"200\"} 1\n"));
  EXPECT_THAT(m.body, HasSubstr("kiln_serve_requests_total{dialect=\"wml\",code=\"200\"} 0\n"));
  EXPECT_THAT(m.body, HasSubstr("kiln_serve_batch_size_bucket{le=\"1\"} 1\n"));
  EXPECT_THAT(m.body, HasSubstr("kiln_serve_batch_size_bucket{le=\"2\"} 2\n"));
  EXPECT_THAT(m.body, HasSubstr("kiln_serve_batch_size_count 2\n"));
  EXPECT_THAT(m.body, HasSubstr("kiln_serve_request_duration_seconds_count 3\n"));
  EXPECT_THAT(m.body, HasSubstr("kiln_serve_inference_duration_seconds_count 2\n"));
  EXPECT_THAT(m.body, HasSubstr("kiln_serve_queue_depth 0\n"));
}

}  // namespace
}  // namespace kiln::serving
