// Runs the real kiln-shim binary ($KILN_BUILD_DIR/bin/kiln-shim) on small /bin/sh tasks.
// The shim exits right after writing exit.json, so waiting for the shim process is the
// synchronization: no sleeps.
#include "kiln/agent/task_shim.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/agent/task_log.h"
#include "kiln/agent/task_supervision.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::Optional;
using ::testing::StartsWith;

constexpr int kReadyFd = 3;

class TaskShimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* build_dir = std::getenv("KILN_BUILD_DIR");
    ASSERT_NE(build_dir, nullptr) << "set KILN_BUILD_DIR to the build directory";
    shim_path_ = absl::StrCat(build_dir, "/bin/kiln-shim");
    ASSERT_EQ(::access(shim_path_.c_str(), X_OK), 0) << shim_path_;
    std::string pattern = (std::filesystem::temp_directory_path() / "kiln_task_shim.XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    task_dir_ = dir_ + "/task";
    workdir_ = dir_ + "/work";
    KILN_ASSERT_OK(base::MakeDirs(task_dir_));
    KILN_ASSERT_OK(base::MakeDirs(workdir_));
  }
  void TearDown() override {
    if (ready_r_ >= 0) ::close(ready_r_);
    KILN_EXPECT_OK(base::RemoveAll(dir_));
  }

  // Starts the shim on `command` with fd 3 as its ready fd (read end in ready_r_).
  // `close_stdio` starts it with fds 0-2 closed.
  pid_t StartShim(const std::vector<std::string>& command, int64_t max_log_bytes = 1 << 20,
                  bool close_stdio = false) {
    std::vector<std::string> args = {shim_path_,   "--task-dir",
                                     task_dir_,    "--workdir",
                                     workdir_,     absl::StrCat("--max-log-bytes=", max_log_bytes),
                                     "--ready-fd", absl::StrCat(kReadyFd),
                                     "--"};
    args.insert(args.end(), command.begin(), command.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int ready[2];
    EXPECT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    int ready_w = ::fcntl(ready[1], F_DUPFD_CLOEXEC, 10);
    ::close(ready[1]);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(ready_w, kReadyFd);
      if (close_stdio) {
        for (int fd = 0; fd <= 2; ++fd) ::close(fd);
      }
      ::execv(argv[0], argv.data());
      ::_exit(126);
    }
    ::close(ready_w);
    ready_r_ = ready[0];
    return pid;
  }

  // Reads the ready line (blocks until the shim writes it or closes the fd).
  std::string ReadReadyLine() {
    std::string line;
    char c;
    while (::read(ready_r_, &c, 1) == 1 && c != '\n') line.push_back(c);
    return line;
  }

  // Waits for the shim to exit and returns its exit code (-1 if signaled).
  static int WaitShim(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  absl::StatusOr<ExitRecord> ReadExit() {
    KILN_ASSIGN_OR_RETURN(std::string text, base::ReadFile(task_dir_ + "/exit.json"));
    return ParseExitRecord(text);
  }
  std::vector<LogRecord> ReadLog() {
    absl::StatusOr<LogChunk> chunk = ReadLogRecords(task_dir_ + "/output.log", 0, 1 << 30);
    EXPECT_TRUE(chunk.ok()) << chunk.status();
    return chunk.ok() ? chunk->records : std::vector<LogRecord>{};
  }
  std::vector<std::string> Texts(char stream) {
    std::vector<std::string> out;
    for (const LogRecord& r : ReadLog()) {
      if (r.stream == stream) out.push_back(r.text);
    }
    return out;
  }

  std::string shim_path_;
  std::string dir_;
  std::string task_dir_;
  std::string workdir_;
  int ready_r_ = -1;
};

TEST_F(TaskShimTest, CapturesStdoutAndStderrLinesWithTimestamps) {
  int64_t before = base::SystemClock::Get().NowMicros();
  pid_t shim = StartShim({"/bin/sh", "-c",
                          "echo one; echo two >&2; printf 'three\\r\\n'; echo four >&2; "
                          "printf 'no newline'"});
  EXPECT_THAT(ReadReadyLine(), StartsWith("started "));
  ASSERT_EQ(WaitShim(shim), 0);
  int64_t after = base::SystemClock::Get().NowMicros();

  EXPECT_THAT(Texts('o'), ElementsAre("one", "three\r", "no newline"));
  EXPECT_THAT(Texts('e'), ElementsAre("two", "four"));
  int64_t last_out = 0, last_err = 0;
  for (const LogRecord& r : ReadLog()) {
    EXPECT_GE(r.time_micros, before);
    EXPECT_LE(r.time_micros, after);
    int64_t& last = r.stream == 'o' ? last_out : last_err;
    EXPECT_GE(r.time_micros, last);
    last = r.time_micros;
  }
  KILN_ASSERT_OK_AND_ASSIGN(ExitRecord exit, ReadExit());
  EXPECT_THAT(exit.exit_code, Optional(0));
  EXPECT_EQ(exit.signal, std::nullopt);
  EXPECT_GE(exit.finished_at, before);
  EXPECT_LE(exit.finished_at, after);
  EXPECT_EQ(exit.error, "");
}

TEST_F(TaskShimTest, RecordsTheExitCode) {
  pid_t shim = StartShim({"/bin/sh", "-c", "exit 3"});
  ASSERT_EQ(WaitShim(shim), 0);
  KILN_ASSERT_OK_AND_ASSIGN(ExitRecord exit, ReadExit());
  EXPECT_THAT(exit.exit_code, Optional(3));
}

TEST_F(TaskShimTest, RecordsDeathBySignal) {
  pid_t shim = StartShim({"/bin/sh", "-c", "kill -KILL $$"});
  ASSERT_EQ(WaitShim(shim), 0);
  KILN_ASSERT_OK_AND_ASSIGN(ExitRecord exit, ReadExit());
  EXPECT_EQ(exit.exit_code, std::nullopt);
  EXPECT_THAT(exit.signal, Optional(SIGKILL));
}

TEST_F(TaskShimTest, WritesShimJsonBeforeTheReadyLine) {
  pid_t shim = StartShim({"/bin/sh", "-c", "read x"});  // stdin is /dev/null: returns at once
  std::string line = ReadReadyLine();
  KILN_ASSERT_OK_AND_ASSIGN(std::string text, base::ReadFile(task_dir_ + "/shim.json"));
  KILN_ASSERT_OK_AND_ASSIGN(ShimInfo info, ParseShimInfo(text));
  EXPECT_EQ(line, absl::StrCat("started ", info.task_pid));
  EXPECT_EQ(info.shim_pid, shim);
  EXPECT_EQ(info.pgid, info.task_pid);
  EXPECT_GT(info.task_start_time, 0);
  EXPECT_GT(info.shim_start_time, 0);
  ASSERT_EQ(WaitShim(shim), 0);
  KILN_ASSERT_OK_AND_ASSIGN(ExitRecord exit, ReadExit());
  EXPECT_THAT(exit.exit_code, Optional(1));  // `read` hit EOF on /dev/null
}

TEST_F(TaskShimTest, ReportsACommandThatDoesNotExist) {
  pid_t shim = StartShim({"kiln-no-such-command-pyhton3", "train.py"});
  EXPECT_EQ(ReadReadyLine(), "failed command not found: kiln-no-such-command-pyhton3");
  ASSERT_EQ(WaitShim(shim), 0);
  KILN_ASSERT_OK_AND_ASSIGN(ExitRecord exit, ReadExit());
  EXPECT_THAT(exit.exit_code, Optional(127));
  EXPECT_EQ(exit.error, "command not found: kiln-no-such-command-pyhton3");
  EXPECT_THAT(Texts('e'), ElementsAre("[kiln] command not found: kiln-no-such-command-pyhton3"));
  EXPECT_FALSE(std::filesystem::exists(task_dir_ + "/shim.json"));
}

TEST_F(TaskShimTest, ReportsACommandThatIsNotExecutable) {
  KILN_ASSERT_OK(base::WriteFileAtomically(workdir_ + "/x.sh", "echo hi\n", 0644));
  pid_t shim = StartShim({"./x.sh"});
  EXPECT_EQ(ReadReadyLine(), "failed permission denied: ./x.sh");
  ASSERT_EQ(WaitShim(shim), 0);
  KILN_ASSERT_OK_AND_ASSIGN(ExitRecord exit, ReadExit());
  EXPECT_THAT(exit.exit_code, Optional(127));
  EXPECT_EQ(exit.error, "permission denied: ./x.sh");
}

TEST_F(TaskShimTest, RunsTheTaskInItsWorkdirAndOwnGroupWithNullStdin) {
  pid_t shim = StartShim(
      {"/bin/sh", "-c", "pwd; cat; [ \"$(cut -d' ' -f5 /proc/$$/stat)\" = $$ ] && echo own-group"});
  ASSERT_EQ(WaitShim(shim), 0);
  EXPECT_THAT(Texts('o'), ElementsAre(std::filesystem::canonical(workdir_).string(), "own-group"));
}

TEST_F(TaskShimTest, LeaksNoFdsIntoTheTask) {
  // An fd the launcher forgot to mark close-on-exec must not reach the task.
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int leaked = ::fcntl(null_fd, F_DUPFD, 20);  // F_DUPFD: without FD_CLOEXEC
  ::close(null_fd);
  ASSERT_GE(leaked, 20);
  pid_t shim = StartShim({"/bin/sh", "-c", "exec ls /proc/self/fd"});
  ::close(leaked);
  ASSERT_EQ(WaitShim(shim), 0);
  // stdio, and the directory `ls` itself has open.
  EXPECT_THAT(Texts('o'), ElementsAre("0", "1", "2", "3"));
}

TEST_F(TaskShimTest, SplitsLinesLongerThanARecord) {
  pid_t shim = StartShim({"/bin/sh", "-c", "head -c 40000 /dev/zero | tr '\\0' a; echo"});
  ASSERT_EQ(WaitShim(shim), 0);
  std::vector<std::string> out = Texts('o');
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], std::string(kMaxRecordText, 'a'));
  EXPECT_EQ(out[1], std::string(kMaxRecordText, 'a'));
  EXPECT_EQ(out[2], std::string(40000 - 2 * kMaxRecordText, 'a'));
}

TEST_F(TaskShimTest, CapsTheLogAndKeepsDrainingAFloodingTask) {
  constexpr int64_t kCap = 64 * 1024;
  // 20 MB through a 64 KiB pipe: the task only finishes if the shim keeps reading.
  pid_t shim = StartShim({"/bin/sh", "-c", "yes 'flooding line' | head -c 20000000; exit 5"}, kCap);
  ASSERT_EQ(WaitShim(shim), 0);
  KILN_ASSERT_OK_AND_ASSIGN(ExitRecord exit, ReadExit());
  EXPECT_THAT(exit.exit_code, Optional(5));
  struct stat st;
  ASSERT_EQ(::stat((task_dir_ + "/output.log").c_str(), &st), 0);
  EXPECT_LE(st.st_size, kCap);
  std::vector<LogRecord> records = ReadLog();
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(records.back().stream, 'e');
  EXPECT_EQ(records.back().text,
            "[kiln] log limit of 65536 bytes reached; further output is dropped");
  EXPECT_EQ(records.front().text, "flooding line");
}

TEST_F(TaskShimTest, KillsWhatIsLeftOfTheGroupAfterTheTaskExits) {
  // The background sleep keeps stdout open: the shim drains for about a second, then kills.
  pid_t shim = StartShim({"/bin/sh", "-c", "sleep 1000 & echo $!; exit 0"});
  ASSERT_EQ(WaitShim(shim), 0);
  KILN_ASSERT_OK_AND_ASSIGN(ExitRecord exit, ReadExit());
  EXPECT_THAT(exit.exit_code, Optional(0));
  std::vector<std::string> out = Texts('o');
  ASSERT_EQ(out.size(), 1u);
  int sleeper = std::stoi(out[0]);
  // SIGKILL was sent before exit.json was written. Its delivery is asynchronous, and the
  // orphan may linger as a zombie until init reaps it; within the deadline it stops running.
  int64_t deadline = base::MonotonicMicros() + 10'000'000;
  absl::StatusOr<ProcessStat> stat = ReadProcessStat(sleeper);
  while (stat.ok() && stat->state != 'Z' && base::MonotonicMicros() < deadline) {
    std::this_thread::yield();
    stat = ReadProcessStat(sleeper);
  }
  if (stat.ok()) {
    EXPECT_EQ(stat->state, 'Z');
  } else {
    EXPECT_TRUE(absl::IsNotFound(stat.status())) << stat.status();
  }
}

TEST_F(TaskShimTest, ForwardsSigtermToTheTaskGroup) {
  pid_t shim = StartShim({"/bin/sh", "-c", "sleep 1000; echo not reached"});
  ASSERT_THAT(ReadReadyLine(), StartsWith("started "));
  ASSERT_EQ(::kill(shim, SIGTERM), 0);
  ASSERT_EQ(WaitShim(shim), 0);
  KILN_ASSERT_OK_AND_ASSIGN(ExitRecord exit, ReadExit());
  EXPECT_THAT(exit.signal, Optional(SIGTERM));
  EXPECT_THAT(Texts('o'), ElementsAre());
}

TEST_F(TaskShimTest, WorksWhenStartedWithClosedStdio) {
  pid_t shim = StartShim({"/bin/sh", "-c", "echo out; echo err >&2"}, 1 << 20,
                         /*close_stdio=*/true);
  EXPECT_THAT(ReadReadyLine(), StartsWith("started "));
  ASSERT_EQ(WaitShim(shim), 0);
  EXPECT_THAT(Texts('o'), ElementsAre("out"));
  EXPECT_THAT(Texts('e'), ElementsAre("err"));
}

TEST_F(TaskShimTest, RejectsAMissingCommand) {
  std::string cmd = absl::StrCat(shim_path_, " --task-dir ", task_dir_, " --workdir ", workdir_,
                                 " -- 2>/dev/null");
  int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
}

}  // namespace
}  // namespace kiln::agent
