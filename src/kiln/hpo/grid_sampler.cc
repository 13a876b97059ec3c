// grid_sampler.cc
#include "kiln/hpo/grid_sampler.h"

#include <cctype>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"
#include "kiln/hpo/random_sampler.h"

namespace kiln::hpo {
namespace {

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

absl::StatusOr<double> ParseNumber(const base::Json& v, const std::string& where) {
  if (std::optional<double> d = NumberOrNumericString(v)) return *d;
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": fixedVal ", base::DumpJson(v).substr(0, 64), " is not a number"));
}

absl::StatusOr<base::Json> FixedValue(const base::Json& h, const std::string& where) {
  auto dtype_it = h.find("dataType");
  if (dtype_it == h.end() || !dtype_it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": missing \"dataType\"; use \"DOUBLE\", \"INT\" or \"STR\""));
  }
  auto value_it = h.find("fixedVal");
  if (value_it == h.end() || value_it->is_null()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing \"fixedVal\""));
  }
  const std::string dtype = Lower(dtype_it->get<std::string>());
  const base::Json& v = *value_it;
  if (dtype == "str") {
    if (v.is_string()) return v;
    if (v.is_number() || v.is_boolean()) return base::Json(base::DumpJson(v));
    return absl::InvalidArgumentError(absl::StrCat(where, ": fixedVal must be a string"));
  }
  if (dtype == "double") {
    KILN_ASSIGN_OR_RETURN(double d, ParseNumber(v, where));
    return base::Json(d);
  }
  if (dtype == "int") {
    KILN_ASSIGN_OR_RETURN(double d, ParseNumber(v, where));
    if (std::floor(d) != d || std::fabs(d) > 9007199254740992.0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": fixedVal ", base::DumpJson(v).substr(0, 64),
                       " is not an integer; use dataType DOUBLE for fractions"));
    }
    return base::Json(static_cast<int64_t>(d));
  }
  return absl::InvalidArgumentError(absl::StrCat(where, ": unknown dataType \"",
                                                 dtype_it->get<std::string>(),
                                                 "\"; use \"DOUBLE\", \"INT\" or \"STR\""));
}

}  // namespace

absl::StatusOr<std::unique_ptr<GridSampler>> GridSampler::Create(const SearchSpace& space,
                                                                 uint64_t seed) {
  std::vector<int64_t> radix;
  for (const auto& p : space.params()) {
    std::optional<int64_t> n = p.Cardinality();
    if (!n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "grid search needs every hyperparameter finite, but '", p.name,
          "' is a continuous range; give it a step (or make it discrete), or use random search"));
    }
    radix.push_back(*n);
  }
  const int64_t total = space.GridSize().value_or(0);
  if (total > kMaxPoints) {
    return absl::InvalidArgumentError(
        absl::StrCat("the grid has ", total, " points, more than the ", kMaxPoints,
                     " grid search allows; use larger steps, fewer values, or random search"));
  }
  // Mixed-radix enumeration; a conditional parameter that is inactive drops out of its
  // point, so the set removes the copies that differ only in it.
  std::set<Point> seen;
  std::vector<Point> points;
  std::vector<int64_t> digits(radix.size(), 0);
  for (int64_t i = 0; i < total; ++i) {
    Point point;
    for (size_t k = 0; k < radix.size(); ++k) {
      const ParamSpec& p = space.params()[k];
      if (space.IsActive(p, point)) point[p.name] = p.GridValue(digits[k]);
    }
    if (seen.insert(point).second) points.push_back(std::move(point));
    for (size_t k = 0; k < digits.size(); ++k) {
      if (++digits[k] < radix[k]) break;
      digits[k] = 0;
    }
  }
  // Fisher-Yates with our own index draw: std::shuffle's order differs between
  // standard libraries, and a stored experiment must resume the same order anywhere.
  std::mt19937_64 rng = TrialRng(seed, 0);
  for (size_t i = points.size(); i > 1; --i) {
    const auto j = static_cast<size_t>((rng() >> 11) % i);
    std::swap(points[i - 1], points[j]);
  }
  return std::unique_ptr<GridSampler>(new GridSampler(std::move(points)));
}

absl::StatusOr<std::optional<Suggestion>> GridSampler::Ask(
    const std::vector<TrialRecord>& history) {
  std::set<Point> asked;
  for (const auto& t : history) asked.insert(t.params);
  for (const auto& p : points_) {
    if (!asked.count(p)) {
      Suggestion s;
      s.params = p;
      return std::optional<Suggestion>(std::move(s));
    }
  }
  return std::optional<Suggestion>();
}

absl::StatusOr<std::unique_ptr<ExperimentGridSampler>> ExperimentGridSampler::Create(
    const base::Json& experiments) {
  if (!experiments.is_array() || experiments.empty()) {
    return absl::InvalidArgumentError(
        "experiments must be a non-empty list of {\"id\", \"hyperParams\"} objects");
  }
  std::vector<int64_t> ids;
  std::vector<base::Json> configs;
  for (size_t i = 0; i < experiments.size(); ++i) {
    const base::Json& e = experiments[i];
    const std::string where = absl::StrCat("experiments[", i, "]");
    if (!e.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " must be an object"));
    }
    int64_t id = static_cast<int64_t>(i);
    if (auto it = e.find("id"); it != e.end() && !it->is_null()) {
      KILN_ASSIGN_OR_RETURN(double d, ParseNumber(*it, where + ".id"));
      if (std::floor(d) != d || std::fabs(d) > 9007199254740992.0) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": id must be an integer"));
      }
      id = static_cast<int64_t>(d);
    }
    auto hp = e.find("hyperParams");
    if (hp == e.end() || !hp->is_array() || hp->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, " needs a non-empty list \"hyperParams\" of {name, dataType, fixedVal}"));
    }
    base::Json config = base::Json::object();
    for (size_t k = 0; k < hp->size(); ++k) {
      const base::Json& h = (*hp)[k];
      const std::string hwhere = absl::StrCat(where, ".hyperParams[", k, "]");
      if (!h.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(hwhere, " must be an object"));
      }
      auto name = h.find("name");
      if (name == h.end() || !name->is_string() || name->get_ref<const std::string&>().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(hwhere, " needs a non-empty string \"name\""));
      }
      const std::string n = name->get<std::string>();
      if (config.contains(n)) {
        return absl::InvalidArgumentError(
            absl::StrCat(hwhere, ": '", n, "' appears twice in this experiment; keep one"));
      }
      KILN_ASSIGN_OR_RETURN(config[n], FixedValue(h, absl::StrCat(hwhere, " ('", n, "')")));
    }
    ids.push_back(id);
    configs.push_back(std::move(config));
  }
  return std::unique_ptr<ExperimentGridSampler>(
      new ExperimentGridSampler(std::move(ids), std::move(configs)));
}

absl::StatusOr<std::optional<Suggestion>> ExperimentGridSampler::Ask(
    const std::vector<TrialRecord>& history) {
  std::set<double> asked;
  for (const auto& t : history) {
    if (auto it = t.params.find(kExperimentKey); it != t.params.end()) asked.insert(it->second);
  }
  for (size_t i = 0; i < configs_.size(); ++i) {
    if (!asked.count(static_cast<double>(i))) {
      Suggestion s;
      s.params[kExperimentKey] = static_cast<double>(i);
      return std::optional<Suggestion>(std::move(s));
    }
  }
  return std::optional<Suggestion>();
}

absl::StatusOr<base::Json> ExperimentGridSampler::ConfigFor(const Point& point) const {
  auto it = point.find(kExperimentKey);
  if (it == point.end() || !(it->second >= 0) ||
      it->second >= static_cast<double>(configs_.size()) || std::floor(it->second) != it->second) {
    return absl::InvalidArgumentError(
        absl::StrCat("the point carries no valid experiment index under \"", kExperimentKey, "\""));
  }
  return configs_[static_cast<size_t>(it->second)];
}

}  // namespace kiln::hpo
