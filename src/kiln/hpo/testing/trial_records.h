// trial_records.h
//
// Short builders of `TrialRecord` histories for the sampler tests, and the one way they
// ask a sampler for a point, shared so every test builds its history the same way.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kiln/hpo/sampler.h"

namespace kiln::hpo::test_trials {

inline TrialRecord Complete(int64_t number, Point params, double value) {
  TrialRecord t;
  t.number = number;
  t.params = std::move(params);
  t.state = TrialState::kComplete;
  t.value = value;
  return t;
}

inline TrialRecord Running(int64_t number, Point params) {
  TrialRecord t;
  t.number = number;
  t.params = std::move(params);
  return t;
}

// The point `sampler` proposes next; a test failure when it errs or has none.
inline Point AskPoint(Sampler& sampler, const std::vector<TrialRecord>& history) {
  auto s = sampler.Ask(history);
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok() || !s->has_value()) {
    ADD_FAILURE() << "the sampler proposed nothing";
    return {};
  }
  return (*s)->params;
}

}  // namespace kiln::hpo::test_trials
