// emetrics.h
//
// Parsers for the metrics files a workload writes (ARCHITECTURE.md §3): WMLA's emetrics
// JSON lines in `$LOG_DIR/evaluation-metrics.txt`, Kiln's simpler line form in the same
// file, and WMLA's end-of-run `$RESULT_DIR/val_dict_list.json`. The agent tails the
// lines file with `ReadCompleteLines`, turns each line into `MetricPoint`s and ships them
// to the master. All input here is written by user code, so every parser returns a
// Status on bad input and never throws or crashes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::tracking {

// One value of one metric at one step, e.g. {"loss", "test", 3, 0.25, <time>}.
struct MetricPoint {
  std::string name;
  std::string group;  // "test" (validation) or "train", or whatever the workload chose.
  int64_t step;
  double value;         // Always finite.
  int64_t time_micros;  // Unix time the workload recorded it, in microseconds.
};

// Parses one line of an emetrics file. Two forms are accepted:
//
//   WMLA/FfDL (what IBM's emetrics.py writes; wmla-api.md §4.2):
//     {"meta": {"time": <unix ms>, ...}, "grouplabel": "test",
//      "etimes": {"iteration": {"type": 2, "value": "1"}, "time_stamp": {...}},
//      "values": {"loss": {"type": 3, "value": "0.033"}, ...}}
//   Kiln:
//     {"step": 3, "group": "train", "time": <unix seconds, float>, "metrics": {"loss": 0.5}}
//
// WMLA form: the group comes from "grouplabel" (default "test"); the step from
// etimes.iteration.value (a string or a number holding an integer); the time from
// meta.time (ms), else etimes.time_stamp ("YYYY-MM-DDTHH:MM:SS[.frac][Z|+hh:mm]", read
// as UTC without a zone; emetrics.py's "<...>.<unix seconds>" quirk is understood), else
// `default_time_micros`. Each value is {"type": t, "value": v} with v a string or a
// number. STRING-typed (0) and JSONSTRING-typed (1) values are skipped, as are values
// that are not numbers (not errors). Untyped values are kept when they hold a number:
// emetrics.py writes numpy floats untyped.
//
// Kiln form: "step" (integer) is required; "group" defaults to "test"; "time" defaults to
// `default_time_micros`; non-number metric values are skipped.
//
// Returns InvalidArgument, with a short excerpt of the line, when the line is not JSON,
// not an object of either form, has no step, or holds NaN/infinite values or an
// out-of-range step or time. A line with no numeric values yields an empty vector.
[[nodiscard]] absl::StatusOr<std::vector<MetricPoint>> ParseEmetricsLine(
    std::string_view line, int64_t default_time_micros);

// Parses val_dict_list.json: a JSON array of objects
//   [{"steps": 1, "loss": 0.3, "accuracy": 91.2}, ...]
// The step is "steps" or "step" (an integer, or a string holding one), else the element's
// 1-based position. Every other field holding a number is a metric; fields holding
// anything else are ignored. All points get group "test" and `time_micros`. Returns
// InvalidArgument saying what is wrong when the text is not such an array or a value is
// out of range.
[[nodiscard]] absl::StatusOr<std::vector<MetricPoint>> ParseValDictList(std::string_view json_text,
                                                                        int64_t time_micros);

// A batch of complete lines read from a growing file, and where to continue.
struct LineChunk {
  std::vector<std::string> lines;  // Without their '\n' (or "\r\n"); blank lines dropped.
  int64_t next_offset;             // Pass to the next call.
};

// Reads the complete lines of `path` starting at byte `offset`, reading at most
// `max_bytes` (which must be > 0). A partial last line (no '\n' yet) is left for a later
// call. A single line longer than `max_bytes` is skipped once its '\n' has been written
// (it cannot be a sane metrics record, and waiting for it would stall the tail forever).
// Returns NotFound if the file does not exist, OutOfRange if the file is now shorter than
// `offset` (it was truncated or replaced; the caller decides whether to start over),
// InvalidArgument for a negative offset or zero `max_bytes`. Blocks on file I/O only.
[[nodiscard]] absl::StatusOr<LineChunk> ReadCompleteLines(const std::string& path, int64_t offset,
                                                          size_t max_bytes);

}  // namespace kiln::tracking
