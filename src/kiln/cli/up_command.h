// up_command.h
//
// `kiln up`: runs a single-machine Kiln in the foreground by exec'ing the `kilnd` that is
// installed next to the `kiln` binary, with a local agent. Exec (not fork) so Ctrl-C and
// SIGTERM reach kilnd directly and it stops cleanly.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kiln/cli/invocation.h"

namespace kiln::cli {

struct UpOptions {
  std::string data_dir;  // "" → $HOME/.kiln
  int port = 8470;
};

// What `kiln up` executes.
struct KilndLaunch {
  std::string path;               // absolute path of kilnd
  std::vector<std::string> argv;  // argv[0] included
};

// Resolves kilnd beside inv.self_exe and its arguments. NotFound naming the path it
// looked at when kilnd is not there; FailedPrecondition when HOME is needed but unset.
[[nodiscard]] absl::StatusOr<KilndLaunch> PlanKilndLaunch(const UpOptions& options,
                                                          const Invocation& inv);

}  // namespace kiln::cli
