#include "kiln/cli/output.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace kiln::cli {
namespace {

constexpr int64_t kSecond = 1'000'000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;

}  // namespace

std::string FormatDuration(int64_t micros) {
  if (micros < 0) micros = 0;
  // Below a minute a tenth of a second still means something (a crash at start-up vs a
  // real run); above, whole units read faster.
  if (micros < kMinute) {
    return absl::StrFormat("%.1f s", static_cast<double>(micros) / kSecond);
  }
  if (micros < kHour) {
    return absl::StrCat(micros / kMinute, " min ", (micros % kMinute) / kSecond, " s");
  }
  if (micros < kDay) {
    return absl::StrCat(micros / kHour, " h ", (micros % kHour) / kMinute, " min");
  }
  return absl::StrCat(micros / kDay, " d ", (micros % kDay) / kHour, " h");
}

std::string FormatAge(int64_t micros) {
  if (micros < 0) micros = 0;
  if (micros < kMinute) return absl::StrCat(micros / kSecond, " s");
  if (micros < kHour) return absl::StrCat(micros / kMinute, " min");
  if (micros < kDay) return absl::StrCat(micros / kHour, " h");
  return absl::StrCat(micros / kDay, " d");
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string FormatNumber(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return absl::StrFormat("%.6g", value);
}

absl::StatusOr<int64_t> ParseTimestamp(std::string_view text) {
  absl::Time time;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, std::string(text), &time, &error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", std::string(text), "\" is not an RFC 3339 timestamp: ", error));
  }
  return absl::ToUnixMicros(time);
}

std::optional<int64_t> TimestampField(const base::Json& record, std::string_view field) {
  if (!record.is_object()) return std::nullopt;
  auto it = record.find(field);
  if (it == record.end() || !it->is_string()) return std::nullopt;
  auto parsed = ParseTimestamp(it->get<std::string>());
  if (!parsed.ok()) return std::nullopt;
  return *parsed;
}

std::string FormatCommand(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& word : words) {
    if (!out.empty()) out += ' ';
    bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) ||
             std::string_view("-_./=:,+@%").find(c) != std::string_view::npos;
    });
    if (plain) {
      out += word;
      continue;
    }
    out += '\'';
    for (char c : word) {
      if (c == '\'') {
        out += "'\\''";
      } else {
        out += c;
      }
    }
    out += '\'';
  }
  return out;
}

Table::Table(std::vector<std::string> header) : header_(std::move(header)) {}

void Table::AddRow(std::vector<std::string> row) {
  row.resize(std::max(row.size(), header_.size()));
  rows_.push_back(std::move(row));
}

std::string Table::Render() const {
  std::vector<size_t> widths(header_.size(), 0);
  auto measure = [&widths](const std::vector<std::string>& row) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  };
  measure(header_);
  for (const auto& row : rows_) measure(row);

  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  };
  emit(header_);
  for (const auto& row : rows_) emit(row);
  return out;
}

}  // namespace kiln::cli
