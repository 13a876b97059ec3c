// logs_command.cc
//
// `kiln logs [-f] [--since-seq N] ID`: a job's output as plain text, stdout lines on
// stdout and stderr lines on stderr, optionally following until the job ends.

#include <memory>

#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"
#include "kiln/cli/commands_internal.h"
#include "kiln/cli/connection.h"
#include "kiln/cli/job_follow.h"

namespace kiln::cli::internal {
namespace {

struct LogsOptions {
  int64_t id = 0;
  bool follow = false;
  int64_t since_seq = 0;
};

absl::Status ShowLogs(const LogsOptions& options, Invocation& inv) {
  if (options.since_seq < 0) return absl::InvalidArgumentError("--since-seq must be 0 or more");
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ConnectApi(inv));
  int64_t last_seq = options.since_seq;
  if (options.follow) return FollowLogs(*api, inv, options.id, &last_seq);
  return PrintAvailableLogs(*api, inv, options.id, &last_seq).status();
}

}  // namespace

void RegisterLogsCommand(CLI::App& app, Invocation& inv) {
  auto options = std::make_shared<LogsOptions>();
  CLI::App* logs = app.add_subcommand("logs", "Print a job's output");
  logs->add_option("ID", options->id, "Job id")->required()->check(CLI::PositiveNumber);
  logs->add_flag("-f,--follow", options->follow,
                 "Keep printing new lines until the job ends (survives a master restart)");
  logs->add_option("--since-seq", options->since_seq,
                   "Only lines after this sequence number (to resume)")
      ->type_name("N");
  AddUrlOption(*logs, inv);
  logs->callback(
      [&inv, options] { inv.command = [&inv, options] { return ShowLogs(*options, inv); }; });
}

}  // namespace kiln::cli::internal
