#include "kiln/serving/prometheus.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace kiln::serving {
namespace {

using ::testing::HasSubstr;

TEST(PrometheusTest, CountersRenderOneLinePerLabelSet) {
  MetricsRegistry registry;
  CounterFamily& requests =
      registry.AddCounterFamily("kiln_serve_requests_total", "Requests.", {"dialect", "code"});
  requests.WithLabels({"native", "200"}).Increment();
  requests.WithLabels({"native", "200"}).Increment(2);
  requests.WithLabels({"kserve", "400"}).Increment();
  EXPECT_EQ(registry.Render(),
            "# HELP kiln_serve_requests_total Requests.\n"
            "# TYPE kiln_serve_requests_total counter\n"
            "kiln_serve_requests_total{dialect=\"kserve\",code=\"400\"} 1\n"
            "kiln_serve_requests_total{dialect=\"native\",code=\"200\"} 3\n");
}

TEST(PrometheusTest, HistogramBucketsAreCumulativeAndUpperInclusive) {
  MetricsRegistry registry;
  Histogram& h = registry.AddHistogram("batch", "Batch sizes.", {1, 2, 4});
  h.Observe(1);
  h.Observe(2);
  h.Observe(3);
  h.Observe(100);
  EXPECT_EQ(registry.Render(),
            "# HELP batch Batch sizes.\n"
            "# TYPE batch histogram\n"
            "batch_bucket{le=\"1\"} 1\n"
            "batch_bucket{le=\"2\"} 2\n"
            "batch_bucket{le=\"4\"} 3\n"
            "batch_bucket{le=\"+Inf\"} 4\n"
            "batch_sum 106\n"
            "batch_count 4\n");
}

TEST(PrometheusTest, GaugesReadTheirSource) {
  MetricsRegistry registry;
  double depth = 3;
  registry.AddGauge("queue_depth", "Queued.", [&] { return depth; });
  Gauge& set = registry.AddGauge("ready", "Ready.");
  set.Set(0.5);
  EXPECT_THAT(registry.Render(), HasSubstr("queue_depth 3\n"));
  EXPECT_THAT(registry.Render(), HasSubstr("# TYPE ready gauge\nready 0.5\n"));
}

TEST(PrometheusTest, LabelValuesAreEscaped) {
  EXPECT_EQ(EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(PrometheusTest, ConcurrentUpdatesAreAllCounted) {
  MetricsRegistry registry;
  CounterFamily& c = registry.AddCounterFamily("c", "C.", {"k"});
  Histogram& h = registry.AddHistogram("h", "H.", {0.5});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.WithLabels({"x"}).Increment();
        h.Observe(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.WithLabels({"x"}).value(), 40000u);
  EXPECT_EQ(h.count(), 40000u);
  EXPECT_EQ(h.bucket_count(1), 40000u);
  EXPECT_EQ(h.sum(), 40000);
}

}  // namespace
}  // namespace kiln::serving
