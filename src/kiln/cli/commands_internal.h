// commands_internal.h
//
// How commands.cc assembles the CLI from one registration function per command group;
// each lives beside the code of its commands. Not for use outside src/kiln/cli.
#pragma once

#include <CLI/CLI.hpp>

#include "kiln/cli/invocation.h"

namespace kiln::cli::internal {

// Adds `--url URL` to `command`, bound to inv.url_flag, so it works before or after the
// command name.
void AddUrlOption(CLI::App& command, Invocation& inv);

void RegisterUpCommand(CLI::App& app, Invocation& inv);       // up_command.cc
void RegisterAuthCommands(CLI::App& app, Invocation& inv);    // auth_command.cc
void RegisterRunCommand(CLI::App& app, Invocation& inv);      // run_command.cc
void RegisterJobCommands(CLI::App& app, Invocation& inv);     // jobs_command.cc
void RegisterLogsCommand(CLI::App& app, Invocation& inv);     // logs_command.cc
void RegisterHpoCommands(CLI::App& app, Invocation& inv);     // hpo_command.cc
void RegisterModelCommands(CLI::App& app, Invocation& inv);   // model_command.cc
void RegisterDeployCommands(CLI::App& app, Invocation& inv);  // deploy_command.cc

}  // namespace kiln::cli::internal
