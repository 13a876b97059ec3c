// wmla_hpo_input_fuzz.cc
//
// Feeds arbitrary bytes to the WMLA hypersearch form field `data` (the hpo_input JSON).
// Nothing may crash, throw or hang. An accepted input must survive the storage round trip
// of its experiment spec, and rendering it back as WMLA's HpoTaskState (with trials whose
// stored JSON is the input itself, as garbage a broken store could hold) must not crash.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "kiln/api/wmla_hpo.h"
#include "kiln/base/json.h"
#include "kiln/master/experiment_spec.h"

namespace {

void Fail(const char* what) {
  std::fprintf(stderr, "wmla_hpo_input_fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto spec = kiln::api::ParseHpoData(text, {});
  if (!spec.ok()) return 0;
  kiln::base::Json stored = kiln::master::ExperimentSpecToJson(*spec);
  auto reparsed = kiln::base::ParseJson(kiln::base::DumpJson(stored));
  if (!reparsed.ok()) Fail("a stored spec does not parse as JSON");
  auto recovered = kiln::master::ExperimentSpecFromJson(*reparsed);
  if (!recovered.ok()) Fail("a stored spec does not load again");

  kiln::master::ExperimentView view;
  view.spec = *recovered;
  view.record.name = "fuzz";
  for (int64_t n = 0; n < 2; ++n) {
    kiln::store::TrialRow trial;
    trial.number = n;
    trial.config_json = std::string(text);
    trial.params_json = n == 0 ? std::string(text) : R"({"__experiment": 1e300})";
    trial.intermediate_json = std::string(text);
    trial.job_id = n + 1;
    view.trials.push_back(trial);
  }
  view.best_trial = 0;
  kiln::api::TrialJob job;
  job.metrics["acc"] = {{"acc", "test", 1, 0.5, 0}};
  (void)kiln::base::DumpJson(kiln::api::HpoTaskStateToJson(view, {{0, job}}, 0));
  return 0;
}
