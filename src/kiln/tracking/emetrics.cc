#include "kiln/tracking/emetrics.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/base/files.h"
#include "kiln/base/json.h"
#include "kiln/base/status.h"

namespace kiln::tracking {
namespace {

using base::Json;

constexpr std::string_view kDefaultGroup = "test";
// emetrics lines are a few hundred bytes; anything near this is not a metrics record.
constexpr size_t kMaxLineBytes = 1 << 20;

// This Abseil's string_view is its own type, not std::string_view.
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string_view StripWhitespace(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n\f\v";
  size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  size_t end = s.find_last_not_of(kSpace);
  return s.substr(begin, end - begin + 1);
}

// The start of `line` for error messages: enough to recognise it, short enough for a log.
std::string Excerpt(std::string_view line) {
  constexpr size_t kMax = 80;
  if (line.size() <= kMax) return std::string(line);
  return absl::StrCat(std::string(line.substr(0, kMax)), "...");
}

absl::Status BadLine(std::string_view line, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("not a metrics line (", std::string(why), "): ", Excerpt(line)));
}

// Converts without undefined behaviour: a double outside int64's range, or not whole,
// has no int64 value.
std::optional<int64_t> WholeDoubleToInt64(double d) {
  // 2^63 is exactly representable; every double below it converts safely.
  constexpr double kTwo63 = 9223372036854775808.0;
  if (!(d >= -kTwo63 && d < kTwo63)) return std::nullopt;  // Also catches NaN.
  if (std::trunc(d) != d) return std::nullopt;
  return static_cast<int64_t>(d);
}

// Parses a number written as text ("0.033", " 12 ", "1e-3"). nullopt when the text is not
// a number; NaN and infinities come back as such for the caller to refuse.
std::optional<double> ParseNumberText(std::string_view text) {
  text = StripWhitespace(text);
  if (text.empty()) return std::nullopt;
  double d = 0;
  if (!absl::SimpleAtod(AbslView(text), &d)) return std::nullopt;
  return d;
}

// The numeric value of a JSON number or of a string holding one; nullopt otherwise.
std::optional<double> NumericValue(const Json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) return ParseNumberText(v.get_ref<const std::string&>());
  return std::nullopt;
}

// An integer from a JSON integer, a whole float, or a string holding either. nullopt when
// `v` holds no integer in int64's range.
std::optional<int64_t> IntegerValue(const Json& v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) return WholeDoubleToInt64(v.get<double>());
  if (v.is_string()) {
    std::string_view text = StripWhitespace(v.get_ref<const std::string&>());
    int64_t i = 0;
    if (absl::SimpleAtoi(AbslView(text), &i)) return i;
    std::optional<double> d = ParseNumberText(text);
    if (d.has_value()) return WholeDoubleToInt64(*d);
  }
  return std::nullopt;
}

// `count` units of `micros_per_unit` microseconds, or nullopt on overflow.
std::optional<int64_t> ScaleToMicros(const Json& v, double micros_per_unit) {
  std::optional<double> d = NumericValue(v);
  if (!d.has_value() || !std::isfinite(*d)) return std::nullopt;
  // Integers are scaled exactly where they fit, so millisecond stamps lose nothing.
  std::optional<int64_t> whole = IntegerValue(v);
  if (whole.has_value() && micros_per_unit >= 1 && std::trunc(micros_per_unit) == micros_per_unit) {
    int64_t factor = static_cast<int64_t>(micros_per_unit);
    int64_t out = 0;
    if (__builtin_mul_overflow(*whole, factor, &out)) return std::nullopt;
    return out;
  }
  return WholeDoubleToInt64(std::round(*d * micros_per_unit));
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

// Reads exactly `n` digits at `*pos`, advancing it.
std::optional<int64_t> Digits(std::string_view s, size_t* pos, size_t n) {
  if (*pos + n > s.size()) return std::nullopt;
  int64_t out = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[*pos + i];
    if (c < '0' || c > '9') return std::nullopt;
    out = out * 10 + (c - '0');
  }
  *pos += n;
  return out;
}

// Parses "YYYY-MM-DDTHH:MM:SS[.frac][Z|+hh:mm|-hh:mm]" (a space may replace 'T'); no zone
// means UTC. emetrics.py writes strftime("%Y-%m-%dT%H:%M:%S.%s"), where "%s" is the Unix
// time in seconds, so a "fraction" of 9 or more digits is read as exactly that.
std::optional<int64_t> ParseTimestampMicros(std::string_view s) {
  s = StripWhitespace(s);
  size_t pos = 0;
  auto expect = [&](char c) {
    if (pos < s.size() && s[pos] == c) {
      ++pos;
      return true;
    }
    return false;
  };
  auto year = Digits(s, &pos, 4);
  if (!year || !expect('-')) return std::nullopt;
  auto month = Digits(s, &pos, 2);
  if (!month || !expect('-')) return std::nullopt;
  auto day = Digits(s, &pos, 2);
  if (!day || !(expect('T') || expect(' '))) return std::nullopt;
  auto hour = Digits(s, &pos, 2);
  if (!hour || !expect(':')) return std::nullopt;
  auto minute = Digits(s, &pos, 2);
  if (!minute || !expect(':')) return std::nullopt;
  auto second = Digits(s, &pos, 2);
  if (!second) return std::nullopt;
  if (*month < 1 || *month > 12 || *day < 1 || *day > 31 || *hour > 23 || *minute > 59 ||
      *second > 60) {
    return std::nullopt;
  }
  int64_t frac_micros = 0;
  if (expect('.')) {
    size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
    std::string_view frac = s.substr(start, pos - start);
    if (frac.empty()) return std::nullopt;
    if (frac.size() >= 9 && frac.size() <= 12 && pos == s.size()) {
      int64_t unix_seconds = 0;
      if (!absl::SimpleAtoi(AbslView(frac), &unix_seconds)) return std::nullopt;
      return unix_seconds * 1'000'000;
    }
    for (size_t i = 0; i < 6; ++i) {
      frac_micros = frac_micros * 10 + (i < frac.size() ? frac[i] - '0' : 0);
    }
  }
  int64_t offset_seconds = 0;
  if (pos < s.size()) {
    if (s[pos] == 'Z' || s[pos] == 'z') {
      ++pos;
    } else if (s[pos] == '+' || s[pos] == '-') {
      int sign = s[pos] == '-' ? -1 : 1;
      ++pos;
      auto oh = Digits(s, &pos, 2);
      expect(':');
      auto om = Digits(s, &pos, 2);
      if (!oh || !om || *oh > 23 || *om > 59) return std::nullopt;
      offset_seconds = sign * (*oh * 3600 + *om * 60);
    }
  }
  if (pos != s.size()) return std::nullopt;
  int64_t seconds = DaysFromCivil(*year, *month, *day) * 86400 + *hour * 3600 + *minute * 60 +
                    *second - offset_seconds;
  return seconds * 1'000'000 + frac_micros;
}

absl::Status NonFinite(std::string_view line, const std::string& name) {
  return BadLine(line, absl::StrCat("value of \"", name, "\" is NaN or infinite"));
}

absl::StatusOr<std::vector<MetricPoint>> ParseWmlaForm(std::string_view line, const Json& obj,
                                                       int64_t default_time_micros) {
  std::string group(kDefaultGroup);
  if (auto it = obj.find("grouplabel"); it != obj.end() && !it->is_null()) {
    if (!it->is_string()) return BadLine(line, "\"grouplabel\" is not a string");
    if (!it->get_ref<const std::string&>().empty()) group = it->get<std::string>();
  }

  const Json* etimes = nullptr;
  if (auto it = obj.find("etimes"); it != obj.end() && it->is_object()) etimes = &*it;
  if (etimes == nullptr || !etimes->contains("iteration")) {
    return BadLine(line, "no etimes.iteration");
  }
  const Json& iteration = (*etimes)["iteration"];
  const Json& iteration_value =
      iteration.is_object() && iteration.contains("value") ? iteration["value"] : iteration;
  std::optional<int64_t> step = IntegerValue(iteration_value);
  if (!step.has_value()) return BadLine(line, "etimes.iteration.value is not an integer");

  int64_t time_micros = default_time_micros;
  const Json* meta_time = nullptr;
  if (auto it = obj.find("meta"); it != obj.end() && it->is_object()) {
    if (auto t = it->find("time"); t != it->end() && !t->is_null()) meta_time = &*t;
  }
  if (meta_time != nullptr) {
    std::optional<int64_t> t = ScaleToMicros(*meta_time, 1000);
    if (!t.has_value()) return BadLine(line, "meta.time is not a time in milliseconds");
    time_micros = *t;
  } else if (auto ts = etimes->find("time_stamp"); ts != etimes->end()) {
    const Json& v = ts->is_object() && ts->contains("value") ? (*ts)["value"] : *ts;
    // A stamp we cannot read is not worth losing the values over: keep the default.
    if (v.is_string()) {
      if (auto t = ParseTimestampMicros(v.get_ref<const std::string&>())) time_micros = *t;
    } else if (auto t = ScaleToMicros(v, 1000)) {
      time_micros = *t;
    }
  }

  auto values = obj.find("values");
  if (values == obj.end() || !values->is_object())
    return BadLine(line, "\"values\" is not an object");
  std::vector<MetricPoint> out;
  for (auto it = values->begin(); it != values->end(); ++it) {
    if (it.key().empty()) continue;
    const Json& entry = it.value();
    const Json* value = &entry;
    if (entry.is_object()) {
      if (auto type = entry.find("type"); type != entry.end() && type->is_number_integer()) {
        // FfDL Any.DataType: STRING=0 and JSONSTRING=1 are not measurements.
        int64_t t = type->get<int64_t>();
        if (t == 0 || t == 1) continue;
      }
      auto v = entry.find("value");
      if (v == entry.end()) continue;
      value = &*v;
    }
    std::optional<double> d = NumericValue(*value);
    if (!d.has_value()) continue;
    if (!std::isfinite(*d)) return NonFinite(line, it.key());
    out.push_back(MetricPoint{it.key(), group, *step, *d, time_micros});
  }
  return out;
}

absl::StatusOr<std::vector<MetricPoint>> ParseKilnForm(std::string_view line, const Json& obj,
                                                       int64_t default_time_micros) {
  auto step_it = obj.find("step");
  if (step_it == obj.end()) return BadLine(line, "no \"step\"");
  std::optional<int64_t> step = IntegerValue(*step_it);
  if (!step.has_value() || step_it->is_string()) {
    return BadLine(line, "\"step\" is not an integer");
  }
  std::string group(kDefaultGroup);
  if (auto it = obj.find("group"); it != obj.end() && !it->is_null()) {
    if (!it->is_string()) return BadLine(line, "\"group\" is not a string");
    if (!it->get_ref<const std::string&>().empty()) group = it->get<std::string>();
  }
  int64_t time_micros = default_time_micros;
  if (auto it = obj.find("time"); it != obj.end() && !it->is_null()) {
    if (!it->is_number()) return BadLine(line, "\"time\" is not a number of seconds");
    std::optional<int64_t> t = ScaleToMicros(*it, 1e6);
    if (!t.has_value()) return BadLine(line, "\"time\" is out of range");
    time_micros = *t;
  }
  const Json& metrics = obj["metrics"];
  if (!metrics.is_object()) return BadLine(line, "\"metrics\" is not an object");
  std::vector<MetricPoint> out;
  for (auto it = metrics.begin(); it != metrics.end(); ++it) {
    if (it.key().empty() || !it.value().is_number()) continue;
    double d = it.value().get<double>();
    if (!std::isfinite(d)) return NonFinite(line, it.key());
    out.push_back(MetricPoint{it.key(), group, *step, d, time_micros});
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<MetricPoint>> ParseEmetricsLine(std::string_view line,
                                                           int64_t default_time_micros) {
  std::string_view trimmed = StripWhitespace(line);
  if (trimmed.empty() || trimmed.front() != '{') return BadLine(line, "not a JSON object");
  auto parsed = base::ParseJson(trimmed, kMaxLineBytes);
  if (!parsed.ok()) return BadLine(line, std::string(parsed.status().message()));
  const Json& obj = *parsed;
  if (!obj.is_object()) return BadLine(line, "not a JSON object");
  if (obj.contains("values") || obj.contains("etimes")) {
    return ParseWmlaForm(line, obj, default_time_micros);
  }
  if (obj.contains("metrics")) return ParseKilnForm(line, obj, default_time_micros);
  return BadLine(line, "neither \"values\" (emetrics) nor \"metrics\" (Kiln) is present");
}

absl::StatusOr<std::vector<MetricPoint>> ParseValDictList(std::string_view json_text,
                                                          int64_t time_micros) {
  auto parsed = base::ParseJson(json_text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("val_dict_list.json: ", std::string(parsed.status().message())));
  }
  const Json& list = *parsed;
  if (!list.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("val_dict_list.json must be a JSON array of objects, got ", list.type_name()));
  }
  std::vector<MetricPoint> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& item = list[i];
    if (!item.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("val_dict_list.json: element ", i,
                                                     " must be an object, got ", item.type_name()));
    }
    int64_t step = static_cast<int64_t>(i) + 1;
    for (const char* key : {"steps", "step"}) {
      auto it = item.find(key);
      if (it == item.end() || it->is_null()) continue;
      std::optional<int64_t> s = IntegerValue(*it);
      if (!s.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("val_dict_list.json: element ", i, ": \"", key, "\" must be an integer"));
      }
      step = *s;
      break;
    }
    for (auto it = item.begin(); it != item.end(); ++it) {
      if (it.key() == "steps" || it.key() == "step" || it.key().empty()) continue;
      if (!it.value().is_number()) continue;
      double d = it.value().get<double>();
      if (!std::isfinite(d)) {
        return absl::InvalidArgumentError(
            absl::StrCat("val_dict_list.json: element ", i, ": \"", it.key(), "\" is not finite"));
      }
      out.push_back(MetricPoint{it.key(), std::string(kDefaultGroup), step, d, time_micros});
    }
  }
  return out;
}

absl::StatusOr<LineChunk> ReadCompleteLines(const std::string& path, int64_t offset,
                                            size_t max_bytes) {
  if (offset < 0) return absl::InvalidArgumentError(absl::StrCat("negative offset ", offset));
  if (max_bytes == 0) return absl::InvalidArgumentError("max_bytes must be positive");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoStatus(absl::StrCat("open ", path), errno);
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat st;
  if (::fstat(fd, &st) != 0) return base::ErrnoStatus(absl::StrCat("stat ", path), errno);
  if (st.st_size < offset) {
    return absl::OutOfRangeError(absl::StrCat(path, " is ", st.st_size,
                                              " bytes, shorter than the offset ", offset,
                                              ": it was truncated or replaced"));
  }

  // Reads [at, at + n) or less at end of file; returns bytes read.
  auto read_at = [&](int64_t at, size_t n, std::string* buf) -> absl::Status {
    buf->resize(n);
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::pread(fd, buf->data() + got, n - got, static_cast<off_t>(at + got));
      if (r < 0) {
        if (errno == EINTR) continue;
        return base::ErrnoStatus(absl::StrCat("read ", path), errno);
      }
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    buf->resize(got);
    return absl::OkStatus();
  };

  std::string buf;
  KILN_RETURN_IF_ERROR(read_at(offset, max_bytes, &buf));
  LineChunk chunk{{}, offset};
  size_t last_newline = buf.rfind('\n');
  if (last_newline == std::string::npos) {
    if (buf.size() < max_bytes) return chunk;  // A partial line still being written.
    // One line is longer than max_bytes: skip it once it is complete.
    int64_t at = offset + static_cast<int64_t>(buf.size());
    std::string scan;
    while (true) {
      KILN_RETURN_IF_ERROR(read_at(at, 64 << 10, &scan));
      if (scan.empty()) return chunk;
      size_t nl = scan.find('\n');
      if (nl != std::string::npos) {
        chunk.next_offset = at + static_cast<int64_t>(nl) + 1;
        return chunk;
      }
      at += static_cast<int64_t>(scan.size());
    }
  }
  size_t start = 0;
  while (start <= last_newline) {
    size_t end = buf.find('\n', start);
    std::string_view line(buf.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!StripWhitespace(line).empty()) chunk.lines.emplace_back(line);
    start = end + 1;
  }
  chunk.next_offset = offset + static_cast<int64_t>(last_newline) + 1;
  return chunk;
}

}  // namespace kiln::tracking
