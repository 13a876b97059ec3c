// wmla_hpo.h
//
// The WMLA hyperparameter-search dialect's data, both ways (wmla-api.md §1.4-§1.6): the
// `hpo_input` JSON of `POST /hypersearch` becomes a `master::ExperimentSpec`, and an
// experiment as the controller sees it (`master::ExperimentView`) becomes WMLA's
// `HpoTaskState`, with IBM's field names and misspellings (`maxParalleJobNum`,
// `discreateStrVal`, `createtime`). Pure functions; the handlers are in wmla_api.h.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/api/wmla_args.h"
#include "kiln/base/json.h"
#include "kiln/master/experiment_controller.h"
#include "kiln/store/records.h"

namespace kiln::api {

// Converts `hpo_input` (a JSON object) into an experiment of dialect "wmla": hpoName,
// modelSpec.args (the trial's job, see wmla_args.h), algoDef (algorithm, maxRunTime in
// minutes, maxJobNum, maxParalleJobNum (sic; "maxParallelJobNum" and the swagger's
// "maxParalleJob" also read), default 1,
// objectiveMetric, objective minimize|maximize in any case, additionalMetrics,
// hyperbandEta, algoParams) and hyperParams or, with ExperimentGridSearch only,
// experiments. Numbers may come as JSON numbers or numeric strings, as WMLA's server
// accepts. The request itself is kept in `wmla_request` for the echo. The trial has no
// package yet: the caller adds the uploaded model.
//
// InvalidArgument naming the field and the fix for a wrong type, an unknown field, a
// missing args, objectiveMetric or algorithm, both or neither of hyperParams and
// experiments, and everything master::ValidateExperimentSpec refuses. The space and the
// algorithm's parameters are checked later, by ExperimentController::Create.
[[nodiscard]] absl::StatusOr<master::ExperimentSpec> HpoInputToSpec(const base::Json& hpo_input,
                                                                    const WmlaJobOptions& options);

// The same from the text of the form field `data`; InvalidArgument when it is not a JSON
// object (the message quotes the parser).
[[nodiscard]] absl::StatusOr<master::ExperimentSpec> ParseHpoData(std::string_view data,
                                                                  const WmlaJobOptions& options);

// What HpoTaskState shows of a trial beyond its row: its current job, and the points of
// each additional metric it reported (store::Store::GetMetrics, by metric name).
struct TrialJob {
  std::optional<store::JobRecord> job;
  std::map<std::string, std::vector<store::MetricPoint>> metrics;
};

// WMLA's `HpoTaskState` of `view`: hpoName, state, progress "k/n" (ended trials out of
// maxJobNum, -1 when unlimited as WMLA prints it; for ExperimentGridSearch out of its
// experiments, at most maxJobNum), running/complete/failed, createtime,
// creator, duration (to `now_micros` while it runs), the algoDef and hyperParams echo,
// experiments[] (one per trial; ExperimentGridSearch also lists the experiments not
// asked for yet as NOTRUN) and best (null until a trial completes). `jobs` is keyed by
// trial number; a trial missing from it shows no times or metrics.
base::Json HpoTaskStateToJson(const master::ExperimentView& view,
                              const std::map<int64_t, TrialJob>& jobs, int64_t now_micros);

// WMLA's state of a job (execs and experiments): QUEUED and SCHEDULED are "SUBMITTED",
// RUNNING "RUNNING", FINISHED "FINISHED", FAILED "ERROR", KILLED "KILLED".
const char* WmlaJobState(store::JobState state);

// "2020-11-17 19:59:46" (UTC) and "01:02:03" (hours grow past 99).
std::string FormatWmlaTime(int64_t micros);
std::string FormatWmlaDuration(int64_t micros);

// The metricVal WMLA shows for an experiment that has none yet.
inline constexpr double kWmlaNoMetric = 9999.99;

}  // namespace kiln::api
