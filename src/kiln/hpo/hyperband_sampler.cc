#include "kiln/hpo/hyperband_sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"

namespace kiln::hpo {
namespace {

// Tolerance for the float arithmetic of the plan, so that e.g. 81·3^-1 counts as 27 and
// not as 26.999….
constexpr double kEps = 1e-9;

// The WMLA algoParam names Hyperband understands.
constexpr const char* kRandomSeed = "RandomSeed";
constexpr const char* kEta = "eta";
constexpr const char* kResourceName = "ResourceName";
constexpr const char* kResourceValue = "ResourceValue";

// An algoParam value as text: WMLA sends strings, hand-written requests often numbers.
absl::StatusOr<std::string> ParamText(const base::Json& value, const std::string& name) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_integer()) return absl::StrCat(value.get<int64_t>());
  if (value.is_number_unsigned()) return absl::StrCat(value.get<uint64_t>());
  if (value.is_number_float()) return absl::StrCat(value.get<double>());
  return absl::InvalidArgumentError(
      absl::StrCat("algoParams: the value of \"", name, "\" must be a string or a number"));
}

std::vector<HyperbandBracket> Plan(const HyperbandOptions& o) {
  const double ratio = static_cast<double>(o.max_resource) / static_cast<double>(o.min_resource);
  int s_max = 0;
  while (std::pow(o.eta, s_max + 1) <= ratio * (1 + kEps)) ++s_max;
  std::vector<HyperbandBracket> brackets;
  for (int s = s_max; s >= 0; --s) {
    HyperbandBracket bracket;
    bracket.s = s;
    const double n =
        std::ceil(static_cast<double>(s_max + 1) / (s + 1) * std::pow(o.eta, s) - kEps);
    for (int i = 0; i <= s; ++i) {
      HyperbandRung rung;
      rung.num_trials =
          std::max<int64_t>(1, static_cast<int64_t>(std::floor(n * std::pow(o.eta, -i) + kEps)));
      rung.budget =
          i == s ? o.max_resource
                 : std::llround(static_cast<double>(o.max_resource) * std::pow(o.eta, i - s));
      rung.budget = std::clamp<int64_t>(rung.budget, o.min_resource, o.max_resource);
      bracket.rungs.push_back(rung);
    }
    brackets.push_back(std::move(bracket));
  }
  return brackets;
}

// The objective a trial is ranked by; failed, pruned and value-less trials rank worst.
double Score(const TrialRecord& t) {
  if (t.state != TrialState::kComplete || !t.value.has_value() || std::isnan(*t.value)) {
    return std::numeric_limits<double>::infinity();
  }
  return *t.value;
}

// Where each trial of the history sits in the plan.
struct Layout {
  // [bracket][rung] -> indices into the history.
  std::vector<std::vector<std::vector<size_t>>> rungs;
  int64_t new_configs = 0;
  std::set<int64_t> promoted;  // numbers of trials that have a promotion
};

// What a bracket needs next.
struct BracketStep {
  std::optional<size_t> promote;  // history index of the trial to promote
  int next_rung = 0;              // the rung that promotion goes to
  bool done = false;
};

}  // namespace

absl::StatusOr<HyperbandOptions> HyperbandOptionsFromWmla(const base::Json& algo_params,
                                                          std::optional<double> hyperband_eta,
                                                          uint64_t default_seed) {
  HyperbandOptions options;
  options.seed = default_seed;
  if (hyperband_eta.has_value()) options.eta = *hyperband_eta;
  if (!algo_params.is_null() && !algo_params.is_array()) {
    return absl::InvalidArgumentError(
        "algoParams must be a list of {\"name\": ..., \"value\": ...} objects");
  }
  std::map<std::string, std::string> given;  // canonical name -> text
  const base::Json empty = base::Json::array();
  for (const base::Json& p : algo_params.is_array() ? algo_params : empty) {
    if (!p.is_object() || !p.contains("name") || !p["name"].is_string() || !p.contains("value")) {
      return absl::InvalidArgumentError(
          "algoParams: every entry must be an object {\"name\": \"<param>\", \"value\": "
          "\"<string>\"}");
    }
    const std::string raw = p["name"].get<std::string>();
    std::string canonical;
    for (const char* known : {kRandomSeed, kEta, kResourceName, kResourceValue}) {
      if (absl::EqualsIgnoreCase(raw, known)) canonical = known;
    }
    if (canonical.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("algoParams: unknown Hyperband parameter \"", raw,
                       "\"; Hyperband takes RandomSeed, eta, ResourceName and ResourceValue"));
    }
    if (given.count(canonical) > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("algoParams: \"", canonical, "\" is given twice; give it once"));
    }
    KILN_ASSIGN_OR_RETURN(given[canonical], ParamText(p["value"], canonical));
  }

  auto name_it = given.find(kResourceName);
  if (name_it == given.end() || absl::StripAsciiWhitespace(name_it->second).empty()) {
    return absl::InvalidArgumentError(
        "Hyperband requires algoParam ResourceName: the name of the resource each trial is "
        "budgeted in (e.g. \"epochs\"); the trial reads its budget from config.json under "
        "that name. Add {\"name\": \"ResourceName\", \"value\": \"epochs\"} to "
        "algoDef.algoParams");
  }
  options.resource_name = std::string(absl::StripAsciiWhitespace(name_it->second));

  auto value_it = given.find(kResourceValue);
  if (value_it == given.end()) {
    return absl::InvalidArgumentError(
        "Hyperband requires algoParam ResourceValue: the largest budget one trial may get, "
        "an integer given as a string (e.g. \"81\" epochs). Add {\"name\": \"ResourceValue\", "
        "\"value\": \"81\"} to algoDef.algoParams");
  }
  if (!absl::SimpleAtoi(value_it->second, &options.max_resource)) {
    return absl::InvalidArgumentError(
        absl::StrCat("algoParams: ResourceValue must be an integer (e.g. \"81\"), got \"",
                     value_it->second, "\""));
  }
  if (options.max_resource < options.min_resource) {
    return absl::InvalidArgumentError(absl::StrCat("algoParams: ResourceValue must be at least ",
                                                   options.min_resource, ", got ",
                                                   options.max_resource));
  }

  if (auto it = given.find(kEta); it != given.end()) {
    if (!absl::SimpleAtod(it->second, &options.eta) || !std::isfinite(options.eta)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "algoParams: eta must be a number greater than 1 (default 3), got \"", it->second, "\""));
    }
  }
  if (!(options.eta > 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Hyperband eta must be greater than 1 (each rung keeps 1/eta of the "
                     "trials; default 3), got ",
                     options.eta));
  }

  if (auto it = given.find(kRandomSeed); it != given.end()) {
    if (!absl::SimpleAtoi(it->second, &options.seed)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "algoParams: RandomSeed must be a non-negative integer, got \"", it->second, "\""));
    }
  }
  return options;
}

absl::StatusOr<std::unique_ptr<HyperbandSampler>> HyperbandSampler::Create(
    const SearchSpace& space, HyperbandOptions options, Sampler* config_sampler) {
  if (!(options.eta > 1) || !std::isfinite(options.eta)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Hyperband eta must be a number greater than 1, got ", options.eta));
  }
  if (options.min_resource < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Hyperband min_resource must be at least 1, got ", options.min_resource));
  }
  if (options.max_resource < options.min_resource) {
    return absl::InvalidArgumentError(
        absl::StrCat("Hyperband max_resource (ResourceValue) must be at least min_resource (",
                     options.min_resource, "), got ", options.max_resource));
  }
  if (options.cycles < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Hyperband cycles must be 0 (repeat until the budget ends) or more, got ", options.cycles));
  }
  std::vector<HyperbandBracket> brackets = Plan(options);
  return std::unique_ptr<HyperbandSampler>(
      new HyperbandSampler(space, std::move(options), config_sampler, std::move(brackets)));
}

HyperbandSampler::HyperbandSampler(const SearchSpace& space, HyperbandOptions options,
                                   Sampler* config_sampler, std::vector<HyperbandBracket> brackets)
    : space_(space),
      options_(std::move(options)),
      config_sampler_(config_sampler),
      brackets_(std::move(brackets)) {}

namespace {

// The number of brackets `cycles` passes over the plan hold (SIZE_MAX when unlimited).
size_t BracketLimit(const std::vector<HyperbandBracket>& brackets, int cycles) {
  return cycles > 0 ? brackets.size() * static_cast<size_t>(cycles)
                    : std::numeric_limits<size_t>::max();
}

// Makes room in `layout` for brackets up to index `k` (bracket k follows plan k mod size).
void EnsureBracket(Layout& layout, const std::vector<HyperbandBracket>& brackets, size_t k) {
  while (layout.rungs.size() <= k) {
    const HyperbandBracket& plan = brackets[layout.rungs.size() % brackets.size()];
    layout.rungs.emplace_back(plan.rungs.size());
  }
}

// Assigns every trial of `history` to its bracket and rung (see the class comment). The
// layout holds at least one pass over the plan, more when the history has reached them.
absl::StatusOr<Layout> Arrange(const std::vector<HyperbandBracket>& brackets, int cycles,
                               const std::vector<TrialRecord>& history) {
  Layout layout;
  const size_t limit = BracketLimit(brackets, cycles);
  EnsureBracket(layout, brackets, brackets.size() - 1);

  // A parent always has a smaller number than its promotion, so visiting by number places
  // parents first even if the caller's vector is in another order.
  std::vector<size_t> order(history.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return history[a].number < history[b].number; });

  std::map<int64_t, std::pair<size_t, size_t>> place;  // number -> (bracket, rung)
  size_t bracket_of_next = 0;
  int64_t used_in_bracket = 0;
  for (size_t idx : order) {
    const TrialRecord& t = history[idx];
    size_t b = 0;
    size_t r = 0;
    if (!t.parent.has_value()) {
      while (bracket_of_next < limit &&
             used_in_bracket >= brackets[bracket_of_next % brackets.size()].rungs[0].num_trials) {
        ++bracket_of_next;
        used_in_bracket = 0;
      }
      if (bracket_of_next == limit) {
        return absl::InvalidArgumentError(
            absl::StrCat("Hyperband history: trial ", t.number,
                         " is one new configuration more than the brackets hold"));
      }
      b = bracket_of_next;
      EnsureBracket(layout, brackets, b);
      ++used_in_bracket;
      ++layout.new_configs;
    } else {
      auto it = place.find(*t.parent);
      if (it == place.end()) {
        return absl::InvalidArgumentError(absl::StrCat("Hyperband history: trial ", t.number,
                                                       " promotes trial ", *t.parent,
                                                       ", which is not before it"));
      }
      b = it->second.first;
      r = it->second.second + 1;
      if (r >= brackets[b % brackets.size()].rungs.size()) {
        return absl::InvalidArgumentError(absl::StrCat("Hyperband history: trial ", t.number,
                                                       " promotes trial ", *t.parent,
                                                       ", which already had the largest budget"));
      }
      layout.promoted.insert(*t.parent);
    }
    place[t.number] = {b, r};
    layout.rungs[b][r].push_back(idx);
  }
  return layout;
}

// Walks bracket `b` from its first rung up to the first rung that is not decided.
BracketStep Step(const HyperbandBracket& bracket, const std::vector<std::vector<size_t>>& rungs,
                 const Layout& layout, const std::vector<TrialRecord>& history) {
  BracketStep step;
  int64_t expected = bracket.rungs[0].num_trials;
  for (size_t i = 0; i < bracket.rungs.size(); ++i) {
    const std::vector<size_t>& members = rungs[i];
    if (static_cast<int64_t>(members.size()) < expected) return step;  // not all started
    for (size_t idx : members) {
      if (history[idx].state == TrialState::kRunning) return step;
    }
    // Rung i is decided.
    if (i + 1 == bracket.rungs.size()) {
      step.done = true;
      return step;
    }
    std::vector<size_t> ranked;
    for (size_t idx : members) {
      if (std::isfinite(Score(history[idx]))) ranked.push_back(idx);
    }
    std::sort(ranked.begin(), ranked.end(), [&](size_t a, size_t c) {
      const double sa = Score(history[a]);
      const double sc = Score(history[c]);
      if (sa != sc) return sa < sc;
      return history[a].number < history[c].number;
    });
    const int64_t keep =
        std::min<int64_t>(bracket.rungs[i + 1].num_trials, static_cast<int64_t>(ranked.size()));
    for (int64_t k = 0; k < keep; ++k) {
      if (layout.promoted.count(history[ranked[k]].number) == 0) {
        step.promote = ranked[k];
        step.next_rung = static_cast<int>(i + 1);
        return step;
      }
    }
    if (keep == 0) {  // every trial of the rung failed: nothing left to continue
      step.done = true;
      return step;
    }
    expected = keep;
  }
  step.done = true;
  return step;
}

}  // namespace

absl::StatusOr<std::optional<Suggestion>> HyperbandSampler::Ask(
    const std::vector<TrialRecord>& history) {
  KILN_ASSIGN_OR_RETURN(Layout layout, Arrange(brackets_, options_.cycles, history));
  const size_t plan_size = brackets_.size();

  // Promotions first, earliest bracket first: finishing brackets in order is what gives
  // the driver good full-budget results early.
  for (size_t b = 0; b < layout.rungs.size(); ++b) {
    const HyperbandBracket& plan = brackets_[b % plan_size];
    BracketStep step = Step(plan, layout.rungs[b], layout, history);
    if (step.promote.has_value()) {
      const TrialRecord& parent = history[*step.promote];
      Suggestion s;
      s.params = parent.params;
      s.budget = plan.rungs[step.next_rung].budget;
      s.parent = parent.number;
      return std::optional<Suggestion>(std::move(s));
    }
  }

  // No rung can be decided yet: start a configuration of the first bracket that still
  // has room, even if that is a later bracket, so free slots do not idle.
  int64_t before = 0;
  const size_t limit = BracketLimit(brackets_, options_.cycles);
  for (size_t k = 0; k < limit; ++k) {
    const HyperbandBracket& bracket = brackets_[k % plan_size];
    if (layout.new_configs < before + bracket.rungs[0].num_trials) {
      Suggestion s;
      if (config_sampler_ != nullptr) {
        KILN_ASSIGN_OR_RETURN(std::optional<Suggestion> inner, config_sampler_->Ask(history));
        if (!inner.has_value()) return std::optional<Suggestion>();
        s.params = std::move(inner->params);
      } else {
        // Seeded from (seed, history size) so the same history gives the same answer.
        const uint64_t n = history.size();
        std::seed_seq seq{static_cast<uint32_t>(options_.seed),
                          static_cast<uint32_t>(options_.seed >> 32), static_cast<uint32_t>(n),
                          static_cast<uint32_t>(n >> 32)};
        std::mt19937_64 rng(seq);
        s.params = space_.SampleUniform(rng);
      }
      s.budget = bracket.rungs[0].budget;
      return std::optional<Suggestion>(std::move(s));
    }
    before += bracket.rungs[0].num_trials;
  }
  return std::optional<Suggestion>();
}

bool HyperbandSampler::Finished(const std::vector<TrialRecord>& history) const {
  if (options_.cycles <= 0) return false;  // repeats until the experiment's budget ends it
  absl::StatusOr<Layout> layout = Arrange(brackets_, options_.cycles, history);
  if (!layout.ok()) return false;
  EnsureBracket(*layout, brackets_, BracketLimit(brackets_, options_.cycles) - 1);
  for (size_t b = 0; b < layout->rungs.size(); ++b) {
    if (!Step(brackets_[b % brackets_.size()], layout->rungs[b], *layout, history).done) {
      return false;
    }
  }
  return true;
}

}  // namespace kiln::hpo
