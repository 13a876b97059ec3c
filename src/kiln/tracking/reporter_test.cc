#include "kiln/tracking/reporter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/base/json.h"
#include "kiln/base/testing/fake_clock.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/net/http_server.h"
#include "kiln/net/testing/server_thread.h"

namespace kiln::tracking {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Pair;
using namespace std::chrono_literals;

// One POST the fake master received.
struct Received {
  std::string path;
  std::string authorization;
  base::Json body;
  int answered = 0;  // the HTTP status it was answered with
};

// A fake Kiln master serving only the metrics write route on a real HttpServer. It
// records every request and answers each with the status `policy` picks (200 by default)
// from the batch's seq and how many times that seq was seen before. Thread-safe.
class FakeMaster {
 public:
  using Policy = std::function<int(int64_t seq, int attempt)>;

  explicit FakeMaster(Policy policy = nullptr) : policy_(std::move(policy)) {
    net::Router router;
    router.Add("POST", "/api/v1/jobs/{id}/metrics",
               [this](net::HttpRequest& req, net::Responder res) { Handle(req, res); });
    server_ = std::make_unique<net::ServerThread>(std::move(router));
  }

  std::string url() const { return server_->base_url(); }

  void set_policy(Policy policy) {
    std::lock_guard lock(mu_);
    policy_ = std::move(policy);
  }

  // Blocks until `n` requests have arrived or `timeout` passed; returns whether they did.
  bool WaitForRequests(size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return arrived_.wait_for(lock, timeout, [&] { return received_.size() >= n; });
  }

  std::vector<Received> received() const {
    std::lock_guard lock(mu_);
    return received_;
  }

  // The points of the acknowledged (2xx) requests, in arrival order, as
  // "group/step/name=value".
  std::vector<std::string> AcceptedPoints() const {
    std::vector<std::string> out;
    for (const Received& r : received()) {
      if (r.answered != 200) continue;
      for (const base::Json& report : r.body["reports"]) {
        for (auto it = report["metrics"].begin(); it != report["metrics"].end(); ++it) {
          out.push_back(absl::StrCat(report["group"].get<std::string>(), "/",
                                     report["step"].get<int64_t>(), "/", it.key(), "=",
                                     it.value().get<double>()));
        }
      }
    }
    return out;
  }

 private:
  void Handle(net::HttpRequest& req, net::Responder res) {
    auto body = base::ParseJson(req.body);
    KILN_CHECK_OK(body.status());
    int status = 200;
    {
      std::lock_guard lock(mu_);
      const int64_t seq = (*body)["seq"].get<int64_t>();
      const int attempt = attempts_[seq]++;
      if (policy_) status = policy_(seq, attempt);
      received_.push_back({req.path, req.Header("authorization"), *body, status});
    }
    arrived_.notify_all();
    net::HttpResponse response;
    response.status = status;
    response.body =
        status == 200 ? R"({"accepted": 1})" : R"({"error": {"code": "X", "message": "scripted"}})";
    res.Send(std::move(response));
  }

  mutable std::mutex mu_;
  std::condition_variable arrived_;
  Policy policy_;                              // guarded by mu_
  std::map<int64_t, int> attempts_;            // guarded by mu_
  std::vector<Received> received_;             // guarded by mu_
  std::unique_ptr<net::ServerThread> server_;  // last: stopped before the state it uses
};

// Options that make a test quick: no interval-driven sends (tests flush or fill batches),
// retries almost at once, and no long wait at destruction.
ReporterOptions TestOptions(const std::string& url) {
  ReporterOptions options;
  options.master_url = url;
  options.token = "task-token";
  options.job_id = "42";
  options.writer = "w-test";
  options.flush_interval = std::chrono::hours(1);
  options.max_backoff = 5ms;
  options.exit_timeout = 10s;
  return options;
}

TEST(ReporterTest, PostsToTheJobsMetricsPathWithTheBearerToken) {
  FakeMaster master;
  base::FakeClock clock(1'764'151'200'250'000);
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(TestOptions(master.url()), clock));
  reporter->Report(3, "test", {{"loss", 0.5}, {"accuracy", 0.75}});
  ASSERT_TRUE(reporter->Flush(10s));

  std::vector<Received> received = master.received();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].path, "/api/v1/jobs/42/metrics");
  EXPECT_EQ(received[0].authorization, "Bearer task-token");
  const base::Json& body = received[0].body;
  EXPECT_EQ(body["writer"], "w-test");
  EXPECT_EQ(body["seq"], 1);
  ASSERT_EQ(body["reports"].size(), 1u);
  const base::Json& report = body["reports"][0];
  EXPECT_EQ(report["step"], 3);
  EXPECT_EQ(report["group"], "test");
  EXPECT_DOUBLE_EQ(report["time"].get<double>(), 1764151200.25);
  EXPECT_EQ(report["metrics"], (base::Json{{"loss", 0.5}, {"accuracy", 0.75}}));
}

TEST(ReporterTest, SendsNoAuthorizationWithoutAToken) {
  FakeMaster master;
  ReporterOptions options = TestOptions(master.url());
  options.token.clear();
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(options));
  reporter->Report(1, "train", {{"loss", 1.0}});
  ASSERT_TRUE(reporter->Flush(10s));
  ASSERT_EQ(master.received().size(), 1u);
  EXPECT_EQ(master.received()[0].authorization, "");
}

TEST(ReporterTest, BatchesAtMostMaxBatchPointsWithIncreasingSeq) {
  FakeMaster master;
  ReporterOptions options = TestOptions(master.url());
  options.max_batch_points = 3;
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(options));
  std::vector<std::string> expected;
  for (int step = 1; step <= 10; ++step) {
    reporter->Report(step, "train", {{"loss", step / 10.0}});
    expected.push_back(absl::StrCat("train/", step, "/loss=", step / 10.0));
  }
  ASSERT_TRUE(reporter->Flush(10s));

  std::vector<Received> received = master.received();
  ASSERT_GE(received.size(), 4u);  // 10 points, 3 at most per batch
  for (size_t i = 0; i < received.size(); ++i) {
    EXPECT_EQ(received[i].body["seq"], static_cast<int64_t>(i + 1));
    EXPECT_EQ(received[i].body["writer"], "w-test");
    EXPECT_LE(received[i].body["reports"].size(), 3u);
  }
  EXPECT_EQ(master.AcceptedPoints(), expected);
  EXPECT_EQ(reporter->stats().points_sent, 10);
  EXPECT_EQ(reporter->stats().points_pending, 0);
}

TEST(ReporterTest, FullBatchIsSentWithoutFlush) {
  FakeMaster master;
  ReporterOptions options = TestOptions(master.url());
  options.max_batch_points = 2;
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(options));
  reporter->Report(1, "train", {{"loss", 1.0}, {"lr", 0.1}});
  EXPECT_TRUE(master.WaitForRequests(1));
}

TEST(ReporterTest, FlushIntervalSendsWithoutFlush) {
  FakeMaster master;
  ReporterOptions options = TestOptions(master.url());
  options.flush_interval = 10ms;
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(options));
  reporter->Report(1, "test", {{"loss", 1.0}});
  EXPECT_TRUE(master.WaitForRequests(1));
}

TEST(ReporterTest, SplitsAReportLargerThanABatch) {
  FakeMaster master;
  ReporterOptions options = TestOptions(master.url());
  options.max_batch_points = 2;
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(options));
  reporter->Report(7, "test", {{"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}, {"e", 5}});
  ASSERT_TRUE(reporter->Flush(10s));
  std::vector<Received> received = master.received();
  ASSERT_EQ(received.size(), 3u);
  for (const Received& r : received) EXPECT_LE(r.body["reports"][0]["metrics"].size(), 2u);
  EXPECT_THAT(master.AcceptedPoints(),
              ElementsAre("test/7/a=1", "test/7/b=2", "test/7/c=3", "test/7/d=4", "test/7/e=5"));
}

TEST(ReporterTest, RetriesAfter503WithTheSameSeqAndLosesNothing) {
  // Seq 1 fails twice, then everything is accepted.
  FakeMaster master([](int64_t seq, int attempt) { return seq == 1 && attempt < 2 ? 503 : 200; });
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(TestOptions(master.url())));
  reporter->Report(1, "test", {{"loss", 0.5}});
  ASSERT_TRUE(reporter->Flush(10s));
  reporter->Report(2, "test", {{"loss", 0.4}});
  ASSERT_TRUE(reporter->Flush(10s));

  std::vector<Received> received = master.received();
  ASSERT_EQ(received.size(), 4u);
  EXPECT_EQ(received[0].answered, 503);
  EXPECT_EQ(received[1].answered, 503);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(received[i].body, received[0].body) << "attempt " << i << " changed the batch";
  }
  EXPECT_EQ(received[3].body["seq"], 2);
  EXPECT_THAT(master.AcceptedPoints(), ElementsAre("test/1/loss=0.5", "test/2/loss=0.4"));
  ReporterStats stats = reporter->stats();
  EXPECT_EQ(stats.retries, 2);
  EXPECT_EQ(stats.batches_sent, 2);
  EXPECT_EQ(stats.points_rejected, 0);
}

TEST(ReporterTest, RetriesOn429And408) {
  FakeMaster master([](int64_t, int attempt) {
    return attempt == 0 ? 429 : attempt == 1 ? 408 : 200;
  });
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(TestOptions(master.url())));
  reporter->Report(1, "test", {{"loss", 0.5}});
  ASSERT_TRUE(reporter->Flush(10s));
  EXPECT_EQ(master.received().size(), 3u);
  EXPECT_THAT(master.AcceptedPoints(), ElementsAre("test/1/loss=0.5"));
}

TEST(ReporterTest, A400DropsTheBatchAndSendingGoesOn) {
  FakeMaster master([](int64_t seq, int) { return seq == 1 ? 400 : 200; });
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(TestOptions(master.url())));
  reporter->Report(1, "test", {{"loss", 0.5}, {"accuracy", 0.6}});
  EXPECT_TRUE(reporter->Flush(10s));  // a rejected batch counts as resolved
  reporter->Report(2, "test", {{"loss", 0.4}});
  EXPECT_TRUE(reporter->Flush(10s));

  std::vector<Received> received = master.received();
  ASSERT_EQ(received.size(), 2u);  // the rejected batch was not retried
  EXPECT_EQ(received[0].body["seq"], 1);
  EXPECT_EQ(received[1].body["seq"], 2);
  EXPECT_THAT(master.AcceptedPoints(), ElementsAre("test/2/loss=0.4"));
  ReporterStats stats = reporter->stats();
  EXPECT_EQ(stats.points_rejected, 2);
  EXPECT_EQ(stats.points_sent, 1);
}

TEST(ReporterTest, FlushTimesOutWhileTheMasterIsDownAndDeliversWhenItIsBack) {
  FakeMaster master([](int64_t, int) { return 503; });
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(TestOptions(master.url())));
  reporter->Report(1, "test", {{"loss", 0.5}});
  EXPECT_FALSE(reporter->Flush(50ms));
  EXPECT_EQ(reporter->stats().points_pending, 1);

  master.set_policy(nullptr);
  EXPECT_TRUE(reporter->Flush(10s));
  EXPECT_THAT(master.AcceptedPoints(), ElementsAre("test/1/loss=0.5"));
  for (const Received& r : master.received()) EXPECT_EQ(r.body["seq"], 1);
}

TEST(ReporterTest, FlushTimesOutWhenNothingListens) {
  std::string url;
  {
    FakeMaster gone;
    url = gone.url();
  }  // the port is closed now
  ReporterOptions options = TestOptions(url);
  options.exit_timeout = 0ms;  // the destructor gives the point up at once
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(options));
  reporter->Report(1, "test", {{"loss", 0.5}});
  EXPECT_FALSE(reporter->Flush(100ms));
  EXPECT_EQ(reporter->stats().points_pending, 1);
}

TEST(ReporterTest, FlushWithNothingReportedReturnsAtOnce) {
  FakeMaster master;
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(TestOptions(master.url())));
  EXPECT_TRUE(reporter->Flush(0ms));
  EXPECT_TRUE(master.received().empty());
}

TEST(ReporterTest, DestructorDeliversWhatIsLeft) {
  FakeMaster master;
  {
    KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(TestOptions(master.url())));
    reporter->Report(1, "test", {{"loss", 0.5}});
  }
  EXPECT_THAT(master.AcceptedPoints(), ElementsAre("test/1/loss=0.5"));
}

TEST(ReporterTest, SkipsNonFiniteValuesAndInvalidNames) {
  FakeMaster master;
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(TestOptions(master.url())));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  reporter->Report(1, "test", {{"loss", nan}, {"accuracy", 0.5}, {"grad", -inf}, {"", 1.0}});
  reporter->Report(2, "test", {{"loss", nan}});  // nothing left: no report at all
  reporter->Report(3, "test", {{std::string(257, 'x'), 1.0}, {"loss", 0.25}});
  ASSERT_TRUE(reporter->Flush(10s));
  EXPECT_THAT(master.AcceptedPoints(), ElementsAre("test/1/accuracy=0.5", "test/3/loss=0.25"));
}

TEST(ReporterTest, EmptyGroupIsSentAsTest) {
  FakeMaster master;
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(TestOptions(master.url())));
  reporter->Report(1, "", {{"loss", 0.5}});
  ASSERT_TRUE(reporter->Flush(10s));
  EXPECT_THAT(master.AcceptedPoints(), ElementsAre("test/1/loss=0.5"));
}

TEST(ReporterTest, FullBufferDropsTheOldestPoints) {
  FakeMaster master([](int64_t, int) { return 503; });
  ReporterOptions options = TestOptions(master.url());
  options.max_batch_points = 1;
  options.max_buffer_points = 3;
  options.exit_timeout = 0ms;
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter, Reporter::Create(options));
  for (int step = 1; step <= 10; ++step) reporter->Report(step, "test", {{"loss", 1.0}});
  ReporterStats stats = reporter->stats();
  // At most one batch is in flight beside the full buffer; everything else was dropped.
  EXPECT_LE(stats.points_pending, 4);
  EXPECT_EQ(stats.points_dropped + stats.points_pending, 10);

  master.set_policy(nullptr);
  ASSERT_TRUE(reporter->Flush(10s));
  std::vector<std::string> accepted = master.AcceptedPoints();
  ASSERT_FALSE(accepted.empty());
  EXPECT_EQ(accepted.back(), "test/10/loss=1");  // the newest points survive
}

TEST(ReporterTest, DefaultWritersAreRandomAndDistinct) {
  FakeMaster master;
  ReporterOptions options = TestOptions(master.url());
  options.writer.clear();
  KILN_ASSERT_OK_AND_ASSIGN(auto a, Reporter::Create(options));
  KILN_ASSERT_OK_AND_ASSIGN(auto b, Reporter::Create(options));
  EXPECT_THAT(a->writer(), MatchesRegex("w-[0-9a-f]{16}"));
  EXPECT_NE(a->writer(), b->writer());
}

TEST(ReporterTest, CreateRejectsBadOptions) {
  ReporterOptions options = TestOptions("http://127.0.0.1:1");
  options.job_id = "1/../2";
  EXPECT_THAT(Reporter::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job id")));
  options = TestOptions("not a url");
  EXPECT_THAT(Reporter::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  options = TestOptions("http://127.0.0.1:1");
  options.max_batch_points = 10;
  options.max_buffer_points = 5;
  EXPECT_THAT(Reporter::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_batch_points")));
  options = TestOptions("http://127.0.0.1:1");
  options.writer = std::string(129, 'w');
  EXPECT_THAT(Reporter::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("writer")));
}

Reporter::EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ReporterTest, FromEnvironmentIsOffOutsideKiln) {
  // A shell may export KILN_MASTER for the CLI; only KILN_JOB_ID marks a Kiln task.
  KILN_ASSERT_OK_AND_ASSIGN(auto reporter,
                            Reporter::FromEnvironment(Env({{"KILN_MASTER", "http://x:1"}})));
  EXPECT_EQ(reporter, nullptr);
}

TEST(ReporterTest, FromEnvironmentNeedsTheMasterWithAJob) {
  EXPECT_THAT(Reporter::FromEnvironment(Env({{"KILN_JOB_ID", "7"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("KILN_MASTER")));
  EXPECT_THAT(Reporter::FromEnvironment(Env({{"KILN_JOB_ID", "7"}, {"KILN_MASTER", "ftp://x"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("KILN_MASTER")));
}

TEST(ReporterTest, FromEnvironmentRejectsABadExitTimeout) {
  FakeMaster master;
  EXPECT_THAT(Reporter::FromEnvironment(Env({{"KILN_MASTER", master.url()},
                                             {"KILN_JOB_ID", "7"},
                                             {"KILN_REPORT_EXIT_TIMEOUT", "soon"}})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("KILN_REPORT_EXIT_TIMEOUT")));
  KILN_EXPECT_OK(Reporter::FromEnvironment(Env(
      {{"KILN_MASTER", master.url()}, {"KILN_JOB_ID", "7"}, {"KILN_REPORT_EXIT_TIMEOUT", "0.5"}})));
}

TEST(ReporterTest, FromEnvironmentReportsToTheTasksJobWithItsToken) {
  FakeMaster master;
  KILN_ASSERT_OK_AND_ASSIGN(
      auto reporter,
      Reporter::FromEnvironment(
          Env({{"KILN_MASTER", master.url()}, {"KILN_JOB_ID", "7"}, {"KILN_TOKEN", "tok"}})));
  ASSERT_NE(reporter, nullptr);
  reporter->Report(1, "test", {{"loss", 0.5}});
  ASSERT_TRUE(reporter->Flush(10s));
  ASSERT_EQ(master.received().size(), 1u);
  EXPECT_EQ(master.received()[0].path, "/api/v1/jobs/7/metrics");
  EXPECT_EQ(master.received()[0].authorization, "Bearer tok");
}

}  // namespace
}  // namespace kiln::tracking
