#include "kiln/serving/codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kiln::serving {
namespace {

using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;

Signature MakeSignature(const char* json) {
  auto signature = ParseSignature(base::Json::parse(json));
  EXPECT_TRUE(signature.ok()) << signature.status();
  return *signature;
}

const char* kImageSignature = R"({
  "inputs": [{"name": "image", "dtype": "float32", "shape": [1, 28, 28]}],
  "outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}]})";

const char* kTwoInputSignature = R"({
  "inputs": [{"name": "a", "dtype": "float32", "shape": [2]},
             {"name": "b", "dtype": "int64", "shape": []}],
  "outputs": [{"name": "y", "dtype": "float32", "shape": [1]},
              {"name": "z", "dtype": "int64", "shape": [2]}]})";

template <typename T>
std::vector<T> Values(const Tensor& t) {
  std::vector<T> out(t.bytes.size() / sizeof(T));
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  return out;
}

template <typename T>
Tensor MakeTensor(DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(T));
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

std::string Floats(int n, float start = 0, float step = 0.5f) {
  std::vector<std::string> parts;
  for (int i = 0; i < n; ++i) parts.push_back(absl::StrCat(start + step * i));
  return absl::StrJoin(parts, ",");
}

// The 28x28 image as nested JSON rows.
std::string NestedImage(float start) {
  std::vector<std::string> rows;
  for (int r = 0; r < 28; ++r) rows.push_back(absl::StrCat("[", Floats(28, start + 14.f * r), "]"));
  return absl::StrCat("[[", absl::StrJoin(rows, ","), "]]");
}

std::string DecodeError(Dialect dialect, const std::string& body, const Signature& signature,
                        const DecodeLimits& limits = {}) {
  auto request = DecodeRequest(dialect, body, signature, limits);
  if (request.ok()) return "OK";
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(request.status().message());
}

// ---- Watson ML ----

TEST(WatsonMlDecodeTest, FlatSampleFillsTheImageTensor) {
  Signature signature = MakeSignature(kImageSignature);
  std::string body = absl::StrCat(R"({"input_data":[{"values":[[)", Floats(784), "]]}]}");
  auto request = DecodeRequest(Dialect::kWatsonMl, body, signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->batch, 1);
  ASSERT_EQ(request->inputs.size(), 1u);
  EXPECT_EQ(request->inputs[0].dtype, DType::kFloat32);
  EXPECT_THAT(request->inputs[0].shape, ElementsAre(1, 1, 28, 28));
  std::vector<float> values = Values<float>(request->inputs[0]);
  ASSERT_EQ(values.size(), 784u);
  for (int i = 0; i < 784; ++i) ASSERT_EQ(values[i], 0.5f * i);
  EXPECT_THAT(request->wml_entry_sizes, ElementsAre(1));
}

TEST(WatsonMlDecodeTest, NestedAndFlatSamplesDecodeAlike) {
  Signature signature = MakeSignature(kImageSignature);
  std::string nested = absl::StrCat(R"({"space_id": "s1", "input_data": [{"values": [)",
                                    NestedImage(0), ",", NestedImage(1), "]}]}");
  std::string flat = absl::StrCat(R"({"input_data":[{"values":[[)", Floats(784), "],[",
                                  Floats(784, 1), R"(]]}], "extra": {"a": [1, "x", null]}})");
  auto a = DecodeRequest(Dialect::kWatsonMl, nested, signature);
  auto b = DecodeRequest(Dialect::kWatsonMl, flat, signature);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->batch, 2);
  EXPECT_THAT(a->inputs[0].shape, ElementsAre(2, 1, 28, 28));
  EXPECT_EQ(a->inputs[0].shape, b->inputs[0].shape);
  EXPECT_EQ(a->inputs[0].bytes, b->inputs[0].bytes);
}

TEST(WatsonMlDecodeTest, FieldsMapRowValuesToSeveralInputs) {
  Signature signature = MakeSignature(kTwoInputSignature);
  // fields in reverse signature order, and after values in one entry.
  std::string body = R"({"input_data": [
      {"fields": ["b", "a"], "values": [[7, [1, 2]], [8, [3.5, 4]]]},
      {"values": [[[5, 6], 9]], "fields": ["a", "b"]},
      {"values": [[[0.25, 0], -3]]}]})";
  auto request = DecodeRequest(Dialect::kWatsonMl, body, signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->batch, 4);
  EXPECT_THAT(request->fields, ElementsAre("b", "a"));
  EXPECT_THAT(request->wml_entry_sizes, ElementsAre(2, 1, 1));
  EXPECT_THAT(request->inputs[0].shape, ElementsAre(4, 2));
  EXPECT_THAT(Values<float>(request->inputs[0]), ElementsAre(1, 2, 3.5, 4, 5, 6, 0.25, 0));
  EXPECT_EQ(request->inputs[1].dtype, DType::kInt64);
  EXPECT_THAT(request->inputs[1].shape, ElementsAre(4));
  EXPECT_THAT(Values<int64_t>(request->inputs[1]), ElementsAre(7, 8, 9, -3));
}

TEST(WatsonMlDecodeTest, OneInputModelIgnoresColumnNamesInFields) {
  Signature signature = MakeSignature(R"({
    "inputs": [{"name": "x", "dtype": "float64", "shape": [3]}],
    "outputs": [{"name": "y", "dtype": "float64", "shape": [1]}]})");
  auto request = DecodeRequest(
      Dialect::kWatsonMl,
      R"({"input_data":[{"fields":["age","income","kids"],"values":[[40,1e5,2]]}]})", signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(request->fields, ElementsAre("age", "income", "kids"));
  EXPECT_THAT(Values<double>(request->inputs[0]), ElementsAre(40, 100000, 2));
}

TEST(WatsonMlDecodeTest, RefusesBadFieldsAndRows) {
  Signature signature = MakeSignature(kTwoInputSignature);
  EXPECT_THAT(
      DecodeError(Dialect::kWatsonMl,
                  R"({"input_data":[{"fields":["a","c"],"values":[[[1,2],3]]}]})", signature),
      HasSubstr("unknown input \"c\" (the model's inputs: a, b)"));
  EXPECT_THAT(DecodeError(Dialect::kWatsonMl,
                          R"({"input_data":[{"fields":["a"],"values":[[[1,2],3]]}]})", signature),
              HasSubstr("input_data[0].fields names 1 inputs; name each of the 2 inputs once"));
  EXPECT_THAT(
      DecodeError(Dialect::kWatsonMl,
                  R"({"input_data":[{"fields":["a","a"],"values":[[[1,2],3]]}]})", signature),
      HasSubstr("names \"a\" twice"));
  EXPECT_THAT(
      DecodeError(Dialect::kWatsonMl, R"({"input_data":[{"values":[[[1,2]]]}]})", signature),
      HasSubstr("input_data[0].values[0] has 1 values, expected 2, one per input"));
  EXPECT_THAT(
      DecodeError(Dialect::kWatsonMl, R"({"input_data":[{"values":[[[1,2],3,4]]}]})", signature),
      HasSubstr("has more than 2 values; each row is one value per input (a, b)"));
  EXPECT_THAT(
      DecodeError(Dialect::kWatsonMl, R"({"input_data":[{"fields":["a","b"]}]})", signature),
      HasSubstr("input_data[0] has no \"values\""));
  EXPECT_THAT(DecodeError(Dialect::kWatsonMl, R"({"input_data":[{"values":[]}]})", signature),
              HasSubstr("input_data[0].values is empty (no samples)"));
  EXPECT_THAT(DecodeError(Dialect::kWatsonMl, R"({"input_data":[]})", signature),
              HasSubstr("no samples (empty batch)"));
  EXPECT_THAT(DecodeError(Dialect::kWatsonMl, R"({"values":[[1]]})", signature),
              HasSubstr("the body has no \"input_data\""));
  EXPECT_THAT(DecodeError(Dialect::kWatsonMl, R"({"input_data":{"values":[]}})", signature),
              HasSubstr("\"input_data\" must be an array"));
}

TEST(WatsonMlDecodeTest, WrongValueCountHasTheDocumentedMessage) {
  Signature signature = MakeSignature(kImageSignature);
  std::string body = absl::StrCat(R"({"input_data":[{"values":[[)", Floats(784), "],[", Floats(784),
                                  "],[", Floats(784), "],[", Floats(783), "]]}]}");
  EXPECT_EQ(DecodeError(Dialect::kWatsonMl, body, signature),
            "input \"image\": sample 3 has 783 values, expected 784 (shape [1,28,28]); "
            "expected image: float32[1,28,28]");
}

TEST(WatsonMlDecodeTest, AnUnwrappedSampleGetsAHint) {
  Signature signature = MakeSignature(kImageSignature);
  EXPECT_EQ(
      DecodeError(Dialect::kWatsonMl,
                  absl::StrCat(R"({"input_data":[{"values":[)", Floats(784), "]}]}"), signature),
      "input \"image\": sample 0 is a single number, expected 784 values (shape "
      "[1,28,28]): each sample is an array, so one sample is sent as [[...]]; expected "
      "image: float32[1,28,28]");
}

TEST(WatsonMlDecodeTest, WrongNestingSaysBothShapes) {
  Signature signature = MakeSignature(kImageSignature);
  std::vector<std::string> rows;
  for (int r = 0; r < 28; ++r) rows.push_back(absl::StrCat("[", Floats(28), "]"));
  std::string body =
      absl::StrCat(R"({"input_data":[{"values":[[)", absl::StrJoin(rows, ","), "]]}]}");
  EXPECT_EQ(DecodeError(Dialect::kWatsonMl, body, signature),
            "input \"image\": sample 0 has shape [28,28], expected [1,28,28] or 784 values "
            "flat; expected image: float32[1,28,28]");
}

// ---- Native ----

TEST(NativeDecodeTest, ObjectAndListFormsDecodeAlike) {
  Signature signature = MakeSignature(kImageSignature);
  auto a =
      DecodeRequest(Dialect::kNative,
                    absl::StrCat(R"({"inputs": {"image": [)", NestedImage(3), "]}}"), signature);
  auto b = DecodeRequest(Dialect::kNative, absl::StrCat(R"({"inputs": [[)", Floats(784, 3), "]]}"),
                         signature);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->batch, 1);
  EXPECT_THAT(a->inputs[0].shape, ElementsAre(1, 1, 28, 28));
  EXPECT_EQ(a->inputs[0].bytes, b->inputs[0].bytes);
}

TEST(NativeDecodeTest, SeveralInputsByName) {
  Signature signature = MakeSignature(kTwoInputSignature);
  auto request =
      DecodeRequest(Dialect::kNative,
                    R"({"inputs": {"b": [1, 2, 3], "a": [[1, 2], [3, 4], [5, 6]]}})", signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->batch, 3);
  EXPECT_THAT(request->inputs[0].shape, ElementsAre(3, 2));
  EXPECT_THAT(Values<int64_t>(request->inputs[1]), ElementsAre(1, 2, 3));
}

TEST(NativeDecodeTest, RefusesMissingUnknownAndMismatchedInputs) {
  Signature signature = MakeSignature(kTwoInputSignature);
  EXPECT_EQ(DecodeError(Dialect::kNative, R"({"inputs": {"a": [[1, 2]]}})", signature),
            "missing input \"b\"; expected a: float32[2], b: int64[]");
  EXPECT_THAT(DecodeError(Dialect::kNative, R"({"inputs": {"a": [[1, 2]], "q": [1]}})", signature),
              HasSubstr("unknown input \"q\""));
  EXPECT_THAT(
      DecodeError(Dialect::kNative, R"({"inputs": {"a": [[1, 2]], "b": [1, 2]}})", signature),
      HasSubstr("input \"b\" has 2 samples but input \"a\" has 1"));
  EXPECT_THAT(DecodeError(Dialect::kNative, R"({"inputs": [[1, 2]]})", signature),
              HasSubstr("\"inputs\" as a list works only for one-input models"));
  EXPECT_THAT(
      DecodeError(Dialect::kNative, R"({"inputs": {"a": [[1, 2]], "a": [[1, 2]]}})", signature),
      HasSubstr("the key \"a\" appears twice"));
  EXPECT_THAT(DecodeError(Dialect::kNative, R"({"instances": []})", signature),
              HasSubstr("the body has no \"inputs\""));
  EXPECT_THAT(DecodeError(Dialect::kNative, R"({"inputs": {"a": [], "b": []}})", signature),
              HasSubstr("empty batch"));
}

// ---- KServe v2 ----

TEST(KserveDecodeTest, FlatAndNestedDataWithIdAndOutputs) {
  Signature signature = MakeSignature(kTwoInputSignature);
  std::string body = R"({"id": "req-\u00e9\ud83d\ude00", "inputs": [
      {"data": [1, 2, 3, 4], "name": "a", "shape": [2, 2], "datatype": "FP32"},
      {"name": "b", "shape": [2], "datatype": "INT64", "data": [[5], [6]],
       "parameters": {"x": 1}}],
    "outputs": [{"name": "z"}], "parameters": {}})";
  // `data` nested as [2,1] while shape is [2]: refused; flat is fine.
  EXPECT_THAT(DecodeError(Dialect::kKserveV2, body, signature),
              HasSubstr("\"data\" is nested as [2,1] but \"shape\" is [2]"));
  body = R"({"id": "req-\u00e9\ud83d\ude00", "inputs": [
      {"data": [[1, 2], [3, 4]], "name": "a", "shape": [2, 2], "datatype": "FP32"},
      {"name": "b", "shape": [2], "datatype": "INT64", "data": [5, 6]}],
    "outputs": [{"name": "z"}]})";
  auto request = DecodeRequest(Dialect::kKserveV2, body, signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->id, "req-\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(request->batch, 2);
  EXPECT_THAT(request->requested_outputs, ElementsAre(RequestedOutput{"z", std::nullopt}));
  EXPECT_THAT(Values<float>(request->inputs[0]), ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(Values<int64_t>(request->inputs[1]), ElementsAre(5, 6));
}

TEST(KserveDecodeTest, ShapeWithoutTheBatchIsOneSample) {
  Signature signature = MakeSignature(kImageSignature);
  auto request = DecodeRequest(
      Dialect::kKserveV2,
      absl::StrCat(R"({"inputs":[{"name":"image","shape":[1,28,28],"datatype":"FP32","data":[)",
                   Floats(784), "]}]}"),
      signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->batch, 1);
  EXPECT_THAT(request->inputs[0].shape, ElementsAre(1, 1, 28, 28));
}

TEST(KserveDecodeTest, RefusesShapeDataAndDatatypeMismatches) {
  Signature signature = MakeSignature(kImageSignature);
  auto body = [](const std::string& shape, const std::string& datatype, int n) {
    return absl::StrCat(R"({"inputs":[{"name":"image","shape":)", shape, R"(,"datatype":")",
                        datatype, R"(","data":[)", Floats(n), "]}]}");
  };
  EXPECT_EQ(DecodeError(Dialect::kKserveV2, body("[2,1,28,28]", "FP32", 784), signature),
            "input \"image\": shape [2,1,28,28] needs 1568 values, \"data\" has 784; expected "
            "image: float32[1,28,28]");
  EXPECT_THAT(DecodeError(Dialect::kKserveV2, body("[1,784]", "FP32", 784), signature),
              HasSubstr("shape [1,784] has 2 dimensions, expected 4 ([-1,1,28,28]"));
  EXPECT_THAT(DecodeError(Dialect::kKserveV2, body("[1,1,28,27]", "FP32", 756), signature),
              HasSubstr("does not fit the per-sample shape [1,28,28]"));
  EXPECT_THAT(DecodeError(Dialect::kKserveV2, body("[1,1,28,28]", "INT64", 784), signature),
              HasSubstr("datatype \"INT64\" does not match the model's FP32"));
  // "data" read in place (after "name" and "shape") is still checked against a "datatype"
  // that comes after it.
  EXPECT_THAT(DecodeError(Dialect::kKserveV2,
                          absl::StrCat(R"({"inputs":[{"name":"image","shape":[1,1,28,28],"data":[)",
                                       Floats(784), R"(],"datatype":"INT32"}]})"),
                          signature),
              HasSubstr("datatype \"INT32\" does not match the model's FP32"));
  EXPECT_THAT(DecodeError(Dialect::kKserveV2, body("[1,1,28,-28]", "FP32", 784), signature),
              HasSubstr("inputs[0].shape must hold non-negative integers"));
  EXPECT_THAT(DecodeError(Dialect::kKserveV2, body("[0,1,28,28]", "FP32", 0), signature),
              HasSubstr("empty batch"));
  EXPECT_THAT(DecodeError(Dialect::kKserveV2,
                          R"({"inputs":[{"name":"image","shape":[1,1,28,28]}]})", signature),
              HasSubstr("no \"data\""));
  EXPECT_THAT(
      DecodeError(Dialect::kKserveV2, R"({"inputs":[{"name":"image","data":[1]}]})", signature),
      HasSubstr("no \"shape\"; give [-1,1,28,28]"));
  EXPECT_THAT(DecodeError(Dialect::kKserveV2,
                          absl::StrCat(R"({"inputs":[{"name":"other","shape":[1],"data":[1]}]})"),
                          signature),
              HasSubstr("unknown input \"other\" (the model's inputs: image)"));
  EXPECT_THAT(
      DecodeError(Dialect::kKserveV2,
                  absl::StrCat(R"({"outputs":[{"name":"probs"}],"inputs":[{"name":"image",)",
                               R"("shape":[1,1,28,28],"data":[)", Floats(784), "]}]}"),
                  signature),
      HasSubstr("requested output \"probs\" is not an output of the model (outputs: logits)"));
  EXPECT_THAT(DecodeError(Dialect::kKserveV2, R"({"id": 5, "inputs": []})", signature),
              HasSubstr("\"id\" must be a string"));
}

// ---- Element types ----

TEST(DTypeDecodeTest, ConvertsIntegersFloatsAndBools) {
  Signature signature = MakeSignature(R"({
    "inputs": [{"name": "f", "dtype": "float32", "shape": [3]},
               {"name": "d", "dtype": "float64", "shape": [3]},
               {"name": "i", "dtype": "int64", "shape": [4]},
               {"name": "j", "dtype": "int32", "shape": [2]},
               {"name": "b", "dtype": "bool", "shape": [4]}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})");
  auto request = DecodeRequest(Dialect::kNative, R"({"inputs": {
      "f": [[1, -2.5e-1, 1e-50]], "d": [[0.1, 1e300, true]],
      "i": [[9223372036854775807, -9223372036854775808, 3.0, 1e3]],
      "j": [[2147483647, -2147483648]], "b": [[true, false, 1, 0]]}})",
                               signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(Values<float>(request->inputs[0]), ElementsAre(1.f, -0.25f, 0.f));
  EXPECT_THAT(Values<double>(request->inputs[1]), ElementsAre(0.1, 1e300, 1.0));
  EXPECT_THAT(Values<int64_t>(request->inputs[2]),
              ElementsAre(std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min(),
                          3, 1000));
  EXPECT_THAT(
      Values<int32_t>(request->inputs[3]),
      ElementsAre(std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()));
  EXPECT_THAT(Values<uint8_t>(request->inputs[4]), ElementsAre(1, 0, 1, 0));
}

TEST(DTypeDecodeTest, RefusesValuesThatDoNotFit) {
  auto one = [](const char* dtype, const std::string& value) {
    Signature signature = MakeSignature(
        absl::StrCat(
            R"({"inputs": [{"name": "x", "dtype": ")", dtype,
            R"(", "shape": [1]}], "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})")
            .c_str());
    return DecodeError(Dialect::kNative, absl::StrCat(R"({"inputs": [[)", value, "]]}"), signature);
  };
  EXPECT_THAT(one("int64", "1.5"), HasSubstr("1.5 is not an integer; the input is int64"));
  EXPECT_THAT(one("int64", "9223372036854775808"), HasSubstr("does not fit int64"));
  EXPECT_THAT(one("int64", "1e19"), HasSubstr("does not fit int64"));
  EXPECT_THAT(one("int32", "2147483648"), HasSubstr("does not fit int32"));
  EXPECT_THAT(one("bool", "2"), HasSubstr("2 is not a bool (true, false, 0 or 1)"));
  EXPECT_THAT(one("float32", "1e39"), HasSubstr("1e39 is too large for float32"));
  EXPECT_THAT(one("float64", "1e309"), HasSubstr("1e309 is too large for float64"));
  EXPECT_THAT(one("float32", "NaN"), HasSubstr("NaN and Infinity are not allowed"));
  EXPECT_THAT(one("float32", "Infinity"), HasSubstr("NaN and Infinity are not allowed"));
  EXPECT_THAT(one("float64", "-Infinity"), HasSubstr("NaN and Infinity are not allowed"));
  EXPECT_THAT(one("float32", "null"), HasSubstr("null is not a number"));
  EXPECT_THAT(one("float32", "\"3\""), HasSubstr("the string \"3\" is not a number"));
  EXPECT_THAT(one("float32", "01"), HasSubstr("invalid JSON at byte"));
  EXPECT_THAT(one("float32", "+1"), HasSubstr("invalid JSON at byte 13: expected a number"));
  EXPECT_THAT(one("float32", "1."), HasSubstr("expected a digit after '.'"));
  EXPECT_THAT(one("float32", "1"),
              "OK");  // ints into floats
  EXPECT_THAT(one("int32", "1.5"), EndsWith("; expected x: int32[1]"));
}

// The fast paths must give the same bits as std::from_chars, the reference.
template <typename T>
void ExpectSameAsFromChars(const std::vector<std::string>& numbers, DType dtype) {
  Signature signature = MakeSignature(
      absl::StrCat(
          R"({"inputs": [{"name": "x", "dtype": ")", std::string(DTypeName(dtype)),
          R"(", "shape": [-1]}], "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})")
          .c_str());
  auto request = DecodeRequest(Dialect::kNative,
                               absl::StrCat(R"({"inputs": [[)", absl::StrJoin(numbers, ","), "]]}"),
                               signature);
  ASSERT_TRUE(request.ok()) << request.status();
  std::vector<T> values = Values<T>(request->inputs[0]);
  ASSERT_EQ(values.size(), numbers.size());
  for (size_t i = 0; i < numbers.size(); ++i) {
    T expected;
    auto [ptr, ec] =
        std::from_chars(numbers[i].data(), numbers[i].data() + numbers[i].size(), expected);
    ASSERT_EQ(ec, std::errc()) << numbers[i];
    ASSERT_EQ(std::memcmp(&values[i], &expected, sizeof(T)), 0)
        << numbers[i] << " gave " << values[i] << ", from_chars " << expected;
  }
}

TEST(DTypeDecodeTest, FastNumberPathsMatchFromChars) {
  std::mt19937_64 rng(7);
  std::vector<std::string> floats;
  std::vector<std::string> doubles;
  char buf[64];
  auto print = [&](auto value) {
    auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), value);
    return std::string(buf, ptr);
  };
  for (int i = 0; i < 20000; ++i) {
    uint32_t bits = static_cast<uint32_t>(rng());
    float f;
    std::memcpy(&f, &bits, 4);
    if (!std::isfinite(f)) continue;
    floats.push_back(print(f));                       // shortest float32
    floats.push_back(print(static_cast<double>(f)));  // as Python's json writes it
    // Up to 9 significant digits at assorted exponents (some take from_chars).
    int digits = 1 + static_cast<int>(rng() % 9);
    uint64_t significand = rng() % static_cast<uint64_t>(std::pow(10, digits));
    int exponent = static_cast<int>(rng() % 56) - 30;  // 1e9 * 1e25 fits a float32
    floats.push_back(absl::StrCat(rng() % 2 ? "-" : "", significand, "e", exponent));
    floats.push_back(absl::StrCat("0.", std::string(rng() % 5, '0'), significand));
    uint64_t dbits = rng();
    double d;
    std::memcpy(&d, &dbits, 8);
    if (std::isfinite(d)) doubles.push_back(print(d));
    uint64_t wide = rng() % 10000000000000000ull;  // up to 16 digits
    doubles.push_back(absl::StrCat(wide, "e", static_cast<int>(rng() % 51) - 25));
    doubles.push_back(absl::StrCat("-", wide % 1000, ".", wide));
  }
  floats.push_back("3.4028235e38");
  floats.push_back("1e-45");
  floats.push_back("16777217");
  floats.push_back("-0");
  doubles.push_back("9007199254740993");
  doubles.push_back("1.7976931348623157e308");
  doubles.push_back("4.9e-324");
  ExpectSameAsFromChars<float>(floats, DType::kFloat32);
  ExpectSameAsFromChars<double>(doubles, DType::kFloat64);
}

// ---- Shapes ----

TEST(ShapeDecodeTest, RefusesRaggedArrays) {
  Signature signature = MakeSignature(R"({
    "inputs": [{"name": "x", "dtype": "float32", "shape": [2, 2]}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})");
  EXPECT_THAT(DecodeError(Dialect::kNative, R"({"inputs": [[[1, 2], [3]]]})", signature),
              HasSubstr("input \"x\": sample 0 ragged arrays: one at depth 2 has 1 values, an "
                        "earlier one 2"));
  EXPECT_THAT(DecodeError(Dialect::kNative, R"({"inputs": [[[1, 2], 3, 4]]})", signature),
              HasSubstr("ragged arrays: numbers and arrays mixed at one depth"));
  EXPECT_THAT(DecodeError(Dialect::kNative, R"({"inputs": [[1, [2, 3], 4]]})", signature),
              HasSubstr("ragged arrays"));
  EXPECT_THAT(DecodeError(Dialect::kNative, R"({"inputs": [[[], [1, 2]]]})", signature),
              HasSubstr("ragged arrays"));
  EXPECT_EQ(
      DecodeError(Dialect::kNative, R"({"inputs": [[[1, 2], [3, 4]], [1, 2, 3, 4]]})", signature),
      "OK");
}

TEST(ShapeDecodeTest, WildcardDimensionsMustAgreeWithinABatch) {
  Signature signature = MakeSignature(R"({
    "inputs": [{"name": "tokens", "dtype": "int64", "shape": [-1]}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})");
  auto request = DecodeRequest(Dialect::kWatsonMl,
                               R"({"input_data":[{"values":[[1,2,3],[4,5,6]]}]})", signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(request->inputs[0].shape, ElementsAre(2, 3));
  EXPECT_THAT(
      DecodeError(Dialect::kWatsonMl, R"({"input_data":[{"values":[[1,2,3],[4,5]]}]})", signature),
      HasSubstr("input \"tokens\": sample 1 has shape [2] but sample 0 has [3]"));
  EXPECT_THAT(
      DecodeError(Dialect::kWatsonMl, R"({"input_data":[{"values":[[[1],[2]]]}]})", signature),
      HasSubstr("sample 0 has shape [2,1], expected [-1]; expected tokens: int64[-1]"));
}

TEST(ShapeDecodeTest, ScalarSamples) {
  Signature signature = MakeSignature(R"({
    "inputs": [{"name": "x", "dtype": "float32", "shape": []}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": []}]})");
  auto request =
      DecodeRequest(Dialect::kWatsonMl, R"({"input_data":[{"values":[1, 2, [3]]}]})", signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(request->inputs[0].shape, ElementsAre(3));
  EXPECT_THAT(Values<float>(request->inputs[0]), ElementsAre(1, 2, 3));
}

// ---- Limits and malformed bodies ----

TEST(LimitsDecodeTest, RefusesTooManySamplesOrValues) {
  Signature signature = MakeSignature(kTwoInputSignature);
  DecodeLimits limits;
  limits.max_batch = 2;
  EXPECT_THAT(DecodeError(Dialect::kWatsonMl,
                          R"({"input_data":[{"values":[[[1,2],3],[[1,2],3],[[1,2],3]]}]})",
                          signature, limits),
              HasSubstr("the request has more than 2 samples, the limit"));
  EXPECT_THAT(
      DecodeError(Dialect::kKserveV2, R"({"inputs":[{"name":"b","shape":[3],"data":[1,2,3]}]})",
                  signature, limits),
      HasSubstr("batch of 3 samples is more than the limit of 2"));
  limits.max_batch = 100;
  limits.max_elements = 5;
  EXPECT_THAT(DecodeError(Dialect::kNative, R"({"inputs":{"a":[[1,2],[3,4]],"b":[1,2]}})",
                          signature, limits),
              HasSubstr("the request has more than 5 values; send fewer samples per request"));
  EXPECT_THAT(DecodeError(Dialect::kKserveV2,
                          R"({"inputs":[{"name":"a","shape":[4611686018427387904,2],"data":[1]}]})",
                          signature, limits),
              HasSubstr("has more than 5 values, the limit"));
}

TEST(LimitsDecodeTest, LargeBatchesDecode) {
  Signature signature = MakeSignature(kImageSignature);
  std::string sample = absl::StrCat("[", Floats(784), "]");
  std::vector<std::string> samples(2000, sample);
  auto request = DecodeRequest(
      Dialect::kWatsonMl,
      absl::StrCat(R"({"input_data":[{"values":[)", absl::StrJoin(samples, ","), "]}]}"),
      signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->batch, 2000);
  EXPECT_EQ(request->inputs[0].bytes.size(), 2000u * 784 * 4);
  std::vector<float> values = Values<float>(request->inputs[0]);
  EXPECT_EQ(values[1999 * 784 + 783], 0.5f * 783);
}

TEST(MalformedDecodeTest, InvalidJsonNamesTheByteOffset) {
  Signature signature = MakeSignature(kImageSignature);
  EXPECT_EQ(DecodeError(Dialect::kWatsonMl, R"({"input_data" [)", signature),
            "invalid JSON at byte 14: expected ':' after an object key; expected image: "
            "float32[1,28,28]");
  EXPECT_EQ(DecodeError(Dialect::kWatsonMl, "", signature),
            "the body is empty; send a JSON object; expected image: float32[1,28,28]");
  EXPECT_THAT(DecodeError(Dialect::kWatsonMl, "[1]", signature),
              HasSubstr("invalid JSON at byte 0: expected the body to be a JSON object"));
  std::string good = absl::StrCat(R"({"input_data":[{"values":[[)", Floats(784), "]]}]}");
  EXPECT_THAT(DecodeError(Dialect::kWatsonMl, good + " x", signature),
              HasSubstr(absl::StrCat("invalid JSON at byte ", good.size() + 1,
                                     ": unexpected characters after the JSON object")));
  EXPECT_THAT(DecodeError(Dialect::kKserveV2, R"({"inputs": [], "id": "\x"})", signature),
              HasSubstr("bad escape in a string"));
}

TEST(MalformedDecodeTest, QuotedTextInMessagesIsValidUtf8) {
  Signature signature = MakeSignature(kImageSignature);
  std::string message =
      DecodeError(Dialect::kNative, "{\"inputs\": {\"bad\xff\xfe\u00e9name\": [1]}}", signature);
  EXPECT_THAT(message, HasSubstr("unknown input \"bad????name\"")) << message;
  EXPECT_THAT(DecodeError(Dialect::kKserveV2, "{\"id\": \"\xff\", \"inputs\": []}", signature),
              HasSubstr("\"id\" must be valid UTF-8 of at most 1024 bytes"));
  std::string long_name(200, 'x');
  message = DecodeError(Dialect::kNative,
                        absl::StrCat(R"({"inputs": {")", long_name, R"(": [1]}})"), signature);
  EXPECT_THAT(message, HasSubstr(absl::StrCat("unknown input \"", std::string(80, 'x'), "...\"")));
}

TEST(MalformedDecodeTest, EveryTruncationIsRefusedCleanly) {
  Signature signature = MakeSignature(kTwoInputSignature);
  const std::string bodies[] = {
      R"({"input_data":[{"fields":["b","a"],"values":[[7,[1,2.5e1]],[8,[true,-0.5]]]}]})",
      R"({"inputs":{"a":[[1,2]],"b":[3]}})",
      R"({"id":"x\u00e9","inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"b","shape":[1],"data":[3]}],"outputs":[{"name":"y"}]})",
  };
  const Dialect dialects[] = {Dialect::kWatsonMl, Dialect::kNative, Dialect::kKserveV2};
  for (int k = 0; k < 3; ++k) {
    ASSERT_TRUE(DecodeRequest(dialects[k], bodies[k], signature).ok()) << bodies[k];
    for (size_t n = 0; n < bodies[k].size(); ++n) {
      // A copy of exactly n bytes, so reading past it is a sanitizer error.
      std::string prefix = bodies[k].substr(0, n);
      auto request = DecodeRequest(dialects[k], prefix, signature);
      EXPECT_FALSE(request.ok()) << prefix;
      EXPECT_THAT(std::string(request.status().message()),
                  EndsWith("; expected a: float32[2], b: int64[]"));
    }
  }
}

TEST(MalformedDecodeTest, DeepNestingIsRefusedWithoutRecursingAway) {
  Signature signature = MakeSignature(kImageSignature);
  std::string deep_array(100000, '[');
  EXPECT_THAT(DecodeError(Dialect::kWatsonMl,
                          absl::StrCat(R"({"input_data":[{"values":[)", deep_array), signature),
              HasSubstr("arrays nested deeper than 16 levels"));
  std::string deep_skip = absl::StrCat(R"({"skipped":)", std::string(100000, '['));
  EXPECT_THAT(DecodeError(Dialect::kWatsonMl, deep_skip, signature),
              HasSubstr("values nested too deeply"));
}

// ---- KServe binary tensor data ----

// A KServe binary request: the JSON, then the raw bytes of each binary input in order.
struct BinaryBody {
  std::string body;
  size_t json_length;
};

template <typename T>
std::string Raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

BinaryBody MakeBinary(const std::string& json, const std::string& data) {
  return {json + data, json.size()};
}

std::string BinaryError(const BinaryBody& b, const Signature& signature) {
  auto request = DecodeKserveBinaryRequest(b.body, b.json_length, signature);
  EXPECT_FALSE(request.ok());
  return std::string(request.status().message());
}

TEST(KserveBinaryTest, InputsTakeTheirBytesInOrderBesideJsonData) {
  Signature signature = MakeSignature(kTwoInputSignature);
  // "a" is JSON, "b" binary; then both binary with "b" listed first.
  BinaryBody mixed = MakeBinary(
      R"({"inputs": [{"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
         {"name": "b", "shape": [2], "datatype": "INT64",
          "parameters": {"binary_data_size": 16}}],
        "parameters": {"binary_data_output": true},
        "outputs": [{"name": "y", "parameters": {"binary_data": false}}, {"name": "z"}]})",
      Raw<int64_t>({-5, 1LL << 40}));
  auto request = DecodeKserveBinaryRequest(mixed.body, mixed.json_length, signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->batch, 2);
  EXPECT_THAT(Values<float>(request->inputs[0]), ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(Values<int64_t>(request->inputs[1]), ElementsAre(-5, 1LL << 40));
  EXPECT_TRUE(request->binary_data_output);
  EXPECT_THAT(request->requested_outputs,
              ElementsAre(RequestedOutput{"y", false}, RequestedOutput{"z", std::nullopt}));

  BinaryBody both = MakeBinary(
      R"({"inputs": [{"name": "b", "shape": [1], "datatype": "INT64",
                      "parameters": {"binary_data_size": 8}},
                     {"name": "a", "shape": [1, 2], "datatype": "FP32",
                      "parameters": {"binary_data_size": 8}}]})",
      Raw<int64_t>({7}) + Raw<float>({0.25f, -1.5f}));
  request = DecodeKserveBinaryRequest(both.body, both.json_length, signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(Values<float>(request->inputs[0]), ElementsAre(0.25f, -1.5f));
  EXPECT_THAT(Values<int64_t>(request->inputs[1]), ElementsAre(7));
  EXPECT_FALSE(request->binary_data_output);

  // A whole-JSON body under the header decodes as DecodeRequest would.
  std::string json = R"({"inputs": [{"name": "a", "shape": [1, 2], "data": [1, 2]},
                                    {"name": "b", "shape": [1], "data": [3]}]})";
  request = DecodeKserveBinaryRequest(json, json.size(), signature);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->batch, 1);
}

TEST(KserveBinaryTest, RefusesSizesAndBytesThatDoNotAddUp) {
  Signature signature = MakeSignature(kTwoInputSignature);
  auto one_input = [](const std::string& parameters, const std::string& extra = "") {
    return absl::StrCat(R"({"inputs": [{"name": "a", "shape": [1, 2], "datatype": "FP32", )",
                        parameters, R"(}, {"name": "b", "shape": [1], "data": [1]}]})", extra);
  };
  const std::string eight = Raw<float>({1.f, 2.f});
  EXPECT_EQ(BinaryError(
                MakeBinary(one_input(R"("parameters": {"binary_data_size": 12})"), eight + "1234"),
                signature),
            "input \"a\": binary_data_size is 12 bytes, but shape [1,2] of FP32 needs 8 (4 "
            "per value); expected a: float32[2], b: int64[]");
  EXPECT_THAT(BinaryError(MakeBinary(one_input(R"("parameters": {"binary_data_size": 8})"),
                                     eight.substr(0, 5)),
                          signature),
              HasSubstr("binary_data_size is 8 bytes but only 5 bytes of binary data are left"));
  EXPECT_THAT(
      BinaryError(MakeBinary(one_input(R"("parameters": {"binary_data_size": 8})"), eight + "xx"),
                  signature),
      HasSubstr("the body has 10 bytes after the JSON (Inference-Header-Content-Length) "
                "but the inputs' binary_data_size add up to 8"));
  EXPECT_THAT(BinaryError(MakeBinary(one_input(R"("data": [1, 2])"), "junk"), signature),
              HasSubstr("4 bytes after the JSON"));
  EXPECT_THAT(BinaryError(MakeBinary(one_input(R"("data": [1, 2],
                                                  "parameters": {"binary_data_size": 8})"),
                                     eight),
                          signature),
              HasSubstr("has both \"data\" and parameters.binary_data_size"));
  EXPECT_THAT(BinaryError(MakeBinary(one_input(R"("parameters": {"binary_data_size": -8})"), eight),
                          signature),
              HasSubstr("binary_data_size must be a non-negative integer"));
  EXPECT_THAT(
      BinaryError(MakeBinary(one_input(R"("parameters": {"binary_data_size": "8"})"), eight),
                  signature),
      HasSubstr("binary_data_size must be a non-negative integer"));
  EXPECT_THAT(BinaryError(MakeBinary(one_input(R"("parameters": {"binary_data_size": 8})"),
                                     Raw<float>({1.f, std::nanf("")})),
                          signature),
              HasSubstr("input \"a\": binary element 1 is NaN or infinite"));
  EXPECT_THAT(BinaryError(MakeBinary(one_input(R"("parameters": [])"), eight), signature),
              HasSubstr("inputs[0].parameters must be an object"));
  EXPECT_THAT(
      BinaryError(MakeBinary(one_input(R"("parameters": {"binary_data_size": 8})", " x"), eight),
                  signature),
      HasSubstr("unexpected characters after the JSON"));
  // The header's length past the body, or cutting the JSON short.
  std::string json = one_input(R"("parameters": {"binary_data_size": 8})") + eight;
  auto past = DecodeKserveBinaryRequest(json, json.size() + 1, signature);
  EXPECT_THAT(std::string(past.status().message()),
              HasSubstr("Inference-Header-Content-Length is " + std::to_string(json.size() + 1)));
  auto short_json = DecodeKserveBinaryRequest(json, 20, signature);
  EXPECT_EQ(short_json.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      BinaryError(MakeBinary(R"({"inputs": [], "parameters": {"binary_data_output": 1}})", ""),
                  signature),
      HasSubstr("parameters.binary_data_output must be true or false"));
}

TEST(KserveBinaryTest, BoolBytesMustBeZeroOrOneAndJsonBodiesNeedTheHeader) {
  Signature signature = MakeSignature(R"({
    "inputs": [{"name": "mask", "dtype": "bool", "shape": [3]}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": [1]}]})");
  const std::string json =
      R"({"inputs": [{"name": "mask", "shape": [1, 3], "datatype": "BOOL",
                      "parameters": {"binary_data_size": 3}}]})";
  auto ok = DecodeKserveBinaryRequest(json + std::string("\1\0\1", 3), json.size(), signature);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT(Values<uint8_t>(ok->inputs[0]), ElementsAre(1, 0, 1));
  EXPECT_THAT(BinaryError(MakeBinary(json, std::string("\1\2\1", 3)), signature),
              HasSubstr("binary element 1 is the byte 2; a BOOL element is one byte, 0 or 1"));
  // Without the header a binary_data_size has no bytes to name.
  EXPECT_THAT(DecodeError(Dialect::kKserveV2, json, signature),
              HasSubstr("parameters.binary_data_size is set but the request has no "
                        "Inference-Header-Content-Length header"));
}

TEST(KserveBinaryTest, EncodesAskedOutputsAfterTheJson) {
  Signature signature = MakeSignature(kTwoInputSignature);
  InferRequest request;
  request.dialect = Dialect::kKserveV2;
  request.batch = 2;
  Tensor y = MakeTensor<float>(DType::kFloat32, {2, 1}, {0.5f, 1.5f});
  Tensor z = MakeTensor<int32_t>(DType::kInt32, {2, 2}, {1, 2, 3, 4});
  // All binary (what tritonclient asks when it names no outputs).
  request.binary_data_output = true;
  size_t json_length = 0;
  std::string body = EncodeResponse(request, {y, z}, signature, "m", "2", &json_length);
  std::string json =
      R"({"model_name":"m","model_version":"2","outputs":[)"
      R"({"name":"y","shape":[2,1],"datatype":"FP32","parameters":{"binary_data_size":8}},)"
      R"({"name":"z","shape":[2,2],"datatype":"INT32","parameters":{"binary_data_size":16}}]})";
  EXPECT_EQ(json_length, json.size());
  EXPECT_EQ(body, json + y.bytes + z.bytes);
  // Per output: z binary, y JSON, listed z first (the response keeps the model's order).
  request.binary_data_output = false;
  request.requested_outputs = {{"z", true}, {"y", std::nullopt}};
  body = EncodeResponse(request, {y, z}, signature, "m", "2", &json_length);
  json = R"({"model_name":"m","model_version":"2","outputs":[)"
         R"({"name":"y","shape":[2,1],"datatype":"FP32","data":[0.5,1.5]},)"
         R"({"name":"z","shape":[2,2],"datatype":"INT32","parameters":{"binary_data_size":16}}]})";
  EXPECT_EQ(json_length, json.size());
  EXPECT_EQ(body, json + z.bytes);
  // Nothing binary: the JSON is the whole body.
  request.requested_outputs = {{"y", false}};
  request.binary_data_output = true;
  body = EncodeResponse(request, {y, z}, signature, "m", "2", &json_length);
  EXPECT_EQ(json_length, body.size());
  EXPECT_THAT(body, HasSubstr(R"("data":[0.5,1.5])"));
}

// ---- Encoding ----

TEST(EncodeTest, WatsonMlOneOutputShortestFloats) {
  Signature signature = MakeSignature(kImageSignature);
  InferRequest request;
  request.dialect = Dialect::kWatsonMl;
  request.batch = 2;
  Tensor logits =
      MakeTensor<float>(DType::kFloat32, {2, 3}, {0.1f, -5.34f, 1e-8f, std::nanf(""), 3.f, 1e30f});
  EXPECT_EQ(
      EncodeResponse(request, {logits}, signature, "m", "1"),
      R"({"predictions":[{"fields":["logits"],"values":[[0.1,-5.34,1e-08],[null,3,1e+30]]}]})");
}

TEST(EncodeTest, WatsonMlSeveralOutputsAndEntries) {
  Signature signature = MakeSignature(kTwoInputSignature);
  InferRequest request;
  request.dialect = Dialect::kWatsonMl;
  request.batch = 3;
  request.wml_entry_sizes = {2, 1};
  Tensor y = MakeTensor<float>(DType::kFloat32, {3, 1}, {0.5f, 1.5f, 2.5f});
  Tensor z = MakeTensor<int64_t>(DType::kInt64, {3, 2}, {1, 2, 3, 4, 5, -6});
  EXPECT_EQ(EncodeResponse(request, {y, z}, signature, "m", "1"),
            R"({"predictions":[{"fields":["y","z"],"values":[[[0.5],[1,2]],[[1.5],[3,4]]]},)"
            R"({"fields":["y","z"],"values":[[[2.5],[5,-6]]]}]})");
}

TEST(EncodeTest, NativeNestsEveryOutput) {
  Signature signature = MakeSignature(kTwoInputSignature);
  InferRequest request;
  request.dialect = Dialect::kNative;
  request.batch = 2;
  Tensor y = MakeTensor<double>(DType::kFloat64, {2, 1}, {0.1, 2});
  Tensor z = MakeTensor<uint8_t>(DType::kBool, {2, 2}, {1, 0, 0, 1});
  EXPECT_EQ(EncodeResponse(request, {y, z}, signature, "my \"model\"", "3"),
            R"({"model":"my \"model\"","version":"3","outputs":{"y":[[0.1],[2]],)"
            R"("z":[[true,false],[false,true]]}})");
}

TEST(EncodeTest, KserveFiltersOutputsAndEchoesTheId) {
  Signature signature = MakeSignature(kTwoInputSignature);
  InferRequest request;
  request.dialect = Dialect::kKserveV2;
  request.batch = 2;
  request.id = "r1";
  request.requested_outputs = {{"z", std::nullopt}};
  Tensor y = MakeTensor<float>(DType::kFloat32, {2, 1}, {0.5f, 1.5f});
  Tensor z = MakeTensor<int32_t>(DType::kInt32, {2, 2}, {1, 2, 3, 4});
  EXPECT_EQ(EncodeResponse(request, {y, z}, signature, "m", "2"),
            R"({"model_name":"m","model_version":"2","id":"r1","outputs":[)"
            R"({"name":"z","shape":[2,2],"datatype":"INT32","data":[1,2,3,4]}]})");
  request.requested_outputs.clear();
  request.id.clear();
  EXPECT_EQ(EncodeResponse(request, {y, z}, signature, "m", "2"),
            R"({"model_name":"m","model_version":"2","outputs":[)"
            R"({"name":"y","shape":[2,1],"datatype":"FP32","data":[0.5,1.5]},)"
            R"({"name":"z","shape":[2,2],"datatype":"INT32","data":[1,2,3,4]}]})");
}

TEST(EncodeTest, FloatsRoundTripThroughTheDecoder) {
  // Encoded floats, fed back as a request, give the same bits.
  Signature signature = MakeSignature(R"({
    "inputs": [{"name": "x", "dtype": "float32", "shape": [6]}],
    "outputs": [{"name": "x", "dtype": "float32", "shape": [6]}]})");
  std::vector<float> values = {0.1f, 1.f / 3, -2.5e-38f, 3.4028235e38f, 1e-45f, 123456.789f};
  InferRequest request;
  request.dialect = Dialect::kKserveV2;
  request.batch = 1;
  std::string response = EncodeResponse(
      request, {MakeTensor<float>(DType::kFloat32, {1, 6}, values)}, signature, "m", "1");
  auto json = base::Json::parse(response);
  std::string body = absl::StrCat(R"({"inputs":[{"name":"x","shape":[1,6],"data":)",
                                  json["outputs"][0]["data"].dump(), "}]}");
  auto decoded = DecodeRequest(Dialect::kKserveV2, body, signature);
  ASSERT_TRUE(decoded.ok()) << decoded.status() << " " << response;
  EXPECT_EQ(Values<float>(decoded->inputs[0]), values);
}

TEST(MetadataTest, KserveMetadataAddsTheBatchDimension) {
  Signature signature = MakeSignature(kImageSignature);
  base::Json metadata = KserveModelMetadata(signature, "mnist", "4");
  EXPECT_EQ(metadata["name"], "mnist");
  EXPECT_EQ(metadata["versions"], base::Json::array({"4"}));
  EXPECT_EQ(metadata["platform"], "pytorch_torchscript");
  EXPECT_EQ(metadata["inputs"][0],
            base::Json({{"name", "image"}, {"datatype", "FP32"}, {"shape", {-1, 1, 28, 28}}}));
  EXPECT_EQ(metadata["outputs"][0]["shape"], base::Json({-1, 10}));
}

}  // namespace
}  // namespace kiln::serving
