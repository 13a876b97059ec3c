// http_parsing.cc

#include "kiln/net/http_parsing.h"

#include <array>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"

namespace kiln::net {
namespace {

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool IsUnreserved(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

std::string_view TrimSpaces(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// Splits "Scheme credentials" and checks the scheme; returns the trimmed credentials.
std::optional<std::string_view> CredentialsForScheme(std::string_view header_value,
                                                     std::string_view scheme) {
  std::string_view value = TrimSpaces(header_value);
  if (value.size() <= scheme.size()) return std::nullopt;
  if (!EqualsIgnoreAsciiCase(value.substr(0, scheme.size()), scheme)) return std::nullopt;
  char separator = value[scheme.size()];
  if (separator != ' ' && separator != '\t') return std::nullopt;
  std::string_view credentials = TrimSpaces(value.substr(scheme.size()));
  if (credentials.empty()) return std::nullopt;
  return credentials;
}

}  // namespace

absl::StatusOr<std::string> PercentDecode(std::string_view text, bool plus_as_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) {
        return absl::InvalidArgumentError(absl::StrCat("truncated percent-escape at offset ", i,
                                                       " in '", std::string(text.substr(0, 200)),
                                                       "'"));
      }
      int high = HexValue(text[i + 1]);
      int low = HexValue(text[i + 2]);
      if (high < 0 || low < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "invalid percent-escape '", std::string(text.substr(i, 3)), "' at offset ", i));
      }
      char decoded = static_cast<char>(high * 16 + low);
      if (decoded == '\0') {
        return absl::InvalidArgumentError("percent-escape %00 (NUL) is not allowed");
      }
      out.push_back(decoded);
      i += 2;
    } else if (c == '+' && plus_as_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string PercentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (IsUnreserved(c)) {
      out.push_back(c);
    } else {
      auto byte = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xF]);
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQuery(
    std::string_view query) {
  std::vector<std::pair<std::string, std::string>> result;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view piece = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (piece.empty()) continue;
    size_t eq = piece.find('=');
    std::string_view raw_key = piece.substr(0, eq);
    std::string_view raw_value =
        eq == std::string_view::npos ? std::string_view() : piece.substr(eq + 1);
    KILN_ASSIGN_OR_RETURN(std::string key, PercentDecode(raw_key, /*plus_as_space=*/true));
    KILN_ASSIGN_OR_RETURN(std::string value, PercentDecode(raw_value, /*plus_as_space=*/true));
    result.emplace_back(std::move(key), std::move(value));
  }
  return result;
}

absl::Status ParseRequestTarget(std::string_view target, HttpRequest* request) {
  if (target.empty() || target.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("request target must be a path starting with '/', got '",
                     std::string(target.substr(0, 200)), "'"));
  }
  size_t question = target.find('?');
  std::string_view raw_path = target.substr(0, question);
  std::string_view raw_query =
      question == std::string_view::npos ? std::string_view() : target.substr(question + 1);
  // A fragment is never sent by a conforming client; drop it rather than route on it.
  if (size_t hash = raw_query.find('#'); hash != std::string_view::npos) {
    raw_query = raw_query.substr(0, hash);
  }
  if (size_t hash = raw_path.find('#'); hash != std::string_view::npos) {
    raw_path = raw_path.substr(0, hash);
    raw_query = std::string_view();
  }

  // Check segment by segment on the raw path so an encoded '/' can be told from a real one:
  // routing splits the decoded path on '/', so "%2F" would silently change the route.
  std::string path;
  path.reserve(raw_path.size());
  std::string_view rest = raw_path.substr(1);
  while (true) {
    size_t slash = rest.find('/');
    std::string_view raw_segment = rest.substr(0, slash);
    bool last = slash == std::string_view::npos;
    rest = last ? std::string_view() : rest.substr(slash + 1);
    KILN_ASSIGN_OR_RETURN(std::string segment, PercentDecode(raw_segment));
    if (segment.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          "an encoded '/' (%2F) in the request path is not supported");
    }
    if (segment == "." || segment == "..") {
      return absl::InvalidArgumentError("'.' and '..' segments are not allowed in the path");
    }
    // Empty segments: "/" itself and one trailing slash are fine; "a//b" is not.
    if (segment.empty() && !last) {
      return absl::InvalidArgumentError("empty segment ('//') in the request path");
    }
    path.push_back('/');
    path += segment;
    if (last) break;
  }
  KILN_ASSIGN_OR_RETURN(auto query, ParseQuery(raw_query));
  request->path = std::move(path);
  request->query = std::move(query);
  return absl::OkStatus();
}

std::string Base64Encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t n = (static_cast<uint8_t>(data[i]) << 16) | (static_cast<uint8_t>(data[i + 1]) << 8) |
                 static_cast<uint8_t>(data[i + 2]);
    out.push_back(kBase64Alphabet[(n >> 18) & 63]);
    out.push_back(kBase64Alphabet[(n >> 12) & 63]);
    out.push_back(kBase64Alphabet[(n >> 6) & 63]);
    out.push_back(kBase64Alphabet[n & 63]);
  }
  size_t left = data.size() - i;
  if (left == 1) {
    uint32_t n = static_cast<uint8_t>(data[i]) << 16;
    out.push_back(kBase64Alphabet[(n >> 18) & 63]);
    out.push_back(kBase64Alphabet[(n >> 12) & 63]);
    out += "==";
  } else if (left == 2) {
    uint32_t n = (static_cast<uint8_t>(data[i]) << 16) | (static_cast<uint8_t>(data[i + 1]) << 8);
    out.push_back(kBase64Alphabet[(n >> 18) & 63]);
    out.push_back(kBase64Alphabet[(n >> 12) & 63]);
    out.push_back(kBase64Alphabet[(n >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

absl::StatusOr<std::string> Base64Decode(std::string_view text) {
  // Strip up to two '=' of padding; then the length must be a valid unpadded length.
  size_t padding = 0;
  while (!text.empty() && text.back() == '=' && padding < 2) {
    text.remove_suffix(1);
    ++padding;
  }
  if (padding > 0 && (text.size() + padding) % 4 != 0) {
    return absl::InvalidArgumentError("malformed Base64: wrong amount of '=' padding");
  }
  if (text.size() % 4 == 1) {
    return absl::InvalidArgumentError("malformed Base64: impossible length");
  }
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t accumulator = 0;
  int bits = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    int value = Base64Value(text[i]);
    if (value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("malformed Base64: unexpected character at offset ", i));
    }
    accumulator = (accumulator << 6) | static_cast<uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((accumulator >> bits) & 0xFF));
    }
  }
  // Leftover bits must be zero in canonical Base64 ("QQ==" decodes, "QR==" does not).
  if ((accumulator & ((1u << bits) - 1)) != 0) {
    return absl::InvalidArgumentError("malformed Base64: non-zero trailing bits");
  }
  return out;
}

std::optional<std::pair<std::string, std::string>> ParseBasicAuthorization(
    std::string_view header_value) {
  std::optional<std::string_view> credentials = CredentialsForScheme(header_value, "Basic");
  if (!credentials.has_value()) return std::nullopt;
  absl::StatusOr<std::string> decoded = Base64Decode(*credentials);
  if (!decoded.ok()) return std::nullopt;
  size_t colon = decoded->find(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  return std::make_pair(decoded->substr(0, colon), decoded->substr(colon + 1));
}

std::optional<std::string> ParseBearerAuthorization(std::string_view header_value) {
  std::optional<std::string_view> credentials = CredentialsForScheme(header_value, "Bearer");
  if (!credentials.has_value()) return std::nullopt;
  if (credentials->find_first_of(" \t\r\n") != std::string_view::npos) return std::nullopt;
  return std::string(*credentials);
}

}  // namespace kiln::net
