// exit_codes.h
//
// The exit codes of the `kiln` command and the one place where an `absl::Status` becomes
// one. Scripts depend on these numbers, and `kiln --help` prints the table, so a change
// here is a change to the CLI's interface.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace kiln::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;          // any error without a more specific code
inline constexpr int kExitUsage = 2;          // bad flags or arguments; the request was invalid
inline constexpr int kExitAuth = 3;           // not logged in, bad credentials, or not allowed
inline constexpr int kExitNotFound = 4;       // the job (or other object) does not exist
inline constexpr int kExitUnavailable = 5;    // Kiln could not be reached or is not ready
inline constexpr int kExitInterrupted = 130;  // Ctrl-C while following a job
inline constexpr int kExitJobKilled = 137;    // `--wait` on a job that was killed

// Returns the exit code for `status`: kExitOk for OK, then by code: InvalidArgument and
// OutOfRange → 2; Unauthenticated and PermissionDenied → 3; NotFound → 4; Unavailable and
// DeadlineExceeded → 5; everything else → 1.
int ExitCodeForStatus(const absl::Status& status);

// The table above as text for the footer of `kiln --help`.
std::string_view ExitCodeHelp();

}  // namespace kiln::cli
