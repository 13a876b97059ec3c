// signature.cc
//
// Parsing and describing model signatures (see signature.h).
#include "kiln/serving/signature.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/base/status.h"

namespace kiln::serving {
namespace {

constexpr const char* kSignatureHelp =
    R"(a signature is {"inputs": [{"name": "image", "dtype": "float32", "shape": [1, 28, 28]}], )"
    R"("outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}]} with per-sample )"
    R"(shapes (no batch dimension); dtypes float32, float64, int64, int32, bool)";

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what, "; ", kSignatureHelp));
}

absl::StatusOr<TensorSpec> ParseTensorSpec(const base::Json& json, const std::string& field) {
  if (!json.is_object()) return Bad(field, "must be an object {\"name\", \"dtype\", \"shape\"}");
  TensorSpec spec;
  auto name = json.find("name");
  if (name == json.end() || !name->is_string() || name->get_ref<const std::string&>().empty()) {
    return Bad(field + ".name", "must be a non-empty string");
  }
  spec.name = name->get<std::string>();
  if (spec.name.size() > kMaxTensorNameBytes) {
    return Bad(field + ".name", absl::StrCat("is longer than ", kMaxTensorNameBytes, " bytes"));
  }
  for (unsigned char c : spec.name) {
    if (c < 0x20 || c == 0x7f) return Bad(field + ".name", "must not hold control characters");
  }
  auto dtype = json.find("dtype");
  if (dtype == json.end()) dtype = json.find("datatype");
  if (dtype == json.end() || !dtype->is_string()) {
    return Bad(field + ".dtype", "must be a string");
  }
  auto parsed = ParseDType(dtype->get_ref<const std::string&>());
  if (!parsed) {
    return Bad(field + ".dtype",
               absl::StrCat("\"", dtype->get_ref<const std::string&>(), "\" is not supported"));
  }
  spec.dtype = *parsed;
  auto shape = json.find("shape");
  if (shape == json.end() || !shape->is_array()) {
    return Bad(field + ".shape", "must be an array of dimensions (per sample, no batch)");
  }
  if (shape->size() > kMaxSignatureRank) {
    return Bad(field + ".shape", absl::StrCat("has more than ", kMaxSignatureRank, " dimensions"));
  }
  int64_t elements = 1;
  for (size_t i = 0; i < shape->size(); ++i) {
    const base::Json& dim = (*shape)[i];
    std::string dim_field = absl::StrCat(field, ".shape[", i, "]");
    if (!dim.is_number_integer()) return Bad(dim_field, "must be an integer");
    int64_t d = dim.get<int64_t>();
    if (d == 0 || d < -1) return Bad(dim_field, "must be positive, or -1 for any size");
    if (d > 0) {
      if (d > kMaxSampleElements || elements > kMaxSampleElements / d) {
        return Bad(field + ".shape",
                   absl::StrCat("has more than ", kMaxSampleElements, " elements per sample"));
      }
      elements *= d;
    }
    spec.shape.push_back(d);
  }
  return spec;
}

absl::StatusOr<std::vector<TensorSpec>> ParseTensorList(const base::Json& json, const char* key) {
  std::string field = absl::StrCat("signature.", key);
  auto list = json.find(key);
  if (list == json.end() || !list->is_array() || list->empty()) {
    return Bad(field, "must be a non-empty array");
  }
  if (list->size() > kMaxSignatureTensors) {
    return Bad(field, absl::StrCat("has more than ", kMaxSignatureTensors, " tensors"));
  }
  std::vector<TensorSpec> specs;
  std::set<std::string> names;
  for (size_t i = 0; i < list->size(); ++i) {
    std::string item_field = absl::StrCat(field, "[", i, "]");
    KILN_ASSIGN_OR_RETURN(TensorSpec spec, ParseTensorSpec((*list)[i], item_field));
    if (!names.insert(spec.name).second) {
      return Bad(item_field + ".name", absl::StrCat("\"", spec.name, "\" is used twice"));
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

base::Json TensorListToJson(const std::vector<TensorSpec>& specs) {
  base::Json list = base::Json::array();
  for (const TensorSpec& spec : specs) {
    list.push_back({{"name", spec.name},
                    {"dtype", std::string(DTypeName(spec.dtype))},
                    {"shape", spec.shape}});
  }
  return list;
}

}  // namespace

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kInt64:
      return "int64";
    case DType::kInt32:
      return "int32";
    case DType::kBool:
      return "bool";
  }
  return "float32";
}

std::string_view KserveDatatype(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "FP32";
    case DType::kFloat64:
      return "FP64";
    case DType::kInt64:
      return "INT64";
    case DType::kInt32:
      return "INT32";
    case DType::kBool:
      return "BOOL";
  }
  return "FP32";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat64:
      return 8;
    case DType::kInt64:
      return 8;
    case DType::kInt32:
      return 4;
    case DType::kBool:
      return 1;
  }
  return 4;
}

std::optional<DType> ParseDType(std::string_view name) {
  if (name == "float32" || name == "FP32") return DType::kFloat32;
  if (name == "float64" || name == "FP64") return DType::kFloat64;
  if (name == "int64" || name == "INT64") return DType::kInt64;
  if (name == "int32" || name == "INT32") return DType::kInt32;
  if (name == "bool" || name == "BOOL") return DType::kBool;
  return std::nullopt;
}

absl::StatusOr<Signature> ParseSignature(const base::Json& json) {
  if (!json.is_object()) return Bad("signature", "must be an object");
  Signature signature;
  KILN_ASSIGN_OR_RETURN(signature.inputs, ParseTensorList(json, "inputs"));
  KILN_ASSIGN_OR_RETURN(signature.outputs, ParseTensorList(json, "outputs"));
  return signature;
}

base::Json SignatureToJson(const Signature& signature) {
  return {{"inputs", TensorListToJson(signature.inputs)},
          {"outputs", TensorListToJson(signature.outputs)}};
}

std::string DescribeShape(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string DescribeSignature(const Signature& signature) {
  std::vector<std::string> parts;
  for (const TensorSpec& spec : signature.inputs) {
    parts.push_back(absl::StrCat(spec.name, ": ", std::string(DTypeName(spec.dtype)),
                                 DescribeShape(spec.shape)));
  }
  return absl::StrJoin(parts, ", ");
}

int64_t SampleElements(const TensorSpec& spec) {
  int64_t n = 1;
  for (int64_t d : spec.shape) n *= d > 0 ? d : 1;
  return n;
}

}  // namespace kiln::serving
