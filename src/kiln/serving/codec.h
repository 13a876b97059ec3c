// codec.h
//
// The request and response codecs of the scoring path, one per dialect: Kiln's native
// `/api/v1/predict`, Watson ML v4 `predictions`, and KServe v2 `infer`. A request body
// becomes packed tensors in signature order; the model's output tensors become the
// dialect's response body. Pure functions, no HTTP and no LibTorch. The decoder is a
// hand-written single-pass scanner (numbers via std::from_chars), because parsing a few
// hundred numbers per request is the serving hot path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/serving/signature.h"

namespace kiln::serving {

// A dense tensor: `shape` includes the batch as dim 0; `bytes` holds the elements
// packed, little-endian, DTypeSize(dtype) bytes each (bool: one byte, 0 or 1), row-major.
struct Tensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Product of `shape` (1 for a scalar).
int64_t NumElements(const std::vector<int64_t>& shape);

enum class Dialect { kNative, kWatsonMl, kKserveV2 };

// KServe's binary tensor data extension: the header that gives the length of the JSON at
// the start of a request or response body whose tensors follow it as raw bytes.
inline constexpr std::string_view kInferenceHeaderContentLength = "Inference-Header-Content-Length";

// "native", "wml", "kserve" (metric labels, logs).
std::string_view DialectName(Dialect dialect);

// An output a KServe request names in "outputs".
struct RequestedOutput {
  std::string name;
  // "parameters": {"binary_data": b} (the binary tensor data extension); unset = the
  // request's binary_data_output.
  std::optional<bool> binary_data;

  bool operator==(const RequestedOutput&) const = default;
};

// A decoded request.
struct InferRequest {
  Dialect dialect = Dialect::kNative;
  int64_t batch = 0;                // samples in this request, >= 1 once decoded
  std::vector<Tensor> inputs;       // in signature order, each [batch, *shape]
  std::string id;                   // KServe request id (echoed in the response)
  std::vector<std::string> fields;  // Watson ML `fields` as given (of the first entry)
  std::vector<RequestedOutput> requested_outputs;  // KServe `outputs`; empty = all
  // KServe "parameters": {"binary_data_output": true}: outputs are returned as binary
  // tensor data unless their own binary_data says otherwise.
  bool binary_data_output = false;
  // Watson ML: samples per `input_data` entry, in order (the response has one
  // `predictions` entry for each); sums to `batch`.
  std::vector<int64_t> wml_entry_sizes;
};

struct DecodeLimits {
  int64_t max_batch = 1 << 16;     // samples per request
  size_t max_elements = 64 << 20;  // all inputs' elements together
};

// Decodes `body` in `dialect` against `signature`. Returns InvalidArgument whose message
// says what is wrong and ends with "; expected <DescribeSignature(signature)>": invalid
// JSON (with its byte offset), a missing or unknown input, a wrong shape, ragged arrays,
// a value of the wrong type (a fraction into an integer input, a string, null), NaN or
// Infinity or a number that overflows the input's type, an empty batch, more than
// `limits.max_batch` samples or `limits.max_elements` elements. Never reads past `body`.
//
// Every sample may be given nested to its per-sample shape or flat (its elements in
// row-major order). Integers are accepted into float inputs; floats into integer inputs
// only when integral; true/false into any input (1/0) and 0/1 into bool inputs.
absl::StatusOr<InferRequest> DecodeRequest(Dialect dialect, std::string_view body,
                                           const Signature& signature,
                                           const DecodeLimits& limits = {});

// A KServe v2 request that uses the binary tensor data extension (what tritonclient sends
// by default): the first `json_length` bytes of `body` (its Inference-Header-Content-Length
// header) are the JSON request; the rest is the data of the inputs that have
// "parameters": {"binary_data_size": n} instead of "data", n bytes each in the order the
// inputs are listed, packed as Tensor::bytes are. Errors as DecodeRequest's, and a size
// that does not fit the input's shape and datatype, bytes left over or missing after the
// JSON, an input with both "data" and a size, NaN or infinity in a float input, or a BOOL
// byte other than 0 and 1.
absl::StatusOr<InferRequest> DecodeKserveBinaryRequest(std::string_view body, size_t json_length,
                                                       const Signature& signature,
                                                       const DecodeLimits& limits = {});

// Encodes the response to `request` in its dialect. `outputs` has one tensor per
// signature output, each [request.batch, ...] (its actual shape and dtype are what is
// written). Floats use the shortest representation that round-trips; NaN and infinities
// (not JSON) are written as null.
//   native:  {"model":N,"version":V,"outputs":{"logits":[[...],...]}}
//   wml:     {"predictions":[{"fields":["logits"],"values":[[...],...]}]}
//   kserve:  {"model_name":N,"model_version":V,"id":I,"outputs":[{"name","shape",
//             "datatype","data":[flat]}]}  (only the requested outputs; "id" if given)
// KServe outputs the request wants as binary tensor data have
// "parameters":{"binary_data_size":n} instead of "data", and their bytes follow the JSON
// in the order listed. `json_length`, when given, is set to the length of the JSON (the
// response's Inference-Header-Content-Length): the whole body when nothing is binary.
std::string EncodeResponse(const InferRequest& request, const std::vector<Tensor>& outputs,
                           const Signature& signature, std::string_view model_name,
                           std::string_view version, size_t* json_length = nullptr);

// KServe v2 model metadata: {"name","versions":[V],"platform":"pytorch_torchscript",
// "inputs":[{"name","datatype","shape":[-1,*shape]}],"outputs":[...]}.
base::Json KserveModelMetadata(const Signature& signature, std::string_view name,
                               std::string_view version);

}  // namespace kiln::serving
