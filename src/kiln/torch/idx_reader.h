// idx_reader.h
//
// Reads IDX files, the array format of the (Fashion-)MNIST datasets, optionally gzipped,
// into a plain `IdxArray`. Torch-free on purpose: the bytes come from outside the process,
// so this parser is small, bounded and fuzzed (fuzz/idx_reader_fuzz.cc); the trainer turns
// the result into tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::torch {

// An N-dimensional array of unsigned bytes, row-major. `data.size()` is the product of
// `dims` (1 for no dims is impossible: IDX needs at least one dimension).
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// The largest array, and the largest decompressed file, that the reader accepts. Real
// datasets are far below this (Fashion-MNIST train images: 47 MB); the bound keeps a
// corrupt header or a gzip bomb from exhausting memory.
inline constexpr size_t kMaxIdxBytes = size_t{1} << 30;

// Parses the bytes of an uncompressed IDX file: two zero bytes, a type byte, a dimension
// count, that many big-endian uint32 sizes, then the data. Only type 0x08 (unsigned byte)
// is supported. Returns InvalidArgument, with a message naming the problem, for a bad
// magic, an unsupported type, zero or more than 8 dimensions, a header or data shorter or
// longer than the sizes say, or an array larger than `max_bytes`.
[[nodiscard]] absl::StatusOr<IdxArray> ParseIdx(std::string_view bytes,
                                                size_t max_bytes = kMaxIdxBytes);

// Returns `bytes` unchanged unless they start with the gzip magic (1f 8b), in which case
// it returns them decompressed. InvalidArgument for corrupt or truncated gzip data,
// trailing bytes after the gzip stream, or output larger than `max_bytes`.
[[nodiscard]] absl::StatusOr<std::string> MaybeGunzip(std::string_view bytes,
                                                      size_t max_bytes = kMaxIdxBytes);

// Reads `path` (gzipped or not) and parses it. NotFound if the file does not exist;
// InvalidArgument as above, with the path in the message.
[[nodiscard]] absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path,
                                                   size_t max_bytes = kMaxIdxBytes);

}  // namespace kiln::torch
