#include "kiln/cli/job_follow.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"
#include "kiln/cli/exit_codes.h"
#include "kiln/cli/interrupt.h"
#include "kiln/cli/output.h"

namespace kiln::cli {
namespace {

// A page of non-streamed logs; the API may cap it lower.
constexpr int kLogPageSize = 1000;
// Long enough for a quiet training epoch; a silent stream past this is re-opened, which
// costs one request and guards against a connection that died without a FIN.
constexpr int64_t kStreamIdleTimeoutMicros = 120'000'000;
constexpr int64_t kFirstBackoffMicros = 500'000;
constexpr int64_t kMaxBackoffMicros = 5'000'000;
constexpr int64_t kMaxPollMicros = 3'000'000;

std::string JobPath(int64_t job_id) { return absl::StrCat("/api/v1/jobs/", job_id); }

// Whether an error may go away by itself while the master restarts.
bool IsRetriable(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded;
}

// Paces retries through an outage and gives up once the master has been unreachable for
// kReconnectWindowMicros.
class ReconnectWindow {
 public:
  ReconnectWindow(Invocation& inv, std::string url) : inv_(inv), url_(std::move(url)) {}

  // Contact with the master succeeded: the window starts over.
  void Reset() {
    if (outage_start_) {
      *inv_.err << "kiln: reconnected to Kiln at " << url_ << "\n" << std::flush;
    }
    outage_start_.reset();
    backoff_ = kFirstBackoffMicros;
  }

  // After a retriable `error`: tells the user once, sleeps, and returns true while the
  // window lasts; false when it is spent.
  bool WaitToRetry(const absl::Status& error) {
    int64_t now = inv_.clock->NowMicros();
    if (!outage_start_) {
      outage_start_ = now;
      (void)error;
      *inv_.err << "kiln: lost contact with Kiln at " << url_ << "; retrying for up to "
                << kReconnectWindowMicros / 1'000'000 << " s\n"
                << std::flush;
    }
    if (now - *outage_start_ >= kReconnectWindowMicros) return false;
    inv_.sleep(backoff_);
    backoff_ = std::min(backoff_ * 2, kMaxBackoffMicros);
    return true;
  }

 private:
  Invocation& inv_;
  std::string url_;
  std::optional<int64_t> outage_start_;
  int64_t backoff_ = kFirstBackoffMicros;
};

std::string StringField(const base::Json& obj, std::string_view field) {
  if (!obj.is_object()) return "";
  auto it = obj.find(field);
  if (it == obj.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

std::optional<int64_t> IntField(const base::Json& obj, std::string_view field) {
  if (!obj.is_object()) return std::nullopt;
  auto it = obj.find(field);
  if (it == obj.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

std::string JobIdText(const base::Json& job) {
  if (job.is_object() && job.contains("id")) {
    const base::Json& id = job["id"];
    return id.is_string() ? id.get<std::string>() : base::DumpJson(id);
  }
  return "?";
}

}  // namespace

void LineSplitter::Feed(std::string_view data,
                        const std::function<void(std::string_view)>& on_line) {
  size_t start = 0;
  for (size_t nl = data.find('\n'); nl != std::string_view::npos; nl = data.find('\n', start)) {
    std::string_view piece = data.substr(start, nl - start);
    if (pending_.empty()) {
      on_line(piece);
    } else {
      pending_.append(piece);
      std::string line = std::move(pending_);
      pending_.clear();
      on_line(line);
    }
    start = nl + 1;
  }
  pending_.append(data.substr(start));
}

bool IsTerminalState(std::string_view state) {
  return state == "FINISHED" || state == "FAILED" || state == "KILLED";
}

std::string JobSummary(const base::Json& job) {
  const std::string id = JobIdText(job);
  const std::string state = StringField(job, "state");
  const std::string reason = StringField(job, "reason");
  std::optional<int64_t> started = TimestampField(job, "started_at");
  std::optional<int64_t> finished = TimestampField(job, "finished_at");
  std::string ran;
  if (started && finished) ran = FormatDuration(*finished - *started);

  std::string summary = absl::StrCat("job ", id, " ", state);
  if (state == "FINISHED") {
    if (!ran.empty()) absl::StrAppend(&summary, " in ", ran);
  } else if (state == "FAILED") {
    if (!reason.empty()) {
      absl::StrAppend(&summary, ": ", reason);
    } else if (std::optional<int64_t> code = IntField(job, "exit_code")) {
      absl::StrAppend(&summary, ": exited with code ", *code);
    }
  } else if (state == "KILLED") {
    if (!ran.empty()) absl::StrAppend(&summary, " after ", ran);
    if (!reason.empty()) absl::StrAppend(&summary, ": ", reason);
  }
  return summary;
}

int ExitCodeForJob(const base::Json& job) {
  const std::string state = StringField(job, "state");
  if (state == "FINISHED") return kExitOk;
  if (state == "KILLED") return kExitJobKilled;
  std::optional<int64_t> code = IntField(job, "exit_code");
  if (code && *code >= 1 && *code <= 255) return static_cast<int>(*code);
  return kExitError;
}

void PrintLogLines(const base::Json& lines, Invocation& inv, int64_t* last_seq) {
  if (!lines.is_array()) return;
  for (const base::Json& line : lines) {
    std::optional<int64_t> seq = IntField(line, "seq");
    if (seq && *seq <= *last_seq) continue;
    std::string text = StringField(line, "text");
    if (text.empty() || text.back() != '\n') text += '\n';
    std::ostream& stream = StringField(line, "stream") == "stderr" ? *inv.err : *inv.out;
    stream << text;
    if (seq) *last_seq = *seq;
  }
  inv.out->flush();
  inv.err->flush();
}

absl::StatusOr<bool> PrintAvailableLogs(ApiClient& api, Invocation& inv, int64_t job_id,
                                        int64_t* last_seq) {
  while (true) {
    KILN_ASSIGN_OR_RETURN(base::Json page,
                          api.GetJson(absl::StrCat(JobPath(job_id), "/logs?after=", *last_seq,
                                                   "&limit=", kLogPageSize)));
    const int64_t before = *last_seq;
    auto lines = page.find("lines");
    if (lines != page.end()) PrintLogLines(*lines, inv, last_seq);
    if (std::optional<int64_t> next = IntField(page, "next"); next && *next > *last_seq) {
      *last_seq = *next;
    }
    const bool done = page.value("done", false);
    if (done) return true;
    // No progress means we have everything that exists now.
    if (*last_seq == before || lines == page.end() || lines->empty()) return false;
  }
}

absl::Status FollowLogs(ApiClient& api, Invocation& inv, int64_t job_id, int64_t* last_seq) {
  std::unique_ptr<ScopedFollowInterrupt> interrupt;
  if (inv.handle_interrupts) {
    interrupt = std::make_unique<ScopedFollowInterrupt>(
        absl::StrCat("\nkiln: stopped following job ", job_id,
                     "; it keeps running. Re-attach with 'kiln logs -f ", job_id,
                     "' or stop it with 'kiln kill ", job_id, "'.\n"));
  }
  ReconnectWindow window(inv, api.url());
  while (true) {
    LineSplitter splitter;
    absl::Status line_error;
    bool got_data = false;
    absl::Status streamed = api.Stream(
        absl::StrCat(JobPath(job_id), "/logs?follow=true&after=", *last_seq),
        [&](std::string_view data) {
          got_data = true;
          window.Reset();
          splitter.Feed(data, [&](std::string_view line) {
            if (line.empty()) return;
            absl::StatusOr<base::Json> json = base::ParseJson(line);
            if (!json.ok()) {
              line_error = absl::InternalError(absl::StrCat(
                  "Kiln sent a log line that is not JSON (", json.status().message(), ")"));
              return;
            }
            PrintLogLines(base::Json::array({*json}), inv, last_seq);
          });
          return line_error.ok();
        },
        kStreamIdleTimeoutMicros);
    KILN_RETURN_IF_ERROR(line_error);
    if (!streamed.ok() && !IsRetriable(streamed)) return streamed;
    if (streamed.code() == absl::StatusCode::kDeadlineExceeded) {
      // A quiet job, not an outage: the master answered before; just re-open.
      continue;
    }
    if (streamed.ok()) {
      // The master ends the stream when the job ends; confirm it (and pick up any line
      // written between the last chunk and the end) before stopping.
      absl::StatusOr<bool> done = PrintAvailableLogs(api, inv, job_id, last_seq);
      if (done.ok()) {
        window.Reset();
        if (*done) return absl::OkStatus();
        // Ended early (e.g. the master is shutting down); avoid a hot loop if it keeps
        // closing at once.
        if (!got_data) inv.sleep(kFirstBackoffMicros);
        continue;
      }
      if (!IsRetriable(done.status())) return done.status();
      streamed = done.status();
    }
    if (!window.WaitToRetry(streamed)) {
      return absl::UnavailableError(
          absl::StrCat("lost contact with Kiln at ", api.url(), " for more than ",
                       kReconnectWindowMicros / 1'000'000, " s while following job ", job_id,
                       "; the job may still be running. Re-attach with 'kiln logs -f --since-seq ",
                       *last_seq, " ", job_id, "' once Kiln is back."));
    }
  }
}

absl::StatusOr<base::Json> WaitForJobEnd(ApiClient& api, Invocation& inv, int64_t job_id) {
  std::unique_ptr<ScopedFollowInterrupt> interrupt;
  if (inv.handle_interrupts) {
    interrupt = std::make_unique<ScopedFollowInterrupt>(
        absl::StrCat("\nkiln: stopped waiting for job ", job_id,
                     "; it keeps running. Check it with 'kiln job show ", job_id,
                     "' or stop it with 'kiln kill ", job_id, "'.\n"));
  }
  ReconnectWindow window(inv, api.url());
  int64_t poll = kFirstBackoffMicros;
  while (true) {
    absl::StatusOr<base::Json> job = api.GetJson(JobPath(job_id));
    if (job.ok()) {
      window.Reset();
      if (IsTerminalState(StringField(*job, "state"))) return job;
      inv.sleep(poll);
      poll = std::min(poll * 2, kMaxPollMicros);
      continue;
    }
    if (!IsRetriable(job.status())) return job.status();
    if (!window.WaitToRetry(job.status())) {
      return absl::UnavailableError(absl::StrCat(
          "lost contact with Kiln at ", api.url(), " for more than ",
          kReconnectWindowMicros / 1'000'000, " s while waiting for job ", job_id,
          "; the job may still be running. Check it later with 'kiln job show ", job_id, "'."));
    }
  }
}

}  // namespace kiln::cli
