#include "kiln/cli/job_follow.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include "kiln/base/testing/status_matchers.h"
#include "kiln/cli/exit_codes.h"
#include "kiln/cli/testing/fake_master.h"

namespace kiln::cli {
namespace {

using testing::FakeMaster;
using ::testing::HasSubstr;
using testing::JobRecord;

std::string LogLine(int64_t seq, std::string stream, std::string text) {
  return base::DumpJson({{"seq", seq},
                         {"time", "2026-11-26T10:00:05.000000Z"},
                         {"stream", stream},
                         {"text", text}}) +
         "\n";
}

TEST(LineSplitterTest, JoinsLinesAcrossChunks) {
  LineSplitter splitter;
  std::vector<std::string> lines;
  auto collect = [&lines](std::string_view line) { lines.emplace_back(line); };
  splitter.Feed("a\nb", collect);
  splitter.Feed("c", collect);
  splitter.Feed("\n\nd", collect);
  EXPECT_EQ(lines, (std::vector<std::string>{"a", "bc", ""}));
  EXPECT_EQ(splitter.pending(), "d");
}

TEST(JobSummaryTest, SaysHowEachEndingWent) {
  EXPECT_EQ(JobSummary(JobRecord(7, "FINISHED", 0)), "job 7 FINISHED in 41.2 s");
  EXPECT_EQ(JobSummary(JobRecord(7, "FAILED", 2, "exited with code 2")),
            "job 7 FAILED: exited with code 2");
  EXPECT_EQ(JobSummary(JobRecord(7, "FAILED", 3)), "job 7 FAILED: exited with code 3");
  EXPECT_EQ(JobSummary(JobRecord(7, "KILLED")), "job 7 KILLED after 41.2 s");
}

TEST(ExitCodeForJobTest, FollowsTheJob) {
  EXPECT_EQ(ExitCodeForJob(JobRecord(7, "FINISHED", 0)), 0);
  EXPECT_EQ(ExitCodeForJob(JobRecord(7, "FAILED", 2)), 2);
  EXPECT_EQ(ExitCodeForJob(JobRecord(7, "FAILED", std::nullopt, "agent lost")), 1);
  EXPECT_EQ(ExitCodeForJob(JobRecord(7, "FAILED", 0, "odd")), 1);
  EXPECT_EQ(ExitCodeForJob(JobRecord(7, "KILLED")), kExitJobKilled);
}

TEST(PrintLogLinesTest, SplitsStreamsAndSkipsSeenLines) {
  std::ostringstream out, err;
  Invocation inv;
  inv.out = &out;
  inv.err = &err;
  int64_t seq = 1;
  PrintLogLines(
      base::Json::parse("[" + LogLine(1, "stdout", "old") + "," + LogLine(2, "stdout", "epoch 1") +
                        "," + LogLine(3, "stderr", "warning") + "]"),
      inv, &seq);
  EXPECT_EQ(out.str(), "epoch 1\n");
  EXPECT_EQ(err.str(), "warning\n");
  EXPECT_EQ(seq, 3);
}

class FollowLogsTest : public ::testing::Test {
 protected:
  Invocation MakeInvocation() {
    Invocation inv;
    inv.out = &out_;
    inv.err = &err_;
    inv.clock = &clock_;
    inv.sleep = [this](int64_t micros) {
      slept_ += micros;
      clock_.AdvanceMicros(micros);
    };
    return inv;
  }
  std::unique_ptr<ApiClient> Client(const FakeMaster& master) {
    auto api = ApiClient::Create(Connection{.url = master.url()});
    KILN_CHECK_OK(api.status());
    return *std::move(api);
  }

  std::ostringstream out_;
  std::ostringstream err_;
  base::FakeClock clock_;
  int64_t slept_ = 0;
};

// An output buffer that tells the test when the CLI has flushed some text, so the fake
// master can cut a connection exactly after the client has consumed what was sent.
class FlushSignallingBuf : public std::stringbuf {
 public:
  std::future<void> FlushedWith(std::string text) {
    std::lock_guard<std::mutex> lock(mu_);
    want_ = std::move(text);
    promise_ = std::promise<void>();
    return promise_.get_future();
  }

 protected:
  int sync() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!want_.empty() && str().find(want_) != std::string::npos) {
      want_.clear();
      promise_.set_value();
    }
    return 0;
  }

 private:
  std::mutex mu_;
  std::string want_;
  std::promise<void> promise_;
};

TEST_F(FollowLogsTest, ResumesFromTheLastLineAfterADroppedConnection) {
  FlushSignallingBuf out_buf;
  std::ostream out(&out_buf);
  std::shared_future<void> printed_first = out_buf.FlushedWith("epoch 1\n").share();
  std::thread cutter;
  FakeMaster master;
  std::atomic<int> streams{0};
  master.On("GET", "/api/v1/jobs/{id}/logs", [&](net::HttpRequest& req, net::Responder r) {
    if (req.Query("follow") != "true") {
      r.Send(net::JsonResponse(200, {{"lines", base::Json::array()}, {"next", 3}, {"done", true}}));
      return;
    }
    auto stream = r.StartStream(200, "application/x-ndjson");
    if (streams++ == 0) {
      EXPECT_EQ(req.Query("after"), "0");
      std::string line = LogLine(1, "stdout", "epoch 1");
      stream->Write(line.substr(0, 10));
      stream->Write(line.substr(10));
      // Once the client has printed the line, drop the stream without Finish: the
      // connection is cut mid-response, as when the master dies.
      cutter = std::thread([stream = std::move(stream), printed_first]() mutable {
        printed_first.wait();
        stream.reset();
      });
      return;
    }
    EXPECT_EQ(req.Query("after"), "1");
    stream->Write(LogLine(2, "stderr", "warning") + LogLine(3, "stdout", "epoch 2"));
    stream->Finish();
  });
  master.Start();
  Invocation inv = MakeInvocation();
  inv.out = &out;
  auto api = Client(master);
  int64_t seq = 0;
  KILN_EXPECT_OK(FollowLogs(*api, inv, 7, &seq));
  if (cutter.joinable()) cutter.join();
  EXPECT_EQ(out_buf.str(), "epoch 1\nepoch 2\n");
  EXPECT_THAT(err_.str(), HasSubstr("warning\n"));
  EXPECT_THAT(err_.str(), HasSubstr("lost contact with Kiln"));
  EXPECT_EQ(seq, 3);
  EXPECT_EQ(streams.load(), 2);
}

TEST_F(FollowLogsTest, GivesUpAfterAMinuteWithoutTheMasterAndSaysHowToReattach) {
  FakeMaster master;
  master.On("GET", "/api/v1/jobs/{id}/logs", [](net::HttpRequest&, net::Responder r) {
    r.Send(net::ErrorResponse(absl::UnavailableError("master is starting")));
  });
  master.Start();
  Invocation inv = MakeInvocation();
  auto api = Client(master);
  int64_t seq = 4;
  EXPECT_THAT(FollowLogs(*api, inv, 7, &seq),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("kiln logs -f --since-seq 4 7")));
  EXPECT_GE(slept_, kReconnectWindowMicros);
  EXPECT_LT(slept_, kReconnectWindowMicros + 10'000'000);
}

TEST_F(FollowLogsTest, StopsAtOnceWhenTheJobDoesNotExist) {
  FakeMaster master;
  master.On("GET", "/api/v1/jobs/{id}/logs", [](net::HttpRequest&, net::Responder r) {
    r.Send(net::ErrorResponse(absl::NotFoundError("job 99 not found")));
  });
  master.Start();
  Invocation inv = MakeInvocation();
  auto api = Client(master);
  int64_t seq = 0;
  EXPECT_THAT(FollowLogs(*api, inv, 99, &seq),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("job 99 not found")));
  EXPECT_EQ(slept_, 0);
}

TEST_F(FollowLogsTest, WaitForJobEndPollsUntilTheJobEnds) {
  FakeMaster master;
  std::atomic<int> polls{0};
  master.On("GET", "/api/v1/jobs/{id}", [&](net::HttpRequest&, net::Responder r) {
    r.Send(net::JsonResponse(200, polls++ < 2 ? JobRecord(7, "RUNNING")
                                              : JobRecord(7, "FAILED", 2, "exited with code 2")));
  });
  master.Start();
  Invocation inv = MakeInvocation();
  auto api = Client(master);
  KILN_ASSERT_OK_AND_ASSIGN(base::Json job, WaitForJobEnd(*api, inv, 7));
  EXPECT_EQ(job["state"], "FAILED");
  EXPECT_EQ(polls.load(), 3);
}

}  // namespace
}  // namespace kiln::cli
