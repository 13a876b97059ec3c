#include "kiln/torch/idx_reader.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"

namespace kiln::torch {
namespace {

constexpr uint8_t kTypeUnsignedByte = 0x08;
constexpr int kMaxDims = 8;

uint32_t ReadBigEndian32(std::string_view bytes, size_t offset) {
  auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(bytes[offset + i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

}  // namespace

absl::StatusOr<IdxArray> ParseIdx(std::string_view bytes, size_t max_bytes) {
  if (bytes.size() < 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("IDX file is ", bytes.size(), " bytes, shorter than its 4-byte magic"));
  }
  if (bytes[0] != 0 || bytes[1] != 0) {
    return absl::InvalidArgumentError(
        "not an IDX file: the magic must start with two zero bytes (is it still gzipped, or "
        "another format?)");
  }
  const auto type = static_cast<uint8_t>(bytes[2]);
  const int num_dims = static_cast<uint8_t>(bytes[3]);
  if (type != kTypeUnsignedByte) {
    return absl::InvalidArgumentError(
        absl::StrCat("IDX element type 0x", absl::Hex(type, absl::kZeroPad2),
                     " is not supported; only 0x08 (unsigned byte) is"));
  }
  if (num_dims < 1 || num_dims > kMaxDims) {
    return absl::InvalidArgumentError(
        absl::StrCat("IDX file has ", num_dims, " dimensions; 1 to ", kMaxDims, " are supported"));
  }
  const size_t header_size = 4 + 4 * static_cast<size_t>(num_dims);
  if (bytes.size() < header_size) {
    return absl::InvalidArgumentError(absl::StrCat("IDX header of ", num_dims, " dimensions needs ",
                                                   header_size, " bytes; the file has ",
                                                   bytes.size()));
  }
  IdxArray array;
  array.dims.reserve(num_dims);
  // Multiply with a bound check at each step, so that no product of 32-bit sizes can
  // overflow before it is compared with the limit.
  size_t count = 1;
  for (int i = 0; i < num_dims; ++i) {
    const uint32_t dim = ReadBigEndian32(bytes, 4 + 4 * static_cast<size_t>(i));
    array.dims.push_back(dim);
    if (dim != 0 && count > max_bytes / dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("IDX array is larger than the limit of ", max_bytes, " bytes"));
    }
    count *= dim;
  }
  const size_t data_size = bytes.size() - header_size;
  if (data_size != count) {
    std::string dims_text;
    for (int64_t d : array.dims) absl::StrAppend(&dims_text, dims_text.empty() ? "" : "x", d);
    return absl::InvalidArgumentError(
        absl::StrCat("IDX sizes ", dims_text, " need ", count, " data bytes; the file has ",
                     data_size, data_size < count ? " (truncated?)" : " (trailing bytes)"));
  }
  array.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header_size), bytes.end());
  return array;
}

absl::StatusOr<std::string> MaybeGunzip(std::string_view bytes, size_t max_bytes) {
  if (bytes.size() < 2 || static_cast<uint8_t>(bytes[0]) != 0x1f ||
      static_cast<uint8_t>(bytes[1]) != 0x8b) {
    return std::string(bytes);
  }
  z_stream stream{};
  // 16 + MAX_WBITS: expect a gzip header and trailer, not a raw zlib stream.
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) {
    return absl::InternalError("zlib inflateInit2 failed");
  }
  std::string out;
  // zlib's avail_in is 32-bit; the input is bounded by the file-size check of the caller
  // or the fuzzer, but feed it in chunks anyway so that any size works.
  size_t in_offset = 0;
  int rc = Z_OK;
  constexpr size_t kChunk = 1 << 20;
  while (rc != Z_STREAM_END) {
    if (stream.avail_in == 0 && in_offset < bytes.size()) {
      const size_t n = std::min(kChunk, bytes.size() - in_offset);
      stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data() + in_offset));
      stream.avail_in = static_cast<uInt>(n);
      in_offset += n;
    }
    if (out.size() >= max_bytes) {
      inflateEnd(&stream);
      return absl::InvalidArgumentError(
          absl::StrCat("gzip data expands beyond the limit of ", max_bytes, " bytes"));
    }
    const size_t old_size = out.size();
    const size_t grow = std::min({kChunk, max_bytes - old_size, std::max(old_size, size_t{4096})});
    out.resize(old_size + grow);
    stream.next_out = reinterpret_cast<Bytef*>(out.data() + old_size);
    stream.avail_out = static_cast<uInt>(grow);
    rc = inflate(&stream, Z_NO_FLUSH);
    out.resize(old_size + (grow - stream.avail_out));
    if (rc == Z_STREAM_END) break;
    if (rc == Z_BUF_ERROR && stream.avail_in == 0 && in_offset == bytes.size()) {
      inflateEnd(&stream);
      return absl::InvalidArgumentError("gzip data is truncated");
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      std::string message = stream.msg != nullptr ? stream.msg : "unknown error";
      inflateEnd(&stream);
      return absl::InvalidArgumentError(absl::StrCat("gzip data is corrupt: ", message));
    }
  }
  const size_t trailing = stream.avail_in + (bytes.size() - in_offset);
  inflateEnd(&stream);
  if (trailing != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gzip stream is followed by ", trailing, " unexpected bytes"));
  }
  return out;
}

absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path, size_t max_bytes) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is ", size, " bytes; the limit is ", max_bytes));
  }
  KILN_ASSIGN_OR_RETURN(std::string raw, base::ReadFile(path));
  auto decoded = MaybeGunzip(raw, max_bytes);
  if (!decoded.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", decoded.status().message()));
  }
  raw.clear();
  raw.shrink_to_fit();
  auto array = ParseIdx(*decoded, max_bytes);
  if (!array.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", array.status().message()));
  }
  return array;
}

}  // namespace kiln::torch
