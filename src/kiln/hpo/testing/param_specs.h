// param_specs.h
//
// Short builders of `ParamSpec` for the hpo tests, shared so every test spells a
// parameter the same way.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "kiln/base/json.h"
#include "kiln/hpo/search_space.h"

namespace kiln::hpo::test_params {

inline ParamSpec Double(std::string name, double low, double high, bool log = false) {
  ParamSpec p;
  p.name = std::move(name);
  p.kind = ParamKind::kDouble;
  p.low = low;
  p.high = high;
  p.log = log;
  return p;
}

inline ParamSpec Categorical(std::string name, std::vector<base::Json> choices) {
  ParamSpec p;
  p.name = std::move(name);
  p.kind = ParamKind::kCategorical;
  p.choices = std::move(choices);
  return p;
}

}  // namespace kiln::hpo::test_params
