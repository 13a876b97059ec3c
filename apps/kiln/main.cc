// main.cc
//
// `kiln`, the command-line interface of Kiln. All commands live in src/kiln/cli; this
// file only wires the real process (streams, environment, signals) to them.

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "kiln/cli/commands.h"
#include "kiln/cli/invocation.h"

int main(int argc, char** argv) {
  kiln::cli::Invocation invocation = kiln::cli::ProcessInvocation();
  CLI::App app;
  kiln::cli::RegisterCommands(app, invocation);
  return kiln::cli::ParseAndRun(app, std::vector<std::string>(argv, argv + argc), invocation);
}
