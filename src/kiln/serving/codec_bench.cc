// codec_bench.cc
//
// Micro-benchmark of the scoring path's codecs on the hot request: one Fashion-MNIST
// sample (784 float32 values, shortest-form decimals as a client's json.dumps writes
// them) in the Watson ML payload, and a 10-logit response. Compares the single-pass
// decoder with nlohmann::json::parse (plus copying the numbers out) on the same body.
// Prints figures only; it asserts nothing about speed.
//
// Usage: kiln_serving_codec_bench [--benchmark_filter=REGEX] [Google Benchmark flags]
#include <benchmark/benchmark.h>

#include <charconv>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "kiln/serving/codec.h"

namespace kiln::serving {
namespace {

Signature ImageSignature() {
  auto signature = ParseSignature(base::Json::parse(R"({
    "inputs": [{"name": "image", "dtype": "float32", "shape": [1, 28, 28]}],
    "outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}]})"));
  return *signature;
}

// Normalized pixel values, as a client sends them after transforms.Normalize.
std::vector<float> Pixels(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-0.4242f, 2.8215f);
  std::vector<float> values(n);
  for (float& v : values) v = dist(rng);
  return values;
}

std::string FloatList(const std::vector<float>& values) {
  std::string out;
  char buf[32];
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ", ";
    auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), values[i]);
    out.append(buf, ptr);
  }
  return out;
}

std::string WmlBody(int samples) {
  std::string body = R"({"input_data": [{"values": [)";
  for (int s = 0; s < samples; ++s) {
    if (s > 0) body += ", ";
    body += "[" + FloatList(Pixels(784, s + 1)) + "]";
  }
  return body + "]}]}";
}

void SetBytes(benchmark::State& state, size_t bytes) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

// The body bench/serving/models.py writes: Fashion-MNIST-like pixels (about half zero,
// the rest k/255) as float32 widened to double and printed the way Python's json does
// (shortest double form, up to 17 digits), "0.0" for zeros.
std::string PythonWmlBody() {
  std::mt19937 rng(5);
  std::string out = R"({"input_data":[{"values":[[)";
  char buf[32];
  for (int i = 0; i < 784; ++i) {
    if (i > 0) out += ",";
    int pixel = rng() % 2 == 0 ? 0 : static_cast<int>(rng() % 256);
    double value = static_cast<float>(pixel / 255.0);
    if (value == 0) {
      out += "0.0";
      continue;
    }
    auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), value);
    out.append(buf, ptr);
  }
  return out + "]]}]}";
}

void BM_DecodeWatsonMlPythonBody(benchmark::State& state) {
  Signature signature = ImageSignature();
  std::string body = PythonWmlBody();
  for (auto _ : state) {
    auto request = DecodeRequest(Dialect::kWatsonMl, body, signature);
    if (!request.ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(request);
  }
  SetBytes(state, body.size());
}
BENCHMARK(BM_DecodeWatsonMlPythonBody);

void BM_NlohmannDecodeWatsonMlPythonBody(benchmark::State& state) {
  std::string body = PythonWmlBody();
  for (auto _ : state) {
    nlohmann::json json = nlohmann::json::parse(body);
    std::string bytes;
    for (const auto& v : json["input_data"][0]["values"][0]) {
      float f = v.get<float>();
      bytes.append(reinterpret_cast<const char*>(&f), sizeof(f));
    }
    benchmark::DoNotOptimize(bytes);
  }
  SetBytes(state, body.size());
}
BENCHMARK(BM_NlohmannDecodeWatsonMlPythonBody);

std::string KserveBody() {
  return R"({"id": "1", "inputs": [{"name": "image", "shape": [1, 1, 28, 28], )"
         R"("datatype": "FP32", "data": [)" +
         FloatList(Pixels(784, 1)) + "]}]}";
}

void BM_DecodeWatsonMl(benchmark::State& state) {
  Signature signature = ImageSignature();
  std::string body = WmlBody(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auto request = DecodeRequest(Dialect::kWatsonMl, body, signature);
    if (!request.ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(request);
  }
  SetBytes(state, body.size());
}
BENCHMARK(BM_DecodeWatsonMl)->Arg(1)->Arg(32);

// The same body through nlohmann::json, then the floats copied into a packed buffer:
// what a DOM-based decoder would do at the least.
void BM_NlohmannDecodeWatsonMl(benchmark::State& state) {
  std::string body = WmlBody(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    nlohmann::json json = nlohmann::json::parse(body);
    std::string bytes;
    for (const auto& sample : json["input_data"][0]["values"]) {
      for (const auto& v : sample) {
        float f = v.get<float>();
        bytes.append(reinterpret_cast<const char*>(&f), sizeof(f));
      }
    }
    benchmark::DoNotOptimize(bytes);
  }
  SetBytes(state, body.size());
}
BENCHMARK(BM_NlohmannDecodeWatsonMl)->Arg(1)->Arg(32);

void BM_NlohmannParseOnly(benchmark::State& state) {
  std::string body = WmlBody(1);
  for (auto _ : state) {
    nlohmann::json json = nlohmann::json::parse(body);
    benchmark::DoNotOptimize(json);
  }
  SetBytes(state, body.size());
}
BENCHMARK(BM_NlohmannParseOnly);

void BM_DecodeKserve(benchmark::State& state) {
  Signature signature = ImageSignature();
  std::string body = KserveBody();
  for (auto _ : state) {
    auto request = DecodeRequest(Dialect::kKserveV2, body, signature);
    if (!request.ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(request);
  }
  SetBytes(state, body.size());
}
BENCHMARK(BM_DecodeKserve);

// The same image as KServe binary tensor data (tritonclient's default): the JSON, then
// the 3,136 raw bytes.
void BM_DecodeKserveBinary(benchmark::State& state) {
  Signature signature = ImageSignature();
  std::string json =
      R"({"id": "1", "inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", )"
      R"("parameters": {"binary_data_size": 3136}}]})";
  std::vector<float> pixels = Pixels(784, 1);
  std::string body =
      json + std::string(reinterpret_cast<const char*>(pixels.data()), pixels.size() * 4);
  for (auto _ : state) {
    auto request = DecodeKserveBinaryRequest(body, json.size(), signature);
    if (!request.ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(request);
  }
  SetBytes(state, body.size());
}
BENCHMARK(BM_DecodeKserveBinary);

Tensor Logits(int batch) {
  std::vector<float> values = Pixels(10 * batch, 99);
  for (float& v : values) v = -v * 3;  // log-probabilities
  Tensor t;
  t.dtype = DType::kFloat32;
  t.shape = {batch, 10};
  t.bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return t;
}

void BM_EncodeWatsonMl(benchmark::State& state) {
  Signature signature = ImageSignature();
  InferRequest request;
  request.dialect = Dialect::kWatsonMl;
  request.batch = state.range(0);
  std::vector<Tensor> outputs = {Logits(static_cast<int>(state.range(0)))};
  for (auto _ : state) {
    std::string response = EncodeResponse(request, outputs, signature, "mnist", "1");
    benchmark::DoNotOptimize(response);
  }
}
BENCHMARK(BM_EncodeWatsonMl)->Arg(1)->Arg(32);

void BM_NlohmannEncodeWatsonMl(benchmark::State& state) {
  Tensor logits = Logits(static_cast<int>(state.range(0)));
  std::vector<float> values(logits.bytes.size() / sizeof(float));
  std::memcpy(values.data(), logits.bytes.data(), logits.bytes.size());
  for (auto _ : state) {
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t s = 0; s < state.range(0); ++s) {
      rows.push_back(std::vector<float>(values.begin() + s * 10, values.begin() + s * 10 + 10));
    }
    nlohmann::json response = {
        {"predictions", {{{"fields", {"logits"}}, {"values", std::move(rows)}}}}};
    std::string text = response.dump();
    benchmark::DoNotOptimize(text);
  }
}
BENCHMARK(BM_NlohmannEncodeWatsonMl)->Arg(1)->Arg(32);

}  // namespace
}  // namespace kiln::serving

BENCHMARK_MAIN();
