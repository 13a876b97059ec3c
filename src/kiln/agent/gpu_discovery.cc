#include "kiln/agent/gpu_discovery.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/base/files.h"

extern char** environ;

namespace kiln::agent {
namespace {

// nvidia-smi's answer is a line per GPU; anything past this is not its normal output.
constexpr size_t kMaxOutputBytes = 1 << 20;

std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(kSpace) - begin + 1);
}

template <typename T>
bool ParseInteger(std::string_view s, T* out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::string FirstLine(std::string_view text) {
  text = Trim(text);
  std::string line(Trim(text.substr(0, text.find('\n'))));
  if (line.size() > 200) {
    line.resize(200);
    line.append("...");
  }
  return line;
}

absl::Status BadLine(size_t number, std::string_view line, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("nvidia-smi output line ", number, " (\"",
                                                 std::string(line.substr(0, 200)),
                                                 "\"): ", std::string(why)));
}

// The executable `name` resolves to: itself when it holds a '/', else the first match in
// PATH. Empty when there is none.
std::string ResolveProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    return ::access(name.c_str(), F_OK) == 0 ? name : std::string();
  }
  const char* path_env = std::getenv("PATH");
  std::string_view path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    size_t colon = path.find(':');
    std::string_view dir = path.substr(0, colon);
    // An empty PATH element means the current directory.
    std::string candidate =
        dir.empty() ? absl::StrCat("./", name) : absl::StrCat(std::string(dir), "/", name);
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    if (colon == std::string_view::npos) return std::string();
    path.remove_prefix(colon + 1);
  }
}

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct ProcessResult {
  int wait_status = 0;
  std::string out;
  std::string err;
};

// Runs `argv` with stdin from /dev/null, collecting stdout and stderr until both close or
// `timeout` passes. Returns NotFound if the program vanished before exec, DeadlineExceeded
// (after SIGKILL) on timeout.
absl::StatusOr<ProcessResult> RunCollectingOutput(const std::vector<std::string>& argv,
                                                  std::chrono::milliseconds timeout) {
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return base::ErrnoStatus("pipe", errno);
  Fd out_read(out_pipe[0]), out_write(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return base::ErrnoStatus("pipe", errno);
  Fd err_read(err_pipe[0]), err_write(err_pipe[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  // dup2 clears O_CLOEXEC on the target, so only 0-2 reach the child.
  posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_write.get(), 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int spawn_err = ::posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_err != 0) return base::ErrnoStatus(absl::StrCat("run ", argv[0]), spawn_err);
  out_write.Reset();
  err_write.Reset();

  ProcessResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool out_open = true, err_open = true;
  bool timed_out = false;
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[2];
    nfds_t n = 0;
    if (out_open) fds[n++] = {out_read.get(), POLLIN, 0};
    if (err_open) fds[n++] = {err_read.get(), POLLIN, 0};
    int ready = ::poll(fds, n, static_cast<int>(left.count()));
    if (ready < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return base::ErrnoStatus("poll", err);
    }
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      bool is_out = fds[i].fd == out_read.get();
      std::string& sink = is_out ? result.out : result.err;
      char buf[4096];
      ssize_t got = ::read(fds[i].fd, buf, sizeof(buf));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        (is_out ? out_open : err_open) = false;
        continue;
      }
      // Keep draining past the cap so the child never blocks on a full pipe.
      size_t room = kMaxOutputBytes - std::min(kMaxOutputBytes, sink.size());
      sink.append(buf, std::min(room, static_cast<size_t>(got)));
    }
  }
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(
        absl::StrCat(argv[0], " did not finish within ", timeout.count(), " ms"));
  }
  result.wait_status = status;
  return result;
}

}  // namespace

absl::StatusOr<std::vector<GpuInfo>> ParseNvidiaSmiCsv(std::string_view csv) {
  std::vector<GpuInfo> gpus;
  size_t line_number = 0;
  while (!csv.empty()) {
    size_t nl = csv.find('\n');
    std::string_view raw = csv.substr(0, nl);
    csv = nl == std::string_view::npos ? std::string_view() : csv.substr(nl + 1);
    ++line_number;
    std::string_view line = Trim(raw);
    if (line.empty()) continue;

    std::vector<std::string_view> fields;
    for (size_t start = 0;;) {
      size_t comma = line.find(',', start);
      fields.push_back(Trim(line.substr(start, comma - start)));
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    if (fields.size() < 4) {
      return BadLine(line_number, line,
                     "expected 4 comma-separated fields: index, uuid, name, memory.total");
    }
    GpuInfo gpu;
    if (!ParseInteger(fields[0], &gpu.index) || gpu.index < 0) {
      return BadLine(line_number, line, "index is not a non-negative integer");
    }
    gpu.uuid = std::string(fields[1]);
    if (gpu.uuid.empty()) return BadLine(line_number, line, "uuid is empty");
    // A name could hold a comma; index, uuid and memory cannot, so the name is the middle.
    std::string_view name_span(
        fields[2].data(),
        fields[fields.size() - 2].data() + fields[fields.size() - 2].size() - fields[2].data());
    gpu.name = std::string(Trim(name_span));
    if (gpu.name.empty()) return BadLine(line_number, line, "name is empty");
    std::string_view memory = fields.back();
    if (memory == "[N/A]" || memory == "N/A" || memory == "[Not Supported]") {
      gpu.memory_mib = 0;
    } else if (!ParseInteger(memory, &gpu.memory_mib) || gpu.memory_mib < 0) {
      return BadLine(line_number, line, "memory.total is not a number of MiB");
    }
    gpus.push_back(std::move(gpu));
  }
  return gpus;
}

absl::StatusOr<std::vector<GpuInfo>> DiscoverGpus(const std::string& nvidia_smi,
                                                  std::chrono::milliseconds timeout) {
  std::string program = ResolveProgram(nvidia_smi);
  if (program.empty()) return std::vector<GpuInfo>();
  auto run = RunCollectingOutput(
      {program, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"},
      timeout);
  if (absl::IsNotFound(run.status())) return std::vector<GpuInfo>();  // Removed meanwhile.
  if (!run.ok()) {
    if (absl::IsDeadlineExceeded(run.status())) return run.status();
    return absl::FailedPreconditionError(std::string(run.status().message()));
  }
  int status = run->wait_status;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string how = WIFEXITED(status) ? absl::StrCat("exited with status ", WEXITSTATUS(status))
                                        : absl::StrCat("was killed by signal ", WTERMSIG(status));
    std::string detail = FirstLine(run->err);
    if (detail.empty()) detail = FirstLine(run->out);
    return absl::FailedPreconditionError(absl::StrCat(program, " ", how, ": ", detail));
  }
  return ParseNvidiaSmiCsv(run->out);
}

}  // namespace kiln::agent
