// jobs_command.h
//
// `kiln jobs`, `kiln job show`, `kiln job scale`, `kiln kill` and `kiln metrics`: the
// read-and-manage side of the CLI. The renderers are declared here so their output is
// pinned down by tests.
#pragma once

#include <cstdint>
#include <string>

#include "kiln/base/json.h"

namespace kiln::cli {

// The `kiln jobs` table of `jobs` (job records, newest first) at wall time `now_micros`:
// ID NAME USER STATE SLOTS GPUS AGE DURATION EXIT. AGE counts from creation; DURATION
// from start to end (or to now while running), "-" before the start. When a listed job is
// distributed (its record has a `workers` object), a WORKERS column after GPUS shows
// "live/max" for it ("2/4") and "-" for single jobs; SLOTS and GPUS are per worker.
std::string RenderJobsTable(const base::Json& jobs, int64_t now_micros);

// The `kiln job show` view: one "key: value" line per field, times with ages. A
// distributed job adds a "workers: 2 live (min 1, max 4, target 2)" line ("2 live
// (static, 2 workers)" for a static one), then a table
// of its tasks (ID STATE AGENT EXIT REASON) and of its rendezvous generations (ID, WORLD
// SIZE, MEMBERS by rank, STARTED, REASON; the newest kMaxGenerationRows of them). A
// worker's own record (it has a `parent`) gets a "parent:" line.
std::string RenderJobDetails(const base::Json& job, int64_t now_micros);

// How many generations and tasks `kiln job show` lists; --json has them all.
inline constexpr size_t kMaxGenerationRows = 10;
inline constexpr size_t kMaxTaskRows = 20;

// The line `kiln job scale` prints for the job record the server answered with:
// "job 7: target 3 workers (min 1, max 4; 2 live now)", without the live count when the
// record has none.
std::string RenderScaleResult(int64_t id, int64_t requested, const base::Json& job);

// The `kiln metrics` table: NAME GROUP LAST STEP MIN MAX POINTS, one row per series.
std::string RenderMetricsTable(const base::Json& metrics);

}  // namespace kiln::cli
