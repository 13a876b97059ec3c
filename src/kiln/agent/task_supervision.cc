#include "kiln/agent/task_supervision.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"
#include "kiln/base/clock.h"
#include "kiln/base/files.h"
#include "kiln/base/json.h"
#include "kiln/base/status.h"

namespace kiln::agent {
namespace {

// The fd on which the shim writes its ready line (argv says so, see LaunchTask).
constexpr int kShimReadyFd = 3;
// A ready line longer than this is not from a working shim.
constexpr size_t kMaxReadyLine = 64 * 1024;

// Shims launched by this process and not yet reaped. A process-wide registry rather than
// an object because the pids belong to the process: whoever calls ReapExitedShims must see
// every shim any thread launched, and no other child of the agent may be reaped by it.
std::mutex& LaunchedShimsMutex() {
  static std::mutex mu;
  return mu;
}
std::set<pid_t>& LaunchedShims() {
  static std::set<pid_t> pids;
  return pids;
}
void ForgetShim(pid_t pid) {
  std::lock_guard<std::mutex> lock(LaunchedShimsMutex());
  LaunchedShims().erase(pid);
}

std::string TaskFile(const std::string& task_dir, const char* name) {
  return absl::StrCat(task_dir, "/", name);
}

// The last `max_bytes` of the shim's own log, to explain a shim that died without a word.
std::string ShimLogTail(const std::string& task_dir, size_t max_bytes = 1024) {
  absl::StatusOr<std::string> log = base::ReadFile(TaskFile(task_dir, kShimLogFile));
  if (!log.ok() || log->empty()) return "";
  std::string tail = log->size() > max_bytes ? log->substr(log->size() - max_bytes) : *log;
  while (!tail.empty() && tail.back() == '\n') tail.pop_back();
  return absl::StrCat(": ", tail);
}

std::string DescribeWaitStatus(int wstatus) {
  if (WIFEXITED(wstatus)) return absl::StrCat("exited with code ", WEXITSTATUS(wstatus));
  if (WIFSIGNALED(wstatus)) return absl::StrCat("was killed by signal ", WTERMSIG(wstatus));
  return "stopped";
}

// Dups `fd` to a number >= 10 (closing the original), so that the spawn's dup2 onto 1-3
// never finds source and target equal (which would keep FD_CLOEXEC on some libcs).
int MoveFdHigh(int fd) {
  int high = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  ::close(fd);
  return high;
}

// Waits for the shim's ready line on `fd`. Returns the line without its newline;
// Unavailable on EOF (the shim is gone), DeadlineExceeded after `timeout`.
absl::StatusOr<std::string> ReadReadyLine(int fd, std::chrono::milliseconds timeout) {
  const int64_t deadline = base::MonotonicMicros() + timeout.count() * 1000;
  std::string line;
  char buf[4096];
  while (true) {
    size_t nl = line.find('\n');
    if (nl != std::string::npos) return line.substr(0, nl);
    if (line.size() > kMaxReadyLine) return absl::InternalError("kiln-shim sent an overlong line");
    int64_t left = deadline - base::MonotonicMicros();
    if (left <= 0) return absl::DeadlineExceededError("timed out");
    pollfd pfd{fd, POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>((left + 999) / 1000));
    if (ready < 0 && errno != EINTR) return base::ErrnoStatus("poll", errno);
    if (ready <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return base::ErrnoStatus("read ready pipe", errno);
    }
    if (n == 0) return absl::UnavailableError("kiln-shim closed the ready pipe");
    line.append(buf, static_cast<size_t>(n));
  }
}

absl::StatusOr<int> GetIntField(const base::Json& obj, std::string_view field) {
  KILN_ASSIGN_OR_RETURN(int64_t value, base::GetInt(obj, field));
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("field '", std::string(field), "' is out of range"));
  }
  return static_cast<int>(value);
}

absl::StatusOr<std::optional<int>> GetOptionalIntField(const base::Json& obj,
                                                       std::string_view field) {
  if (!obj.is_object() || !obj.contains(field) || obj.at(field).is_null()) {
    return std::optional<int>();
  }
  KILN_ASSIGN_OR_RETURN(int value, GetIntField(obj, field));
  return std::optional<int>(value);
}

bool ShimIsAlive(const ShimInfo& info) {
  absl::StatusOr<ProcessStat> stat = ReadProcessStat(info.shim_pid);
  // A zombie is a dead shim whose parent has not reaped it yet.
  return stat.ok() && stat->start_time == info.shim_start_time && stat->state != 'Z' &&
         stat->state != 'X';
}

absl::StatusOr<std::optional<ExitRecord>> ReadExitRecord(const std::string& task_dir) {
  std::string path = TaskFile(task_dir, kExitRecordFile);
  absl::StatusOr<std::string> text = base::ReadFile(path);
  if (absl::IsNotFound(text.status())) return std::optional<ExitRecord>();
  if (!text.ok()) return text.status();
  absl::StatusOr<ExitRecord> record = ParseExitRecord(*text);
  if (!record.ok()) {
    return absl::DataLossError(absl::StrCat(path, " is corrupt: ", record.status().message()));
  }
  return std::optional<ExitRecord>(*std::move(record));
}

absl::StatusOr<ShimInfo> ReadShimInfo(const std::string& task_dir) {
  std::string path = TaskFile(task_dir, kShimInfoFile);
  KILN_ASSIGN_OR_RETURN(std::string text, base::ReadFile(path));
  absl::StatusOr<ShimInfo> info = ParseShimInfo(text);
  if (!info.ok()) {
    return absl::DataLossError(absl::StrCat(path, " is corrupt: ", info.status().message()));
  }
  return info;
}

}  // namespace

absl::StatusOr<ShimInfo> LaunchTask(const TaskLaunch& launch, std::chrono::milliseconds timeout) {
  if (launch.command.empty()) return absl::InvalidArgumentError("the task has no command");
  struct stat st;
  if (::stat(launch.workdir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("working directory ", launch.workdir, " does not exist"));
  }
  KILN_RETURN_IF_ERROR(base::MakeDirs(launch.task_dir));

  // Everything the spawned child needs is built before it exists: between fork and exec a
  // multi-threaded agent may not allocate.
  std::vector<std::string> args = {launch.shim_path,
                                   "--task-dir",
                                   launch.task_dir,
                                   "--workdir",
                                   launch.workdir,
                                   "--max-log-bytes",
                                   absl::StrCat(launch.max_log_bytes),
                                   "--ready-fd",
                                   absl::StrCat(kShimReadyFd),
                                   "--"};
  args.insert(args.end(), launch.command.begin(), launch.command.end());
  std::vector<std::string> env_strings;
  for (const auto& [key, value] : launch.env) env_strings.push_back(absl::StrCat(key, "=", value));
  std::vector<char*> argv, envp;
  for (std::string& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return base::ErrnoStatus("pipe", errno);
  int ready_r = ready[0];
  int ready_w = MoveFdHigh(ready[1]);
  std::string shim_log_path = TaskFile(launch.task_dir, kShimLogFile);
  int shim_log = ::open(shim_log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (shim_log >= 0) shim_log = MoveFdHigh(shim_log);
  if (ready_w < 0 || shim_log < 0) {
    absl::Status status = base::ErrnoStatus(absl::StrCat("open ", shim_log_path), errno);
    for (int fd : {ready_r, ready_w, shim_log}) {
      if (fd >= 0) ::close(fd);
    }
    return status;
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, shim_log, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, shim_log, STDERR_FILENO);
  posix_spawn_file_actions_adddup2(&actions, ready_w, kShimReadyFd);
  // The agent's own fds (sockets, the store) must not leak into the shim and its task.
  posix_spawn_file_actions_addclosefrom_np(&actions, kShimReadyFd + 1);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t no_signals, all_signals;
  sigemptyset(&no_signals);
  sigfillset(&all_signals);
  // The agent's threads may block or handle signals; the shim starts from a clean slate.
  posix_spawnattr_setsigmask(&attr, &no_signals);
  posix_spawnattr_setsigdefault(&attr, &all_signals);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  pid_t pid = -1;
  int spawn_err;
  {
    // Registered under the lock, so a concurrent ReapExitedShims cannot miss the pid.
    std::lock_guard<std::mutex> lock(LaunchedShimsMutex());
    spawn_err =
        ::posix_spawn(&pid, launch.shim_path.c_str(), &actions, &attr, argv.data(), envp.data());
    if (spawn_err == 0) LaunchedShims().insert(pid);
  }
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(ready_w);
  ::close(shim_log);
  if (spawn_err != 0) {
    ::close(ready_r);
    return absl::InternalError(
        absl::StrCat("cannot start kiln-shim ", launch.shim_path, ": ", std::strerror(spawn_err)));
  }

  absl::StatusOr<std::string> line = ReadReadyLine(ready_r, timeout);
  ::close(ready_r);
  if (absl::IsDeadlineExceeded(line.status())) {
    return absl::DeadlineExceededError(absl::StrCat("kiln-shim (pid ", pid,
                                                    ") did not report within ", timeout.count(),
                                                    " ms; the task may still start"));
  }
  if (!line.ok() && !absl::IsUnavailable(line.status())) return line.status();
  if (!line.ok()) {
    // The shim closed the pipe without a word: it died. Its status says how, if already
    // available; a shim that is still exiting is left to ReapExitedShims.
    std::string how = "died";
    int wstatus;
    if (::waitpid(pid, &wstatus, WNOHANG) == pid) {
      ForgetShim(pid);
      how = DescribeWaitStatus(wstatus);
    }
    return absl::InternalError(
        absl::StrCat("kiln-shim ", how, " before starting the task", ShimLogTail(launch.task_dir)));
  }
  if (line->starts_with("failed ")) {
    return absl::FailedPreconditionError(line->substr(std::strlen("failed ")));
  }
  if (!line->starts_with("started ")) {
    return absl::InternalError(absl::StrCat("kiln-shim sent an unexpected line: ", *line));
  }
  // shim.json is written before the ready line, so it is complete here.
  return ReadShimInfo(launch.task_dir);
}

absl::StatusOr<TaskStatus> InspectTask(const std::string& task_dir) {
  TaskStatus status;
  KILN_ASSIGN_OR_RETURN(status.exit, ReadExitRecord(task_dir));
  absl::StatusOr<ShimInfo> shim = ReadShimInfo(task_dir);
  if (shim.ok()) {
    status.shim = *shim;
  } else if (!absl::IsNotFound(shim.status())) {
    return shim.status();
  }
  if (status.exit.has_value()) {
    status.liveness = TaskLiveness::kExited;
    return status;
  }
  if (!status.shim.has_value()) {
    return absl::NotFoundError(absl::StrCat("no task state in ", task_dir));
  }
  if (ShimIsAlive(*status.shim)) {
    status.liveness = TaskLiveness::kRunning;
    return status;
  }
  // The shim writes exit.json and then exits: look again, or a task that ended between
  // the first read and the /proc check would count as lost.
  KILN_ASSIGN_OR_RETURN(status.exit, ReadExitRecord(task_dir));
  status.liveness = status.exit.has_value() ? TaskLiveness::kExited : TaskLiveness::kLost;
  return status;
}

absl::Status SignalTask(const std::string& task_dir, int signal) {
  KILN_ASSIGN_OR_RETURN(std::optional<ExitRecord> exit, ReadExitRecord(task_dir));
  // The shim killed what was left of the group before writing exit.json.
  if (exit.has_value()) return absl::OkStatus();
  KILN_ASSIGN_OR_RETURN(ShimInfo info, ReadShimInfo(task_dir));
  // While any member of the group lives, the kernel does not hand out its id as a pid. So
  // a process with the task's pid but another start time means the group is empty, and
  // the id may now name someone else's group: nothing to signal.
  absl::StatusOr<ProcessStat> task = ReadProcessStat(info.task_pid);
  if (task.ok() && task->start_time != info.task_start_time) return absl::OkStatus();
  if (::kill(-info.pgid, signal) != 0 && errno != ESRCH) {
    return base::ErrnoStatus(absl::StrCat("kill process group ", info.pgid), errno);
  }
  return absl::OkStatus();
}

void ReapExitedShims() {
  std::lock_guard<std::mutex> lock(LaunchedShimsMutex());
  std::set<pid_t>& pids = LaunchedShims();
  for (auto it = pids.begin(); it != pids.end();) {
    int wstatus;
    pid_t r = ::waitpid(*it, &wstatus, WNOHANG);
    if (r == *it || (r < 0 && errno == ECHILD)) {
      it = pids.erase(it);
    } else {
      ++it;
    }
  }
}

std::string ShimInfoToJson(const ShimInfo& info) {
  base::Json json = {{"shim_pid", info.shim_pid},
                     {"task_pid", info.task_pid},
                     {"pgid", info.pgid},
                     {"task_start_time", info.task_start_time},
                     {"shim_start_time", info.shim_start_time},
                     {"started_at", info.started_at}};
  return base::DumpJson(json);
}

absl::StatusOr<ShimInfo> ParseShimInfo(std::string_view text) {
  KILN_ASSIGN_OR_RETURN(base::Json json, base::ParseJson(text));
  ShimInfo info;
  KILN_ASSIGN_OR_RETURN(info.shim_pid, GetIntField(json, "shim_pid"));
  KILN_ASSIGN_OR_RETURN(info.task_pid, GetIntField(json, "task_pid"));
  KILN_ASSIGN_OR_RETURN(info.pgid, GetIntField(json, "pgid"));
  KILN_ASSIGN_OR_RETURN(info.task_start_time, base::GetInt(json, "task_start_time"));
  KILN_ASSIGN_OR_RETURN(info.shim_start_time, base::GetInt(json, "shim_start_time"));
  KILN_ASSIGN_OR_RETURN(info.started_at, base::GetInt(json, "started_at"));
  if (info.shim_pid <= 0 || info.task_pid <= 0 || info.pgid <= 0) {
    return absl::InvalidArgumentError("pids must be positive");
  }
  return info;
}

std::string ExitRecordToJson(const ExitRecord& record) {
  base::Json json = {{"exit_code", nullptr}, {"signal", nullptr}};
  if (record.exit_code.has_value()) json["exit_code"] = *record.exit_code;
  if (record.signal.has_value()) json["signal"] = *record.signal;
  json["finished_at"] = record.finished_at;
  if (!record.error.empty()) json["error"] = record.error;
  return base::DumpJson(json);
}

absl::StatusOr<ExitRecord> ParseExitRecord(std::string_view text) {
  KILN_ASSIGN_OR_RETURN(base::Json json, base::ParseJson(text));
  ExitRecord record;
  KILN_ASSIGN_OR_RETURN(record.finished_at, base::GetInt(json, "finished_at"));
  KILN_ASSIGN_OR_RETURN(record.exit_code, GetOptionalIntField(json, "exit_code"));
  KILN_ASSIGN_OR_RETURN(record.signal, GetOptionalIntField(json, "signal"));
  KILN_ASSIGN_OR_RETURN(record.error, base::GetStringOr(json, "error", ""));
  if (record.exit_code.has_value() == record.signal.has_value()) {
    return absl::InvalidArgumentError("exactly one of 'exit_code' and 'signal' must be set");
  }
  return record;
}

absl::StatusOr<ProcessStat> ReadProcessStat(int pid) {
  KILN_ASSIGN_OR_RETURN(std::string text, base::ReadFile(absl::StrCat("/proc/", pid, "/stat")));
  // "pid (comm) state ppid ..." where comm may hold spaces and parentheses: the fields
  // start after the last ')'.
  size_t paren = text.rfind(')');
  if (paren == std::string::npos) {
    return absl::InternalError(absl::StrCat("cannot parse /proc/", pid, "/stat"));
  }
  std::vector<std::string_view> fields;
  std::string_view rest = std::string_view(text).substr(paren + 1);
  while (!rest.empty()) {
    size_t space = rest.find(' ');
    if (space != 0) fields.push_back(rest.substr(0, space));
    if (space == std::string_view::npos) break;
    rest.remove_prefix(space + 1);
  }
  // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
  ProcessStat stat;
  if (fields.size() < 20 || fields[0].size() != 1) {
    return absl::InternalError(absl::StrCat("cannot parse /proc/", pid, "/stat"));
  }
  stat.state = fields[0][0];
  auto [ptr, ec] =
      std::from_chars(fields[19].data(), fields[19].data() + fields[19].size(), stat.start_time);
  if (ec != std::errc()) {
    return absl::InternalError(absl::StrCat("cannot parse /proc/", pid, "/stat"));
  }
  return stat;
}

}  // namespace kiln::agent
