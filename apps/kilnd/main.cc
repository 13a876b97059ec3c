// kilnd: the Kiln master. Flags are parsed here and nowhere else.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kiln/base/logging.h"
#include "kiln/master/master.h"

#ifndef KILN_DEFAULT_PYTHON_PATH
#define KILN_DEFAULT_PYTHON_PATH ""
#endif

int main(int argc, char** argv) {
  CLI::App app{"kilnd: the Kiln master (REST API, store, scheduler, tracking)."};
  kiln::master::MasterOptions options;
  const char* home = std::getenv("HOME");
  options.data_dir = std::string(home ? home : ".") + "/.kiln";
  std::string log_level = "info";
  app.add_option("--data-dir", options.data_dir, "where the database, packages and tasks live")
      ->capture_default_str();
  app.add_option("--address", options.address, "address to listen on")->capture_default_str();
  app.add_option("--port", options.port, "port to listen on (0 picks a free one)")
      ->capture_default_str();
  app.add_flag("--local-agent", options.local_agent,
               "also run an agent in this process for this machine's CPUs and GPUs");
  app.add_option("--slots", options.local_agent_slots,
                 "CPU slots of the local agent (default: the number of CPUs)");
  app.add_option("--agent-timeout", options.agent_timeout_seconds,
                 "seconds without contact before an agent is declared lost")
      ->capture_default_str();
  app.add_option("--kill-grace-ms", options.kill_grace_ms,
                 "time between SIGTERM and SIGKILL when a job is killed")
      ->capture_default_str();
  app.add_option("--rendezvous-timeout", options.rendezvous_timeout_seconds,
                 "seconds an elastic job's next generation waits for members that have not "
                 "joined (they are then stopped)")
      ->check(CLI::Range(int64_t{1}, int64_t{3600}))
      ->capture_default_str();
  app.add_flag("!--no-gpus", options.discover_gpus, "do not look for GPUs with nvidia-smi");
  app.add_option("--shim", options.shim_path, "path of kiln-shim (default: beside kilnd)");
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  kiln::base::InitLogging("kilnd", log_level);
  if (const char* pw = std::getenv("KILN_ADMIN_PASSWORD")) options.admin_password = pw;
  const char* py = std::getenv("KILN_PYTHON_PATH");
  options.python_path = py ? py : KILN_DEFAULT_PYTHON_PATH;

  auto master = kiln::master::Master::Create(options);
  if (!master.ok()) {
    std::fprintf(stderr, "kilnd: %s\n", std::string(master.status().message()).c_str());
    return 1;
  }
  (*master)->Run();
  return 0;
}
