// serving_codec_fuzz.cc
//
// Feeds arbitrary bytes to the scoring path's request decoders (native, Watson ML, KServe
// v2) against a few signatures: the first byte picks the dialect and the signature. A
// decode must return a Status, never crash or read past the body; a decoded request must
// be consistent (one tensor per input, [batch, *shape], finite floats), and encoding its
// inputs back as outputs must give valid JSON.
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
  const auto dialect = static_cast<kiln::serving::Dialect>(data[0] % 3);
  const Signature& signature = Signatures()[(data[0] / 3) % Signatures().size()];
  std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  kiln::serving::DecodeLimits limits;
  limits.max_batch = 64;
  limits.max_elements = 4096;
  auto request = kiln::serving::DecodeRequest(dialect, body, signature, limits);
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
    if (t.dtype == DType::kFloat32) {
      for (int64_t k = 0; k < n; ++k) {
        float v;
        std::memcpy(&v, t.bytes.data() + 4 * k, 4);
        Check(std::isfinite(v), "non-finite float32");
      }
    }
  }
  Check(elements <= limits.max_elements, "element limit exceeded");
  std::string response =
      kiln::serving::EncodeResponse(*request, request->inputs, signature, "m", "1");
  Check(kiln::base::Json::accept(response), "response is not JSON");
  return 0;
}
