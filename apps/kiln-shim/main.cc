// kiln-shim: the per-task supervisor that kiln-agent starts for every task (see
// src/kiln/agent/task_shim.h). Flags are parsed by hand: the shim starts once per task and
// should start fast.
//
//   kiln-shim --task-dir DIR --workdir DIR [--max-log-bytes N] [--ready-fd FD] -- CMD ARGS...

#include <charconv>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "kiln/agent/task_shim.h"

namespace {

constexpr char kUsage[] =
    "usage: kiln-shim --task-dir DIR --workdir DIR [--max-log-bytes N] [--ready-fd FD] "
    "-- CMD [ARGS...]\n";

int UsageError(const std::string& message) {
  std::fprintf(stderr, "kiln-shim: %s\n%s", message.c_str(), kUsage);
  return 2;
}

std::optional<int64_t> ParseInt(std::string_view text) {
  int64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  kiln::agent::ShimOptions options;
  int i = 1;
  for (; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    // Accept both "--flag value" and "--flag=value".
    std::string_view name = arg;
    std::optional<std::string_view> value;
    if (size_t eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[i + 1];
    }
    bool inline_value = name.size() != arg.size();
    auto take_value = [&]() -> std::optional<std::string_view> {
      if (!value.has_value()) return std::nullopt;
      if (!inline_value) ++i;
      return value;
    };
    if (name == "--task-dir" || name == "--workdir") {
      std::optional<std::string_view> v = take_value();
      if (!v.has_value() || v->empty()) return UsageError(std::string(name) + " needs a value");
      (name == "--task-dir" ? options.task_dir : options.workdir) = std::string(*v);
    } else if (name == "--max-log-bytes" || name == "--ready-fd") {
      std::optional<std::string_view> v = take_value();
      std::optional<int64_t> n = v.has_value() ? ParseInt(*v) : std::nullopt;
      if (!n.has_value() || *n < 0) {
        return UsageError(std::string(name) + " needs a non-negative integer");
      }
      if (name == "--max-log-bytes") {
        options.max_log_bytes = *n;
      } else {
        if (*n > 1 << 20) return UsageError("--ready-fd is out of range");
        options.ready_fd = static_cast<int>(*n);
      }
    } else {
      return UsageError("unknown flag " + std::string(arg));
    }
  }
  for (; i < argc; ++i) options.command.emplace_back(argv[i]);
  if (options.task_dir.empty() || options.workdir.empty()) {
    return UsageError("--task-dir and --workdir are required");
  }
  if (options.command.empty()) return UsageError("no command after --");
  return kiln::agent::RunShim(options);
}
