#include "kiln/net/multipart.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"
#include "kiln/net/http_parsing.h"

namespace kiln::net {
namespace {

constexpr size_t kMaxBoundary = 70;  // RFC 2046 section 5.1.1
constexpr size_t kMaxQuoted = 80;    // of outside text quoted in an error message

std::string Quote(std::string_view text) {
  std::string shown(text.substr(0, kMaxQuoted));
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return absl::StrCat("\"", shown, text.size() > kMaxQuoted ? "...\"" : "\"");
}

// Debian's Abseil has its own string_view, so these work on std::string_view directly.
std::string_view Trim(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = absl::ascii_tolower(static_cast<unsigned char>(c));
  return out;
}

// A header value of the form `type; a=b; c="d;e"` (RFC 2045/7231 parameters): the type
// and the parameters in order, names lower-cased, quoted values unescaped.
struct HeaderValue {
  std::string type;
  std::vector<std::pair<std::string, std::string>> params;

  const std::string* Param(std::string_view name) const {
    for (const auto& [k, v] : params) {
      if (k == name) return &v;
    }
    return nullptr;
  }
};

absl::StatusOr<HeaderValue> ParseHeaderValue(std::string_view text, std::string_view header) {
  // Split at the semicolons outside quoted strings.
  std::vector<std::string_view> pieces;
  size_t start = 0;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (quoted && text[i] == '\\') {
      ++i;
    } else if (text[i] == '"') {
      quoted = !quoted;
    } else if (!quoted && text[i] == ';') {
      pieces.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  if (quoted) {
    return absl::InvalidArgumentError(absl::StrCat("the ", std::string(header), " header ",
                                                   Quote(text), " has an unterminated quote"));
  }
  pieces.push_back(text.substr(start));

  HeaderValue out;
  out.type = Lower(Trim(pieces[0]));
  for (size_t p = 1; p < pieces.size(); ++p) {
    std::string_view piece = Trim(pieces[p]);
    size_t eq = piece.find('=');
    if (eq == std::string_view::npos) continue;  // a parameter without a value: not ours
    std::string name = Lower(Trim(piece.substr(0, eq)));
    std::string_view raw = Trim(piece.substr(eq + 1));
    std::string value;
    if (!raw.empty() && raw.front() == '"') {
      // A quoted string: up to its closing quote, backslash escapes resolved.
      for (size_t i = 1; i < raw.size() && raw[i] != '"'; ++i) {
        if (raw[i] == '\\' && i + 1 < raw.size()) ++i;
        value.push_back(raw[i]);
      }
    } else {
      value = std::string(raw);
    }
    if (!name.empty()) out.params.emplace_back(std::move(name), std::move(value));
  }
  return out;
}

bool IsBoundaryChar(char c) { return c >= 0x20 && c <= 0x7e; }

// RFC 5987 `filename*=UTF-8''na%C3%AFve.py` (charset and language ignored: the bytes are
// kept as they are). nullopt when malformed.
std::optional<std::string> DecodeExtValue(std::string_view value) {
  size_t first = value.find('\'');
  if (first == std::string_view::npos) return std::nullopt;
  size_t second = value.find('\'', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  auto decoded = PercentDecode(value.substr(second + 1));
  if (!decoded.ok()) return std::nullopt;
  return *decoded;
}

// Reads one header line starting at `pos` (without its CRLF or LF). Returns false when
// the body ends before the line does.
bool ReadLine(std::string_view body, size_t& pos, std::string_view& line) {
  size_t nl = body.find('\n', pos);
  if (nl == std::string_view::npos) return false;
  line = body.substr(pos, nl - pos);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  pos = nl + 1;
  return true;
}

// After a boundary: transport padding (spaces and tabs, RFC 2046) then a line end.
bool SkipToLineEnd(std::string_view body, size_t& pos) {
  while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
  if (body.substr(pos).starts_with("\r\n")) {
    pos += 2;
    return true;
  }
  if (body.substr(pos).starts_with("\n")) {
    pos += 1;
    return true;
  }
  return false;
}

std::string PartLabel(size_t index, const std::string& name) {
  return name.empty() ? absl::StrCat("part ", index + 1)
                      : absl::StrCat("part ", index + 1, " (\"", name, "\")");
}

}  // namespace

absl::StatusOr<std::string> MultipartBoundary(std::string_view content_type) {
  auto fail = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(why,
                     ": send the form as multipart/form-data with a boundary, e.g. Content-Type: "
                     "multipart/form-data; boundary=X (got Content-Type ",
                     content_type.empty() ? std::string("none") : Quote(content_type), ")"));
  };
  KILN_ASSIGN_OR_RETURN(HeaderValue value, ParseHeaderValue(content_type, "Content-Type"));
  if (value.type != "multipart/form-data") return fail("the request is not a multipart form");
  const std::string* boundary = value.Param("boundary");
  if (boundary == nullptr || boundary->empty()) return fail("the Content-Type has no boundary");
  if (boundary->size() > kMaxBoundary) {
    return fail(absl::StrCat("the boundary is longer than ", kMaxBoundary, " characters"));
  }
  if (!std::all_of(boundary->begin(), boundary->end(), IsBoundaryChar) || boundary->back() == ' ') {
    return fail("the boundary holds a control character or ends in a space");
  }
  return *boundary;
}

absl::StatusOr<std::vector<MultipartPart>> ParseMultipart(std::string_view body,
                                                          std::string_view boundary,
                                                          const MultipartLimits& limits) {
  if (boundary.empty()) return absl::InvalidArgumentError("the multipart boundary is empty");
  const std::string dash_boundary = absl::StrCat("--", std::string(boundary));
  const std::string delimiter = absl::StrCat("\r\n", dash_boundary);
  // Parts can be hundreds of MiB of binary data in which '\r' is common: a skipping
  // search keeps finding the delimiter linear with a small constant.
  const std::boyer_moore_horspool_searcher searcher(delimiter.begin(), delimiter.end());
  auto find_delimiter = [&](size_t from) -> size_t {
    auto it = std::search(body.begin() + from, body.end(), searcher);
    return it == body.end() ? std::string_view::npos : static_cast<size_t>(it - body.begin());
  };

  // The first boundary opens the body or follows the preamble's last line end.
  size_t pos = 0;
  if (body.starts_with(dash_boundary)) {
    pos = dash_boundary.size();
  } else {
    size_t found = find_delimiter(0);
    if (found == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the multipart body holds no boundary line ", Quote(dash_boundary),
          ": the body is empty, or was written with another boundary than its Content-Type "
          "names"));
    }
    pos = found + delimiter.size();
  }

  std::vector<MultipartPart> parts;
  while (true) {
    // `pos` is just past a boundary: "--" closes the form, a line end opens a part.
    if (body.substr(pos).starts_with("--")) return parts;
    if (!SkipToLineEnd(body, pos)) {
      if (pos >= body.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the multipart body ends without its closing boundary ", Quote(dash_boundary + "--"),
            " after ", parts.size(), " part(s): was the upload cut short?"));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("a boundary line of the multipart body is followed by ",
                       Quote(body.substr(pos, 16)), " instead of a line end or \"--\""));
    }
    if (parts.size() == limits.max_parts) {
      return absl::InvalidArgumentError(
          absl::StrCat("the multipart body has more than ", limits.max_parts, " parts"));
    }
    const size_t index = parts.size();
    MultipartPart part;
    bool has_disposition = false;
    size_t headers_start = pos;
    std::string last_header;
    while (true) {
      std::string_view line;
      if (!ReadLine(body, pos, line)) {
        return absl::InvalidArgumentError(absl::StrCat(
            PartLabel(index, part.name),
            " of the multipart body: its headers are not ended by an empty line (was the "
            "upload cut short?)"));
      }
      if (pos - headers_start > limits.max_header_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat(PartLabel(index, part.name), " of the multipart body has more than ",
                         limits.max_header_bytes, " bytes of headers"));
      }
      if (line.empty()) break;
      if (line.front() == ' ' || line.front() == '\t') continue;  // obsolete folding
      size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) {
        return absl::InvalidArgumentError(absl::StrCat(PartLabel(index, part.name),
                                                       " of the multipart body has a malformed "
                                                       "header line ",
                                                       Quote(line)));
      }
      std::string name = Lower(Trim(line.substr(0, colon)));
      std::string_view value = Trim(line.substr(colon + 1));
      if (name == "content-disposition" && !has_disposition) {
        has_disposition = true;
        KILN_ASSIGN_OR_RETURN(HeaderValue disposition,
                              ParseHeaderValue(value, "Content-Disposition"));
        if (disposition.type != "form-data") {
          return absl::InvalidArgumentError(absl::StrCat(
              PartLabel(index, part.name), " of the multipart body has Content-Disposition ",
              Quote(disposition.type), "; a form's parts are \"form-data\""));
        }
        if (const std::string* n = disposition.Param("name")) part.name = *n;
        if (const std::string* ext = disposition.Param("filename*")) {
          part.filename = DecodeExtValue(*ext);
        }
        if (!part.filename) {
          if (const std::string* f = disposition.Param("filename")) part.filename = *f;
        }
      } else if (name == "content-type" && part.content_type.empty()) {
        part.content_type = std::string(value);
      }
    }
    if (!has_disposition || part.name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(PartLabel(index, part.name),
                       " of the multipart body has no Content-Disposition: form-data with a "
                       "name, e.g. Content-Disposition: form-data; name=\"file\"; "
                       "filename=\"model.py\""));
    }
    // The CRLF before a boundary belongs to the delimiter, not to the part's body.
    size_t end = find_delimiter(pos);
    if (end == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          PartLabel(index, part.name),
          " of the multipart body is not ended by the boundary (was the upload cut short?)"));
    }
    part.body = body.substr(pos, end - pos);
    parts.push_back(std::move(part));
    pos = end + delimiter.size();
  }
}

absl::StatusOr<std::vector<MultipartPart>> ParseMultipartRequest(const HttpRequest& request,
                                                                 const MultipartLimits& limits) {
  KILN_ASSIGN_OR_RETURN(std::string boundary, MultipartBoundary(request.Header("content-type")));
  return ParseMultipart(request.body, boundary, limits);
}

const MultipartPart* FindPart(const std::vector<MultipartPart>& parts, std::string_view name) {
  for (const MultipartPart& p : parts) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

}  // namespace kiln::net
