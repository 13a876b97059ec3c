// grid_sampler.h
//
// Defines the exhaustive samplers: `GridSampler` enumerates every point of a finite
// `SearchSpace` in a seeded shuffled order, and `ExperimentGridSampler` runs WMLA's
// `ExperimentGridSearch`, a user-given list of fixed configurations (wmla-api.md §1.4).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/base/json.h"
#include "kiln/hpo/sampler.h"
#include "kiln/hpo/search_space.h"

namespace kiln::hpo {

// Enumerates the full grid of a space whose parameters are all finite (ints, stepped
// ranges, categoricals, fixed values). Points are visited in an order shuffled by the
// seed, so a search stopped early still covers the space evenly. Each Ask returns the
// first point of that order that is not in the history (running trials included, so
// parallel workers never repeat a point), and nullopt once every point has been asked
// for. Conditional parameters: combinations that differ only in inactive parameters are
// one point. Not thread-safe; the experiment driver calls it from one loop.
class GridSampler : public Sampler {
 public:
  // The largest grid Create accepts; beyond it random search is the better tool.
  static constexpr int64_t kMaxPoints = 1'000'000;

  // InvalidArgument naming the first continuous parameter (with the fix: give it a
  // `step`, or make it discrete), or when the grid has more than kMaxPoints points.
  static absl::StatusOr<std::unique_ptr<GridSampler>> Create(const SearchSpace& space,
                                                             uint64_t seed);

  absl::StatusOr<std::optional<Suggestion>> Ask(const std::vector<TrialRecord>& history) override;
  std::string name() const override { return "grid"; }

  // Number of distinct points, in visiting order.
  const std::vector<Point>& points() const { return points_; }

 private:
  explicit GridSampler(std::vector<Point> points) : points_(std::move(points)) {}

  std::vector<Point> points_;
};

// WMLA `ExperimentGridSearch`: each entry of `experiments` is proposed once, in the
// given order, skipping entries already in the history; nullopt when all were asked for.
//
// There is no SearchSpace behind it, so its suggestions carry only the experiment's
// index: `Suggestion.params` is {kExperimentKey: index}. The driver turns such a point
// into the trial's config.json with `ConfigFor` instead of `SearchSpace::ToConfig`.
// Not thread-safe; the experiment driver calls it from one loop.
class ExperimentGridSampler : public Sampler {
 public:
  // The reserved key under which suggestions carry the experiment index.
  static constexpr char kExperimentKey[] = "__experiment";

  // Parses WMLA `experiments`:
  //   [{"id": 1, "hyperParams": [{"name": "lr", "dataType": "DOUBLE", "fixedVal": "0.1"},
  //                              {"name": "opt", "dataType": "STR", "fixedVal": "Adam"}]}]
  // fixedVal is a string (a number is accepted too) converted per dataType (any case):
  // DOUBLE to a number, INT to an integer, STR kept as a string. InvalidArgument naming
  // the experiment and field for: not a non-empty list, an entry without hyperParams, a
  // missing or duplicate name, an unknown dataType, or a fixedVal that does not convert.
  static absl::StatusOr<std::unique_ptr<ExperimentGridSampler>> Create(
      const base::Json& experiments);

  absl::StatusOr<std::optional<Suggestion>> Ask(const std::vector<TrialRecord>& history) override;
  std::string name() const override { return "experiment_grid"; }

  // The typed config.json of a point this sampler suggested. InvalidArgument when the
  // point carries no valid experiment index.
  absl::StatusOr<base::Json> ConfigFor(const Point& point) const;
  // The user's `id` of experiment `index` (its position when the entry had none).
  int64_t ExperimentId(size_t index) const { return ids_[index]; }
  size_t size() const { return configs_.size(); }

 private:
  ExperimentGridSampler(std::vector<int64_t> ids, std::vector<base::Json> configs)
      : ids_(std::move(ids)), configs_(std::move(configs)) {}

  std::vector<int64_t> ids_;
  std::vector<base::Json> configs_;
};

}  // namespace kiln::hpo
