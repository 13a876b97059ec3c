// search_space.cc
//
// Validation, parsing (WMLA and native forms) and encoding helpers for `SearchSpace`.
// Every JSON access checks the type first: nlohmann throws on wrong-type access, and this
// code parses requests from outside the process.
#include "kiln/hpo/search_space.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kiln/base/status.h"

namespace kiln::hpo {
namespace {

// A grid larger than this is a mistake (a step far too small for its range), and
// counting it in int64 would overflow; samplers never enumerate anything near it.
constexpr double kMaxCardinality = 1e12;
// Integers stored as doubles stay exact below 2^53.
constexpr double kMaxExactInt = 9007199254740992.0;

std::string Num(double v) { return absl::StrFormat("%g", v); }

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

const base::Json* Field(const base::Json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

bool IsIntegral(double v) { return std::isfinite(v) && std::floor(v) == v; }

// The step a finite numeric parameter moves by: ints move by 1 unless told otherwise.
double EffectiveStep(const ParamSpec& p) {
  if (p.step > 0) return p.step;
  return p.kind == ParamKind::kInt ? 1.0 : 0.0;
}

// Number of grid values low, low+step, ... <= high. The small tolerance keeps a range
// such as [0, 1] with step 0.1 at 11 values despite 1/0.1 rounding below 10.
double GridCount(double low, double high, double step) {
  const double q = (high - low) / step;
  double k = std::floor(q);
  if (q - k > 1 - 1e-9) k += 1;  // 0.99999999999 steps is one step, not none
  return k + 1;
}

// Splitmix-style uniform double in [0, 1) from the top 53 bits: the same stream on every
// standard library, unlike std::uniform_real_distribution.
double Uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

int64_t UniformIndex(std::mt19937_64& rng, int64_t n) {
  auto i = static_cast<int64_t>(Uniform01(rng) * static_cast<double>(n));
  return std::clamp<int64_t>(i, 0, n - 1);
}

// Removes the floating-point noise of low + k*step (0.1 + 3*0.002 = 0.10600000000000001)
// so config.json shows the value the user meant.
double CleanGridValue(double v) {
  if (v == 0 || !std::isfinite(v)) return v;
  return std::strtod(absl::StrFormat("%.12g", v).c_str(), nullptr);
}

absl::Status Invalid(const std::string& name, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("hyperparameter '", name, "': ", what));
}

absl::Status ValidateNumeric(const ParamSpec& p) {
  const std::string& n = p.name;
  if (!std::isfinite(p.low) || !std::isfinite(p.high)) {
    return Invalid(n, "min and max must be finite numbers");
  }
  if (p.low > p.high) {
    return Invalid(
        n, absl::StrCat("min ", Num(p.low), " is greater than max ", Num(p.high), "; swap them"));
  }
  if (std::isnan(p.step) || p.step < 0 || std::isinf(p.step)) {
    return Invalid(n, absl::StrCat("step ", Num(p.step),
                                   " must be a positive number; omit it for a continuous range"));
  }
  if (p.kind == ParamKind::kInt) {
    if (!IsIntegral(p.low) || !IsIntegral(p.high) || std::fabs(p.low) > kMaxExactInt ||
        std::fabs(p.high) > kMaxExactInt) {
      return Invalid(n, absl::StrCat("an int range needs integer min and max (got ", Num(p.low),
                                     ", ", Num(p.high), "); use a double range instead"));
    }
    if (p.step > 0 && !IsIntegral(p.step)) {
      return Invalid(n, absl::StrCat("an int step must be a whole number (got ", Num(p.step),
                                     "); use a double range for fractional steps"));
    }
    if (std::ceil(p.low) > std::floor(p.high)) {
      return Invalid(n, "the range holds no integer; widen it");
    }
  }
  if (p.log) {
    if (p.kind == ParamKind::kPower) {
      return Invalid(n, "log does not apply to a power range (its exponent is already a log)");
    }
    if (p.low <= 0) {
      return Invalid(n, absl::StrCat("a log range needs min > 0 (got ", Num(p.low),
                                     "); raise min or drop log"));
    }
    if (p.step > 0 && !(p.kind == ParamKind::kInt && p.step == 1)) {
      return Invalid(n, "log and step cannot be combined; drop one of them");
    }
  }
  const double step = EffectiveStep(p);
  if (step > 0) {
    // A step wider than the whole range would try only `min`: the user almost certainly
    // meant a different step or range.
    if (p.high > p.low && step > p.high - p.low) {
      return Invalid(
          n, absl::StrCat("step ", Num(step), " yields no value in (", Num(p.low), ", ",
                          Num(p.high), "] beyond min; use a step <= ", Num(p.high - p.low)));
    }
    // Only an explicit step can make the count overflow int64: int bounds are below 2^53.
    if (p.step > 0 && GridCount(p.low, p.high, step) > kMaxCardinality) {
      return Invalid(n, absl::StrCat("step ", Num(step), " splits [", Num(p.low), ", ", Num(p.high),
                                     "] into more than 1e12 values; use a larger "
                                     "step or omit it for a continuous range"));
    }
  }
  if (p.kind == ParamKind::kPower) {
    if (!std::isfinite(p.power) || p.power <= 0) {
      return Invalid(n, absl::StrCat("power ", Num(p.power),
                                     " must be a positive number (the value is power^x)"));
    }
    if (!std::isfinite(std::pow(p.power, p.low)) || !std::isfinite(std::pow(p.power, p.high))) {
      return Invalid(n, absl::StrCat("power^x overflows for x in [", Num(p.low), ", ", Num(p.high),
                                     "]; narrow the exponent range"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateParam(const ParamSpec& p) {
  if (p.name.empty()) return absl::InvalidArgumentError("a hyperparameter has an empty name");
  switch (p.kind) {
    case ParamKind::kDouble:
    case ParamKind::kInt:
    case ParamKind::kPower:
      return ValidateNumeric(p);
    case ParamKind::kCategorical:
      if (p.choices.empty()) {
        return Invalid(p.name, "the list of discrete values is empty; give at least one value");
      }
      for (const auto& c : p.choices) {
        if (!c.is_string() && !c.is_number() && !c.is_boolean()) {
          return Invalid(p.name, "discrete values must be strings, numbers or booleans");
        }
        if (c.is_number_float() && !std::isfinite(c.get<double>())) {
          return Invalid(p.name, "discrete values must be finite numbers");
        }
      }
      return absl::OkStatus();
    case ParamKind::kFixed:
      if (p.choices.size() != 1) {
        return Invalid(p.name, "a fixed parameter needs exactly one value");
      }
      return absl::OkStatus();
  }
  return Invalid(p.name, "unknown kind; use double, int, power, categorical or fixed");
}

// --- JSON helpers shared by both formats -------------------------------------------------

// A number given as a JSON number or a numeric string ("0.002", as WMLA sends).
absl::StatusOr<double> NumberOf(const base::Json& v, const std::string& name,
                                const std::string& field) {
  if (std::optional<double> d = NumberOrNumericString(v)) return *d;
  return Invalid(name, absl::StrCat(field, " must be a finite number or numeric string (got ",
                                    base::DumpJson(v).substr(0, 64), ")"));
}

// Optional numeric field; an empty string counts as absent (WMLA clients send "step": "").
absl::StatusOr<std::optional<double>> OptionalNumber(const base::Json& obj, const char* key,
                                                     const std::string& name) {
  const base::Json* v = Field(obj, key);
  if (v == nullptr) return std::optional<double>();
  if (v->is_string() && v->get_ref<const std::string&>().empty()) return std::optional<double>();
  KILN_ASSIGN_OR_RETURN(double d, NumberOf(*v, name, key));
  return std::optional<double>(d);
}

absl::StatusOr<double> RequiredNumber(const base::Json& obj, const char* key,
                                      const std::string& name, const std::string& hint) {
  KILN_ASSIGN_OR_RETURN(std::optional<double> d, OptionalNumber(obj, key, name));
  if (!d) return Invalid(name, absl::StrCat("missing ", key, "; ", hint));
  return *d;
}

absl::Status SetStep(ParamSpec& p, std::optional<double> step) {
  if (!step) return absl::OkStatus();
  if (*step <= 0) {
    return Invalid(
        p.name, absl::StrCat("step ", Num(*step), " must be > 0; omit it for a continuous range"));
  }
  p.step = *step;
  return absl::OkStatus();
}

absl::StatusOr<ParamSpec> WmlaParam(const base::Json& h, size_t index) {
  ParamSpec p;
  if (!h.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hyperParams[", index, "] must be an object with name, type and dataType"));
  }
  const base::Json* name = Field(h, "name");
  if (name == nullptr || !name->is_string() || name->get_ref<const std::string&>().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hyperParams[", index, "] needs a non-empty string \"name\""));
  }
  p.name = name->get<std::string>();
  const base::Json* type_j = Field(h, "type");
  const base::Json* dtype_j = Field(h, "dataType");
  if (type_j == nullptr || !type_j->is_string()) {
    return Invalid(p.name, "missing \"type\"; use \"Range\" or \"Discrete\"");
  }
  if (dtype_j == nullptr || !dtype_j->is_string()) {
    return Invalid(p.name, "missing \"dataType\"; use \"DOUBLE\", \"INT\" or \"STR\"");
  }
  const std::string type = Lower(type_j->get<std::string>());
  const std::string dtype = Lower(dtype_j->get<std::string>());
  if (dtype != "double" && dtype != "int" && dtype != "str") {
    return Invalid(p.name, absl::StrCat("unknown dataType \"", dtype_j->get<std::string>(),
                                        "\"; use \"DOUBLE\", \"INT\" or \"STR\""));
  }
  if (type == "range") {
    if (dtype == "str") {
      return Invalid(p.name,
                     "a Range needs dataType DOUBLE or INT; for strings use type \"Discrete\" "
                     "with discreateStrVal");
    }
    const bool is_int = dtype == "int";
    const char* min_key = is_int ? "minIntVal" : "minDbVal";
    const char* max_key = is_int ? "maxIntVal" : "maxDbVal";
    const std::string hint =
        absl::StrCat("a ", is_int ? "INT" : "DOUBLE", " Range needs ", min_key, " and ", max_key);
    KILN_ASSIGN_OR_RETURN(p.low, RequiredNumber(h, min_key, p.name, hint));
    KILN_ASSIGN_OR_RETURN(p.high, RequiredNumber(h, max_key, p.name, hint));
    KILN_ASSIGN_OR_RETURN(std::optional<double> step, OptionalNumber(h, "step", p.name));
    KILN_ASSIGN_OR_RETURN(std::optional<double> power, OptionalNumber(h, "power", p.name));
    if (power) {
      p.kind = ParamKind::kPower;
      if (*power <= 0) {
        return Invalid(p.name,
                       absl::StrCat("power ", Num(*power), " must be > 0 (the value is power^x)"));
      }
      p.power = *power;
      if (is_int) {
        // INT with power: integer exponents, and an integer value when power^e is one.
        if (!step) step = 1;
        p.int_value = true;
      }
    } else {
      p.kind = is_int ? ParamKind::kInt : ParamKind::kDouble;
    }
    KILN_RETURN_IF_ERROR(SetStep(p, step));
    return p;
  }
  if (type == "discrete") {
    p.kind = ParamKind::kCategorical;
    const char* key = dtype == "double" ? "discreteDbVal"
                      : dtype == "int"  ? "discreteIntVal"
                                        : "discreateStrVal";
    const base::Json* list = Field(h, key);
    if (list == nullptr && dtype == "str") list = Field(h, "discreteStrVal");
    if (list == nullptr || !list->is_array() || list->empty()) {
      return Invalid(p.name, absl::StrCat("a ", Lower(dtype),
                                          " Discrete parameter needs a "
                                          "non-empty list \"",
                                          key, "\""));
    }
    for (const auto& v : *list) {
      if (dtype == "str") {
        if (!v.is_string()) {
          return Invalid(p.name, absl::StrCat(key, " must hold strings"));
        }
        p.choices.push_back(v);
        continue;
      }
      KILN_ASSIGN_OR_RETURN(double d, NumberOf(v, p.name, key));
      if (dtype == "int") {
        if (!IsIntegral(d) || std::fabs(d) > kMaxExactInt) {
          return Invalid(p.name, absl::StrCat(key, " must hold integers (got ", Num(d), ")"));
        }
        p.choices.emplace_back(static_cast<int64_t>(d));
      } else {
        p.choices.emplace_back(d);
      }
    }
    return p;
  }
  if (type == "fix" || type == "fixed") {
    // Responses echo grid experiments' parameters as "fix"; accept them back.
    p.kind = ParamKind::kFixed;
    const base::Json* v = Field(h, "fixedVal");
    if (v == nullptr) return Invalid(p.name, "a fix parameter needs \"fixedVal\"");
    if (dtype == "str") {
      if (!v->is_string()) return Invalid(p.name, "fixedVal must be a string");
      p.choices.push_back(*v);
    } else {
      KILN_ASSIGN_OR_RETURN(double d, NumberOf(*v, p.name, "fixedVal"));
      if (dtype == "int") {
        if (!IsIntegral(d) || std::fabs(d) > kMaxExactInt) {
          return Invalid(p.name, "fixedVal must be an integer for dataType INT");
        }
        p.choices.emplace_back(static_cast<int64_t>(d));
      } else {
        p.choices.emplace_back(d);
      }
    }
    return p;
  }
  return Invalid(p.name, absl::StrCat("unknown type \"", type_j->get<std::string>(),
                                      "\"; use \"Range\" or \"Discrete\""));
}

absl::StatusOr<ParamSpec> NativeParam(const std::string& name, const base::Json& v) {
  ParamSpec p;
  p.name = name;
  if (v.is_string() || v.is_number() || v.is_boolean()) {
    p.kind = ParamKind::kFixed;
    p.choices.push_back(v);
    return p;
  }
  if (v.is_array()) {
    return Invalid(name,
                   "a bare list is ambiguous; write {\"type\": \"categorical\", \"choices\": "
                   "[...]}");
  }
  if (!v.is_object()) {
    return Invalid(name, "must be an object with \"type\", or a bare fixed value");
  }
  const base::Json* type_j = Field(v, "type");
  if (type_j == nullptr || !type_j->is_string()) {
    return Invalid(name, "missing \"type\"; use double, int, power, categorical or fixed");
  }
  const std::string type = Lower(type_j->get<std::string>());
  std::set<std::string> allowed = {"type", "condition"};
  if (type == "double" || type == "float" || type == "int" || type == "power") {
    p.kind = type == "int"     ? ParamKind::kInt
             : type == "power" ? ParamKind::kPower
                               : ParamKind::kDouble;
    allowed.insert({"low", "high", "step"});
    if (p.kind == ParamKind::kPower) {
      allowed.insert("base");
    } else {
      allowed.insert("log");
    }
    const std::string hint = "give \"low\" and \"high\"";
    KILN_ASSIGN_OR_RETURN(p.low, RequiredNumber(v, "low", name, hint));
    KILN_ASSIGN_OR_RETURN(p.high, RequiredNumber(v, "high", name, hint));
    KILN_ASSIGN_OR_RETURN(std::optional<double> step, OptionalNumber(v, "step", name));
    KILN_RETURN_IF_ERROR(SetStep(p, step));
    if (const base::Json* log = Field(v, "log"); log != nullptr && allowed.count("log")) {
      if (!log->is_boolean()) return Invalid(name, "\"log\" must be true or false");
      p.log = log->get<bool>();
    }
    if (p.kind == ParamKind::kPower) {
      KILN_ASSIGN_OR_RETURN(p.power,
                            RequiredNumber(v, "base", name, "a power parameter needs \"base\""));
    }
  } else if (type == "categorical" || type == "choice") {
    p.kind = ParamKind::kCategorical;
    allowed.insert("choices");
    const base::Json* choices = Field(v, "choices");
    if (choices == nullptr || !choices->is_array()) {
      return Invalid(name, "a categorical parameter needs a list \"choices\"");
    }
    for (const auto& c : *choices) p.choices.push_back(c);
  } else if (type == "fixed") {
    p.kind = ParamKind::kFixed;
    allowed.insert("value");
    const base::Json* value = Field(v, "value");
    if (value == nullptr) return Invalid(name, "a fixed parameter needs \"value\"");
    p.choices.push_back(*value);
  } else {
    return Invalid(name, absl::StrCat("unknown type \"", type_j->get<std::string>(),
                                      "\"; use double, int, power, categorical or fixed"));
  }
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!allowed.count(it.key())) {
      return Invalid(name, absl::StrCat("unknown field \"", it.key(), "\" for type ", type));
    }
  }
  if (const base::Json* cond = Field(v, "condition")) {
    if (!cond->is_object() || cond->size() != 1) {
      return Invalid(name, "\"condition\" must be {\"<parent>\": [values...]}");
    }
    Condition c;
    c.parent = cond->begin().key();
    const base::Json& values = cond->begin().value();
    if (values.is_array()) {
      for (const auto& x : values) c.values.push_back(x);
    } else {
      c.values.push_back(values);
    }
    p.condition = std::move(c);
  }
  return p;
}

// The external (config.json) value of `internal` for `p`.
base::Json External(const ParamSpec& p, double internal) {
  switch (p.kind) {
    case ParamKind::kDouble:
      if (p.step > 0) return CleanGridValue(internal);
      return internal;
    case ParamKind::kInt:
      return static_cast<int64_t>(std::llround(internal));
    case ParamKind::kPower: {
      const double e = p.step > 0 ? CleanGridValue(internal) : internal;
      const double v = std::pow(p.power, e);
      if (p.int_value && IsIntegral(std::round(v)) && std::fabs(v - std::round(v)) < 1e-9 &&
          std::fabs(v) < kMaxExactInt) {
        return static_cast<int64_t>(std::llround(v));
      }
      return v;
    }
    case ParamKind::kCategorical: {
      const auto n = static_cast<int64_t>(p.choices.size());
      const auto i = std::clamp<int64_t>(std::llround(internal), 0, n - 1);
      return p.choices[static_cast<size_t>(i)];
    }
    case ParamKind::kFixed:
      return p.choices[0];
  }
  return nullptr;
}

}  // namespace

std::optional<int64_t> ParamSpec::Cardinality() const {
  switch (kind) {
    case ParamKind::kCategorical:
      return static_cast<int64_t>(choices.size());
    case ParamKind::kFixed:
      return 1;
    case ParamKind::kDouble:
    case ParamKind::kInt:
    case ParamKind::kPower: {
      const double step = EffectiveStep(*this);
      if (step <= 0) return std::nullopt;
      return static_cast<int64_t>(GridCount(low, high, step));
    }
  }
  return std::nullopt;
}

double ParamSpec::GridValue(int64_t i) const {
  switch (kind) {
    case ParamKind::kCategorical:
      return static_cast<double>(i);
    case ParamKind::kFixed:
      return 0;
    default:
      return std::min(high, low + static_cast<double>(i) * EffectiveStep(*this));
  }
}

absl::StatusOr<SearchSpace> SearchSpace::Create(std::vector<ParamSpec> params) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamSpec& p = params[i];
    KILN_RETURN_IF_ERROR(ValidateParam(p));
    if (index.count(p.name)) {
      return Invalid(p.name, "declared twice; give each hyperparameter a unique name");
    }
    if (p.condition) {
      const Condition& c = *p.condition;
      if (c.parent == p.name) return Invalid(p.name, "a condition cannot refer to itself");
      if (!index.count(c.parent)) {
        bool later = false;
        for (size_t j = i + 1; j < params.size(); ++j) later |= params[j].name == c.parent;
        return Invalid(p.name, later ? absl::StrCat("its condition refers to '", c.parent,
                                                    "', declared later; declare it first")
                                     : absl::StrCat("its condition refers to unknown "
                                                    "hyperparameter '",
                                                    c.parent, "'"));
      }
      if (c.values.empty()) {
        return Invalid(p.name, "its condition lists no values of its parent");
      }
    }
    index[p.name] = i;
  }
  SearchSpace space;
  space.params_ = std::move(params);
  return space;
}

absl::StatusOr<SearchSpace> SearchSpace::FromWmla(const base::Json& hyper_params) {
  if (!hyper_params.is_array()) {
    return absl::InvalidArgumentError(
        "hyperParams must be a list of {name, type, dataType, ...} objects");
  }
  if (hyper_params.empty()) {
    return absl::InvalidArgumentError("hyperParams is empty; give at least one hyperparameter");
  }
  std::vector<ParamSpec> params;
  for (size_t i = 0; i < hyper_params.size(); ++i) {
    KILN_ASSIGN_OR_RETURN(ParamSpec p, WmlaParam(hyper_params[i], i));
    params.push_back(std::move(p));
  }
  return Create(std::move(params));
}

absl::StatusOr<SearchSpace> SearchSpace::FromNative(const base::Json& space) {
  if (!space.is_object()) {
    return absl::InvalidArgumentError(
        "the search space must be an object mapping names to parameter definitions");
  }
  if (space.empty()) {
    return absl::InvalidArgumentError("the search space is empty; give at least one parameter");
  }
  // JSON objects lose their key order, so parents are put before their children here;
  // otherwise the parameters keep name order, which makes the space deterministic.
  std::vector<ParamSpec> pending;
  for (auto it = space.begin(); it != space.end(); ++it) {
    KILN_ASSIGN_OR_RETURN(ParamSpec p, NativeParam(it.key(), it.value()));
    pending.push_back(std::move(p));
  }
  std::vector<ParamSpec> ordered;
  std::set<std::string> placed;
  while (!pending.empty()) {
    bool progress = false;
    for (auto it = pending.begin(); it != pending.end();) {
      if (!it->condition || placed.count(it->condition->parent)) {
        placed.insert(it->name);
        ordered.push_back(std::move(*it));
        it = pending.erase(it);
        progress = true;
      } else {
        ++it;
      }
    }
    if (!progress) {
      const ParamSpec& p = pending.front();
      if (!space.contains(p.condition->parent)) {
        return Invalid(p.name, absl::StrCat("its condition refers to unknown hyperparameter '",
                                            p.condition->parent, "'"));
      }
      return Invalid(p.name, "its condition is part of a cycle of conditions; break the cycle");
    }
  }
  return Create(std::move(ordered));
}

const ParamSpec* SearchSpace::Find(const std::string& name) const {
  for (const auto& p : params_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

bool SearchSpace::IsActive(const ParamSpec& param, const Point& point) const {
  if (!param.condition) return true;
  auto it = point.find(param.condition->parent);
  if (it == point.end()) return false;  // an inactive parent makes its children inactive
  const ParamSpec* parent = Find(param.condition->parent);
  if (parent == nullptr) return false;
  const base::Json value = External(*parent, it->second);
  for (const auto& v : param.condition->values) {
    if (v == value) return true;
  }
  return false;
}

double SearchSpace::SampleUniform(const ParamSpec& p, std::mt19937_64& rng) const {
  switch (p.kind) {
    case ParamKind::kFixed:
      return 0;
    case ParamKind::kCategorical:
      return static_cast<double>(UniformIndex(rng, static_cast<int64_t>(p.choices.size())));
    case ParamKind::kDouble:
    case ParamKind::kInt:
    case ParamKind::kPower:
      if (p.log) return FromUnit(p, Uniform01(rng));
      if (std::optional<int64_t> n = p.Cardinality()) return p.GridValue(UniformIndex(rng, *n));
      return p.low + (p.high - p.low) * Uniform01(rng);
  }
  return 0;
}

Point SearchSpace::SampleUniform(std::mt19937_64& rng) const {
  Point point;
  for (const auto& p : params_) {
    if (IsActive(p, point)) point[p.name] = SampleUniform(p, rng);
  }
  return point;
}

double SearchSpace::ToUnit(const ParamSpec& p, double x) const {
  double u = 0.5;
  switch (p.kind) {
    case ParamKind::kFixed:
      return 0.5;
    case ParamKind::kCategorical: {
      const auto n = static_cast<double>(p.choices.size());
      u = (std::round(x) + 0.5) / n;
      break;
    }
    case ParamKind::kDouble:
    case ParamKind::kInt:
    case ParamKind::kPower: {
      const double step = EffectiveStep(p);
      // Finite numeric parameters widen the range by half a step on each side, so every
      // grid value owns a cell of equal width (the int treatment of Optuna and others).
      const double pad = step > 0 ? step / 2 : 0;
      double lo = p.low - pad, hi = p.high + pad;
      if (p.log) {
        lo = std::log(std::max(lo, p.low / 2));
        hi = std::log(hi);
        x = std::log(std::max(x, std::numeric_limits<double>::min()));
      }
      if (hi > lo) u = (x - lo) / (hi - lo);
      break;
    }
  }
  return std::clamp(u, 0.0, 1.0);
}

double SearchSpace::FromUnit(const ParamSpec& p, double u) const {
  if (!std::isfinite(u)) u = 0.5;
  u = std::clamp(u, 0.0, 1.0);
  switch (p.kind) {
    case ParamKind::kFixed:
      return 0;
    case ParamKind::kCategorical: {
      const auto n = static_cast<int64_t>(p.choices.size());
      return static_cast<double>(
          std::clamp<int64_t>(static_cast<int64_t>(u * static_cast<double>(n)), 0, n - 1));
    }
    case ParamKind::kDouble:
    case ParamKind::kInt:
    case ParamKind::kPower: {
      const double step = EffectiveStep(p);
      const double pad = step > 0 ? step / 2 : 0;
      double lo = p.low - pad, hi = p.high + pad;
      double x;
      if (p.log) {
        lo = std::log(std::max(lo, p.low / 2));
        hi = std::log(hi);
        x = std::exp(lo + u * (hi - lo));
      } else {
        x = lo + u * (hi - lo);
      }
      if (step > 0) {
        const int64_t n = *p.Cardinality();
        const auto k =
            std::clamp<int64_t>(static_cast<int64_t>(std::llround((x - p.low) / step)), 0, n - 1);
        return p.GridValue(k);
      }
      return std::clamp(x, p.low, p.high);
    }
  }
  return 0;
}

base::Json SearchSpace::ToConfig(const Point& point) const {
  base::Json config = base::Json::object();
  for (const auto& p : params_) {
    auto it = point.find(p.name);
    if (it == point.end()) continue;
    config[p.name] = External(p, it->second);
  }
  return config;
}

std::optional<int64_t> SearchSpace::GridSize() const {
  int64_t total = 1;
  for (const auto& p : params_) {
    std::optional<int64_t> n = p.Cardinality();
    if (!n) return std::nullopt;
    if (*n > 0 && total > std::numeric_limits<int64_t>::max() / *n) {
      total = std::numeric_limits<int64_t>::max();
    } else {
      total *= *n;
    }
  }
  return total;
}

std::optional<double> NumberOrNumericString(const base::Json& v) {
  if (v.is_number()) {
    double d = v.get<double>();
    if (std::isfinite(d)) return d;
  } else if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    char* end = nullptr;
    errno = 0;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && !std::isspace(static_cast<unsigned char>(s[0])) &&
        end == s.c_str() + s.size() && errno == 0 && std::isfinite(d)) {
      return d;
    }
  }
  return std::nullopt;
}

}  // namespace kiln::hpo
