#include "kiln/torch/jit_engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/script.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

namespace kiln::torch {
namespace {

using serving::DType;
using serving::Signature;
using serving::Tensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

template <typename T>
Tensor Make(DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  return t;
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  std::vector<T> out(t.bytes.size() / sizeof(T));
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  return out;
}

// Saves a TorchScript module whose forward is `source` (with a [2, 3] weight `w` holding
// 0..5) and returns its path. Built in C++ (Module::define), no Python needed.
std::string SaveModule(const std::string& dir, const std::string& source) {
  ::torch::jit::Module m("Model");
  m.register_parameter("w", ::torch::arange(6, ::torch::kFloat).reshape({2, 3}), false);
  m.define(source);
  const std::string path = dir + "/model.pt";
  m.save(path);
  return path;
}

Signature LinearSignature() {
  Signature sig;
  sig.inputs.push_back({"x", DType::kFloat32, {2}});
  sig.outputs.push_back({"y", DType::kFloat32, {3}});
  return sig;
}

// Each test gets its own directory for the module file.
class JitEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/jit_engine_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  const std::string& path() const { return dir_; }

  std::string dir_;
};

TEST_F(JitEngineTest, RunsABatchThroughTheModule) {
  const std::string path = SaveModule(dir_, R"(
def forward(self, x):
    return x.matmul(self.w)
)");
  auto engine = JitEngine::Load(path, LinearSignature());
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_TRUE((*engine)->WarmUp(4).ok());
  (*engine)->PrepareThread();
  auto out = (*engine)->Run({Make<float>(DType::kFloat32, {2, 2}, {1, 0, 1, 1})});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 1u);
  EXPECT_THAT(out->at(0).shape, ElementsAre(2, 3));
  // Row 0 = w[0] = 0 1 2; row 1 = w[0] + w[1] = 3 5 7.
  EXPECT_THAT(Values<float>(out->at(0)), ElementsAre(0, 1, 2, 3, 5, 7));
}

// testdata/cuda_linear.pt: the same module scripted and saved on a GPU by
// tests/gpu/make_cuda_fixture.py, so its weight is stored as a CUDA tensor. This LibTorch
// has no CUDA: the file loads only because the engine maps it onto the CPU.
TEST_F(JitEngineTest, AModelSavedOnAGpuLoadsAndRunsOnTheCpu) {
  auto engine = JitEngine::Load(KILN_TORCH_TESTDATA "/cuda_linear.pt", LinearSignature());
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_TRUE((*engine)->WarmUp(4).ok());
  (*engine)->PrepareThread();
  auto out = (*engine)->Run({Make<float>(DType::kFloat32, {2, 2}, {1, 0, 1, 1})});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(Values<float>(out->at(0)), ElementsAre(0, 1, 2, 3, 5, 7));
}

TEST_F(JitEngineTest, TupleOutputsFollowTheSignatureAndItsDtypes) {
  const std::string path = SaveModule(dir_, R"(
def forward(self, a, b):
    s = a.float().sum(1) + b.float()
    return s, s > 2.0
)");
  Signature sig;
  sig.inputs.push_back({"a", DType::kInt64, {2}});
  sig.inputs.push_back({"b", DType::kInt32, {}});
  sig.outputs.push_back({"sum", DType::kFloat64, {}});
  sig.outputs.push_back({"big", DType::kBool, {}});
  auto engine = JitEngine::Load(path, sig);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_TRUE((*engine)->WarmUp().ok());
  auto out = (*engine)->Run({Make<int64_t>(DType::kInt64, {2, 2}, {1, 0, 2, 3}),
                             Make<int32_t>(DType::kInt32, {2}, {1, -1})});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ(out->at(0).dtype, DType::kFloat64);
  EXPECT_THAT(Values<double>(out->at(0)), ElementsAre(2, 4));
  EXPECT_EQ(out->at(1).dtype, DType::kBool);
  EXPECT_THAT(Values<uint8_t>(out->at(1)), ElementsAre(0, 1));
}

TEST_F(JitEngineTest, AMissingFileSaysWhatToPass) {
  auto engine = JitEngine::Load(dir_ + "/nope.pt", LinearSignature());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("--model"));
}

TEST_F(JitEngineTest, AFileThatIsNotTorchScriptIsRefused) {
  const std::string path = dir_ + "/model.pt";
  std::ofstream(path) << "not a model";
  auto engine = JitEngine::Load(path, LinearSignature());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("cannot load"));
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("torch.jit.save"));
}

TEST_F(JitEngineTest, WarmUpRefusesASignatureTheModelDoesNotAccept) {
  const std::string path = SaveModule(dir_, R"(
def forward(self, x):
    return x.matmul(self.w)
)");
  Signature sig = LinearSignature();
  sig.inputs[0].shape = {5};  // the weight wants 2 features
  auto engine = JitEngine::Load(path, sig);
  ASSERT_TRUE(engine.ok());
  absl::Status warm = (*engine)->WarmUp();
  EXPECT_EQ(warm.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(warm.message()), HasSubstr("does not accept its signature"));
  EXPECT_THAT(std::string(warm.message()), HasSubstr("x: float32[5]"));
}

TEST_F(JitEngineTest, WarmUpRefusesOutputsThatDoNotMatchTheSignature) {
  const std::string path = SaveModule(dir_, R"(
def forward(self, x):
    return x.matmul(self.w)
)");
  Signature sig = LinearSignature();
  sig.outputs[0].shape = {10};
  auto engine = JitEngine::Load(path, sig);
  ASSERT_TRUE(engine.ok());
  absl::Status warm = (*engine)->WarmUp();
  EXPECT_EQ(warm.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(warm.message()), HasSubstr("\"y\""));
  EXPECT_THAT(std::string(warm.message()), HasSubstr("[10]"));
}

TEST_F(JitEngineTest, AModelErrorIsInternalWithItsMessage) {
  const std::string path = SaveModule(dir_, R"(
def forward(self, x):
    assert bool(x.sum() < 100.0), "too large"
    return x.matmul(self.w)
)");
  auto engine = JitEngine::Load(path, LinearSignature());
  ASSERT_TRUE(engine.ok());
  auto out = (*engine)->Run({Make<float>(DType::kFloat32, {1, 2}, {100, 100})});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("too large"));
}

TEST_F(JitEngineTest, ConcurrentRunsGiveTheSameAnswers) {
  const std::string path = SaveModule(dir_, R"(
def forward(self, x):
    return x.matmul(self.w)
)");
  auto engine = JitEngine::Load(path, LinearSignature());
  ASSERT_TRUE(engine.ok());
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      (*engine)->PrepareThread();
      for (int i = 0; i < 50; ++i) {
        auto out = (*engine)->Run({Make<float>(DType::kFloat32, {1, 2}, {float(t), 1})});
        if (!out.ok() ||
            Values<float>(out->at(0)) != std::vector<float>{3, 4.0f + t, 5.0f + 2 * t}) {
          ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

}  // namespace
}  // namespace kiln::torch
