#include "kiln/net/bundle.h"

#include <algorithm>
#include <cstdint>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace kiln::net {
namespace {

void AppendU32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

void AppendField(std::string& out, std::string_view field) {
  AppendU32(out, static_cast<uint32_t>(field.size()));
  out.append(field);
}

void AppendHeaders(std::string& out, const HeaderList& headers) {
  AppendU32(out, static_cast<uint32_t>(headers.size()));
  for (const auto& [name, value] : headers) {
    AppendField(out, name);
    AppendField(out, value);
  }
}

size_t HeadersSize(const HeaderList& headers) {
  size_t size = 4;
  for (const auto& [name, value] : headers) size += 8 + name.size() + value.size();
  return size;
}

// RFC 9110 token characters: what a header name may hold.
bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Reads the fields of a bundle front to back; every read is bounds-checked.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ == data_.size(); }

  std::optional<uint32_t> U32() {
    if (data_.size() - pos_ < 4) return std::nullopt;
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      value |= static_cast<uint32_t>(static_cast<unsigned char>(data_[pos_ + i])) << (8 * i);
    }
    pos_ += 4;
    return value;
  }
  std::optional<std::string_view> Field() {
    std::optional<uint32_t> size = U32();
    if (!size || data_.size() - pos_ < *size) return std::nullopt;
    std::string_view field = data_.substr(pos_, *size);
    pos_ += *size;
    return field;
  }
  // A header list: names lower-cased. Empty `why` and nullopt past the end; a reason in
  // `why` for a bad name or value or too many headers.
  std::optional<HeaderList> Headers(std::string& why) {
    std::optional<uint32_t> count = U32();
    if (!count) return std::nullopt;
    if (*count > kMaxBundleItemHeaders) {
      why = absl::StrCat("has ", *count, " headers, more than ", kMaxBundleItemHeaders);
      return std::nullopt;
    }
    HeaderList headers;
    headers.reserve(*count);
    for (uint32_t i = 0; i < *count; ++i) {
      std::optional<std::string_view> name = Field();
      std::optional<std::string_view> value = name ? Field() : std::nullopt;
      if (!value) return std::nullopt;
      if (name->empty() || !std::all_of(name->begin(), name->end(), IsTokenChar)) {
        why = "has a header name that is not an HTTP token";
        return std::nullopt;
      }
      if (value->find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
        why = "has a header value with CR, LF or NUL";
        return std::nullopt;
      }
      headers.emplace_back(absl::AsciiStrToLower(std::string(*name)), std::string(*value));
    }
    return headers;
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

absl::Status Malformed(std::string_view what, size_t item, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed ", std::string(what), ": item ", item, " ", std::string(why)));
}

}  // namespace

void AppendBundledRequest(std::string& bundle, std::string_view target,
                          std::string_view content_type, const HeaderList& headers,
                          std::string_view body) {
  bundle.reserve(bundle.size() + 12 + target.size() + content_type.size() + HeadersSize(headers) +
                 body.size());
  AppendField(bundle, target);
  AppendField(bundle, content_type);
  AppendHeaders(bundle, headers);
  AppendField(bundle, body);
}

absl::StatusOr<std::vector<BundledRequest>> DecodeBundleRequest(std::string_view bundle) {
  if (bundle.empty()) return absl::InvalidArgumentError("the bundle holds no request");
  Reader in(bundle);
  std::vector<BundledRequest> out;
  while (!in.done()) {
    const size_t item = out.size();
    if (item == kMaxBundleItems) {
      return absl::InvalidArgumentError(
          absl::StrCat("the bundle holds more than ", kMaxBundleItems, " requests"));
    }
    std::string why;
    std::optional<std::string_view> target = in.Field();
    std::optional<std::string_view> content_type = target ? in.Field() : std::nullopt;
    std::optional<HeaderList> headers = content_type ? in.Headers(why) : std::nullopt;
    std::optional<std::string_view> body = headers ? in.Field() : std::nullopt;
    if (!why.empty()) return Malformed("bundle", item, why);
    if (!body) return Malformed("bundle", item, "runs past the end of the body");
    if (target->empty() || target->front() != '/') {
      return Malformed("bundle", item, "has a target that is not a path");
    }
    out.push_back({std::string(*target), std::string(*content_type), *std::move(headers),
                   std::string(*body)});
  }
  return out;
}

std::string EncodeBundleResponse(const std::vector<HttpResponse>& responses) {
  size_t size = 0;
  for (const HttpResponse& r : responses) {
    size += 12 + r.content_type.size() + HeadersSize(r.headers) + r.body.size();
  }
  std::string out;
  out.reserve(size);
  for (const HttpResponse& r : responses) {
    AppendU32(out, static_cast<uint32_t>(r.status));
    AppendField(out, r.content_type);
    AppendHeaders(out, r.headers);
    AppendField(out, r.body);
  }
  return out;
}

absl::StatusOr<std::vector<HttpResponse>> DecodeBundleResponse(std::string_view bundle,
                                                               size_t expected) {
  Reader in(bundle);
  std::vector<HttpResponse> out;
  out.reserve(expected);
  while (!in.done()) {
    const size_t item = out.size();
    if (item == expected) {
      return absl::InvalidArgumentError(
          absl::StrCat("malformed bundle answer: more than the ", expected, " responses asked"));
    }
    std::string why;
    std::optional<uint32_t> status = in.U32();
    std::optional<std::string_view> content_type = status ? in.Field() : std::nullopt;
    std::optional<HeaderList> headers = content_type ? in.Headers(why) : std::nullopt;
    std::optional<std::string_view> body = headers ? in.Field() : std::nullopt;
    if (!why.empty()) return Malformed("bundle answer", item, why);
    if (!body) return Malformed("bundle answer", item, "runs past the end of the body");
    if (*status < 100 || *status > 599) {
      return Malformed("bundle answer", item, absl::StrCat("has status ", *status));
    }
    HttpResponse r;
    r.status = static_cast<int>(*status);
    r.content_type = std::string(*content_type);
    r.headers = *std::move(headers);
    r.body = std::string(*body);
    out.push_back(std::move(r));
  }
  if (out.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("malformed bundle answer: ", out.size(),
                                                   " responses for ", expected, " requests"));
  }
  return out;
}

}  // namespace kiln::net
