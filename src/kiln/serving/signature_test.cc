#include "kiln/serving/signature.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln::serving {
namespace {

using ::testing::HasSubstr;

base::Json Parse(const char* text) { return base::Json::parse(text); }

TEST(SignatureTest, ParsesInputsAndOutputsAndRoundTrips) {
  auto signature = ParseSignature(Parse(R"({
    "inputs": [{"name": "image", "dtype": "float32", "shape": [1, 28, 28]},
               {"name": "mask", "dtype": "BOOL", "shape": [-1]}],
    "outputs": [{"name": "logits", "dtype": "float64", "shape": [10]}]})"));
  ASSERT_TRUE(signature.ok()) << signature.status();
  ASSERT_EQ(signature->inputs.size(), 2u);
  EXPECT_EQ(signature->inputs[0].name, "image");
  EXPECT_EQ(signature->inputs[0].dtype, DType::kFloat32);
  EXPECT_EQ(signature->inputs[0].shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(signature->inputs[1].dtype, DType::kBool);
  EXPECT_EQ(signature->outputs[0].dtype, DType::kFloat64);
  EXPECT_EQ(DescribeSignature(*signature), "image: float32[1,28,28], mask: bool[-1]");

  auto again = ParseSignature(SignatureToJson(*signature));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(SignatureToJson(*again), SignatureToJson(*signature));
  EXPECT_EQ(SignatureToJson(*signature)["inputs"][1]["dtype"], "bool");
}

TEST(SignatureTest, ScalarSamplesHaveAnEmptyShape) {
  auto signature = ParseSignature(Parse(R"({
    "inputs": [{"name": "x", "dtype": "int64", "shape": []}],
    "outputs": [{"name": "y", "dtype": "int32", "shape": []}]})"));
  ASSERT_TRUE(signature.ok()) << signature.status();
  EXPECT_EQ(DescribeSignature(*signature), "x: int64[]");
  EXPECT_EQ(SampleElements(signature->inputs[0]), 1);
}

TEST(SignatureTest, RefusalsNameTheField) {
  struct Case {
    const char* json;
    const char* field;
  } cases[] = {
      {R"([])", "signature must be an object"},
      {R"({"outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})",
       "signature.inputs must be a non-empty array"},
      {R"({"inputs": [{"name": "x", "dtype": "float32", "shape": [1]}], "outputs": []})",
       "signature.outputs must be a non-empty array"},
      {R"({"inputs": [{"dtype": "float32", "shape": [1]}], "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})",
       "signature.inputs[0].name"},
      {R"({"inputs": [{"name": "x", "dtype": "float16", "shape": [1]}], "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})",
       "signature.inputs[0].dtype \"float16\" is not supported"},
      {R"({"inputs": [{"name": "x", "dtype": "float32", "shape": [1, 0]}], "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})",
       "signature.inputs[0].shape[1] must be positive, or -1"},
      {R"({"inputs": [{"name": "x", "dtype": "float32", "shape": [1.5]}], "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})",
       "signature.inputs[0].shape[0] must be an integer"},
      {R"({"inputs": [{"name": "x", "dtype": "float32", "shape": "1"}], "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})",
       "signature.inputs[0].shape must be an array"},
      {R"({"inputs": [{"name": "x", "dtype": "float32", "shape": [1]}, {"name": "x", "dtype": "float32", "shape": [1]}], "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})",
       "signature.inputs[1].name \"x\" is used twice"},
      {R"({"inputs": [{"name": "x", "dtype": "float32", "shape": [65536, 65536, 65536]}], "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})",
       "elements per sample"},
      {R"({"inputs": [{"name": "x", "dtype": "float32", "shape": [1,1,1,1,1,1,1,1,1]}], "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})",
       "more than 8 dimensions"},
  };
  for (const Case& c : cases) {
    auto signature = ParseSignature(Parse(c.json));
    ASSERT_FALSE(signature.ok()) << c.json;
    EXPECT_EQ(signature.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(signature.status().message()), HasSubstr(c.field)) << c.json;
    EXPECT_THAT(std::string(signature.status().message()), HasSubstr("\"inputs\": [{\"name\""));
  }
}

TEST(SignatureTest, DTypeNamesAndSizes) {
  EXPECT_EQ(ParseDType("FP64"), DType::kFloat64);
  EXPECT_EQ(ParseDType("int32"), DType::kInt32);
  EXPECT_EQ(ParseDType("INT64"), DType::kInt64);
  EXPECT_FALSE(ParseDType("fp32").has_value());
  EXPECT_EQ(KserveDatatype(DType::kBool), "BOOL");
  EXPECT_EQ(DTypeName(DType::kInt64), "int64");
  EXPECT_EQ(DTypeSize(DType::kFloat32), 4u);
  EXPECT_EQ(DTypeSize(DType::kFloat64), 8u);
  EXPECT_EQ(DTypeSize(DType::kBool), 1u);
}

}  // namespace
}  // namespace kiln::serving
