#include "kiln/cli/up_command.h"

#include <unistd.h>

#include <memory>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"
#include "kiln/cli/commands_internal.h"

namespace kiln::cli {

absl::StatusOr<KilndLaunch> PlanKilndLaunch(const UpOptions& options, const Invocation& inv) {
  std::string data_dir = options.data_dir;
  if (data_dir.empty()) {
    std::optional<std::string> home = inv.GetEnv("HOME");
    if (!home) {
      return absl::FailedPreconditionError(
          "HOME is not set, so there is no default data folder; pass --data-dir DIR");
    }
    data_dir = *home + "/.kiln";
  }
  if (options.port < 1 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--port must be between 1 and 65535, got ", options.port));
  }
  size_t slash = inv.self_exe.rfind('/');
  std::string folder = slash == std::string::npos ? "." : inv.self_exe.substr(0, slash);
  KilndLaunch launch;
  launch.path = folder + "/kilnd";
  if (access(launch.path.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(
        "cannot start Kiln: kilnd was not found at ", launch.path,
        " ('kiln up' runs the kilnd installed next to kiln). Build or install kilnd there "
        "(e.g. 'cmake --build BUILD_DIR --target kilnd')."));
  }
  launch.argv = {launch.path, "--local-agent", "--data-dir",
                 data_dir,    "--port",        absl::StrCat(options.port)};
  return launch;
}

namespace internal {

void RegisterUpCommand(CLI::App& app, Invocation& inv) {
  auto options = std::make_shared<UpOptions>();
  CLI::App* up = app.add_subcommand(
      "up", "Start a local Kiln (master and agent) in the foreground; Ctrl-C stops it");
  up->add_option("--data-dir", options->data_dir,
                 "Where Kiln keeps its database, packages and job files (default ~/.kiln)")
      ->type_name("DIR");
  up->add_option("--port", options->port, "Port of the REST API and web UI")
      ->type_name("PORT")
      ->capture_default_str();
  up->callback([&inv, options] {
    inv.command = [&inv, options]() -> absl::Status {
      KILN_ASSIGN_OR_RETURN(KilndLaunch launch, PlanKilndLaunch(*options, inv));
      *inv.err << "Starting Kiln on http://127.0.0.1:" << options->port << " (data in "
               << launch.argv[3] << "). Press Ctrl-C to stop.\n"
               << std::flush;
      return inv.exec(launch.path, launch.argv);
    };
  });
}

}  // namespace internal
}  // namespace kiln::cli
