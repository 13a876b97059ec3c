// serving_codec_fuzz.cc
//
// Feeds arbitrary bytes to the scoring path's request decoders (native, Watson ML, KServe
// v2, and KServe with binary tensor data) against a few signatures: the first byte picks
// the dialect and the signature; with its high bit set, the next two give the JSON's
// length (Inference-Header-Content-Length) of a KServe binary body. A decode must return
// a Status, never crash or read past the body; a decoded request must be consistent (one
// tensor per input, [batch, *shape], finite floats, booleans 0 or 1), and encoding its
// inputs back as outputs must give valid JSON before any binary part, which has the
// length the JSON says.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/serving/codec.h"

namespace {

using kiln::serving::DType;
using kiln::serving::Signature;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "serving_codec_fuzz: %s\n", what);
    std::abort();
  }
}

Signature Make(const char* json) {
  auto signature = kiln::serving::ParseSignature(kiln::base::Json::parse(json));
  Check(signature.ok(), "bad built-in signature");
  // Outputs mirror the inputs, so a decoded request's tensors can be encoded back.
  signature->outputs = signature->inputs;
  return *signature;
}

const std::vector<Signature>& Signatures() {
  static const std::vector<Signature> signatures = {
      Make(R"({"inputs": [{"name": "image", "dtype": "float32", "shape": [1, 2, 2]}],
               "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})"),
      Make(R"({"inputs": [{"name": "a", "dtype": "float64", "shape": [2]},
                          {"name": "b", "dtype": "int64", "shape": []},
                          {"name": "c", "dtype": "bool", "shape": [-1]}],
               "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})"),
      Make(R"({"inputs": [{"name": "t", "dtype": "int32", "shape": [-1, 2]}],
               "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})"),
  };
  return signatures;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool binary = (data[0] & 0x80) != 0;
  const auto dialect =
      binary ? kiln::serving::Dialect::kKserveV2 : static_cast<kiln::serving::Dialect>(data[0] % 3);
  const Signature& signature = Signatures()[((data[0] & 0x7f) / 3) % Signatures().size()];
  size_t skip = 1;
  size_t json_length = 0;
  if (binary) {
    if (size < 3) return 0;
    json_length = data[1] | (static_cast<size_t>(data[2]) << 8);
    skip = 3;
  }
  std::string_view body(reinterpret_cast<const char*>(data + skip), size - skip);
  kiln::serving::DecodeLimits limits;
  limits.max_batch = 64;
  limits.max_elements = 4096;
  auto request =
      binary ? kiln::serving::DecodeKserveBinaryRequest(body, json_length, signature, limits)
             : kiln::serving::DecodeRequest(dialect, body, signature, limits);
  if (!request.ok()) {
    Check(request.status().code() == absl::StatusCode::kInvalidArgument, "not InvalidArgument");
    return 0;
  }
  Check(request->batch >= 1 && request->batch <= limits.max_batch, "batch out of range");
  Check(request->inputs.size() == signature.inputs.size(), "wrong input count");
  size_t elements = 0;
  for (size_t i = 0; i < request->inputs.size(); ++i) {
    const auto& t = request->inputs[i];
    const auto& spec = signature.inputs[i];
    Check(t.dtype == spec.dtype, "wrong dtype");
    Check(t.shape.size() == spec.shape.size() + 1 && t.shape[0] == request->batch,
          "wrong rank or batch");
    for (size_t k = 0; k < spec.shape.size(); ++k) {
      Check(spec.shape[k] < 0 || spec.shape[k] == t.shape[k + 1], "wrong dimension");
    }
    int64_t n = kiln::serving::NumElements(t.shape);
    Check(t.bytes.size() == static_cast<size_t>(n) * kiln::serving::DTypeSize(t.dtype),
          "bytes do not match the shape");
    elements += static_cast<size_t>(n);
    for (int64_t k = 0; k < n; ++k) {
      if (t.dtype == DType::kFloat32) {
        float v;
        std::memcpy(&v, t.bytes.data() + 4 * k, 4);
        Check(std::isfinite(v), "non-finite float32");
      } else if (t.dtype == DType::kFloat64) {
        double v;
        std::memcpy(&v, t.bytes.data() + 8 * k, 8);
        Check(std::isfinite(v), "non-finite float64");
      } else if (t.dtype == DType::kBool) {
        Check(static_cast<unsigned char>(t.bytes[k]) <= 1, "a bool other than 0 or 1");
      }
    }
  }
  Check(elements <= limits.max_elements, "element limit exceeded");
  size_t response_json = 0;
  std::string response =
      kiln::serving::EncodeResponse(*request, request->inputs, signature, "m", "1", &response_json);
  Check(response_json <= response.size(), "JSON length past the response");
  auto head = kiln::base::Json::parse(response.substr(0, response_json), nullptr, false);
  Check(!head.is_discarded(), "response is not JSON");
  size_t binary_bytes = 0;
  for (const auto& output : head.value("outputs", kiln::base::Json::array())) {
    if (output.contains("parameters")) {
      binary_bytes += output["parameters"]["binary_data_size"].get<size_t>();
    }
  }
  Check(response_json + binary_bytes == response.size(),
        "the binary part does not match the outputs' binary_data_size");
  return 0;
}
