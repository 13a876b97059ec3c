// experiment_request_fuzz.cc
//
// Feeds arbitrary bytes, as a REST client could send them to POST /api/v1/experiments, to
// the JSON parser, `master::ParseExperimentSpec`, and what the experiment controller builds
// from an accepted spec: the search space and the algorithm (`hpo::MakeAlgorithm`). None
// may crash, throw or hang. An accepted spec must also survive storage: it is written as
// JSON and read back after a master restart, and must come back the same.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "kiln/base/json.h"
#include "kiln/hpo/algorithm.h"
#include "kiln/hpo/search_space.h"
#include "kiln/master/experiment_spec.h"

namespace {

using kiln::base::Json;

void Fail(const char* what) {
  std::fprintf(stderr, "experiment_request_fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto json = kiln::base::ParseJson(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!json.ok()) return 0;
  auto spec = kiln::master::ParseExperimentSpec(*json);
  if (!spec.ok()) return 0;

  Json stored = kiln::master::ExperimentSpecToJson(*spec);
  auto reparsed = kiln::base::ParseJson(kiln::base::DumpJson(stored));
  if (!reparsed.ok()) Fail("a stored experiment spec is not valid JSON");
  auto recovered = kiln::master::ExperimentSpecFromJson(*reparsed);
  if (!recovered.ok()) Fail("a stored experiment spec does not load again");
  if (kiln::master::ExperimentSpecToJson(*recovered) != stored) {
    Fail("a stored experiment spec changed on the way back");
  }

  auto space = spec->wmla_space ? kiln::hpo::SearchSpace::FromWmla(spec->search_space)
                                : kiln::hpo::SearchSpace::FromNative(spec->search_space);
  if (!space.ok()) return 0;
  kiln::hpo::AlgorithmRequest request;
  request.name = spec->algorithm;
  request.params = spec->algorithm_params;
  request.hyperband_eta = spec->hyperband_eta;
  request.seed = spec->seed.value_or(0);
  request.max_trials = spec->max_trials;
  request.wmla_experiments = spec->wmla_experiments;
  request.pruner = spec->pruner;
  // Building may refuse; it must not crash. Asking is left to search_space_fuzz and the
  // samplers' tests: a legal GP ask over a large candidate cube is slow by design.
  (void)kiln::hpo::MakeAlgorithm(request, *space);
  return 0;
}
