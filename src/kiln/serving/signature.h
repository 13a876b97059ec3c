// signature.h
//
// Defines a served model's `Signature`: the name, element type and per-sample shape of
// each input and output tensor. It is stored as JSON with every model version, checked by
// the registry, and drives the request codecs (codec.h) and kiln-serve's warm-up batch.
// No LibTorch here: the serving path's parsing layer builds and tests without it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"

namespace kiln::serving {

// Element types a signature may name. JSON spellings: "float32", "float64", "int64",
// "int32", "bool"; KServe v2 spellings: "FP32", "FP64", "INT64", "INT32", "BOOL".
enum class DType { kFloat32, kFloat64, kInt64, kInt32, kBool };

// "float32", "float64", "int64", "int32", "bool".
std::string_view DTypeName(DType dtype);
// "FP32", "FP64", "INT64", "INT32", "BOOL".
std::string_view KserveDatatype(DType dtype);
// Bytes per element in a packed little-endian buffer (bool: 1 byte, 0 or 1).
size_t DTypeSize(DType dtype);
// Accepts both the JSON and the KServe spellings; nullopt for anything else.
std::optional<DType> ParseDType(std::string_view name);

// One tensor of a signature. `shape` is PER SAMPLE (no batch dimension); -1 means any
// size (all samples of one batch must still agree on it). An empty shape is a scalar per
// sample.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
};

// The model's forward takes one `[batch, *shape]` tensor per input, in `inputs` order,
// and returns one tensor (or a tuple, in `outputs` order) with batch as dim 0.
struct Signature {
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
};

// Limits on what a signature may declare, so that a stored signature cannot make the
// codecs or the warm-up allocate without bound.
inline constexpr size_t kMaxSignatureTensors = 64;
inline constexpr size_t kMaxSignatureRank = 8;
inline constexpr int64_t kMaxSampleElements = int64_t{1} << 28;
inline constexpr size_t kMaxTensorNameBytes = 256;

// Parses `{"inputs": [{"name", "dtype", "shape"}...], "outputs": [...]}`. Returns
// InvalidArgument naming the field (e.g. `signature.inputs[0].shape[1]`) and the fix when
// it is malformed: no inputs or outputs, an empty or duplicate name, an unknown dtype, a
// dimension that is neither positive nor -1, too many dimensions or elements.
absl::StatusOr<Signature> ParseSignature(const base::Json& json);

// The inverse of ParseSignature (dtype in the JSON spelling).
base::Json SignatureToJson(const Signature& signature);

// One line for error messages: "image: float32[1,28,28]"; several tensors are joined
// with ", " ("a: int64[-1], b: bool[]"). Only the inputs: that is what a caller must send.
std::string DescribeSignature(const Signature& signature);

// "[1,28,28]".
std::string DescribeShape(const std::vector<int64_t>& shape);

// Elements in one sample of `spec` with every -1 counted as 1 (the warm-up's size).
int64_t SampleElements(const TensorSpec& spec);

}  // namespace kiln::serving
