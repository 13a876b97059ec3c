// kiln-agent: one per node; runs tasks for a kilnd master. Flags are parsed here only.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "kiln/agent/agent.h"
#include "kiln/base/files.h"
#include "kiln/base/logging.h"

#ifndef KILN_DEFAULT_PYTHON_PATH
#define KILN_DEFAULT_PYTHON_PATH ""
#endif

int main(int argc, char** argv) {
  CLI::App app{"kiln-agent: runs Kiln tasks on this node for a kilnd master."};
  kiln::agent::AgentOptions options;
  std::string token_file;
  std::string log_level = "info";
  const char* home = std::getenv("HOME");
  options.data_dir = std::string(home ? home : ".") + "/.kiln-agent";
  app.add_option("--master", options.master_url, "the master's URL, e.g. http://10.0.0.1:8470")
      ->required();
  app.add_option("--token-file", token_file,
                 "file holding the master's agent token (<master data dir>/agent-token); "
                 "or set KILN_AGENT_TOKEN");
  app.add_option("--data-dir", options.data_dir, "where task folders live")->capture_default_str();
  app.add_option("--agent-id", options.agent_id, "this agent's name (default: the host name)");
  app.add_option("--slots", options.slots, "CPU slots to offer (default: the number of CPUs)");
  app.add_flag("!--no-gpus", options.discover_gpus, "do not look for GPUs with nvidia-smi");
  app.add_option("--shim", options.shim_path, "path of kiln-shim (default: beside kiln-agent)");
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  kiln::base::InitLogging("kiln-agent", log_level);

  if (!token_file.empty()) {
    auto token = kiln::base::ReadFile(token_file);
    if (!token.ok()) {
      std::fprintf(stderr, "kiln-agent: %s\n", std::string(token.status().message()).c_str());
      return 1;
    }
    options.token = std::string(absl::StripAsciiWhitespace(*token));
  } else if (const char* t = std::getenv("KILN_AGENT_TOKEN")) {
    options.token = t;
  }
  const char* py = std::getenv("KILN_PYTHON_PATH");
  options.python_path = py ? py : KILN_DEFAULT_PYTHON_PATH;

  auto agent = kiln::agent::Agent::Create(options);
  if (!agent.ok()) {
    std::fprintf(stderr, "kiln-agent: %s\n", std::string(agent.status().message()).c_str());
    return 1;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // threads started below inherit the mask
  (*agent)->Start();
  int signo = 0;
  sigwait(&set, &signo);
  std::fprintf(stderr, "kiln-agent: stopping on signal %d; tasks keep running\n", signo);
  (*agent)->Stop();
  return 0;
}
