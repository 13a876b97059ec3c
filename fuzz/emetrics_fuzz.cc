// emetrics_fuzz.cc
//
// Feeds arbitrary bytes to the metrics-file parsers, as a workload could write them. Both
// must return a Status, never crash; every point they do return must carry a finite value.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "kiln/tracking/emetrics.h"

namespace {

void CheckPoints(const absl::StatusOr<std::vector<kiln::tracking::MetricPoint>>& points) {
  if (!points.ok()) return;
  for (const auto& p : *points) {
    if (!std::isfinite(p.value) || p.name.empty() || p.group.empty()) {
      std::fprintf(stderr, "emetrics_fuzz: bad point %s/%s\n", p.group.c_str(), p.name.c_str());
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  CheckPoints(kiln::tracking::ParseEmetricsLine(text, 1'700'000'000'000'000));
  CheckPoints(kiln::tracking::ParseValDictList(text, 1'700'000'000'000'000));
  return 0;
}
