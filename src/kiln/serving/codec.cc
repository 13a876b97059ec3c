// codec.cc
//
// The three request dialects over one single-pass JSON scanner (see codec.h). The scanner
// reads numbers straight into the input tensors' packed buffers with std::from_chars;
// nothing builds a DOM. Errors are collected as one message that the entry point ends
// with the expected signature, so every refusal tells the caller what to send.
#include "kiln/serving/codec.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/base/status.h"

namespace kiln::serving {

static_assert(std::endian::native == std::endian::little,
              "Tensor bytes are little-endian; the codecs copy host values");

namespace {

// Arrays nest at most this deep inside one sample or one KServe `data` (a signature has
// at most kMaxSignatureRank dimensions, KServe adds the batch); any other value at most
// kMaxSkipDepth deep. Both bound the recursion, so no body can overflow the stack.
constexpr int kMaxArrayDepth = 16;
constexpr int kMaxSkipDepth = 64;
constexpr size_t kMaxIdBytes = 1024;
constexpr size_t kMaxQuoted = 40;  // characters of a bad value quoted back in a message

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      unsigned char cc = s[i + k];
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Product of `shape`, or nullopt when it overflows int64 or a dimension is negative.
std::optional<int64_t> CheckedProduct(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return std::nullopt;
    n *= d;
  }
  return n;
}

bool HasWildcard(const std::vector<int64_t>& shape) {
  for (int64_t d : shape) {
    if (d < 0) return true;
  }
  return false;
}

// Whether `actual` (no wildcards) fits `spec` (where -1 matches any size).
bool ShapeMatches(const std::vector<int64_t>& spec, const std::vector<int64_t>& actual) {
  if (spec.size() != actual.size()) return false;
  for (size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] >= 0 && spec[i] != actual[i]) return false;
  }
  return true;
}

// Outside text quoted back in a message: at most `max_bytes` (cut at a character
// boundary), and invalid UTF-8 replaced by '?', so the message is always valid text.
std::string Quote(std::string_view s, size_t max_bytes = 2 * kMaxQuoted) {
  std::string text(s);
  if (text.size() > max_bytes) {
    size_t cut = max_bytes;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text = text.substr(0, cut) + "...";
  }
  if (!IsValidUtf8(text)) {
    for (char& c : text) {
      if (static_cast<unsigned char>(c) >= 0x80) c = '?';
    }
  }
  return absl::StrCat("\"", text, "\"");
}

// A packed little-endian buffer that grows geometrically; `used` bytes are valid.
struct ByteSink {
  std::string bytes;
  size_t used = 0;

  void Reserve(size_t extra) {
    if (used + extra > bytes.size()) bytes.resize(std::max(used + extra, bytes.size() * 2));
  }
  template <typename T>
  void Put(T value) {
    if (used + sizeof(T) > bytes.size()) Reserve(std::max<size_t>(sizeof(T), 256));
    std::memcpy(bytes.data() + used, &value, sizeof(T));
    used += sizeof(T);
  }
  std::string Take() {
    bytes.resize(used);
    used = 0;
    return std::move(bytes);
  }
};

// Accumulates the decimal digits at `q` into `significand` (which wraps past 19 digits;
// callers count digits) and returns the first non-digit. Eight digits at a time where
// it can: a client's numbers are mostly 8 to 17 digits long.
[[gnu::always_inline]] inline const char* ScanDigits(const char* q, const char* end,
                                                     uint64_t& significand) {
  constexpr uint64_t kHighNibbles = 0xF0F0F0F0F0F0F0F0;
  constexpr uint64_t kThrees = 0x3030303030303030;
  while (end - q >= 8) {
    uint64_t v;
    std::memcpy(&v, q, 8);  // byte 0 is the first digit (little-endian load)
    // Every byte 0x30..0x39: its high nibble is 3, and adding 6 keeps it 3 (no byte
    // exceeds 0x3F + 6, so nothing carries into the next byte).
    if ((v & kHighNibbles) != kThrees || ((v + 0x0606060606060606) & kHighNibbles) != kThrees) {
      break;
    }
    uint64_t d = v - kThrees;  // eight values 0..9, the first digit in the low byte
    // Pairs, then quads, then the eight: each step multiplies the earlier (lower) lane.
    d = (d & 0x00FF00FF00FF00FF) * 10 + ((d >> 8) & 0x00FF00FF00FF00FF);
    d = (d & 0x0000FFFF0000FFFF) * 100 + ((d >> 16) & 0x0000FFFF0000FFFF);
    d = (d & 0xFFFFFFFF) * 10000 + (d >> 32);
    significand = significand * 100000000 + d;
    q += 8;
  }
  while (q < end && IsDigit(*q)) significand = significand * 10 + static_cast<uint64_t>(*q++ - '0');
  return q;
}

// A JSON number as significand * 10^exp10, gathered while its grammar is checked.
// `exact` when the significand holds every digit (at most 19).
struct Decimal {
  uint64_t significand = 0;
  int64_t exp10 = 0;
  int digits = 0;
  bool negative = false;
  bool exact = true;

  // Clinger's fast path: a significand below 2^53 and a power of ten up to 10^22 are
  // both exact doubles, so one multiplication or division rounds correctly.
  bool ToDouble(double& out) const {
    static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                        1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                        1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    if (!exact) return false;
    if (significand == 0) {
      out = negative ? -0.0 : 0.0;
      return true;
    }
    if (significand > (uint64_t{1} << 53) || exp10 < -22 || exp10 > 22) return false;
    double d = static_cast<double>(significand);
    d = exp10 < 0 ? d / kPow10[-exp10] : d * kPow10[exp10];
    out = negative ? -d : d;
    return true;
  }

  // For float32 inputs: with x87's 64-bit significand, any 19-digit significand and
  // 10^27 are exact, so one operation rounds to 64 bits and the cast to 24. This covers
  // the 17-digit numbers Python's json writes for float32 values, which miss the double
  // fast path. Rounding twice can differ from rounding once only within 2^-40 (relative)
  // of a float32 midpoint.
  bool ToFloat(float& out) const {
    if constexpr (std::numeric_limits<long double>::digits >= 64) {
      static constexpr long double kPow10[] = {1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,
                                               1e7L,  1e8L,  1e9L,  1e10L, 1e11L, 1e12L, 1e13L,
                                               1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L, 1e20L,
                                               1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};
      if (!exact || exp10 < -27 || exp10 > 27) return false;
      long double d = static_cast<long double>(significand);
      d = exp10 < 0 ? d / kPow10[-exp10] : d * kPow10[exp10];
      out = static_cast<float>(negative ? -d : d);
      return std::isfinite(out);  // an overflow takes the slow path and its message
    } else {
      double d;
      if (!ToDouble(d)) return false;
      out = static_cast<float>(d);
      return true;
    }
  }
};

// The scanner over one body and the first error it met. Every parse step returns false
// on error after recording the message; callers add context on the way out.
class Decoder {
 public:
  Decoder(std::string_view body, const DecodeLimits& limits)
      : begin_(body.data()), p_(body.data()), end_(body.data() + body.size()), limits_(limits) {}

  const std::string& error() const { return error_; }
  size_t offset() const { return static_cast<size_t>(p_ - begin_); }
  const char* position() const { return p_; }
  void Seek(const char* p) { p_ = p; }
  // Scanning a recorded span later: `end` bounds the scan.
  const char* end() const { return end_; }
  void SetEnd(const char* end) { end_ = end; }

  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }
  bool JsonFail(std::string_view what) {
    if (p_ >= end_)
      return Fail(absl::StrCat("invalid JSON at byte ", offset(), ": the body ends early, ",
                               std::string(what)));
    return Fail(absl::StrCat("invalid JSON at byte ", offset(), ": ", std::string(what)));
  }
  // Prefixes the recorded error with `context` ("input \"x\": sample 3: ").
  bool AddContext(const std::string& context) {
    error_ = absl::StrCat(context, error_);
    return false;
  }

  void SkipWs() {
    while (p_ < end_ && IsSpace(*p_)) ++p_;
  }
  // The next non-space character, or '\0' at the end.
  char Peek() {
    SkipWs();
    return p_ < end_ ? *p_ : '\0';
  }
  bool Consume(char c) {
    if (Peek() != c) return false;
    ++p_;
    return true;
  }
  bool Expect(char c, const char* what) {
    if (Consume(c)) return true;
    return JsonFail(what);
  }
  bool AtEnd() {
    SkipWs();
    return p_ >= end_;
  }

  // A JSON string (the scanner is at its opening quote), unescaped into `out`.
  bool String(std::string& out) {
    out.clear();
    if (Peek() != '"') return JsonFail("expected a string");
    ++p_;
    const char* run = p_;
    while (true) {
      if (p_ >= end_) return JsonFail("unterminated string");
      char c = *p_;
      if (c == '"') {
        out.append(run, p_);
        ++p_;
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) {
        return JsonFail("control character inside a string");
      }
      if (c != '\\') {
        ++p_;
        continue;
      }
      out.append(run, p_);
      if (++p_ >= end_) return JsonFail("unterminated string");
      switch (*p_) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          uint32_t cp;
          if (!HasBytes(p_ + 1, 4) || !Hex4(p_ + 1, cp)) return JsonFail("bad \\u escape");
          p_ += 4;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t low;
            if (end_ - p_ >= 7 && p_[1] == '\\' && p_[2] == 'u' && Hex4(p_ + 3, low) &&
                low >= 0xDC00 && low <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
              p_ += 6;
            } else {
              cp = 0xFFFD;  // a lone surrogate is not a character
            }
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            cp = 0xFFFD;
          }
          AppendUtf8(out, cp);
          break;
        }
        default:
          return JsonFail("bad escape in a string");
      }
      ++p_;
      run = p_;
    }
  }

  // Skips any JSON value.
  bool Skip(int depth = 0) {
    if (depth > kMaxSkipDepth) return JsonFail("values nested too deeply");
    char c = Peek();
    if (c == '"') {
      return String(scratch_);
    }
    if (c == '{') {
      ++p_;
      if (Consume('}')) return true;
      while (true) {
        if (!String(scratch_)) return false;
        if (!Expect(':', "expected ':' after an object key")) return false;
        if (!Skip(depth + 1)) return false;
        if (Consume(',')) continue;
        return Expect('}', "expected ',' or '}' in an object");
      }
    }
    if (c == '[') {
      ++p_;
      if (Consume(']')) return true;
      while (true) {
        if (!Skip(depth + 1)) return false;
        if (Consume(',')) continue;
        return Expect(']', "expected ',' or ']' in an array");
      }
    }
    if (c == '-' || IsDigit(c)) {
      const char* b;
      const char* e;
      bool integral;
      return NumberToken(b, e, integral);
    }
    if (Literal("true") || Literal("false") || Literal("null")) return true;
    return JsonFail("expected a value");
  }

  // Matches the literal `word` at the scanner and steps over it.
  bool Literal(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size() ||
        std::memcmp(p_, word.data(), word.size()) != 0) {
      return false;
    }
    p_ += word.size();
    return true;
  }

  // Scans a JSON number at the scanner: [b, e) is its text; `integral` when it has
  // neither a fraction nor an exponent. On the way it gathers the decimal's significand
  // and exponent (last_decimal_) so that Convert can often skip std::from_chars.
  bool NumberToken(const char*& b, const char*& e, bool& integral) {
    // Locals throughout: a store through a member could alias the char reads (chars
    // alias anything), which would reload every value on each digit.
    const char* const end = end_;
    const char* q = p_;
    b = q;
    uint64_t significand = 0;
    int digits = 0;  // significant digits, leading zeros left out
    int64_t exp10 = 0;
    const bool negative = q < end && *q == '-';
    if (negative) ++q;
    if (q >= end || !IsDigit(*q)) {
      p_ = q;
      return JsonFail("expected a digit");
    }
    if (*q == '0') {
      ++q;
    } else {
      const char* first = q;
      q = ScanDigits(q, end, significand);
      digits = static_cast<int>(q - first);
    }
    integral = true;
    if (q < end && *q == '.') {
      integral = false;
      ++q;
      const char* fraction = q;
      if (significand == 0) {
        while (q < end && *q == '0') ++q;
      }
      const char* first = q;
      q = ScanDigits(q, end, significand);
      if (q == fraction) {
        p_ = q;
        return JsonFail("expected a digit after '.'");
      }
      digits += static_cast<int>(q - first);
      exp10 -= q - fraction;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
      integral = false;
      ++q;
      bool negative_exponent = false;
      if (q < end && (*q == '+' || *q == '-')) negative_exponent = *q++ == '-';
      if (q >= end || !IsDigit(*q)) {
        p_ = q;
        return JsonFail("expected a digit in the exponent");
      }
      int64_t exponent = 0;
      for (; q < end && IsDigit(*q); ++q) {
        if (exponent < 100000) exponent = exponent * 10 + (*q - '0');
      }
      exp10 += negative_exponent ? -exponent : exponent;
    }
    // Past 19 digits the significand wrapped; from_chars rounds such numbers.
    last_decimal_ = Decimal{significand, exp10, digits, negative, digits <= 19};
    e = q;
    p_ = q;
    return true;
  }

  // Reads one element (a number, true or false) as T. The scanner is at its first
  // character.
  template <typename T>
  bool Element(T& out) {
    const char* start = p_;
    char c = p_ < end_ ? *p_ : '\0';
    if (c == '-' || IsDigit(c)) {
      if (c == '-' && end_ - p_ > 1 && p_[1] == 'I') return NotFinite();
      const char* b;
      const char* e;
      bool integral;
      if (!NumberToken(b, e, integral)) return false;
      return Convert(b, e, integral, out);
    }
    if (c == 't' && Literal("true")) {
      out = static_cast<T>(1);
      return true;
    }
    if (c == 'f' && Literal("false")) {
      out = static_cast<T>(0);
      return true;
    }
    if (c == 'N' || c == 'I') return NotFinite();
    if (c == 'n' && Literal("null")) return Fail("null is not a number");
    if (c == '"') {
      if (!String(scratch_)) return false;
      return Fail(absl::StrCat("the string ", Quote(scratch_, kMaxQuoted), " is not a number"));
    }
    if (c == '{') return Fail("an object is not a number");
    p_ = start;
    return JsonFail("expected a number");
  }

  // Counts one more element against the request's limit.
  bool CountElement() {
    if (++elements_ <= limits_.max_elements) return true;
    return Fail(absl::StrCat("the request has more than ", limits_.max_elements,
                             " values; send fewer samples per request"));
  }
  bool CountElements(size_t n) {
    elements_ += n;
    if (elements_ <= limits_.max_elements) return true;
    return Fail(absl::StrCat("the request has more than ", limits_.max_elements,
                             " values; send fewer samples per request"));
  }

 private:
  static bool Hex4(const char* q, uint32_t& cp) {
    cp = 0;
    for (int i = 0; i < 4; ++i) {
      char c = q[i];
      cp <<= 4;
      if (c >= '0' && c <= '9') {
        cp |= c - '0';
      } else if (c >= 'a' && c <= 'f') {
        cp |= c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        cp |= c - 'A' + 10;
      } else {
        return false;
      }
    }
    return true;
  }
  // Hex4 reads 4 bytes: callers check that they exist.
  bool HasBytes(const char* q, size_t n) const { return static_cast<size_t>(end_ - q) >= n; }

  bool NotFinite() { return Fail("NaN and Infinity are not allowed (JSON numbers only)"); }

  std::string Text(const char* b, const char* e) const {
    return std::string(b, std::min<size_t>(static_cast<size_t>(e - b), kMaxQuoted));
  }

  template <typename T>
  bool Convert(const char* b, const char* e, bool integral, T& out) {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      // Most numbers take a fast path (see Decimal); the rest, std::from_chars.
      if constexpr (std::is_same_v<T, float>) {
        if (last_decimal_.ToFloat(out)) return true;
      } else {
        if (last_decimal_.ToDouble(out)) return true;
      }
      auto [ptr, ec] = std::from_chars(b, e, out);
      if (ec == std::errc() && ptr == e) return std::isfinite(out) || NotFinite();
      if (ec == std::errc::result_out_of_range) {
        // from_chars does not say which way it left the range: strtod does (HUGE_VAL on
        // overflow, a tiny or zero value on underflow, which is a fine input).
        std::string copy(b, e);
        double d = std::strtod(copy.c_str(), nullptr);
        if (std::isfinite(d) && std::isfinite(static_cast<T>(d))) {
          out = static_cast<T>(d);
          return true;
        }
        return Fail(absl::StrCat(Text(b, e), " is too large for ", TypeName<T>()));
      }
      return Fail(absl::StrCat(Text(b, e), " is not a number"));
    } else if constexpr (std::is_same_v<T, bool>) {
      if (e - b == 1 && (*b == '0' || *b == '1')) {
        out = *b == '1';
        return true;
      }
      double d = 0;
      auto [ptr, ec] = std::from_chars(b, e, d);
      if (ec == std::errc() && ptr == e && (d == 0.0 || d == 1.0)) {
        out = d == 1.0;
        return true;
      }
      return Fail(absl::StrCat(Text(b, e), " is not a bool (true, false, 0 or 1)"));
    } else {
      if (integral) {
        int64_t v = 0;
        auto [ptr, ec] = std::from_chars(b, e, v);
        if (ec == std::errc() && ptr == e && v >= std::numeric_limits<T>::min() &&
            v <= std::numeric_limits<T>::max()) {
          out = static_cast<T>(v);
          return true;
        }
        return Fail(absl::StrCat(Text(b, e), " does not fit ", TypeName<T>()));
      }
      double d = 0;
      auto [ptr, ec] = std::from_chars(b, e, d);
      // 2^63 is not an int64; -2^63 is. The bounds below are exact in a double.
      constexpr double kHigh = std::is_same_v<T, int64_t> ? 9223372036854775808.0 : 2147483648.0;
      if (ec == std::errc() && ptr == e && std::isfinite(d) && d == std::trunc(d) && d >= -kHigh &&
          d < kHigh) {
        out = static_cast<T>(d);
        return true;
      }
      if (ec == std::errc() && ptr == e && std::isfinite(d) && d == std::trunc(d)) {
        return Fail(absl::StrCat(Text(b, e), " does not fit ", TypeName<T>()));
      }
      return Fail(absl::StrCat(Text(b, e), " is not an integer; the input is ", TypeName<T>()));
    }
  }

  template <typename T>
  static const char* TypeName() {
    if constexpr (std::is_same_v<T, float>) return "float32";
    if constexpr (std::is_same_v<T, double>) return "float64";
    if constexpr (std::is_same_v<T, int64_t>) return "int64";
    if constexpr (std::is_same_v<T, int32_t>) return "int32";
    return "bool";
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  const DecodeLimits& limits_;
  size_t elements_ = 0;
  std::string error_;
  std::string scratch_;
  Decimal last_decimal_;
};

// Reads one nested array value (or a bare scalar) of T into a ByteSink and records the
// dimensions it found, refusing ragged arrays.
class ArrayReader {
 public:
  ArrayReader(Decoder& d, ByteSink& sink) : d_(d), sink_(sink) {}

  // Reads one value; afterwards dims() is its shape and count() its elements.
  template <typename T>
  bool Read() {
    for (int i = 0; i < kMaxArrayDepth; ++i) dims_[i] = -1;
    leaf_depth_ = -1;
    max_open_depth_ = -1;
    count_ = 0;
    char c = d_.Peek();
    if (c == '[') return Array<T>(0);
    return Scalar<T>(0);
  }

  std::vector<int64_t> dims() const {
    int rank = leaf_depth_ >= 0 ? leaf_depth_ : max_open_depth_ + 1;
    return std::vector<int64_t>(dims_, dims_ + rank);
  }
  size_t count() const { return count_; }

 private:
  template <typename T>
  bool Array(int depth) {
    if (depth >= kMaxArrayDepth) {
      return d_.Fail(absl::StrCat("arrays nested deeper than ", kMaxArrayDepth, " levels"));
    }
    if (leaf_depth_ >= 0 && depth >= leaf_depth_) return Ragged();
    if (depth > max_open_depth_) max_open_depth_ = depth;
    d_.Seek(d_.position() + 1);  // '['
    int64_t n = 0;
    if (!d_.Consume(']')) {
      while (true) {
        char c = d_.Peek();
        if (c == '[') {
          if (!Array<T>(depth + 1)) return false;
        } else {
          if (!Scalar<T>(depth + 1)) return false;
        }
        ++n;
        if (d_.Consume(',')) continue;
        if (d_.Consume(']')) break;
        return d_.JsonFail("expected ',' or ']' in an array");
      }
    }
    if (dims_[depth] < 0) {
      dims_[depth] = n;
    } else if (dims_[depth] != n) {
      return d_.Fail(absl::StrCat("ragged arrays: one at depth ", depth + 1, " has ", n,
                                  " values, an earlier one ", dims_[depth]));
    }
    return true;
  }

  template <typename T>
  bool Scalar(int depth) {
    if (leaf_depth_ != depth) {
      if (leaf_depth_ >= 0 || max_open_depth_ >= depth) return Ragged();
      leaf_depth_ = depth;
    }
    T value;
    if (!d_.Element(value)) return false;
    if (!d_.CountElement()) return false;
    if constexpr (std::is_same_v<T, bool>) {
      sink_.Put<uint8_t>(value ? 1 : 0);
    } else {
      sink_.Put<T>(value);
    }
    ++count_;
    return true;
  }

  bool Ragged() { return d_.Fail("ragged arrays: numbers and arrays mixed at one depth"); }

  Decoder& d_;
  ByteSink& sink_;
  int64_t dims_[kMaxArrayDepth];
  int leaf_depth_ = -1;
  int max_open_depth_ = -1;
  size_t count_ = 0;
};

template <typename F>
bool DispatchDType(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat64:
      return f(double{});
    case DType::kInt64:
      return f(int64_t{});
    case DType::kInt32:
      return f(int32_t{});
    case DType::kBool:
      return f(bool{});
  }
  return f(float{});
}

bool ReadValue(ArrayReader& reader, DType dtype) {
  return DispatchDType(dtype, [&](auto tag) { return reader.Read<decltype(tag)>(); });
}

// The samples of one input as they arrive, one at a time (Watson ML interleaves inputs
// row by row), checked against the input's per-sample shape.
class InputAccumulator {
 public:
  explicit InputAccumulator(const TensorSpec& spec) : spec_(spec) {
    if (!HasWildcard(spec.shape)) sample_elements_ = *CheckedProduct(spec.shape);
  }

  const TensorSpec& spec() const { return spec_; }
  int64_t samples() const { return samples_; }
  bool seen() const { return seen_; }
  void MarkSeen() { seen_ = true; }

  // Reads one sample, nested to the per-sample shape or flat.
  bool ReadSample(Decoder& d) {
    if (sample_elements_ > 0) sink_.Reserve(sample_elements_ * DTypeSize(spec_.dtype));
    ArrayReader reader(d, sink_);
    if (!ReadValue(reader, spec_.dtype)) return d.AddContext(Context());
    std::vector<int64_t> dims = reader.dims();
    std::vector<int64_t> resolved;
    int64_t count = static_cast<int64_t>(reader.count());
    if (ShapeMatches(spec_.shape, dims)) {
      resolved = std::move(dims);
    } else if (sample_elements_ >= 0 && dims.size() <= 1 && count == sample_elements_) {
      resolved = spec_.shape;  // flat
    } else if (dims.empty() && sample_elements_ > 1) {
      return d.Fail(absl::StrCat(Context(), "is a single number, expected ", sample_elements_,
                                 " values (shape ", DescribeShape(spec_.shape),
                                 "): each sample is an array, so one sample is sent as [[...]]"));
    } else if (sample_elements_ >= 0 && count != sample_elements_) {
      return d.Fail(absl::StrCat(Context(), "has ", count, " values, expected ", sample_elements_,
                                 " (shape ", DescribeShape(spec_.shape), ")"));
    } else {
      std::string flat = sample_elements_ >= 0
                             ? absl::StrCat(" or ", sample_elements_, " values flat")
                             : std::string();
      return d.Fail(absl::StrCat(Context(), "has shape ", DescribeShape(dims), ", expected ",
                                 DescribeShape(spec_.shape), flat));
    }
    if (samples_ == 0) {
      sample_shape_ = std::move(resolved);
    } else if (resolved != sample_shape_) {
      return d.Fail(absl::StrCat(Context(), "has shape ", DescribeShape(resolved),
                                 " but sample 0 has ", DescribeShape(sample_shape_),
                                 ": the samples of one request must agree on every -1 "
                                 "dimension"));
    }
    ++samples_;
    return true;
  }

  // Takes a whole batch read elsewhere (KServe): `sample_shape` resolved, `bytes` packed.
  void SetBatch(int64_t batch, std::vector<int64_t> sample_shape, ByteSink&& sink) {
    samples_ = batch;
    sample_shape_ = std::move(sample_shape);
    sink_ = std::move(sink);
  }

  Tensor Finish() {
    Tensor tensor;
    tensor.dtype = spec_.dtype;
    tensor.shape.push_back(samples_);
    tensor.shape.insert(tensor.shape.end(), sample_shape_.begin(), sample_shape_.end());
    tensor.bytes = sink_.Take();
    return tensor;
  }

 private:
  std::string Context() const {
    return absl::StrCat("input ", Quote(spec_.name), ": sample ", samples_, " ");
  }

  const TensorSpec& spec_;
  int64_t sample_elements_ = -1;  // -1 with a wildcard dimension
  int64_t samples_ = 0;
  bool seen_ = false;
  std::vector<int64_t> sample_shape_;
  ByteSink sink_;
};

int FindInput(const Signature& signature, std::string_view name) {
  for (size_t i = 0; i < signature.inputs.size(); ++i) {
    if (signature.inputs[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

std::string InputNames(const Signature& signature) {
  std::vector<std::string> names;
  for (const TensorSpec& spec : signature.inputs) names.push_back(spec.name);
  return absl::StrJoin(names, ", ");
}

bool UnknownInput(Decoder& d, const Signature& signature, std::string_view name) {
  return d.Fail(absl::StrCat("unknown input ", Quote(name),
                             " (the model's inputs: ", InputNames(signature), ")"));
}

// Shared end of every dialect: all inputs present, one batch size, within limits.
bool FinishInputs(Decoder& d, std::vector<InputAccumulator>& inputs, const DecodeLimits& limits,
                  InferRequest& request) {
  int64_t batch = -1;
  const InputAccumulator* first = nullptr;
  for (InputAccumulator& input : inputs) {
    if (!input.seen()) return d.Fail(absl::StrCat("missing input ", Quote(input.spec().name)));
    if (batch < 0) {
      batch = input.samples();
      first = &input;
    } else if (input.samples() != batch) {
      return d.Fail(absl::StrCat("input ", Quote(input.spec().name), " has ", input.samples(),
                                 " samples but input ", Quote(first->spec().name), " has ", batch,
                                 ": every input needs one value per sample"));
    }
  }
  if (batch <= 0) return d.Fail("the request has no samples (empty batch)");
  if (batch > limits.max_batch) {
    return d.Fail(absl::StrCat("the request has ", batch, " samples, more than the limit of ",
                               limits.max_batch));
  }
  request.batch = batch;
  for (InputAccumulator& input : inputs) request.inputs.push_back(input.Finish());
  return true;
}

bool CheckBatchGrowth(Decoder& d, int64_t samples, const DecodeLimits& limits) {
  if (samples <= limits.max_batch) return true;
  return d.Fail(
      absl::StrCat("the request has more than ", limits.max_batch, " samples, the limit"));
}

// Reads `[sample, sample, ...]` of one input.
bool ReadBatch(Decoder& d, InputAccumulator& input, const DecodeLimits& limits, const char* what) {
  if (!d.Consume('[')) {
    return d.JsonFail(absl::StrCat(what, " must be an array of samples"));
  }
  input.MarkSeen();
  if (d.Consume(']')) return true;
  while (true) {
    if (!input.ReadSample(d)) return false;
    if (!CheckBatchGrowth(d, input.samples(), limits)) return false;
    if (d.Consume(',')) continue;
    if (d.Consume(']')) return true;
    return d.JsonFail("expected ',' or ']' after a sample");
  }
}

// Iterates the members of an object (the scanner at '{'): `on_member(key)` is called at
// each value and must consume it.
template <typename F>
bool ForEachMember(Decoder& d, const char* what, F&& on_member) {
  if (!d.Consume('{')) return d.JsonFail(absl::StrCat("expected ", what, " to be an object"));
  if (d.Consume('}')) return true;
  std::string key;
  while (true) {
    if (!d.String(key)) return false;
    if (!d.Expect(':', "expected ':' after an object key")) return false;
    if (!on_member(key)) return false;
    if (d.Consume(',')) continue;
    return d.Expect('}', "expected ',' or '}' in an object");
  }
}

// Iterates the elements of an array (the scanner at '['); `on_element(index)` consumes each.
template <typename F>
bool ForEachElement(Decoder& d, const char* what, F&& on_element) {
  if (!d.Consume('[')) return d.JsonFail(absl::StrCat("expected ", what, " to be an array"));
  if (d.Consume(']')) return true;
  for (size_t i = 0;; ++i) {
    if (!on_element(i)) return false;
    if (d.Consume(',')) continue;
    return d.Expect(']', "expected ',' or ']' in an array");
  }
}

bool ReadStringList(Decoder& d, const char* what, std::vector<std::string>& out) {
  out.clear();
  return ForEachElement(d, what, [&](size_t) {
    if (out.size() >= 4096) return d.Fail(absl::StrCat(what, " has too many names"));
    std::string s;
    if (d.Peek() != '"') return d.Fail(absl::StrCat(what, " must hold strings"));
    if (!d.String(s)) return false;
    out.push_back(std::move(s));
    return true;
  });
}

bool DuplicateKey(Decoder& d, std::string_view key) {
  return d.Fail(absl::StrCat("the key ", Quote(key), " appears twice"));
}

// ---- Native: {"inputs": {"name": [samples]} | [samples]} ----

bool DecodeNative(Decoder& d, const Signature& signature, const DecodeLimits& limits,
                  InferRequest& request) {
  std::vector<InputAccumulator> inputs(signature.inputs.begin(), signature.inputs.end());
  bool have_inputs = false;
  bool ok = ForEachMember(d, "the body", [&](const std::string& key) {
    if (key != "inputs") return d.Skip();
    if (have_inputs) return DuplicateKey(d, key);
    have_inputs = true;
    char c = d.Peek();
    if (c == '[') {
      if (inputs.size() != 1) {
        return d.Fail(absl::StrCat(
            "\"inputs\" as a list works only for one-input models; send {\"inputs\": {",
            "\"name\": [samples], ...}} with the names ", InputNames(signature)));
      }
      return ReadBatch(d, inputs[0], limits, "\"inputs\"");
    }
    if (c != '{') {
      return d.Fail("\"inputs\" must be an object {\"name\": [samples]} or a list of samples");
    }
    return ForEachMember(d, "\"inputs\"", [&](const std::string& name) {
      int index = FindInput(signature, name);
      if (index < 0) return UnknownInput(d, signature, name);
      if (inputs[index].seen()) return DuplicateKey(d, name);
      return ReadBatch(d, inputs[index], limits, "each input");
    });
  });
  if (!ok) return false;
  if (!have_inputs) {
    return d.Fail("the body has no \"inputs\"; send {\"inputs\": {\"name\": [samples]}}");
  }
  return FinishInputs(d, inputs, limits, request);
}

// ---- Watson ML: {"input_data": [{"fields": [...], "values": [rows]}]} ----

// Reads one `values` array. One-input models: each row is a sample. Several inputs: each
// row is [in0, in1, ...] in `order` (indices into the signature).
bool ReadWmlRows(Decoder& d, const Signature& signature, std::vector<InputAccumulator>& inputs,
                 const std::vector<int>& order, const DecodeLimits& limits, int64_t entry,
                 int64_t& rows) {
  std::string where = absl::StrCat("input_data[", entry, "].values");
  if (d.Peek() != '[') return d.Fail(absl::StrCat(where, " must be an array of rows"));
  for (InputAccumulator& input : inputs) input.MarkSeen();
  return ForEachElement(d, where.c_str(), [&](size_t row) {
    ++rows;
    if (inputs.size() == 1) {
      if (!inputs[0].ReadSample(d)) return false;
      return CheckBatchGrowth(d, inputs[0].samples(), limits);
    }
    size_t column = 0;
    bool ok = ForEachElement(d, "a row", [&](size_t j) {
      if (j >= order.size()) {
        return d.Fail(absl::StrCat(where, "[", row, "] has more than ", order.size(),
                                   " values; each row is one value per input (",
                                   InputNames(signature), ")"));
      }
      ++column;
      return inputs[order[j]].ReadSample(d);
    });
    if (!ok) return false;
    if (column != order.size()) {
      return d.Fail(absl::StrCat(where, "[", row, "] has ", column, " values, expected ",
                                 order.size(), ", one per input"));
    }
    return CheckBatchGrowth(d, inputs[0].samples(), limits);
  });
}

// The order of a Watson ML row's values as signature input indices. One-input models
// ignore `fields` (tabular clients name their columns there).
bool WmlOrder(Decoder& d, const Signature& signature, const std::vector<std::string>& fields,
              bool have_fields, int64_t entry, std::vector<int>& order) {
  order.clear();
  if (signature.inputs.size() == 1 || !have_fields) {
    for (size_t i = 0; i < signature.inputs.size(); ++i) order.push_back(static_cast<int>(i));
    return true;
  }
  std::string where = absl::StrCat("input_data[", entry, "].fields");
  if (fields.size() != signature.inputs.size()) {
    return d.Fail(absl::StrCat(where, " names ", fields.size(), " inputs; name each of the ",
                               signature.inputs.size(), " inputs once (", InputNames(signature),
                               ")"));
  }
  std::vector<bool> used(signature.inputs.size(), false);
  for (const std::string& field : fields) {
    int index = FindInput(signature, field);
    if (index < 0) return UnknownInput(d, signature, field);
    if (used[index]) return d.Fail(absl::StrCat(where, " names ", Quote(field), " twice"));
    used[index] = true;
    order.push_back(index);
  }
  return true;
}

bool DecodeWatsonMl(Decoder& d, const Signature& signature, const DecodeLimits& limits,
                    InferRequest& request) {
  std::vector<InputAccumulator> inputs(signature.inputs.begin(), signature.inputs.end());
  bool have_data = false;
  bool ok = ForEachMember(d, "the body", [&](const std::string& key) {
    if (key != "input_data") return d.Skip();
    if (have_data) return DuplicateKey(d, key);
    have_data = true;
    for (InputAccumulator& input : inputs) input.MarkSeen();  // rows carry every input
    if (d.Peek() != '[') {
      return d.Fail(R"("input_data" must be an array of {"fields": [...], "values": [...]})");
    }
    return ForEachElement(d, "\"input_data\"", [&](size_t entry_index) {
      int64_t entry = static_cast<int64_t>(entry_index);
      std::string where = absl::StrCat("input_data[", entry, "]");
      if (d.Peek() != '{') {
        return d.Fail(absl::StrCat(where, R"( must be an object {"values": [sample, ...]})"));
      }
      std::vector<std::string> fields;
      std::vector<int> order;
      bool have_fields = false;
      bool have_values = false;
      const char* values_begin = nullptr;
      const char* values_end = nullptr;
      int64_t rows = 0;
      bool entry_ok = ForEachMember(d, where.c_str(), [&](const std::string& member) {
        if (member == "fields") {
          if (have_fields) return DuplicateKey(d, member);
          have_fields = true;
          if (d.Peek() != '[') {
            return d.Fail(absl::StrCat(where, ".fields must be an array of names"));
          }
          return ReadStringList(d, "\"fields\"", fields);
        }
        if (member != "values") return d.Skip();
        if (have_values) return DuplicateKey(d, member);
        have_values = true;
        if (signature.inputs.size() == 1 || have_fields) {
          if (!WmlOrder(d, signature, fields, have_fields, entry, order)) return false;
          return ReadWmlRows(d, signature, inputs, order, limits, entry, rows);
        }
        // Several inputs and no `fields` yet: they may follow, so read the rows after.
        values_begin = d.position();
        if (!d.Skip()) return false;
        values_end = d.position();
        return true;
      });
      if (!entry_ok) return false;
      if (!have_values) return d.Fail(absl::StrCat(where, " has no \"values\""));
      if (values_begin != nullptr) {
        if (!WmlOrder(d, signature, fields, have_fields, entry, order)) return false;
        const char* resume = d.position();
        const char* end = d.end();
        d.Seek(values_begin);
        d.SetEnd(values_end);
        if (!ReadWmlRows(d, signature, inputs, order, limits, entry, rows)) return false;
        d.SetEnd(end);
        d.Seek(resume);
      }
      if (rows == 0) return d.Fail(absl::StrCat(where, ".values is empty (no samples)"));
      request.wml_entry_sizes.push_back(rows);
      if (entry == 0) request.fields = std::move(fields);
      return true;
    });
  });
  if (!ok) return false;
  if (!have_data) {
    return d.Fail(
        R"(the body has no "input_data"; send {"input_data": [{"values": [sample, ...]}]})");
  }
  return FinishInputs(d, inputs, limits, request);
}

// ---- KServe v2: {"id", "inputs": [{"name","shape","datatype","data"}], "outputs"} ----

// A non-negative JSON integer at the scanner into `out`; false (and no message unless the
// JSON itself is bad) when the value is anything else.
bool ReadNonNegative(Decoder& d, int64_t& out) {
  char c = d.Peek();
  const char* b;
  const char* e;
  bool integral;
  int64_t v = -1;
  if ((c == '-' || IsDigit(c)) && d.NumberToken(b, e, integral) && integral) {
    auto [ptr, ec] = std::from_chars(b, e, v);
    if (ec != std::errc() || ptr != e) v = -1;
  }
  if (v < 0) return false;
  out = v;
  return true;
}

bool ReadBool(Decoder& d, const std::string& what, bool& out) {
  char c = d.Peek();
  if (c == 't' && d.Literal("true")) {
    out = true;
    return true;
  }
  if (c == 'f' && d.Literal("false")) {
    out = false;
    return true;
  }
  return d.Fail(absl::StrCat(what, " must be true or false"));
}

bool ReadShape(Decoder& d, const std::string& where, std::vector<int64_t>& shape) {
  shape.clear();
  if (d.Peek() != '[') return d.Fail(absl::StrCat(where, " must be an array of sizes"));
  return ForEachElement(d, "\"shape\"", [&](size_t) {
    if (shape.size() > kMaxSignatureRank) {
      return d.Fail(absl::StrCat(where, " has more than ", kMaxSignatureRank + 1, " dimensions"));
    }
    int64_t v;
    if (!ReadNonNegative(d, v)) {
      return d.Fail(absl::StrCat(where, " must hold non-negative integers"));
    }
    shape.push_back(v);
    return true;
  });
}

// A KServe "parameters" object (the scanner at its value): `on_parameter(name)` is called
// at each member's value and must consume it. `seen` refuses a second "parameters".
template <typename F>
bool ReadParameters(Decoder& d, const std::string& what, bool& seen, F&& on_parameter) {
  if (seen) return DuplicateKey(d, "parameters");
  seen = true;
  if (d.Peek() != '{') return d.Fail(absl::StrCat(what, " must be an object"));
  return ForEachMember(d, what.c_str(), on_parameter);
}

// The binary part of a KServe request: the bytes after its JSON, taken front to back by
// the inputs that have "parameters": {"binary_data_size": n}, in the order listed.
struct BinaryPart {
  std::string_view bytes;
  size_t used = 0;
};

// The element at `index` of a packed buffer of T.
template <typename T>
T LoadAt(const char* data, size_t index) {
  T value;
  std::memcpy(&value, data + index * sizeof(T), sizeof(T));
  return value;
}

// Index of the first of `n` packed T in `data` that fails `valid`, or -1.
template <typename T, typename Valid>
int64_t FirstInvalid(const char* data, size_t n, Valid valid) {
  for (size_t k = 0; k < n; ++k) {
    if (!valid(LoadAt<T>(data, k))) return static_cast<int64_t>(k);
  }
  return -1;
}

// Takes `size` bytes of `binary` as the whole batch of an input, checking what JSON's
// grammar would have: finite floats, booleans 0 or 1.
bool ReadBinaryData(Decoder& d, const std::string& context, DType dtype, int64_t elements,
                    int64_t size, BinaryPart& binary, ByteSink& sink) {
  const size_t left = binary.bytes.size() - binary.used;
  if (static_cast<uint64_t>(size) > left) {
    return d.Fail(absl::StrCat(context, "binary_data_size is ", size, " bytes but only ", left,
                               " bytes of binary data are left after the JSON",
                               binary.used > 0 ? " and the inputs before it" : ""));
  }
  const char* data = binary.bytes.data() + binary.used;
  const auto n = static_cast<size_t>(elements);
  int64_t bad = -1;
  switch (dtype) {
    case DType::kFloat32:
      bad = FirstInvalid<float>(data, n, [](float v) { return std::isfinite(v); });
      break;
    case DType::kFloat64:
      bad = FirstInvalid<double>(data, n, [](double v) { return std::isfinite(v); });
      break;
    case DType::kBool:
      bad = FirstInvalid<uint8_t>(data, n, [](uint8_t v) { return v <= 1; });
      break;
    case DType::kInt64:
    case DType::kInt32:
      break;  // every bit pattern is a value
  }
  if (bad >= 0 && dtype == DType::kBool) {
    return d.Fail(absl::StrCat(context, "binary element ", bad, " is the byte ",
                               static_cast<int>(static_cast<unsigned char>(data[bad])),
                               "; a BOOL element is one byte, 0 or 1"));
  }
  if (bad >= 0) {
    return d.Fail(
        absl::StrCat(context, "binary element ", bad, " is NaN or infinite, which is not allowed"));
  }
  sink.Reserve(static_cast<size_t>(size));
  std::memcpy(sink.bytes.data() + sink.used, data, static_cast<size_t>(size));
  sink.used += static_cast<size_t>(size);
  binary.used += static_cast<size_t>(size);
  return true;
}

// What an input's "name", "shape" and "datatype" settle before its values are read.
struct KserveTarget {
  InputAccumulator* input = nullptr;
  std::string context;  // "input \"x\": "
  int64_t batch = 0;
  std::vector<int64_t> sample_shape;
  std::vector<int64_t> shape;  // as given, with the batch (or the one sample's)
  int64_t total = 0;           // values
};

// Checks the input's name, datatype and shape against the signature and the limits.
bool ResolveKserveInput(Decoder& d, const Signature& signature,
                        std::vector<InputAccumulator>& inputs, const DecodeLimits& limits,
                        const std::string& name, const std::string* datatype,
                        const std::vector<int64_t>* shape, KserveTarget& target) {
  int index = FindInput(signature, name);
  if (index < 0) return UnknownInput(d, signature, name);
  InputAccumulator& input = inputs[index];
  const TensorSpec& spec = input.spec();
  std::string context = absl::StrCat("input ", Quote(name), ": ");
  if (input.seen()) return d.Fail(absl::StrCat(context, "given twice in \"inputs\""));
  if (datatype != nullptr) {
    std::optional<DType> dtype = ParseDType(*datatype);
    if (!dtype || *dtype != spec.dtype) {
      return d.Fail(absl::StrCat(context, "datatype ", Quote(*datatype, kMaxQuoted),
                                 " does not match the model's ",
                                 std::string(KserveDatatype(spec.dtype))));
    }
  }
  std::vector<int64_t> batch_shape = {-1};
  batch_shape.insert(batch_shape.end(), spec.shape.begin(), spec.shape.end());
  if (shape == nullptr) {
    return d.Fail(absl::StrCat(context, "no \"shape\"; give ", DescribeShape(batch_shape),
                               " with the batch size first"));
  }
  int64_t batch;
  std::vector<int64_t> sample_shape;
  if (shape->size() == spec.shape.size() + 1) {
    batch = (*shape)[0];
    sample_shape.assign(shape->begin() + 1, shape->end());
  } else if (shape->size() == spec.shape.size()) {
    batch = 1;  // one sample, its batch dimension left out
    sample_shape = *shape;
  } else {
    return d.Fail(absl::StrCat(context, "shape ", DescribeShape(*shape), " has ", shape->size(),
                               " dimensions, expected ", batch_shape.size(), " (",
                               DescribeShape(batch_shape), ", the batch size first)"));
  }
  if (!ShapeMatches(spec.shape, sample_shape)) {
    return d.Fail(absl::StrCat(context, "shape ", DescribeShape(*shape),
                               " does not fit the per-sample shape ", DescribeShape(spec.shape),
                               " (send ", DescribeShape(batch_shape), ")"));
  }
  std::optional<int64_t> total = CheckedProduct(*shape);
  if (!total || static_cast<uint64_t>(*total) > limits.max_elements) {
    return d.Fail(absl::StrCat(context, "shape ", DescribeShape(*shape), " has more than ",
                               limits.max_elements, " values, the limit"));
  }
  if (batch > limits.max_batch) {
    return d.Fail(absl::StrCat(context, "batch of ", batch, " samples is more than the limit of ",
                               limits.max_batch));
  }
  target = {&input, std::move(context), batch, std::move(sample_shape), *shape, *total};
  return true;
}

// Reads an input's "data" (the scanner at its value) into `sink`: `target.total` values,
// flat or nested exactly as "shape" says.
bool ReadKserveData(Decoder& d, const KserveTarget& target, ByteSink& sink) {
  const DType dtype = target.input->spec().dtype;
  sink.Reserve(static_cast<size_t>(target.total) * DTypeSize(dtype));
  ArrayReader reader(d, sink);
  if (!ReadValue(reader, dtype)) return d.AddContext(target.context + "\"data\": ");
  std::vector<int64_t> dims = reader.dims();
  if (static_cast<int64_t>(reader.count()) != target.total) {
    return d.Fail(absl::StrCat(target.context, "shape ", DescribeShape(target.shape), " needs ",
                               target.total, " values, \"data\" has ", reader.count()));
  }
  if (dims.size() > 1 && dims != target.shape) {
    return d.Fail(absl::StrCat(target.context, "\"data\" is nested as ", DescribeShape(dims),
                               " but \"shape\" is ", DescribeShape(target.shape),
                               "; nest it the same way or send it flat"));
  }
  return true;
}

bool ReadKserveInput(Decoder& d, const Signature& signature, std::vector<InputAccumulator>& inputs,
                     const DecodeLimits& limits, BinaryPart* binary, size_t i) {
  std::string where = absl::StrCat("inputs[", i, "]");
  if (d.Peek() != '{') {
    return d.Fail(
        absl::StrCat(where, R"( must be an object {"name", "shape", "datatype", "data"})"));
  }
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;
  bool have_name = false;
  bool have_datatype = false;
  bool have_shape = false;
  bool have_data = false;
  bool have_parameters = false;
  std::optional<int64_t> binary_size;
  // "data" after "name" and "shape" (the usual order, tritonclient's too) is read where it
  // is, once the input is resolved; otherwise its span is kept and read at the end.
  std::optional<KserveTarget> target;
  bool datatype_after_data = false;
  ByteSink values;
  const char* data_begin = nullptr;
  const char* data_end = nullptr;
  bool ok = ForEachMember(d, where.c_str(), [&](const std::string& key) {
    if (key == "name" || key == "datatype") {
      bool& have = key == "name" ? have_name : have_datatype;
      if (have) return DuplicateKey(d, key);
      have = true;
      datatype_after_data = datatype_after_data || (key == "datatype" && target.has_value());
      if (d.Peek() != '"') return d.Fail(absl::StrCat(where, ".", key, " must be a string"));
      return d.String(key == "name" ? name : datatype);
    }
    if (key == "shape") {
      if (have_shape) return DuplicateKey(d, key);
      have_shape = true;
      return ReadShape(d, where + ".shape", shape);
    }
    if (key == "data") {
      if (have_data) return DuplicateKey(d, key);
      have_data = true;
      if (have_name && have_shape) {
        target.emplace();
        if (!ResolveKserveInput(d, signature, inputs, limits, name,
                                have_datatype ? &datatype : nullptr, &shape, *target)) {
          return false;
        }
        return ReadKserveData(d, *target, values);
      }
      data_begin = d.position();
      if (!d.Skip()) return false;
      data_end = d.position();
      return true;
    }
    if (key == "parameters") {
      std::string what = where + ".parameters";
      return ReadParameters(d, what, have_parameters, [&](const std::string& parameter) {
        if (parameter != "binary_data_size") return d.Skip();
        if (binary_size) return DuplicateKey(d, parameter);
        int64_t size;
        if (!ReadNonNegative(d, size)) {
          return d.Fail(absl::StrCat(what, ".binary_data_size must be a non-negative integer"));
        }
        binary_size = size;
        return true;
      });
    }
    return d.Skip();
  });
  if (!ok) return false;
  if (!have_name) return d.Fail(absl::StrCat(where, " has no \"name\""));
  // Resolved here unless it was for "data" already; again to check a "datatype" given
  // after "data".
  KserveTarget resolved;
  if (target && !datatype_after_data) {
    resolved = *std::move(target);
  } else if (!ResolveKserveInput(d, signature, inputs, limits, name,
                                 have_datatype ? &datatype : nullptr, have_shape ? &shape : nullptr,
                                 resolved)) {
    return false;
  }
  const std::string& context = resolved.context;
  if (have_data && binary_size) {
    return d.Fail(absl::StrCat(context,
                               "has both \"data\" and parameters.binary_data_size; "
                               "send its values one way"));
  }
  if (!have_data && !binary_size) {
    return d.Fail(absl::StrCat(context,
                               "no \"data\" (or parameters.binary_data_size with "
                               "the values after the JSON)"));
  }
  if (binary_size && binary == nullptr) {
    return d.Fail(
        absl::StrCat(context,
                     "parameters.binary_data_size is set but the request has no "
                     "Inference-Header-Content-Length header; send the length of the JSON in it "
                     "and the binary tensor data after the JSON"));
  }
  const TensorSpec& spec = resolved.input->spec();
  if (binary_size) {
    const size_t needed = static_cast<size_t>(resolved.total) * DTypeSize(spec.dtype);
    if (static_cast<uint64_t>(*binary_size) != needed) {
      return d.Fail(absl::StrCat(context, "binary_data_size is ", *binary_size,
                                 " bytes, but shape ", DescribeShape(resolved.shape), " of ",
                                 std::string(KserveDatatype(spec.dtype)), " needs ", needed, " (",
                                 DTypeSize(spec.dtype), " per value)"));
    }
    if (!d.CountElements(static_cast<size_t>(resolved.total))) return false;
    if (!ReadBinaryData(d, context, spec.dtype, resolved.total, *binary_size, *binary, values)) {
      return false;
    }
  } else if (!target) {
    const char* resume = d.position();
    const char* end = d.end();
    d.Seek(data_begin);
    d.SetEnd(data_end);
    if (!ReadKserveData(d, resolved, values)) return false;
    d.SetEnd(end);
    d.Seek(resume);
  }
  resolved.input->MarkSeen();
  resolved.input->SetBatch(resolved.batch, std::move(resolved.sample_shape), std::move(values));
  return true;
}

int FindOutput(const Signature& signature, std::string_view name) {
  for (size_t i = 0; i < signature.outputs.size(); ++i) {
    if (signature.outputs[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

bool DecodeKserve(Decoder& d, const Signature& signature, const DecodeLimits& limits,
                  BinaryPart* binary, InferRequest& request) {
  std::vector<InputAccumulator> inputs(signature.inputs.begin(), signature.inputs.end());
  bool have_id = false;
  bool have_inputs = false;
  bool have_outputs = false;
  bool have_parameters = false;
  bool ok = ForEachMember(d, "the body", [&](const std::string& key) {
    if (key == "id") {
      if (have_id) return DuplicateKey(d, key);
      have_id = true;
      if (d.Peek() != '"') return d.Fail("\"id\" must be a string");
      if (!d.String(request.id)) return false;
      if (request.id.size() > kMaxIdBytes || !IsValidUtf8(request.id)) {
        return d.Fail(
            absl::StrCat("\"id\" must be valid UTF-8 of at most ", kMaxIdBytes, " bytes"));
      }
      return true;
    }
    if (key == "inputs") {
      if (have_inputs) return DuplicateKey(d, key);
      have_inputs = true;
      if (d.Peek() != '[') {
        return d.Fail(R"("inputs" must be an array of {"name", "shape", "datatype", "data"})");
      }
      return ForEachElement(d, "\"inputs\"", [&](size_t i) {
        return ReadKserveInput(d, signature, inputs, limits, binary, i);
      });
    }
    if (key == "parameters") {
      return ReadParameters(
          d, "\"parameters\"", have_parameters, [&](const std::string& parameter) {
            if (parameter != "binary_data_output") return d.Skip();
            return ReadBool(d, "parameters.binary_data_output", request.binary_data_output);
          });
    }
    if (key == "outputs") {
      if (have_outputs) return DuplicateKey(d, key);
      have_outputs = true;
      if (d.Peek() != '[') return d.Fail(R"("outputs" must be an array of {"name"})");
      return ForEachElement(d, "\"outputs\"", [&](size_t i) {
        std::string where = absl::StrCat("outputs[", i, "]");
        if (d.Peek() != '{') return d.Fail(absl::StrCat(where, R"( must be an object {"name"})"));
        std::string name;
        bool have_name = false;
        bool have_parameters = false;
        std::optional<bool> binary_data;
        bool member_ok = ForEachMember(d, where.c_str(), [&](const std::string& member) {
          if (member == "parameters") {
            std::string what = where + ".parameters";
            return ReadParameters(d, what, have_parameters, [&](const std::string& parameter) {
              if (parameter != "binary_data") return d.Skip();
              bool value;
              if (!ReadBool(d, what + ".binary_data", value)) return false;
              binary_data = value;
              return true;
            });
          }
          if (member != "name") return d.Skip();
          if (have_name) return DuplicateKey(d, member);
          have_name = true;
          if (d.Peek() != '"') return d.Fail(absl::StrCat(where, ".name must be a string"));
          return d.String(name);
        });
        if (!member_ok) return false;
        if (!have_name) return d.Fail(absl::StrCat(where, " has no \"name\""));
        if (FindOutput(signature, name) < 0) {
          std::vector<std::string> names;
          for (const TensorSpec& spec : signature.outputs) names.push_back(spec.name);
          return d.Fail(absl::StrCat(
              "requested output ", Quote(name),
              " is not an output of the model (outputs: ", absl::StrJoin(names, ", "), ")"));
        }
        for (const RequestedOutput& seen : request.requested_outputs) {
          if (seen.name == name) return true;  // the first mention counts
        }
        request.requested_outputs.push_back({std::move(name), binary_data});
        return true;
      });
    }
    return d.Skip();
  });
  if (!ok) return false;
  if (!have_inputs) {
    return d.Fail(
        R"(the body has no "inputs"; send {"inputs": [{"name", "shape", "datatype", "data"}]})");
  }
  if (!FinishInputs(d, inputs, limits, request)) return false;
  if (binary != nullptr && binary->used != binary->bytes.size()) {
    return d.Fail(absl::StrCat("the body has ", binary->bytes.size(),
                               " bytes after the JSON (Inference-Header-Content-Length) but the "
                               "inputs' binary_data_size add up to ",
                               binary->used));
  }
  return true;
}

// ---- Encoding ----

void AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 0xF];
    } else {
      out += c;
    }
  }
  out += '"';
}

template <typename T>
void AppendNumber(std::string& out, T value) {
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(value)) {
      out += "null";  // JSON has no NaN or infinity
      return;
    }
  }
  char buf[64];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  KILN_CHECK(ec == std::errc());
  out.append(buf, ptr);
}

template <typename T>
T Load(const std::string& bytes, int64_t index) {
  return LoadAt<T>(bytes.data(), static_cast<size_t>(index));
}

void AppendElement(std::string& out, const Tensor& t, int64_t index) {
  switch (t.dtype) {
    case DType::kFloat32:
      AppendNumber(out, Load<float>(t.bytes, index));
      return;
    case DType::kFloat64:
      AppendNumber(out, Load<double>(t.bytes, index));
      return;
    case DType::kInt64:
      AppendNumber(out, Load<int64_t>(t.bytes, index));
      return;
    case DType::kInt32:
      AppendNumber(out, Load<int32_t>(t.bytes, index));
      return;
    case DType::kBool:
      out += Load<uint8_t>(t.bytes, index) ? "true" : "false";
      return;
  }
}

// Writes the dimensions of `t` from `dim` on as nested arrays, starting at element `index`.
void AppendNested(std::string& out, const Tensor& t, size_t dim, int64_t& index) {
  if (dim == t.shape.size()) {
    AppendElement(out, t, index++);
    return;
  }
  out += '[';
  for (int64_t i = 0; i < t.shape[dim]; ++i) {
    if (i > 0) out += ',';
    AppendNested(out, t, dim + 1, index);
  }
  out += ']';
}

// Writes sample `s` of `t` (its dims after the batch), null if the model returned fewer.
void AppendSample(std::string& out, const Tensor& t, int64_t s) {
  if (t.shape.empty()) {
    AppendElement(out, t, 0);
    return;
  }
  if (s >= t.shape[0]) {
    out += "null";
    return;
  }
  int64_t per_sample = 1;
  for (size_t i = 1; i < t.shape.size(); ++i) per_sample *= t.shape[i];
  int64_t index = s * per_sample;
  AppendNested(out, t, 1, index);
}

void CheckTensor(const Tensor& t) {
  std::optional<int64_t> n = CheckedProduct(t.shape);
  KILN_CHECK(n.has_value());
  KILN_CHECK(t.bytes.size() == static_cast<size_t>(*n) * DTypeSize(t.dtype));
}

std::string OutputName(const Signature& signature, size_t i) {
  if (i < signature.outputs.size()) return signature.outputs[i].name;
  return absl::StrCat("output_", i);
}

}  // namespace

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string_view DialectName(Dialect dialect) {
  switch (dialect) {
    case Dialect::kNative:
      return "native";
    case Dialect::kWatsonMl:
      return "wml";
    case Dialect::kKserveV2:
      return "kserve";
  }
  return "native";
}

namespace {

absl::StatusOr<InferRequest> Decode(Dialect dialect, std::string_view body, BinaryPart* binary,
                                    const Signature& signature, const DecodeLimits& limits) {
  Decoder d(body, limits);
  InferRequest request;
  request.dialect = dialect;
  bool ok = false;
  if (d.Peek() != '{') {
    if (d.AtEnd()) {
      d.Fail("the body is empty; send a JSON object");
    } else {
      d.JsonFail("expected the body to be a JSON object");
    }
  } else if (dialect == Dialect::kNative) {
    ok = DecodeNative(d, signature, limits, request);
  } else if (dialect == Dialect::kWatsonMl) {
    ok = DecodeWatsonMl(d, signature, limits, request);
  } else {
    ok = DecodeKserve(d, signature, limits, binary, request);
  }
  if (ok && !d.AtEnd()) ok = d.JsonFail("unexpected characters after the JSON object");
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(d.error(), "; expected ", DescribeSignature(signature)));
  }
  return request;
}

}  // namespace

absl::StatusOr<InferRequest> DecodeRequest(Dialect dialect, std::string_view body,
                                           const Signature& signature, const DecodeLimits& limits) {
  return Decode(dialect, body, nullptr, signature, limits);
}

absl::StatusOr<InferRequest> DecodeKserveBinaryRequest(std::string_view body, size_t json_length,
                                                       const Signature& signature,
                                                       const DecodeLimits& limits) {
  if (json_length > body.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Inference-Header-Content-Length is ", json_length, " but the body has only ", body.size(),
        " bytes; it must be the length of the JSON at the start of the body"));
  }
  BinaryPart binary{body.substr(json_length)};
  return Decode(Dialect::kKserveV2, body.substr(0, json_length), &binary, signature, limits);
}

std::string EncodeResponse(const InferRequest& request, const std::vector<Tensor>& outputs,
                           const Signature& signature, std::string_view model_name,
                           std::string_view version, size_t* json_length) {
  for (const Tensor& t : outputs) CheckTensor(t);
  std::string binary;  // KServe outputs asked as binary tensor data, after the JSON
  std::string out;
  size_t estimate = 128;
  for (const Tensor& t : outputs) estimate += t.bytes.size() / DTypeSize(t.dtype) * 14;
  out.reserve(estimate);
  switch (request.dialect) {
    case Dialect::kNative: {
      out += "{\"model\":";
      AppendJsonString(out, model_name);
      out += ",\"version\":";
      AppendJsonString(out, version);
      out += ",\"outputs\":{";
      for (size_t i = 0; i < outputs.size(); ++i) {
        if (i > 0) out += ',';
        AppendJsonString(out, OutputName(signature, i));
        out += ':';
        int64_t index = 0;
        AppendNested(out, outputs[i], 0, index);
      }
      out += "}}";
      break;
    }
    case Dialect::kWatsonMl: {
      std::vector<int64_t> entries = request.wml_entry_sizes;
      if (entries.empty()) entries.push_back(request.batch);
      out += "{\"predictions\":[";
      int64_t sample = 0;
      for (size_t e = 0; e < entries.size(); ++e) {
        if (e > 0) out += ',';
        out += "{\"fields\":[";
        for (size_t i = 0; i < outputs.size(); ++i) {
          if (i > 0) out += ',';
          AppendJsonString(out, OutputName(signature, i));
        }
        out += "],\"values\":[";
        for (int64_t r = 0; r < entries[e]; ++r, ++sample) {
          if (r > 0) out += ',';
          if (outputs.size() == 1) {
            AppendSample(out, outputs[0], sample);
            continue;
          }
          out += '[';
          for (size_t i = 0; i < outputs.size(); ++i) {
            if (i > 0) out += ',';
            AppendSample(out, outputs[i], sample);
          }
          out += ']';
        }
        out += "]}";
      }
      out += "]}";
      break;
    }
    case Dialect::kKserveV2: {
      out += "{\"model_name\":";
      AppendJsonString(out, model_name);
      out += ",\"model_version\":";
      AppendJsonString(out, version);
      if (!request.id.empty()) {
        out += ",\"id\":";
        AppendJsonString(out, request.id);
      }
      out += ",\"outputs\":[";
      bool first = true;
      for (size_t i = 0; i < outputs.size(); ++i) {
        std::string name = OutputName(signature, i);
        bool as_binary = request.binary_data_output;
        if (!request.requested_outputs.empty()) {
          auto wanted =
              std::find_if(request.requested_outputs.begin(), request.requested_outputs.end(),
                           [&](const RequestedOutput& r) { return r.name == name; });
          if (wanted == request.requested_outputs.end()) continue;
          as_binary = wanted->binary_data.value_or(as_binary);
        }
        if (!first) out += ',';
        first = false;
        const Tensor& t = outputs[i];
        out += "{\"name\":";
        AppendJsonString(out, name);
        out += ",\"shape\":[";
        for (size_t k = 0; k < t.shape.size(); ++k) {
          if (k > 0) out += ',';
          AppendNumber(out, t.shape[k]);
        }
        out += "],\"datatype\":\"";
        out += KserveDatatype(t.dtype);
        if (as_binary) {
          out += "\",\"parameters\":{\"binary_data_size\":";
          AppendNumber(out, t.bytes.size());
          out += "}}";
          binary += t.bytes;
          continue;
        }
        out += "\",\"data\":[";
        int64_t n = NumElements(t.shape);
        for (int64_t k = 0; k < n; ++k) {
          if (k > 0) out += ',';
          AppendElement(out, t, k);
        }
        out += "]}";
      }
      out += "]}";
      break;
    }
  }
  if (json_length != nullptr) *json_length = out.size();
  out += binary;
  return out;
}

base::Json KserveModelMetadata(const Signature& signature, std::string_view name,
                               std::string_view version) {
  auto tensors = [](const std::vector<TensorSpec>& specs) {
    base::Json list = base::Json::array();
    for (const TensorSpec& spec : specs) {
      std::vector<int64_t> shape = {-1};
      shape.insert(shape.end(), spec.shape.begin(), spec.shape.end());
      list.push_back({{"name", spec.name},
                      {"datatype", std::string(KserveDatatype(spec.dtype))},
                      {"shape", shape}});
    }
    return list;
  };
  base::Json versions = base::Json::array();
  if (!version.empty()) versions.push_back(std::string(version));
  return {{"name", std::string(name)},
          {"versions", versions},
          {"platform", "pytorch_torchscript"},
          {"inputs", tensors(signature.inputs)},
          {"outputs", tensors(signature.outputs)}};
}

}  // namespace kiln::serving
