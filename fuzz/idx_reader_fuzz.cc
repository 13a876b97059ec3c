// Fuzzes the IDX reader with arbitrary bytes, gzipped or not. The limit is small so that a
// gzip bomb is cut off long before libFuzzer's memory limit.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kiln/torch/idx_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kLimit = 16 << 20;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto decoded = kiln::torch::MaybeGunzip(bytes, kLimit);
  if (!decoded.ok()) return 0;
  auto array = kiln::torch::ParseIdx(*decoded, kLimit);
  if (array.ok()) {
    size_t count = 1;
    for (int64_t dim : array->dims) count *= static_cast<size_t>(dim);
    if (count != array->data.size()) __builtin_trap();
  }
  return 0;
}
