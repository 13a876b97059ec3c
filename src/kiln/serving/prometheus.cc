#include "kiln/serving/prometheus.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

namespace kiln::serving {
namespace {

// Shortest round-trip text of `v`, with the exposition format's spellings of infinities.
void AppendNumber(std::string& out, double v) {
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, end);
}

void AppendHeader(std::string& out, const std::string& name, const std::string& help,
                  const char* type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

}  // namespace

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

CounterFamily::CounterFamily(std::string name, std::string help,
                             std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}

Counter& CounterFamily::WithLabels(const std::vector<std::string>& label_values) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<Counter>& slot = counters_[label_values];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

void CounterFamily::Render(std::string& out) const {
  AppendHeader(out, name_, help_, "counter");
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [values, counter] : counters_) {
    out += name_;
    if (!label_names_.empty()) {
      out += '{';
      for (size_t i = 0; i < label_names_.size() && i < values.size(); ++i) {
        if (i > 0) out += ',';
        out += label_names_[i];
        out += "=\"";
        out += EscapeLabelValue(values[i]);
        out += '"';
      }
      out += '}';
    }
    out += ' ';
    out += std::to_string(counter->value());
    out += '\n';
  }
}

Gauge::Gauge(std::string name, std::string help, std::function<double()> source)
    : name_(std::move(name)), help_(std::move(help)), source_(std::move(source)) {}

void Gauge::Render(std::string& out) const {
  AppendHeader(out, name_, help_, "gauge");
  out += name_;
  out += ' ';
  AppendNumber(out, value());
  out += '\n';
}

Histogram::Histogram(std::string name, std::string help, std::vector<double> bounds)
    : name_(std::move(name)), help_(std::move(help)), bounds_(std::move(bounds)) {
  buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double value) {
  // Buckets are upper-inclusive (le = "less or equal").
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

void Histogram::Render(std::string& out) const {
  AppendHeader(out, name_, help_, "histogram");
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    out += name_;
    out += "_bucket{le=\"";
    AppendNumber(out, i < bounds_.size() ? bounds_[i] : INFINITY);
    out += "\"} ";
    out += std::to_string(cumulative);
    out += '\n';
  }
  out += name_;
  out += "_sum ";
  AppendNumber(out, sum());
  out += '\n';
  out += name_;
  out += "_count ";
  // The bucket total, not count_: a scrape racing an Observe then stays consistent
  // (+Inf bucket == count).
  out += std::to_string(cumulative);
  out += '\n';
}

CounterFamily& MetricsRegistry::AddCounterFamily(std::string name, std::string help,
                                                 std::vector<std::string> label_names) {
  counters_.push_back(
      std::make_unique<CounterFamily>(std::move(name), std::move(help), std::move(label_names)));
  CounterFamily* family = counters_.back().get();
  renderers_.push_back([family](std::string& out) { family->Render(out); });
  return *family;
}

Gauge& MetricsRegistry::AddGauge(std::string name, std::string help,
                                 std::function<double()> source) {
  gauges_.push_back(std::make_unique<Gauge>(std::move(name), std::move(help), std::move(source)));
  Gauge* gauge = gauges_.back().get();
  renderers_.push_back([gauge](std::string& out) { gauge->Render(out); });
  return *gauge;
}

Histogram& MetricsRegistry::AddHistogram(std::string name, std::string help,
                                         std::vector<double> bounds) {
  std::sort(bounds.begin(), bounds.end());
  histograms_.push_back(
      std::make_unique<Histogram>(std::move(name), std::move(help), std::move(bounds)));
  Histogram* histogram = histograms_.back().get();
  renderers_.push_back([histogram](std::string& out) { histogram->Render(out); });
  return *histogram;
}

std::string MetricsRegistry::Render() const {
  std::string out;
  out.reserve(4096);
  for (const auto& render : renderers_) render(out);
  return out;
}

}  // namespace kiln::serving
