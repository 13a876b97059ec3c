#include "kiln/cli/invocation.h"

#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <ctime>
#include <iostream>

#include "kiln/base/files.h"

extern char** environ;

namespace kiln::cli {

std::optional<std::string> Invocation::GetEnv(const std::string& name) const {
  auto it = env.find(name);
  if (it == env.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

namespace {

absl::StatusOr<std::string> ReadSecretFromTerminal(std::string_view prompt) {
  std::cerr << prompt << std::flush;
  termios saved{};
  const bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
  if (tty) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ECHONL;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  std::string line;
  const bool got = static_cast<bool>(std::getline(std::cin, line));
  // Restore echo before anything else can fail, or the user's shell stays silent.
  if (tty) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  if (!got) return absl::CancelledError("no password given (end of input)");
  return line;
}

absl::Status ExecProcess(const std::string& path, const std::vector<std::string>& argv) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::cout.flush();
  std::cerr.flush();
  execv(path.c_str(), args.data());
  return base::ErrnoStatus("exec " + path, errno);
}

void SleepMicros(int64_t micros) {
  if (micros <= 0) return;
  timespec ts{.tv_sec = static_cast<time_t>(micros / 1'000'000),
              .tv_nsec = static_cast<long>((micros % 1'000'000) * 1000)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

}  // namespace

Invocation ProcessInvocation() {
  Invocation inv;
  inv.out = &std::cout;
  inv.err = &std::cerr;
  inv.in = &std::cin;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    size_t eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    inv.env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  char buf[PATH_MAX];
  if (getcwd(buf, sizeof(buf)) != nullptr) inv.cwd = buf;
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n > 0) inv.self_exe.assign(buf, static_cast<size_t>(n));
  inv.clock = &base::SystemClock::Get();
  inv.sleep = SleepMicros;
  inv.read_secret = ReadSecretFromTerminal;
  inv.exec = ExecProcess;
  inv.handle_interrupts = true;
  return inv;
}

}  // namespace kiln::cli
