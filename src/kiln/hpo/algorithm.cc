#include "kiln/hpo/algorithm.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/base/status.h"
#include "kiln/hpo/asha_pruner.h"
#include "kiln/hpo/cmaes_sampler.h"
#include "kiln/hpo/gp_sampler.h"
#include "kiln/hpo/hyperband_sampler.h"
#include "kiln/hpo/median_pruner.h"
#include "kiln/hpo/random_sampler.h"
#include "kiln/hpo/tpe_sampler.h"

namespace kiln::hpo {
namespace {

enum class Kind { kRandom, kGrid, kExperimentGrid, kTpe, kGp, kCmaEs, kHyperband, kAsha };

struct KnownName {
  const char* lower;  // matched against the lower-cased request name
  Kind kind;
};
constexpr KnownName kNames[] = {
    {"random", Kind::kRandom},
    {"grid", Kind::kGrid},
    {"experimentgridsearch", Kind::kExperimentGrid},
    {"experiment_grid", Kind::kExperimentGrid},
    {"tpe", Kind::kTpe},
    {"gp", Kind::kGp},
    {"bayesian", Kind::kGp},
    {"cmaes", Kind::kCmaEs},
    {"hyperband", Kind::kHyperband},
    {"asha", Kind::kAsha},
};

absl::StatusOr<Kind> KindOf(const std::string& name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (const KnownName& known : kNames) {
    if (lower == known.lower) return known.kind;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown search algorithm \"", name,
      "\"; known (any case): Random, Tpe, Bayesian, Hyperband, ExperimentGridSearch (WMLA) and "
      "random, grid, experiment_grid, tpe, gp (= bayesian), cmaes, hyperband, asha (native)"));
}

// Reads a native params object (or a pruner object): checks that every key is known, then
// copies the given ones into option fields, leaving absent ones at their defaults. Errors
// read "<where>.<key> ...", e.g. "tpe params.warm_up must be ...".
class NativeParams {
 public:
  NativeParams(const base::Json& object, std::string where)
      : object_(object), where_(std::move(where)) {}

  [[nodiscard]] absl::Status CheckKeys(std::initializer_list<const char*> known) const {
    if (object_.is_null()) return absl::OkStatus();
    if (!object_.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, " must be an object {\"key\": value, ...}"));
    }
    for (const auto& [key, value] : object_.items()) {
      bool found = false;
      for (const char* k : known) found = found || key == k;
      if (!found) {
        return absl::InvalidArgumentError(absl::StrCat(where_, ": unknown key \"", key,
                                                       "\"; known: ", absl::StrJoin(known, ", ")));
      }
    }
    return absl::OkStatus();
  }

  bool Has(const char* key) const {
    return object_.is_object() && object_.contains(key) && !object_[key].is_null();
  }

  // An integer in [min, max]; JSON numbers with an integral value are accepted (3.0).
  template <typename T>
  [[nodiscard]] absl::Status Int(const char* key, int64_t min, int64_t max, T& out) const {
    if (!Has(key)) return absl::OkStatus();
    const base::Json& v = object_[key];
    bool ok = v.is_number_integer() ||
              (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
    if (ok) {
      const double d = v.get<double>();
      ok = d >= static_cast<double>(min) && d <= static_cast<double>(max);
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ".", key, " must be an integer in [",
                                                     min, ", ", max, "], got ", base::DumpJson(v)));
    }
    out = static_cast<T>(v.is_number_unsigned() ? static_cast<int64_t>(v.get<uint64_t>())
                                                : v.get<int64_t>());
    return absl::OkStatus();
  }

  [[nodiscard]] absl::Status Seed(uint64_t& out) const {
    if (!Has("seed")) return absl::OkStatus();
    const base::Json& v = object_["seed"];
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ".seed must be a non-negative integer, got ", base::DumpJson(v)));
    }
    out = v.get<uint64_t>();
    return absl::OkStatus();
  }

  [[nodiscard]] absl::Status Number(const char* key, double& out) const {
    if (!Has(key)) return absl::OkStatus();
    const base::Json& v = object_[key];
    if (!v.is_number() || !std::isfinite(v.get<double>())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ".", key, " must be a number, got ", base::DumpJson(v)));
    }
    out = v.get<double>();
    return absl::OkStatus();
  }

  [[nodiscard]] absl::Status Bool(const char* key, bool& out) const {
    if (!Has(key)) return absl::OkStatus();
    const base::Json& v = object_[key];
    if (!v.is_boolean()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ".", key, " must be true or false, got ", base::DumpJson(v)));
    }
    out = v.get<bool>();
    return absl::OkStatus();
  }

  [[nodiscard]] absl::Status String(const char* key, std::string& out) const {
    if (!Has(key)) return absl::OkStatus();
    const base::Json& v = object_[key];
    if (!v.is_string() || v.get_ref<const std::string&>().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ".", key, " must be a non-empty string, got ", base::DumpJson(v)));
    }
    out = v.get<std::string>();
    return absl::OkStatus();
  }

  const std::string& where() const { return where_; }

 private:
  const base::Json& object_;
  std::string where_;
};

// Whether WMLA's algoParams list names `name` (any case). Lets MakeAlgorithm tell an
// absent RandomSeed (use request.seed) from one the parser read.
bool WmlaHas(const base::Json& list, const char* name) {
  if (!list.is_array()) return false;
  for (const base::Json& entry : list) {
    if (entry.is_object() && entry.contains("name") && entry["name"].is_string() &&
        absl::EqualsIgnoreCase(entry["name"].get<std::string>(), name)) {
      return true;
    }
  }
  return false;
}

// algoParams of the algorithms whose only WMLA parameter is RandomSeed.
absl::StatusOr<uint64_t> WmlaSeedOnly(const base::Json& list, const char* algorithm,
                                      uint64_t seed) {
  for (size_t i = 0; i < list.size(); ++i) {
    const base::Json& entry = list[i];
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
        !entry.contains("value")) {
      return absl::InvalidArgumentError(
          absl::StrCat("algoParams[", i, "]: expected {\"name\": <string>, \"value\": <string>}"));
    }
    const std::string name = entry["name"].get<std::string>();
    if (!absl::EqualsIgnoreCase(name, "RandomSeed")) {
      return absl::InvalidArgumentError(absl::StrCat("algoParams: unknown parameter \"", name,
                                                     "\" for ", algorithm, "; known: RandomSeed"));
    }
    const base::Json& value = entry["value"];
    if (value.is_number_unsigned()) {
      seed = value.get<uint64_t>();
    } else if (!value.is_string() || !absl::SimpleAtoi(value.get<std::string>(), &seed)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "algoParams RandomSeed: expected a non-negative integer, got ", base::DumpJson(value)));
    }
  }
  return seed;
}

// The seed of an algorithm whose only parameter is the seed, in either form.
absl::StatusOr<uint64_t> SeedOnly(const AlgorithmRequest& request, const char* algorithm) {
  if (request.params.is_array()) {
    return WmlaSeedOnly(request.params, algorithm, request.seed);
  }
  NativeParams params(request.params, absl::StrCat(algorithm, " params"));
  KILN_RETURN_IF_ERROR(params.CheckKeys({"seed"}));
  uint64_t seed = request.seed;
  KILN_RETURN_IF_ERROR(params.Seed(seed));
  return seed;
}

absl::StatusOr<TpeOptions> NativeTpeOptions(const base::Json& object, uint64_t seed) {
  NativeParams params(object, "tpe params");
  KILN_RETURN_IF_ERROR(
      params.CheckKeys({"seed", "warm_up", "n_startup_trials", "ei_candidates", "good_ratio",
                        "good_max", "multivariate", "constant_liar"}));
  TpeOptions options;
  options.seed = seed;
  KILN_RETURN_IF_ERROR(params.Seed(options.seed));
  if (params.Has("warm_up") && params.Has("n_startup_trials")) {
    return absl::InvalidArgumentError(
        "tpe params: warm_up and n_startup_trials are the same option; give one");
  }
  KILN_RETURN_IF_ERROR(params.Int("warm_up", 0, 1'000'000'000, options.n_startup));
  KILN_RETURN_IF_ERROR(params.Int("n_startup_trials", 0, 1'000'000'000, options.n_startup));
  KILN_RETURN_IF_ERROR(params.Int("ei_candidates", 1, 1'000'000, options.n_ei_candidates));
  KILN_RETURN_IF_ERROR(params.Number("good_ratio", options.gamma));
  if (!(options.gamma > 0 && options.gamma <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tpe params.good_ratio must be in (0, 1], got ", options.gamma));
  }
  KILN_RETURN_IF_ERROR(params.Int("good_max", 1, 1'000'000'000, options.good_max));
  KILN_RETURN_IF_ERROR(params.Bool("multivariate", options.multivariate));
  KILN_RETURN_IF_ERROR(params.Bool("constant_liar", options.constant_liar));
  return options;
}

// WMLA's CubeSize default (wmla-api.md §1.5): 100 candidates per allowed trial, 10000 when
// the number of trials is unlimited; capped at what GpSampler accepts.
int DefaultCubeSize(int64_t max_trials) {
  constexpr int64_t kMaxCubeSize = 1'000'000;
  if (max_trials <= 0) return 10'000;
  return static_cast<int>(std::min(max_trials, kMaxCubeSize / 100) * 100);
}

absl::StatusOr<GpOptions> GpOptionsFor(const AlgorithmRequest& request) {
  GpOptions options;
  bool cube_given = false;
  if (request.params.is_array()) {
    KILN_ASSIGN_OR_RETURN(options, GpOptionsFromWmla(request.params));
    if (!WmlaHas(request.params, "RandomSeed")) options.seed = request.seed;
    cube_given = WmlaHas(request.params, "CubeSize");
  } else {
    NativeParams params(request.params, "gp params");
    KILN_RETURN_IF_ERROR(params.CheckKeys({"seed", "init_points", "cube_size", "noiseless"}));
    options.seed = request.seed;
    KILN_RETURN_IF_ERROR(params.Seed(options.seed));
    KILN_RETURN_IF_ERROR(params.Int("init_points", 1, 1'000'000, options.init_points));
    KILN_RETURN_IF_ERROR(params.Int("cube_size", 1, 1'000'000, options.cube_size));
    KILN_RETURN_IF_ERROR(params.Bool("noiseless", options.noiseless));
    cube_given = params.Has("cube_size");
  }
  if (!cube_given) options.cube_size = DefaultCubeSize(request.max_trials);
  return options;
}

// cmaes: RandomSeed only in the WMLA form (not a WMLA algorithm); natively the fields of
// CmaEsOptions.
absl::StatusOr<CmaEsOptions> CmaEsOptionsFor(const AlgorithmRequest& request) {
  CmaEsOptions options;
  options.seed = request.seed;
  if (request.params.is_array()) {
    KILN_ASSIGN_OR_RETURN(options.seed, WmlaSeedOnly(request.params, "cmaes", request.seed));
    return options;
  }
  NativeParams params(request.params, "cmaes params");
  KILN_RETURN_IF_ERROR(params.CheckKeys(
      {"seed", "population_size", "sigma0", "restarts", "surrogate", "min_kendall_tau"}));
  KILN_RETURN_IF_ERROR(params.Seed(options.seed));
  KILN_RETURN_IF_ERROR(params.Int("population_size", 2, 1'000'000, options.population_size));
  KILN_RETURN_IF_ERROR(params.Number("sigma0", options.sigma0));
  KILN_RETURN_IF_ERROR(params.Bool("restarts", options.restarts));
  KILN_RETURN_IF_ERROR(params.Bool("surrogate", options.surrogate));
  KILN_RETURN_IF_ERROR(params.Number("min_kendall_tau", options.min_kendall_tau));
  return options;
}

absl::StatusOr<HyperbandOptions> NativeHyperbandOptions(const AlgorithmRequest& request) {
  NativeParams params(request.params, "hyperband params");
  KILN_RETURN_IF_ERROR(
      params.CheckKeys({"seed", "eta", "resource_name", "max_resource", "min_resource", "cycles"}));
  HyperbandOptions options;
  options.seed = request.seed;
  if (request.hyperband_eta.has_value()) options.eta = *request.hyperband_eta;
  KILN_RETURN_IF_ERROR(params.Seed(options.seed));
  KILN_RETURN_IF_ERROR(params.Number("eta", options.eta));
  KILN_RETURN_IF_ERROR(params.String("resource_name", options.resource_name));
  if (options.resource_name.empty()) {
    return absl::InvalidArgumentError(
        "hyperband params.resource_name is required: the config.json key each trial reads its "
        "budget from, e.g. \"resource_name\": \"epochs\"");
  }
  if (!params.Has("max_resource")) {
    return absl::InvalidArgumentError(
        "hyperband params.max_resource is required: the largest budget one trial may get, "
        "e.g. \"max_resource\": 81");
  }
  KILN_RETURN_IF_ERROR(params.Int("max_resource", 1, int64_t{1} << 40, options.max_resource));
  KILN_RETURN_IF_ERROR(params.Int("min_resource", 1, int64_t{1} << 40, options.min_resource));
  if (params.Has("cycles")) {
    int64_t cycles = 0;
    KILN_RETURN_IF_ERROR(params.Int("cycles", 0, 1 << 20, cycles));
    options.cycles = static_cast<int>(cycles);
  }
  return options;
}

// ASHA's options, shared by the asha algorithm and an asha pruner; `params` has been
// checked for unknown keys by the caller.
absl::StatusOr<std::unique_ptr<Pruner>> MakeAshaPruner(const NativeParams& params) {
  AshaOptions options;
  KILN_RETURN_IF_ERROR(params.Number("reduction_factor", options.reduction_factor));
  KILN_RETURN_IF_ERROR(params.Int("min_resource", 1, int64_t{1} << 40, options.min_resource));
  KILN_RETURN_IF_ERROR(params.Int("max_resource", 0, int64_t{1} << 40, options.max_resource));
  KILN_RETURN_IF_ERROR(
      params.Int("min_early_stopping_rate", 0, 1000, options.min_early_stopping_rate));
  absl::StatusOr<std::unique_ptr<AshaPruner>> pruner = AshaPruner::Create(options);
  if (!pruner.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(params.where(), ": ", pruner.status().message()));
  }
  return std::unique_ptr<Pruner>(std::move(*pruner));
}

absl::Status MakeAsha(const AlgorithmRequest& request, const SearchSpace& space,
                      Algorithm& algorithm) {
  if (request.params.is_array()) {
    return absl::InvalidArgumentError(
        "asha is a Kiln-native algorithm: give its params as an object, e.g. "
        "{\"reduction_factor\": 3, \"min_resource\": 1, \"max_resource\": 27}, not a WMLA "
        "algoParams list");
  }
  NativeParams params(request.params, "asha params");
  KILN_RETURN_IF_ERROR(params.CheckKeys({"seed", "reduction_factor", "min_resource", "max_resource",
                                         "min_early_stopping_rate", "sampler"}));
  uint64_t seed = request.seed;
  KILN_RETURN_IF_ERROR(params.Seed(seed));
  std::string sampler = "random";
  KILN_RETURN_IF_ERROR(params.String("sampler", sampler));
  sampler = absl::AsciiStrToLower(sampler);
  if (sampler == "random") {
    algorithm.sampler = std::make_unique<RandomSampler>(space, seed);
  } else if (sampler == "tpe") {
    TpeOptions options;
    options.seed = seed;
    KILN_ASSIGN_OR_RETURN(algorithm.sampler, TpeSampler::Create(space, options));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("asha params.sampler must be \"random\" or \"tpe\", got \"", sampler, "\""));
  }
  KILN_ASSIGN_OR_RETURN(algorithm.pruner, MakeAshaPruner(params));
  return absl::OkStatus();
}

// Native `pruner`: {"name": "median" | "asha", ...its options}.
absl::Status AddPruner(const AlgorithmRequest& request, Kind kind, Algorithm& algorithm) {
  const base::Json& spec = request.pruner;
  if (spec.is_null()) return absl::OkStatus();
  if (kind == Kind::kAsha) {
    return absl::InvalidArgumentError(
        "pruner: the asha algorithm already stops trials early (ASHA); drop `pruner`, or pair "
        "the pruner with another sampler (e.g. tpe)");
  }
  if (!spec.is_object() || !spec.contains("name") || !spec["name"].is_string()) {
    return absl::InvalidArgumentError(
        "pruner must be an object {\"name\": \"median\" | \"asha\", ...options}");
  }
  const std::string name = absl::AsciiStrToLower(spec["name"].get<std::string>());
  NativeParams params(spec, "pruner");
  if (name == "median") {
    KILN_RETURN_IF_ERROR(params.CheckKeys(
        {"name", "n_startup_trials", "n_warmup_steps", "interval_steps", "min_trials_at_step"}));
    MedianPrunerOptions options;
    constexpr int64_t kMax = int64_t{1} << 40;
    KILN_RETURN_IF_ERROR(params.Int("n_startup_trials", 0, kMax, options.n_startup_trials));
    KILN_RETURN_IF_ERROR(params.Int("n_warmup_steps", 0, kMax, options.n_warmup_steps));
    KILN_RETURN_IF_ERROR(params.Int("interval_steps", 1, kMax, options.interval_steps));
    KILN_RETURN_IF_ERROR(params.Int("min_trials_at_step", 0, kMax, options.min_trials_at_step));
    KILN_ASSIGN_OR_RETURN(algorithm.pruner, MedianPruner::Create(options));
    return absl::OkStatus();
  }
  if (name == "asha") {
    KILN_RETURN_IF_ERROR(params.CheckKeys(
        {"name", "reduction_factor", "min_resource", "max_resource", "min_early_stopping_rate"}));
    KILN_ASSIGN_OR_RETURN(algorithm.pruner, MakeAshaPruner(params));
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("pruner.name \"", spec["name"].get<std::string>(),
                                                 "\" is unknown; use \"median\" or \"asha\""));
}

}  // namespace

absl::StatusOr<Algorithm> MakeAlgorithm(const AlgorithmRequest& request, const SearchSpace& space) {
  KILN_ASSIGN_OR_RETURN(Kind kind, KindOf(request.name));
  if (!request.params.is_null() && !request.params.is_array() && !request.params.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "algorithm params must be WMLA's list [{\"name\": ..., \"value\": ...}] or an object "
        "{\"key\": value}, got ",
        base::DumpJson(request.params)));
  }
  const bool wmla = request.params.is_array();
  Algorithm algorithm;
  switch (kind) {
    case Kind::kRandom: {
      KILN_ASSIGN_OR_RETURN(uint64_t seed, SeedOnly(request, "random"));
      algorithm.sampler = std::make_unique<RandomSampler>(space, seed);
      break;
    }
    case Kind::kGrid: {
      KILN_ASSIGN_OR_RETURN(uint64_t seed, SeedOnly(request, "grid"));
      KILN_ASSIGN_OR_RETURN(algorithm.sampler, GridSampler::Create(space, seed));
      break;
    }
    case Kind::kExperimentGrid: {
      // The list fixes the order, so a seed changes nothing; it is accepted because WMLA
      // clients send RandomSeed with every algorithm.
      KILN_RETURN_IF_ERROR(SeedOnly(request, "ExperimentGridSearch").status());
      if (!request.wmla_experiments.is_array() || request.wmla_experiments.empty()) {
        return absl::InvalidArgumentError(
            "ExperimentGridSearch needs `experiments`: a non-empty list of {\"id\": 1, "
            "\"hyperParams\": [{\"name\": \"lr\", \"dataType\": \"DOUBLE\", \"fixedVal\": "
            "\"0.1\"}, ...]}, one per configuration to run");
      }
      KILN_ASSIGN_OR_RETURN(std::unique_ptr<ExperimentGridSampler> sampler,
                            ExperimentGridSampler::Create(request.wmla_experiments));
      algorithm.experiment_grid = sampler.get();
      algorithm.sampler = std::move(sampler);
      break;
    }
    case Kind::kTpe: {
      TpeOptions options;
      if (wmla) {
        KILN_ASSIGN_OR_RETURN(options, TpeOptionsFromWmla(request.params));
        if (!WmlaHas(request.params, "RandomSeed")) options.seed = request.seed;
      } else {
        KILN_ASSIGN_OR_RETURN(options, NativeTpeOptions(request.params, request.seed));
      }
      KILN_ASSIGN_OR_RETURN(algorithm.sampler, TpeSampler::Create(space, options));
      break;
    }
    case Kind::kGp: {
      KILN_ASSIGN_OR_RETURN(GpOptions options, GpOptionsFor(request));
      KILN_ASSIGN_OR_RETURN(algorithm.sampler, GpSampler::Create(space, options));
      break;
    }
    case Kind::kCmaEs: {
      KILN_ASSIGN_OR_RETURN(CmaEsOptions options, CmaEsOptionsFor(request));
      absl::StatusOr<std::unique_ptr<CmaEsSampler>> sampler = CmaEsSampler::Create(space, options);
      if (!sampler.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("cmaes params: ", sampler.status().message()));
      }
      algorithm.sampler = std::move(*sampler);
      break;
    }
    case Kind::kHyperband: {
      HyperbandOptions options;
      if (request.params.is_null()) {
        // Neither form given, so the message names both.
        return absl::InvalidArgumentError(
            "Hyperband needs the resource each trial is budgeted in: WMLA algoParams "
            "[{\"name\": \"ResourceName\", \"value\": \"epochs\"}, {\"name\": "
            "\"ResourceValue\", \"value\": \"81\"}], or native params {\"resource_name\": "
            "\"epochs\", \"max_resource\": 81}");
      }
      if (wmla) {
        KILN_ASSIGN_OR_RETURN(
            options, HyperbandOptionsFromWmla(request.params, request.hyperband_eta, request.seed));
      } else {
        KILN_ASSIGN_OR_RETURN(options, NativeHyperbandOptions(request));
      }
      // With a trial budget, run the brackets again until it is spent (one pass of R = 9,
      // eta = 3 is only 22 trials) unless the user chose the number of passes; unlimited
      // trials keep the paper's single pass, so the search still ends by itself.
      bool cycles_given = !wmla && request.params.is_object() && request.params.contains("cycles");
      if (!cycles_given && request.max_trials > 0) options.cycles = 0;
      // HyperbandSampler and its configuration sampler borrow the space: both point at the
      // Algorithm's own copy, which moves with it (it is behind a unique_ptr).
      algorithm.space = std::make_unique<SearchSpace>(space);
      auto config_sampler = std::make_unique<RandomSampler>(*algorithm.space, options.seed);
      KILN_ASSIGN_OR_RETURN(algorithm.sampler, HyperbandSampler::Create(*algorithm.space, options,
                                                                        config_sampler.get()));
      algorithm.owned.push_back(std::move(config_sampler));
      algorithm.resource_name = options.resource_name;
      break;
    }
    case Kind::kAsha:
      KILN_RETURN_IF_ERROR(MakeAsha(request, space, algorithm));
      break;
  }
  KILN_RETURN_IF_ERROR(AddPruner(request, kind, algorithm));
  return algorithm;
}

const std::vector<AlgorithmInfo>& BuiltInAlgorithms() {
  static const std::vector<AlgorithmInfo>* const kAlgorithms = new std::vector<AlgorithmInfo>{
      {"Random",
       "random",
       {"RandomSeed"},
       {"seed"},
       "Uniform random search; fully parallel.",
       false},
      {"Tpe",
       "tpe",
       {"RandomSeed", "WarmUp", "EICandidate", "GoodRatio", "GoodMax"},
       {"seed", "warm_up", "n_startup_trials", "ei_candidates", "good_ratio", "good_max",
        "multivariate", "constant_liar"},
       "Tree-structured Parzen Estimator; parallel through a constant liar.",
       false},
      {"Bayesian",
       "gp",
       {"RandomSeed", "InitPoints", "CubeSize", "Noiseless"},
       {"seed", "init_points", "cube_size", "noiseless"},
       "Gaussian-process Bayesian optimisation (Matern 5/2, expected improvement); parallel "
       "through a constant liar.",
       false},
      {"Hyperband",
       "hyperband",
       {"RandomSeed", "eta", "ResourceName", "ResourceValue"},
       {"seed", "eta", "resource_name", "max_resource", "min_resource", "cycles"},
       "Hyperband: brackets of successive halving over a budget (e.g. epochs) passed in "
       "config.json; keeps every slot busy; repeats its brackets until max trials.",
       false},
      {"ExperimentGridSearch",
       "experiment_grid",
       {"RandomSeed"},
       {"seed"},
       "Runs each configuration of the request's `experiments` list once, in order.",
       false},
      {"grid",
       "grid",
       {"RandomSeed"},
       {"seed"},
       "Exhaustive search of a finite space (every parameter discrete or stepped), in a "
       "seeded shuffled order.",
       true},
      {"cmaes",
       "cmaes",
       {"RandomSeed"},
       {"seed", "population_size", "sigma0", "restarts", "surrogate", "min_kendall_tau"},
       "CMA-ES with IPOP restarts and a linear-quadratic surrogate (lq-CMA-ES) for continuous "
       "spaces; parallel (hands out the rest of a generation).",
       true},
      {"asha",
       "asha",
       {},
       {"seed", "reduction_factor", "min_resource", "max_resource", "min_early_stopping_rate",
        "sampler"},
       "Asynchronous successive halving: random (or tpe) configurations, stopped early at "
       "rungs of the steps they report.",
       true},
  };
  return *kAlgorithms;
}

}  // namespace kiln::hpo
