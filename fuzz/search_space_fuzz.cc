// search_space_fuzz.cc
//
// Feeds arbitrary bytes, as a REST body's search space could hold them, to ParseJson and
// then to both search-space parsers. They must return a Status, never crash or throw; a
// space they accept must sample points inside its bounds and turn them into a config.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string_view>

#include "kiln/base/json.h"
#include "kiln/hpo/search_space.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "search_space_fuzz: %s\n", what);
    std::abort();
  }
}

void Exercise(const absl::StatusOr<kiln::hpo::SearchSpace>& space) {
  if (!space.ok()) return;
  std::mt19937_64 rng(1);
  for (int i = 0; i < 4; ++i) {
    kiln::hpo::Point point = space->SampleUniform(rng);
    for (const auto& p : space->params()) {
      auto it = point.find(p.name);
      if (it == point.end()) continue;
      const double x = it->second;
      Check(std::isfinite(x), "sampled a non-finite value");
      const double u = space->ToUnit(p, x);
      Check(u >= 0 && u <= 1, "ToUnit left [0, 1]");
      const double back = space->FromUnit(p, u);
      Check(std::isfinite(back), "FromUnit gave a non-finite value");
      if (p.kind != kiln::hpo::ParamKind::kCategorical && p.kind != kiln::hpo::ParamKind::kFixed) {
        Check(x >= p.low && x <= p.high, "sampled outside [low, high]");
      }
    }
    kiln::base::Json config = space->ToConfig(point);
    Check(config.is_object(), "ToConfig did not give an object");
    (void)kiln::base::DumpJson(config);
  }
  (void)space->GridSize();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto json = kiln::base::ParseJson(text, 1 << 16);
  if (!json.ok()) return 0;
  const kiln::base::Json& j = *json;
  Exercise(kiln::hpo::SearchSpace::FromWmla(j));
  Exercise(kiln::hpo::SearchSpace::FromNative(j));
  // A whole WMLA request: the parsers also see its hyperParams field.
  if (j.is_object()) {
    auto it = j.find("hyperParams");
    if (it != j.end()) Exercise(kiln::hpo::SearchSpace::FromWmla(*it));
  }
  return 0;
}
