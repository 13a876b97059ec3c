// Drives real kiln-shim processes ($KILN_BUILD_DIR/bin/kiln-shim) through the agent-side
// API. Waits poll the task's state files with a deadline; nothing sleeps a fixed time.
#include "kiln/agent/task_supervision.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kiln/agent/task_log.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;

constexpr int64_t kDeadlineMicros = 20'000'000;

// Polls `done` until it holds or the deadline passes. Yields between polls rather than
// sleeping for a guessed duration.
bool PollUntil(const std::function<bool()>& done) {
  int64_t deadline = base::MonotonicMicros() + kDeadlineMicros;
  while (base::MonotonicMicros() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

class TaskSupervisionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* build_dir = std::getenv("KILN_BUILD_DIR");
    ASSERT_NE(build_dir, nullptr) << "set KILN_BUILD_DIR to the build directory";
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln_task_supervision.XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    launch_.shim_path = absl::StrCat(build_dir, "/bin/kiln-shim");
    launch_.task_dir = dir_ + "/task";
    launch_.workdir = dir_ + "/work";
    launch_.env = {{"PATH", "/usr/local/bin:/usr/bin:/bin"}, {"KILN_TEST", "yes"}};
    KILN_ASSERT_OK(base::MakeDirs(launch_.workdir));
  }
  void TearDown() override {
    // Whatever a failed test left running goes with its group.
    (void)SignalTask(launch_.task_dir, SIGKILL);
    PollUntil([&] {
      absl::StatusOr<TaskStatus> s = InspectTask(launch_.task_dir);
      return !s.ok() || s->liveness != TaskLiveness::kRunning;
    });
    ReapExitedShims();
    KILN_EXPECT_OK(base::RemoveAll(dir_));
  }

  // Waits for the task to be over (exited or lost) and returns its status.
  TaskStatus WaitUntilOver() {
    TaskStatus last;
    EXPECT_TRUE(PollUntil([&] {
      absl::StatusOr<TaskStatus> s = InspectTask(launch_.task_dir);
      if (s.ok()) last = *s;
      return s.ok() && s->liveness != TaskLiveness::kRunning;
    }));
    return last;
  }

  std::vector<std::string> StdoutLines() {
    absl::StatusOr<LogChunk> chunk =
        ReadLogRecords(absl::StrCat(launch_.task_dir, "/", kOutputLogFile), 0, 1 << 20);
    std::vector<std::string> out;
    if (!chunk.ok()) return out;
    for (const LogRecord& r : chunk->records) {
      if (r.stream == 'o') out.push_back(r.text);
    }
    return out;
  }

  std::string dir_;
  TaskLaunch launch_;
};

TEST_F(TaskSupervisionTest, LaunchesATaskWithExactlyTheGivenEnvironment) {
  launch_.command = {"/bin/sh", "-c", "echo \"$KILN_TEST|${HOME-unset}\"; exit 4"};
  KILN_ASSERT_OK_AND_ASSIGN(ShimInfo info, LaunchTask(launch_));
  EXPECT_GT(info.task_pid, 0);
  EXPECT_EQ(info.pgid, info.task_pid);
  TaskStatus status = WaitUntilOver();
  EXPECT_EQ(status.liveness, TaskLiveness::kExited);
  ASSERT_TRUE(status.exit.has_value());
  EXPECT_THAT(status.exit->exit_code, Optional(4));
  ASSERT_TRUE(status.shim.has_value());
  EXPECT_EQ(status.shim->task_pid, info.task_pid);
  EXPECT_THAT(StdoutLines(), ElementsAre("yes|unset"));
}

TEST_F(TaskSupervisionTest, ReportsACommandThatDoesNotExist) {
  launch_.command = {"pyhton3", "train.py"};
  EXPECT_THAT(LaunchTask(launch_),
              StatusIs(absl::StatusCode::kFailedPrecondition, "command not found: pyhton3"));
  // exit.json is there as soon as LaunchTask returns.
  KILN_ASSERT_OK_AND_ASSIGN(TaskStatus status, InspectTask(launch_.task_dir));
  EXPECT_EQ(status.liveness, TaskLiveness::kExited);
  EXPECT_FALSE(status.shim.has_value());
  ASSERT_TRUE(status.exit.has_value());
  EXPECT_THAT(status.exit->exit_code, Optional(127));
  EXPECT_EQ(status.exit->error, "command not found: pyhton3");
}

TEST_F(TaskSupervisionTest, RejectsBadLaunches) {
  launch_.command = {};
  EXPECT_THAT(LaunchTask(launch_), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
  launch_.command = {"true"};
  launch_.workdir = dir_ + "/missing";
  EXPECT_THAT(LaunchTask(launch_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not exist")));
  launch_.workdir = dir_;
  launch_.shim_path = dir_ + "/no-such-shim";
  EXPECT_THAT(LaunchTask(launch_),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("cannot start kiln-shim")));
}

TEST_F(TaskSupervisionTest, ExplainsAShimThatDiesWithoutReporting) {
  std::string fake_shim = dir_ + "/broken-shim";
  KILN_ASSERT_OK(
      base::WriteFileAtomically(fake_shim, "#!/bin/sh\necho shim is broken >&2\nexit 7\n", 0755));
  launch_.shim_path = fake_shim;
  launch_.command = {"true"};
  EXPECT_THAT(LaunchTask(launch_),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("shim is broken")));
}

TEST_F(TaskSupervisionTest, GivesUpOnAShimThatStaysSilent) {
  std::string fake_shim = dir_ + "/silent-shim";
  std::string pid_file = dir_ + "/silent.pid";
  KILN_ASSERT_OK(base::WriteFileAtomically(
      fake_shim, absl::StrCat("#!/bin/sh\necho $$ > ", pid_file, "\nexec sleep 1000\n"), 0755));
  launch_.shim_path = fake_shim;
  launch_.command = {"true"};
  EXPECT_THAT(LaunchTask(launch_, std::chrono::milliseconds(100)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("did not report")));
  int pid = 0;
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<std::string> text = base::ReadFile(pid_file);
    if (!text.ok() || text->empty() || text->back() != '\n') return false;
    pid = std::stoi(*text);
    return true;
  }));
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  EXPECT_TRUE(PollUntil([&] {
    ReapExitedShims();
    return ::waitpid(pid, nullptr, WNOHANG) < 0 && errno == ECHILD;
  }));
}

TEST_F(TaskSupervisionTest, SigtermStopsTheWholeTaskGroup) {
  // The task spawns a child and waits; both must go.
  launch_.command = {"/bin/sh", "-c", "sleep 1000 & echo $! > child.pid; wait"};
  KILN_ASSERT_OK_AND_ASSIGN(ShimInfo info, LaunchTask(launch_));
  std::string child_pid_file = launch_.workdir + "/child.pid";
  int child = 0;
  ASSERT_TRUE(PollUntil([&] {
    absl::StatusOr<std::string> text = base::ReadFile(child_pid_file);
    if (!text.ok() || text->empty() || text->back() != '\n') return false;
    child = std::stoi(*text);
    return true;
  }));
  KILN_ASSERT_OK_AND_ASSIGN(TaskStatus running, InspectTask(launch_.task_dir));
  EXPECT_EQ(running.liveness, TaskLiveness::kRunning);
  KILN_ASSERT_OK_AND_ASSIGN(ProcessStat child_stat, ReadProcessStat(child));

  KILN_ASSERT_OK(SignalTask(launch_.task_dir, SIGTERM));
  TaskStatus status = WaitUntilOver();
  EXPECT_EQ(status.liveness, TaskLiveness::kExited);
  ASSERT_TRUE(status.exit.has_value());
  EXPECT_THAT(status.exit->signal, Optional(SIGTERM));
  absl::StatusOr<ProcessStat> after = ReadProcessStat(child);
  EXPECT_TRUE(!after.ok() || after->state == 'Z' || after->start_time != child_stat.start_time);
  // Signalling a finished task is not an error.
  KILN_EXPECT_OK(SignalTask(launch_.task_dir, SIGTERM));
  (void)info;
}

TEST_F(TaskSupervisionTest, TaskOutlivesTheProcessThatLaunchedIt) {
  // The task blocks until the test writes to the fifo.
  std::string fifo = launch_.workdir + "/go";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  launch_.command = {"/bin/sh", "-c", "read x < go; echo \"got $x\"; exit 3"};
  pid_t launcher = ::fork();
  if (launcher == 0) {
    // Plays an agent that launches the task and then dies.
    ::_exit(LaunchTask(launch_).ok() ? 0 : 1);
  }
  int wstatus;
  ASSERT_EQ(::waitpid(launcher, &wstatus, 0), launcher);
  ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);

  // A new "agent" (this process) adopts the task from its directory.
  KILN_ASSERT_OK_AND_ASSIGN(TaskStatus running, InspectTask(launch_.task_dir));
  EXPECT_EQ(running.liveness, TaskLiveness::kRunning);
  ASSERT_TRUE(running.shim.has_value());

  int fd = -1;
  ASSERT_TRUE(PollUntil([&] {  // ENXIO until the task has opened the fifo for reading
    fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    return fd >= 0;
  }));
  ASSERT_EQ(::write(fd, "go\n", 3), 3);
  ::close(fd);

  TaskStatus status = WaitUntilOver();
  EXPECT_EQ(status.liveness, TaskLiveness::kExited);
  ASSERT_TRUE(status.exit.has_value());
  EXPECT_THAT(status.exit->exit_code, Optional(3));
  EXPECT_THAT(StdoutLines(), ElementsAre("got go"));
}

TEST_F(TaskSupervisionTest, TaskIsLostWhenItsShimDies) {
  launch_.command = {"sleep", "1000"};
  KILN_ASSERT_OK_AND_ASSIGN(ShimInfo info, LaunchTask(launch_));
  ASSERT_EQ(::kill(info.shim_pid, SIGKILL), 0);
  TaskStatus status = WaitUntilOver();
  EXPECT_EQ(status.liveness, TaskLiveness::kLost);
  EXPECT_FALSE(status.exit.has_value());
  // The orphaned task can still be stopped through its group.
  KILN_ASSERT_OK(SignalTask(launch_.task_dir, SIGKILL));
  EXPECT_TRUE(PollUntil([&] {
    absl::StatusOr<ProcessStat> s = ReadProcessStat(info.task_pid);
    return !s.ok() || s->state == 'Z';
  }));
}

TEST_F(TaskSupervisionTest, ReapsExitedShims) {
  launch_.command = {"true"};
  KILN_ASSERT_OK_AND_ASSIGN(ShimInfo info, LaunchTask(launch_));
  EXPECT_EQ(WaitUntilOver().liveness, TaskLiveness::kExited);
  EXPECT_TRUE(PollUntil([&] {
    ReapExitedShims();
    // Once reaped, the shim is no child of ours any more.
    return ::waitpid(info.shim_pid, nullptr, WNOHANG) < 0 && errno == ECHILD;
  }));
}

TEST_F(TaskSupervisionTest, InspectAndSignalNeedTaskState) {
  KILN_ASSERT_OK(base::MakeDirs(launch_.task_dir));
  EXPECT_THAT(InspectTask(launch_.task_dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no task state")));
  EXPECT_THAT(SignalTask(launch_.task_dir, SIGTERM),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("shim.json")));
  KILN_ASSERT_OK(base::WriteFileAtomically(launch_.task_dir + "/shim.json", "{not json"));
  EXPECT_THAT(InspectTask(launch_.task_dir),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt")));
}

TEST(TaskStateFilesTest, ShimInfoAndExitRecordRoundTrip) {
  ShimInfo info{.shim_pid = 10,
                .task_pid = 11,
                .pgid = 11,
                .task_start_time = 1234,
                .shim_start_time = 1200,
                .started_at = 1700000000000000};
  KILN_ASSERT_OK_AND_ASSIGN(ShimInfo parsed, ParseShimInfo(ShimInfoToJson(info)));
  EXPECT_EQ(parsed.shim_pid, 10);
  EXPECT_EQ(parsed.task_pid, 11);
  EXPECT_EQ(parsed.pgid, 11);
  EXPECT_EQ(parsed.task_start_time, 1234);
  EXPECT_EQ(parsed.shim_start_time, 1200);
  EXPECT_EQ(parsed.started_at, 1700000000000000);

  ExitRecord killed{.exit_code = std::nullopt, .signal = 9, .finished_at = 5, .error = ""};
  EXPECT_EQ(ExitRecordToJson(killed), R"({"exit_code":null,"finished_at":5,"signal":9})");
  KILN_ASSERT_OK_AND_ASSIGN(ExitRecord parsed_exit, ParseExitRecord(ExitRecordToJson(killed)));
  EXPECT_EQ(parsed_exit.exit_code, std::nullopt);
  EXPECT_THAT(parsed_exit.signal, Optional(9));

  EXPECT_THAT(ParseExitRecord(R"({"exit_code":null,"signal":null,"finished_at":1})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exactly one")));
  EXPECT_THAT(ParseShimInfo(R"({"shim_pid":1})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("task_pid")));
}

TEST(ProcessStatTest, ReadsThisProcessAndMissesAReapedOne) {
  KILN_ASSERT_OK_AND_ASSIGN(ProcessStat self, ReadProcessStat(::getpid()));
  EXPECT_EQ(self.state, 'R');
  EXPECT_GT(self.start_time, 0);
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  EXPECT_THAT(ReadProcessStat(child), StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
}

}  // namespace
}  // namespace kiln::agent
