// prometheus.h
//
// Defines the few Prometheus metric types kiln-serve exports (`Counter` families with
// labels, `Gauge`, `Histogram`) and `MetricsRegistry`, which renders them in the
// Prometheus text exposition format (version 0.0.4) for `GET /metrics`. Updates are
// lock-free atomics so the request path does not contend on a lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::serving {

// A monotonically increasing count. Thread-safe.
class Counter {
 public:
  void Increment(uint64_t by = 1) { value_.fetch_add(by, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Counters of one metric name told apart by label values. Thread-safe; the Counter
// references it hands out stay valid for the family's lifetime (callers may cache them).
class CounterFamily {
 public:
  CounterFamily(std::string name, std::string help, std::vector<std::string> label_names);

  // The counter for `label_values` (one per label name, in order), created at zero on
  // first use.
  Counter& WithLabels(const std::vector<std::string>& label_values);

  void Render(std::string& out) const;

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Counter>> counters_;  // guarded by mu_
};

// A value that goes up and down, or one read from `source` when rendered. Thread-safe.
class Gauge {
 public:
  Gauge(std::string name, std::string help, std::function<double()> source = nullptr);
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  double value() const { return source_ ? source_() : value_.load(std::memory_order_relaxed); }
  void Render(std::string& out) const;

 private:
  const std::string name_;
  const std::string help_;
  const std::function<double()> source_;
  std::atomic<double> value_{0};
};

// Observations counted into cumulative buckets with upper bounds `bounds` (sorted,
// ascending; +Inf is implicit), plus their sum and count. Thread-safe.
class Histogram {
 public:
  Histogram(std::string name, std::string help, std::vector<double> bounds);
  void Observe(double value);
  void Render(std::string& out) const;

  // Observations so far in the bucket whose upper bound is bounds[i] (not cumulative);
  // i == bounds.size() is the +Inf bucket. For tests.
  uint64_t bucket_count(size_t i) const { return buckets_[i].load(std::memory_order_relaxed); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

// Owns metrics and renders them in registration order. Add* are for startup (not
// thread-safe with Render); Render and the metrics themselves are thread-safe.
class MetricsRegistry {
 public:
  CounterFamily& AddCounterFamily(std::string name, std::string help,
                                  std::vector<std::string> label_names);
  Gauge& AddGauge(std::string name, std::string help, std::function<double()> source = nullptr);
  Histogram& AddHistogram(std::string name, std::string help, std::vector<double> bounds);

  // The text exposition of every metric (Content-Type "text/plain; version=0.0.4").
  std::string Render() const;

 private:
  std::vector<std::function<void(std::string&)>> renderers_;
  std::vector<std::unique_ptr<CounterFamily>> counters_;
  std::vector<std::unique_ptr<Gauge>> gauges_;
  std::vector<std::unique_ptr<Histogram>> histograms_;
};

// Label values are escaped per the exposition format (backslash, quote, newline).
std::string EscapeLabelValue(const std::string& value);

}  // namespace kiln::serving
