#include "kiln/cli/commands.h"

#include <algorithm>
#include <exception>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "kiln/cli/commands_internal.h"
#include "kiln/cli/exit_codes.h"

#ifndef KILN_VERSION
#define KILN_VERSION "0.0.0-dev"
#endif

namespace kiln::cli {
namespace {

constexpr char kEnvironmentHelp[] =
    "Environment:\n"
    "  KILN_URL       Kiln to talk to (default http://127.0.0.1:8470)\n"
    "  KILN_USER      user name for HTTP Basic authentication (with KILN_PASSWORD)\n"
    "  KILN_PASSWORD  password; also answers the prompt of 'kiln login'\n"
    "  Without KILN_USER, the token saved by 'kiln login' is used\n"
    "  (~/.config/kiln/credentials.json).\n";

// "kiln run" for the deepest command the parser reached, for "see --help" hints.
std::string CommandPath(CLI::App& app) {
  std::string path = "kiln";
  CLI::App* current = &app;
  while (true) {
    std::vector<CLI::App*> chosen = current->get_subcommands();
    if (chosen.empty()) break;
    current = chosen.front();
    absl::StrAppend(&path, " ", current->get_name());
  }
  return path;
}

}  // namespace

std::string_view CliVersion() { return KILN_VERSION; }

namespace internal {

void AddUrlOption(CLI::App& command, Invocation& inv) {
  command.add_option("--url", inv.url_flag, "Kiln to talk to (overrides KILN_URL)")
      ->type_name("URL");
}

}  // namespace internal

void RegisterCommands(CLI::App& app, Invocation& inv) {
  app.name("kiln");
  app.description("kiln: run, watch and manage training jobs on a Kiln cluster.");
  app.footer(absl::StrCat(kEnvironmentHelp, "\n", std::string(ExitCodeHelp()),
                          "\nRun 'kiln COMMAND --help' for the flags of a command."));
  app.set_version_flag("--version", std::string(CliVersion()));
  internal::AddUrlOption(app, inv);

  internal::RegisterUpCommand(app, inv);
  internal::RegisterAuthCommands(app, inv);
  internal::RegisterRunCommand(app, inv);
  internal::RegisterJobCommands(app, inv);
  internal::RegisterLogsCommand(app, inv);
  internal::RegisterHpoCommands(app, inv);
  internal::RegisterModelCommands(app, inv);
  internal::RegisterDeployCommands(app, inv);

  CLI::App* version = app.add_subcommand("version", "Print the version of this kiln");
  version->callback([&inv] {
    inv.command = [&inv] {
      *inv.out << "kiln " << CliVersion() << "\n";
      return absl::OkStatus();
    };
  });
}

int ParseAndRun(CLI::App& app, const std::vector<std::string>& args, Invocation& inv) {
  // Everything after the first "--" is a command line for `kiln run` and must not be
  // seen by the parser at all: CLI11 would otherwise match its words against our flags.
  std::vector<std::string> before;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--") {
      inv.saw_dashes = true;
      inv.after_dashes.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      break;
    }
    before.push_back(args[i]);
  }
  std::reverse(before.begin(), before.end());  // CLI11 consumes the vector from the back

  try {
    app.parse(before);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, *inv.out, *inv.err);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e, *inv.out, *inv.err);
  } catch (const CLI::CallForVersion& e) {
    *inv.out << "kiln " << CliVersion() << "\n";
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    if (inv.saw_dashes && CommandPath(app) != "kiln run") {
      *inv.err << "kiln: '--' only goes before the command line of 'kiln run'\nRun '"
               << CommandPath(app) << " --help' for usage.\n";
      return kExitUsage;
    }
    *inv.err << "kiln: " << e.what() << "\nRun '" << CommandPath(app) << " --help' for usage.\n";
    return kExitUsage;
  }

  if (!inv.command) {
    *inv.err << app.help();
    return kExitUsage;
  }
  if (inv.saw_dashes && CommandPath(app) != "kiln run") {
    *inv.err << "kiln: '--' only goes before the command line of 'kiln run'\nRun '"
             << CommandPath(app) << " --help' for usage.\n";
    return kExitUsage;
  }
  absl::Status status;
  try {
    status = inv.command();
  } catch (const std::exception& e) {
    // Library code below us (the JSON parser on a surprising answer) may throw; a user
    // gets a message, not an abort.
    status = absl::InternalError(
        absl::StrCat("unexpected error: ", e.what(), " (please report this as a bug)"));
  }
  inv.out->flush();
  if (!status.ok()) {
    *inv.err << "kiln: " << status.message() << "\n";
    inv.err->flush();
    return ExitCodeForStatus(status);
  }
  return inv.exit_code.value_or(kExitOk);
}

int RunKiln(const std::vector<std::string>& args, Invocation& inv) {
  CLI::App app;
  RegisterCommands(app, inv);
  return ParseAndRun(app, args, inv);
}

}  // namespace kiln::cli
