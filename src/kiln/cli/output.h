// output.h
//
// How `kiln` shows things to a person at a terminal: durations ("41.2 s", "3 min 5 s"),
// ages ("5 min"), sizes ("3.1 KiB"), metric values, and column-aligned tables. Pure
// functions, so every format is pinned down by output_test.cc.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"

namespace kiln::cli {

// A duration for a summary line: "0.4 s", "41.2 s", "3 min 5 s", "2 h 5 min", "3 d 4 h".
// Negative durations print as "0.0 s".
std::string FormatDuration(int64_t micros);

// A coarse age for tables: "41 s", "3 min", "2 h", "5 d". Negative ages print as "0 s".
std::string FormatAge(int64_t micros);

// A byte count: "512 B", "3.1 KiB", "12.0 MiB", "1.5 GiB".
std::string FormatBytes(int64_t bytes);

// A metric value with up to 6 significant digits: "0.51", "1e-06", "1234.57".
std::string FormatNumber(double value);

// Parses an RFC 3339 timestamp as the API writes it ("2026-11-26T10:00:00.000000Z") into
// microseconds since the Unix epoch. InvalidArgument if it is not one.
absl::StatusOr<int64_t> ParseTimestamp(std::string_view text);

// The timestamp field `field` of a job record, or nullopt when absent, null or malformed.
std::optional<int64_t> TimestampField(const base::Json& record, std::string_view field);

// Joins a command line for display, quoting words that a shell would split or expand:
// ["python3", "train.py", "--name", "a b"] → "python3 train.py --name 'a b'".
std::string FormatCommand(const std::vector<std::string>& words);

// A text table: a header row, then rows, columns left-aligned and separated by two
// spaces. Rows shorter than the header are padded with empty cells.
class Table {
 public:
  explicit Table(std::vector<std::string> header);

  void AddRow(std::vector<std::string> row);
  size_t row_count() const { return rows_.size(); }

  // The table, one line per row, each ending in '\n'; trailing spaces are trimmed.
  std::string Render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace kiln::cli
