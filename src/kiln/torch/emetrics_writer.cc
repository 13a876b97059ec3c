#include "kiln/torch/emetrics_writer.h"

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "kiln/base/files.h"
#include "kiln/base/status.h"

namespace kiln::torch {
namespace {

// FfDL's `Any.DataType` codes, which WMLA's emetrics use.
constexpr int kTypeInt = 2;
constexpr int kTypeFloat = 3;

}  // namespace

absl::StatusOr<std::unique_ptr<EmetricsWriter>> EmetricsWriter::Create(EmetricsOptions options,
                                                                       const base::Clock& clock) {
  std::FILE* file = nullptr;
  if (!options.log_dir.empty()) {
    KILN_RETURN_IF_ERROR(base::MakeDirs(options.log_dir));
    const std::string path = options.log_dir + "/evaluation-metrics.txt";
    file = std::fopen(path.c_str(), "ae");
    if (file == nullptr) return base::ErrnoStatus(absl::StrCat("open ", path), errno);
  }
  return std::unique_ptr<EmetricsWriter>(new EmetricsWriter(std::move(options), clock, file));
}

EmetricsWriter::EmetricsWriter(EmetricsOptions options, const base::Clock& clock, std::FILE* file)
    : options_(std::move(options)), clock_(clock), file_(file) {}

EmetricsWriter::~EmetricsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

base::Json EmetricsWriter::FormatRecord(
    const EmetricsOptions& options, int64_t time_micros, int64_t rindex, int64_t step,
    std::string_view group, const std::vector<std::pair<std::string, double>>& metrics) {
  base::Json meta = {
      {"training_id", options.training_id}, {"time", time_micros / 1000}, {"rindex", rindex}};
  if (!options.subid.empty()) meta["subid"] = options.subid;
  base::Json values = base::Json::object();
  for (const auto& [name, value] : metrics) {
    // WMLA carries numbers as strings with a type code; %g's six significant digits are
    // what its Python writer's str() gives for typical losses and accuracies.
    values[name] = {{"type", kTypeFloat}, {"value", absl::StrCat(value)}};
  }
  return {{"meta", std::move(meta)},
          {"grouplabel", std::string(group)},
          {"etimes",
           {{"iteration", {{"type", kTypeInt}, {"value", absl::StrCat(step)}}},
            {"time_stamp", {{"value", base::FormatIso8601(time_micros)}}}}},
          {"values", std::move(values)}};
}

void EmetricsWriter::Report(int64_t step, std::string_view group,
                            const std::vector<std::pair<std::string, double>>& metrics) {
  if (closed_) return;
  ++rindex_;
  if (group == "test") {
    base::Json entry = {{"steps", step}};
    for (const auto& [name, value] : metrics) entry[name] = value;
    test_records_.push_back(std::move(entry));
  }
  if (file_ == nullptr) return;
  const std::string line =
      base::DumpJson(FormatRecord(options_, clock_.NowMicros(), rindex_, step, group, metrics)) +
      "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    if (status_.ok()) {
      status_ = base::ErrnoStatus(
          absl::StrCat("write ", options_.log_dir, "/evaluation-metrics.txt"), errno);
    }
  }
}

absl::Status EmetricsWriter::Close() {
  if (closed_) return absl::OkStatus();
  closed_ = true;
  if (file_ != nullptr) {
    if (std::fclose(file_) != 0 && status_.ok()) {
      status_ = base::ErrnoStatus(
          absl::StrCat("close ", options_.log_dir, "/evaluation-metrics.txt"), errno);
    }
    file_ = nullptr;
  }
  if (!options_.result_dir.empty()) {
    absl::Status written = base::MakeDirs(options_.result_dir);
    if (written.ok()) {
      written = base::WriteFileAtomically(options_.result_dir + "/val_dict_list.json",
                                          base::DumpJson(test_records_) + "\n");
    }
    if (status_.ok()) status_ = written;
  }
  return status_;
}

}  // namespace kiln::torch
