#include "kiln/agent/task_shim.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/agent/task_log.h"
#include "kiln/agent/task_supervision.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"

namespace kiln::agent {
namespace {

// After the task's main process exits, grandchildren may keep its pipes open; output is
// drained for at most this long before what is left of the group is killed.
constexpr int64_t kDrainAfterExitMicros = 1'000'000;
// Bytes read from one pipe per poll round, so neither stream nor a pending signal starves.
constexpr size_t kReadBudgetPerRound = 256 * 1024;

// Which step of starting the task failed, sent with errno over the exec-status pipe.
enum class StartStep : int { kSetup = 1, kChdir = 2, kExec = 3 };
struct StartFailure {
  StartStep step;
  int err;
};

void ShimLog(std::string_view message) {
  std::string line = absl::StrCat("kiln-shim: ", std::string(message), "\n");
  // Best effort: stderr may be a closed pipe or /dev/null.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

void WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the reader is gone (EPIPE): nobody to tell
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

void CloseFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// With a closed fd 0, 1 or 2, the next pipe() would land there and the task's dup2 onto
// stdio would clobber it; /dev/null fills the holes first.
void EnsureStdioOpen() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd >= 0 && null_fd != fd) {
      ::dup2(null_fd, fd);
      ::close(null_fd);
    }
  }
}

// Leaves the agent's session so that neither its exit nor its terminal's hangup reaches
// the shim or the task. setsid() fails for a process-group leader (e.g. started from an
// interactive shell); then a child, which never leads a group, carries on instead.
void BecomeSessionLeader() {
  if (::getsid(0) == ::getpid()) return;
  if (::setsid() >= 0) return;
  pid_t pid = ::fork();
  if (pid < 0) {
    ShimLog(absl::StrCat("setsid and fork failed: ", std::strerror(errno)));
    return;  // keep going in the agent's session rather than not run the task at all
  }
  if (pid > 0) ::_exit(0);
  ::setsid();
}

std::string DescribeStartFailure(const StartFailure& failure, const ShimOptions& options) {
  const std::string& program = options.command[0];
  switch (failure.step) {
    case StartStep::kChdir:
      return absl::StrCat("cannot enter working directory ", options.workdir, ": ",
                          std::strerror(failure.err));
    case StartStep::kExec:
      switch (failure.err) {
        case ENOENT:
          return absl::StrCat("command not found: ", program);
        case EACCES:
          return absl::StrCat("permission denied: ", program);
        case ENOEXEC:
          return absl::StrCat("not an executable: ", program);
        default:
          return absl::StrCat("cannot execute ", program, ": ", std::strerror(failure.err));
      }
    case StartStep::kSetup:
      break;
  }
  return absl::StrCat("cannot set up the task process: ", std::strerror(failure.err));
}

// Runs in the forked child; only async-signal-safe calls from here on (the shim is
// single-threaded, but this keeps the child path obviously correct). Never returns.
[[noreturn]] void ExecTask(const ShimOptions& options, char* const* argv, int stdout_w,
                           int stderr_w, int status_w) {
  auto fail = [status_w](StartStep step, int err) {
    StartFailure failure{step, err};
    ssize_t ignored = ::write(status_w, &failure, sizeof(failure));
    (void)ignored;
    ::_exit(127);
  };
  ::setpgid(0, 0);
  if (::chdir(options.workdir.c_str()) != 0) fail(StartStep::kChdir, errno);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) fail(StartStep::kSetup, errno);
  // Stdio is open (EnsureStdioOpen), so none of these fds is 0, 1 or 2 and every dup2
  // really duplicates (clearing FD_CLOEXEC on the copy).
  if (::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(stdout_w, STDOUT_FILENO) < 0 ||
      ::dup2(stderr_w, STDERR_FILENO) < 0) {
    fail(StartStep::kSetup, errno);
  }
  // Whatever the shim inherited without O_CLOEXEC (from the agent) must not reach the task.
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    for (int fd = 3; fd < 65536; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  sigset_t empty;
  sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);  // EINVAL for KILL
  ::execvp(argv[0], argv);
  fail(StartStep::kExec, errno);
  ::_exit(127);  // unreachable; `fail` exits
}

struct StartedTask {
  pid_t pid = -1;
  int stdout_r = -1;
  int stderr_r = -1;
};

// Forks and execs the task. Returns the running task, or the message saying why it could
// not be started (then no task process is left).
std::optional<StartedTask> StartTask(const ShimOptions& options, std::string* error) {
  std::vector<char*> argv;
  for (const std::string& arg : options.command) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  int out[2], err[2], status[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    *error = absl::StrCat("pipe: ", std::strerror(errno));
    return std::nullopt;
  }
  if (::pipe2(err, O_CLOEXEC) != 0) {
    *error = absl::StrCat("pipe: ", std::strerror(errno));
    ::close(out[0]);
    ::close(out[1]);
    return std::nullopt;
  }
  if (::pipe2(status, O_CLOEXEC) != 0) {
    *error = absl::StrCat("pipe: ", std::strerror(errno));
    for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
    return std::nullopt;
  }
  pid_t pid = ::fork();
  if (pid == 0) ExecTask(options, argv.data(), out[1], err[1], status[1]);
  int fork_errno = errno;
  ::close(out[1]);
  ::close(err[1]);
  ::close(status[1]);
  if (pid < 0) {
    *error = absl::StrCat("fork: ", std::strerror(fork_errno));
    for (int fd : {out[0], err[0], status[0]}) ::close(fd);
    return std::nullopt;
  }
  // Both sides set the group, so that a signal forwarded right away already reaches it.
  // EACCES here just means the child has exec'd and did it itself.
  ::setpgid(pid, pid);

  // The status pipe closes on a successful exec (O_CLOEXEC) or carries a StartFailure.
  StartFailure failure{};
  ssize_t n;
  do {
    n = ::read(status[0], &failure, sizeof(failure));
  } while (n < 0 && errno == EINTR);
  ::close(status[0]);
  if (n == 0) return StartedTask{pid, out[0], err[0]};

  if (n != static_cast<ssize_t>(sizeof(failure))) failure = {StartStep::kSetup, EIO};
  *error = DescribeStartFailure(failure, options);
  int wstatus;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  ::close(out[0]);
  ::close(err[0]);
  return std::nullopt;
}

void ReportReady(int& ready_fd, std::string_view line) {
  if (ready_fd < 0) return;
  WriteAll(ready_fd, line);
  CloseFd(ready_fd);
}

// Records a task that never ran: a line in output.log, exit.json, the ready line.
int RecordStartFailure(const ShimOptions& options, TaskLogWriter* log, int& ready_fd,
                       const std::string& message) {
  ShimLog(message);
  int64_t now = base::SystemClock::Get().NowMicros();
  if (log != nullptr) {
    log->AppendRecord('e', absl::StrCat("[kiln] ", message), now);
    if (absl::Status s = log->Flush(); !s.ok()) ShimLog(s.ToString());
  }
  ExitRecord record;
  record.exit_code = 127;
  record.finished_at = now;
  record.error = message;
  absl::Status written = base::WriteFileAtomically(
      absl::StrCat(options.task_dir, "/", kExitRecordFile), ExitRecordToJson(record));
  // exit.json goes first: an agent that hears "failed" may read it immediately.
  ReportReady(ready_fd, absl::StrCat("failed ", message, "\n"));
  if (!written.ok()) {
    ShimLog(written.ToString());
    return 1;
  }
  return 0;
}

// Reads what `fd` has now (up to the round's budget) into `log`. Returns false at EOF or
// on a read error, after which the pipe is done.
bool DrainPipe(int fd, char stream, TaskLogWriter& log, int64_t now) {
  static char buf[64 * 1024];
  size_t total = 0;
  while (total < kReadBudgetPerRound) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN;
    }
    if (n == 0) return false;
    log.Append(stream, std::string_view(buf, static_cast<size_t>(n)), now);
    total += static_cast<size_t>(n);
  }
  return true;
}

// The rest of the task's life: copy output, forward signals, wait for the exit.
int SuperviseTask(const ShimOptions& options, const StartedTask& task, int signal_fd,
                  TaskLogWriter& log) {
  int pipes[2] = {task.stdout_r, task.stderr_r};
  const char streams[2] = {'o', 'e'};
  for (int fd : pipes) ::fcntl(fd, F_SETFL, O_NONBLOCK);

  std::optional<int> wait_status;
  int64_t finished_at = 0;
  int64_t drain_deadline = 0;  // monotonic; set once the main process has exited
  while (true) {
    if (wait_status.has_value() && pipes[0] < 0 && pipes[1] < 0) break;
    int timeout_ms = -1;
    if (wait_status.has_value()) {
      int64_t left = drain_deadline - base::MonotonicMicros();
      if (left <= 0) break;
      timeout_ms = static_cast<int>((left + 999) / 1000);
    }
    pollfd fds[3] = {{pipes[0], POLLIN, 0}, {pipes[1], POLLIN, 0}, {signal_fd, POLLIN, 0}};
    int ready = ::poll(fds, 3, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      ShimLog(absl::StrCat("poll: ", std::strerror(errno)));
      break;  // cannot supervise any more; record what we know
    }
    int64_t now = base::SystemClock::Get().NowMicros();
    for (int i = 0; i < 2; ++i) {
      if (pipes[i] < 0 || fds[i].revents == 0) continue;
      if (!DrainPipe(pipes[i], streams[i], log, now)) {
        log.FinishStream(streams[i], now);
        CloseFd(pipes[i]);
      }
    }
    if (absl::Status s = log.Flush(); !s.ok()) ShimLog(s.ToString());
    if (fds[2].revents == 0) continue;
    signalfd_siginfo info;
    while (::read(signal_fd, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
      if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT) {
        ::kill(-task.pid, static_cast<int>(info.ssi_signo));
      }
    }
    // SIGCHLD coalesces, so rather than trust it, ask whether the task is done now.
    int wstatus;
    if (!wait_status.has_value() && ::waitpid(task.pid, &wstatus, WNOHANG) == task.pid) {
      wait_status = wstatus;
      finished_at = now;
      drain_deadline = base::MonotonicMicros() + kDrainAfterExitMicros;
    }
  }
  // Whatever is left of the group (daemonized helpers, stuck grandchildren) goes now:
  // the task is over, and nothing may hold its resources past exit.json.
  ::kill(-task.pid, SIGKILL);
  if (!wait_status.has_value()) {
    // Only after a poll failure: reap the main process, which the SIGKILL just ended.
    int wstatus = 0;
    while (::waitpid(task.pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    wait_status = wstatus;
    finished_at = base::SystemClock::Get().NowMicros();
  }
  // Output already in the pipes when the group died is still the task's.
  int64_t now = base::SystemClock::Get().NowMicros();
  for (int i = 0; i < 2; ++i) {
    if (pipes[i] < 0) continue;
    DrainPipe(pipes[i], streams[i], log, now);
    log.FinishStream(streams[i], now);
    CloseFd(pipes[i]);
  }
  if (absl::Status s = log.Flush(); !s.ok()) ShimLog(s.ToString());

  ExitRecord record;
  if (WIFEXITED(*wait_status)) record.exit_code = WEXITSTATUS(*wait_status);
  if (WIFSIGNALED(*wait_status)) record.signal = WTERMSIG(*wait_status);
  record.finished_at = finished_at;
  absl::Status written = base::WriteFileAtomically(
      absl::StrCat(options.task_dir, "/", kExitRecordFile), ExitRecordToJson(record));
  if (!written.ok()) {
    ShimLog(written.ToString());
    return 1;
  }
  return 0;
}

}  // namespace

int RunShim(const ShimOptions& options) {
  EnsureStdioOpen();
  int ready_fd = options.ready_fd;
  if (ready_fd >= 0) ::fcntl(ready_fd, F_SETFD, FD_CLOEXEC);

  // Blocked from the start, so a SIGTERM that arrives while the task starts is forwarded
  // rather than killing the shim and orphaning the task.
  sigset_t handled;
  sigemptyset(&handled);
  sigaddset(&handled, SIGCHLD);
  sigaddset(&handled, SIGTERM);
  sigaddset(&handled, SIGINT);
  ::sigprocmask(SIG_BLOCK, &handled, nullptr);
  BecomeSessionLeader();
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);

  if (options.command.empty()) {
    ShimLog("no command given");
    ReportReady(ready_fd, "failed no command given\n");
    return 1;
  }
  absl::StatusOr<TaskLogWriter> log = TaskLogWriter::Open(
      absl::StrCat(options.task_dir, "/", kOutputLogFile), options.max_log_bytes);
  if (!log.ok()) {
    return RecordStartFailure(options, nullptr, ready_fd,
                              absl::StrCat("cannot open output log: ", log.status().message()));
  }
  int signal_fd = ::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd < 0) {
    return RecordStartFailure(options, &*log, ready_fd,
                              absl::StrCat("signalfd: ", std::strerror(errno)));
  }

  std::string error;
  std::optional<StartedTask> task = StartTask(options, &error);
  if (!task.has_value()) return RecordStartFailure(options, &*log, ready_fd, error);

  ShimInfo info;
  info.shim_pid = ::getpid();
  info.task_pid = task->pid;
  info.pgid = task->pid;
  info.started_at = base::SystemClock::Get().NowMicros();
  // The task is our unreaped child, so its /proc entry exists even if it already exited.
  absl::StatusOr<ProcessStat> task_stat = ReadProcessStat(task->pid);
  absl::StatusOr<ProcessStat> shim_stat = ReadProcessStat(info.shim_pid);
  absl::Status written = task_stat.status();
  if (written.ok()) written = shim_stat.status();
  if (written.ok()) {
    info.task_start_time = task_stat->start_time;
    info.shim_start_time = shim_stat->start_time;
    written = base::WriteFileAtomically(absl::StrCat(options.task_dir, "/", kShimInfoFile),
                                        ShimInfoToJson(info));
  }
  if (!written.ok()) {
    // Without shim.json nobody could find or stop the task later: do not let it run.
    ::kill(-task->pid, SIGKILL);
    int wstatus;
    while (::waitpid(task->pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    ::close(task->stdout_r);
    ::close(task->stderr_r);
    return std::max(
        1, RecordStartFailure(options, &*log, ready_fd,
                              absl::StrCat("cannot record the task: ", written.message())));
  }
  ReportReady(ready_fd, absl::StrCat("started ", task->pid, "\n"));
  int code = SuperviseTask(options, *task, signal_fd, *log);
  ::close(signal_fd);
  return code;
}

}  // namespace kiln::agent
