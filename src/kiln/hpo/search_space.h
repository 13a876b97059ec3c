// search_space.h
//
// The hyperparameter search space of an experiment: typed parameters (uniform and
// log-uniform doubles, ints with a step, categoricals of strings, ints or doubles, WMLA's
// `step` grids and `power` ranges, fixed values), optionally conditional on another
// parameter's value. Samplers work on a numeric *internal* encoding of each parameter;
// `ToConfig` turns an internal point into the typed `config.json` a trial receives.
//
// Internal encoding (what samplers see and return), per kind:
//   kDouble:      x in [low, high]; with `log`, samplers should sample log(x) uniformly
//                 (see IsLog / ToUnit / FromUnit helpers).
//   kInt:         the integer value in [low, high] (stored as double), multiple of `step`
//                 from low.
//   kPower:       the exponent e in [low, high]; the value is power^e. With step > 0 the
//                 exponent is on the grid low, low+step, ...
//   kCategorical: the index into `choices` (0-based, as double).
//   kFixed:       always 0; the value is choices[0].
// A kDouble with step > 0 is a grid: x = low + k*step.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"

namespace kiln::hpo {

enum class ParamKind { kDouble, kInt, kPower, kCategorical, kFixed };

struct Condition {
  std::string parent;              // another parameter's name
  std::vector<base::Json> values;  // active when the parent's external value is one of these
};

struct ParamSpec {
  std::string name;
  ParamKind kind = ParamKind::kDouble;
  double low = 0;
  double high = 0;
  bool log = false;                 // kDouble / kInt: log-uniform
  double step = 0;                  // > 0: values on the grid low + k*step (kDouble, kInt, kPower)
  double power = 0;                 // kPower: the base
  bool int_value = false;           // kPower: emit power^e as an integer when it is one (WMLA INT)
  std::vector<base::Json> choices;  // kCategorical (strings, ints or doubles) / kFixed (one value)
  std::optional<Condition> condition;

  // Number of distinct values when finite (grid, int, categorical, fixed), else nullopt.
  std::optional<int64_t> Cardinality() const;
  // The internal value at grid index `i` (0-based) for finite parameters.
  double GridValue(int64_t i) const;
};

// A point in internal encoding: only active parameters are present.
using Point = std::map<std::string, double>;

class SearchSpace {
 public:
  // Validates and builds a space. InvalidArgument naming the parameter and the fix for:
  // min > max, empty discrete list, unknown kind, power <= 0, step <= 0, a step that
  // yields no value, log with low <= 0, duplicate names, a condition on an unknown or
  // later-declared parameter.
  static absl::StatusOr<SearchSpace> Create(std::vector<ParamSpec> params);

  // WMLA `hyperParams` (wmla-api.md §1.4): Range/Discrete, DOUBLE/INT/STR (any case),
  // minDbVal/maxDbVal, minIntVal/maxIntVal, discreteDbVal/discreteIntVal/discreateStrVal
  // (sic), step and power given as strings or numbers.
  static absl::StatusOr<SearchSpace> FromWmla(const base::Json& hyper_params);
  // Kiln's native form (docs, and YAML experiment files converted to JSON):
  //   {"lr": {"type": "double", "low": 1e-4, "high": 0.1, "log": true},
  //    "width": {"type": "int", "low": 32, "high": 512, "step": 32},
  //    "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
  //    "momentum": {"type": "double", "low": 0.5, "high": 0.99, "condition": {"opt": ["sgd"]}},
  //    "epochs": 3}                                  // a bare value is fixed
  static absl::StatusOr<SearchSpace> FromNative(const base::Json& space);

  const std::vector<ParamSpec>& params() const { return params_; }
  const ParamSpec* Find(const std::string& name) const;

  // Whether `param` is active given the other values already in `point` (parents are
  // declared before their children, so a sampler can fill a point in order).
  bool IsActive(const ParamSpec& param, const Point& point) const;

  // Uniform random internal value for `param` (log-uniform for log params, grid-aligned
  // for stepped ones). Deterministic for a given generator state.
  double SampleUniform(const ParamSpec& param, std::mt19937_64& rng) const;
  // A full random point (active parameters only).
  Point SampleUniform(std::mt19937_64& rng) const;

  // Maps an internal value to [0, 1] and back (log-aware; categoricals map index to the
  // centre of its cell). FromUnit snaps to the parameter's grid. For samplers that model
  // a unit cube (GP, TPE's kernels).
  double ToUnit(const ParamSpec& param, double internal) const;
  double FromUnit(const ParamSpec& param, double unit) const;

  // The typed config.json object of a point: doubles as numbers, ints as integers, power
  // values computed, categoricals as their original JSON value, fixed values as given.
  base::Json ToConfig(const Point& point) const;

  // The total number of distinct points when every parameter is finite, else nullopt:
  // the product of the parameters' cardinalities (with conditional parameters an upper
  // bound, as inactive combinations are counted), saturating at INT64_MAX.
  std::optional<int64_t> GridSize() const;

 private:
  std::vector<ParamSpec> params_;
};

// A finite number given as a JSON number or as a string that is exactly one ("0.002", as
// WMLA sends its step, power and fixedVal); nullopt for anything else, including a
// string with leading or trailing space.
std::optional<double> NumberOrNumericString(const base::Json& v);

}  // namespace kiln::hpo
