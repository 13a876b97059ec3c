// commands.h
//
// The `kiln` command line: every command, its flags and help, bound to an `Invocation`.
// apps/kiln/main.cc builds a CLI::App, calls RegisterCommands and ParseAndRun; tests do
// the same with string streams. Parsing and running are separate steps, so CLI11's
// exceptions stay inside ParseAndRun and commands only ever return a Status.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "kiln/cli/invocation.h"

namespace kiln::cli {

// The version `kiln version` prints.
std::string_view CliVersion();

// Adds the global options and every command to `app`. Parsing records the chosen
// command in `inv.command`; `inv` must outlive `app`.
void RegisterCommands(CLI::App& app, Invocation& inv);

// Parses `args` (args[0] is the program name) against `app`, runs the chosen command and
// returns the exit code (exit_codes.h). Help goes to inv.out; errors go to inv.err as
// "kiln: <message>". Never throws.
int ParseAndRun(CLI::App& app, const std::vector<std::string>& args, Invocation& inv);

// A fresh CLI::App with RegisterCommands applied, then ParseAndRun.
int RunKiln(const std::vector<std::string>& args, Invocation& inv);

}  // namespace kiln::cli
