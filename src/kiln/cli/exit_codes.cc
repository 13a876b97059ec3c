#include "kiln/cli/exit_codes.h"

namespace kiln::cli {

int ExitCodeForStatus(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return kExitUsage;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitAuth;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    default:
      return kExitError;
  }
}

std::string_view ExitCodeHelp() {
  return "Exit codes:\n"
         "  0    success\n"
         "  1    error\n"
         "  2    usage error: bad flags or arguments, or a request Kiln rejected as invalid\n"
         "  3    not logged in, wrong credentials, or not allowed\n"
         "  4    not found (no such job)\n"
         "  5    Kiln unreachable or unavailable\n"
         "  130  interrupted (Ctrl-C while following; the job keeps running)\n"
         "  With --wait, `kiln run` exits with the job's own exit code (1 if it failed\n"
         "  without one, 137 if it was killed).\n";
}

}  // namespace kiln::cli
