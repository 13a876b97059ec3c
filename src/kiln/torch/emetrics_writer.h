// emetrics_writer.h
//
// `MetricsSink`s that are not LibTorch: `EmetricsWriter` speaks WMLA's file-based metrics
// contract (ARCHITECTURE.md §3, paths 1 and 2: `$LOG_DIR/evaluation-metrics.txt` JSON lines
// and `$RESULT_DIR/val_dict_list.json`), and `TeeSink` fans one report out to several sinks.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/base/clock.h"
#include "kiln/base/json.h"
#include "kiln/torch/trainer.h"

namespace kiln::torch {

struct EmetricsOptions {
  // Directory of evaluation-metrics.txt (created if missing); empty = no JSON lines.
  std::string log_dir;
  // Directory of val_dict_list.json, written by Close(); empty = not written.
  std::string result_dir;
  std::string training_id;  // meta.training_id ($TRAINING_ID)
  std::string subid;        // meta.subid ($SUBID, HPO sub-executions); omitted when empty
};

// Writes each report as one emetrics JSON line, in WMLA's format:
//   {"meta": {"training_id": "...", "time": <ms>, "rindex": <n>[, "subid": "..."]},
//    "grouplabel": "test",
//    "etimes": {"iteration": {"type": 2, "value": "<step>"},
//               "time_stamp": {"value": "<ISO 8601>"}},
//    "values": {"<name>": {"type": 3, "value": "<number>"}, ...}}
// flushed line by line so that an agent tailing the file sees each at once. Remembers the
// "test" reports and writes them as `[{"steps": n, "<metric>": v, ...}]` on Close().
// Not thread-safe: one training thread reports.
class EmetricsWriter final : public MetricsSink {
 public:
  // Opens (appends to) `log_dir`/evaluation-metrics.txt when `log_dir` is set. Returns the
  // I/O error as a Status when the directory or file cannot be created.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<EmetricsWriter>> Create(
      EmetricsOptions options, const base::Clock& clock);
  ~EmetricsWriter() override;

  EmetricsWriter(const EmetricsWriter&) = delete;
  EmetricsWriter& operator=(const EmetricsWriter&) = delete;

  // Appends one line. A write error is remembered and returned by Close(); later reports
  // are still kept for val_dict_list.json.
  void Report(int64_t step, std::string_view group,
              const std::vector<std::pair<std::string, double>>& metrics) override;

  // Closes the metrics file and writes val_dict_list.json atomically (when `result_dir` is
  // set). Returns the first error of any write so far. Call once; later calls return OK.
  [[nodiscard]] absl::Status Close();

  // The JSON object of one record, as written to the file (for tests and other writers).
  static base::Json FormatRecord(const EmetricsOptions& options, int64_t time_micros,
                                 int64_t rindex, int64_t step, std::string_view group,
                                 const std::vector<std::pair<std::string, double>>& metrics);

 private:
  EmetricsWriter(EmetricsOptions options, const base::Clock& clock, std::FILE* file);

  EmetricsOptions options_;
  const base::Clock& clock_;
  std::FILE* file_;  // owned; null when there is no log_dir or after Close()
  int64_t rindex_ = 0;
  base::Json test_records_ = base::Json::array();
  absl::Status status_;
  bool closed_ = false;
};

// Forwards every report to each added sink, in the order added. Borrows the sinks; they
// must outlive it. Not thread-safe.
class TeeSink final : public MetricsSink {
 public:
  void Add(MetricsSink& sink) { sinks_.push_back(&sink); }
  void Report(int64_t step, std::string_view group,
              const std::vector<std::pair<std::string, double>>& metrics) override {
    for (MetricsSink* sink : sinks_) sink->Report(step, group, metrics);
  }

 private:
  std::vector<MetricsSink*> sinks_;
};

}  // namespace kiln::torch
