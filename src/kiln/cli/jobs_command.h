// jobs_command.h
//
// `kiln jobs`, `kiln job show`, `kiln kill` and `kiln metrics`: the read-and-manage side
// of the CLI. The renderers are declared here so their output is pinned down by tests.
#pragma once

#include <cstdint>
#include <string>

#include "kiln/base/json.h"

namespace kiln::cli {

// The `kiln jobs` table of `jobs` (job records, newest first) at wall time `now_micros`:
// ID NAME USER STATE SLOTS GPUS AGE DURATION EXIT. AGE counts from creation; DURATION
// from start to end (or to now while running), "-" before the start.
std::string RenderJobsTable(const base::Json& jobs, int64_t now_micros);

// The `kiln job show` view: one "key: value" line per field, times with ages.
std::string RenderJobDetails(const base::Json& job, int64_t now_micros);

// The `kiln metrics` table: NAME GROUP LAST STEP MIN MAX POINTS, one row per series.
std::string RenderMetricsTable(const base::Json& metrics);

}  // namespace kiln::cli
