#include "kiln/tracking/reporter.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/base/json.h"
#include "kiln/base/random.h"
#include "kiln/base/status.h"
#include "kiln/net/http_status.h"

namespace kiln::tracking {
namespace {

// The master refuses a whole batch for one metric name outside these bounds
// (JobController::IngestMetrics), so such names are filtered out before they are queued.
constexpr size_t kMaxMetricNameBytes = 256;
constexpr size_t kMaxWriterBytes = 128;
constexpr std::chrono::milliseconds kInitialBackoff{100};

bool IsValidJobId(std::string_view id) {
  if (id.empty()) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c == '-';
  });
}

// Connection trouble, timeouts and overload are worth waiting out; any other non-2xx
// answer will not change by sending the same body again.
bool IsRetryable(int http_status) {
  return http_status >= 500 || http_status == 408 || http_status == 429;
}

std::optional<std::string> GetEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Reporter>> Reporter::FromEnvironment() {
  return FromEnvironment(GetEnv);
}

absl::StatusOr<std::unique_ptr<Reporter>> Reporter::FromEnvironment(const EnvLookup& lookup) {
  std::optional<std::string> job_id = lookup("KILN_JOB_ID");
  if (!job_id) return std::unique_ptr<Reporter>();
  std::optional<std::string> master = lookup("KILN_MASTER");
  if (!master) {
    return absl::InvalidArgumentError(
        "KILN_JOB_ID is set but KILN_MASTER is not; both come from the Kiln agent (unset "
        "KILN_JOB_ID to run outside Kiln)");
  }
  ReporterOptions options;
  options.master_url = *master;
  options.token = lookup("KILN_TOKEN").value_or("");
  options.job_id = *job_id;
  if (std::optional<std::string> exit_timeout = lookup("KILN_REPORT_EXIT_TIMEOUT")) {
    double seconds = 0;
    // Bounded so that the conversion to milliseconds cannot overflow.
    if (!absl::SimpleAtod(*exit_timeout, &seconds) || !(seconds >= 0 && seconds <= 1e9)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KILN_REPORT_EXIT_TIMEOUT must be seconds >= 0, got \"", *exit_timeout, "\""));
    }
    options.exit_timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  }
  auto reporter = Create(std::move(options));
  if (!reporter.ok()) {
    return absl::Status(reporter.status().code(),
                        absl::StrCat("metrics reporter from KILN_MASTER/KILN_JOB_ID: ",
                                     reporter.status().message()));
  }
  return reporter;
}

absl::StatusOr<std::unique_ptr<Reporter>> Reporter::Create(ReporterOptions options,
                                                           const base::Clock& clock) {
  if (!IsValidJobId(options.job_id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job id must be non-empty letters, digits, '_' or '-', got \"", options.job_id, "\""));
  }
  if (options.writer.empty()) options.writer = "w-" + base::RandomHexToken(8);
  if (options.writer.size() > kMaxWriterBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("writer id must be at most ", kMaxWriterBytes, " characters"));
  }
  if (options.max_batch_points < 1 || options.max_buffer_points < options.max_batch_points) {
    return absl::InvalidArgumentError("need 1 <= max_batch_points <= max_buffer_points");
  }
  net::HttpClientOptions http;
  http.request_timeout = options.request_timeout;
  http.connect_timeout = std::min(http.connect_timeout, options.request_timeout);
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<net::HttpClient> client,
                        net::HttpClient::Create(options.master_url, http));
  if (!options.token.empty()) client->SetBearerToken(options.token);
  return std::unique_ptr<Reporter>(new Reporter(std::move(options), std::move(client), clock));
}

Reporter::Reporter(ReporterOptions options, std::unique_ptr<net::HttpClient> client,
                   const base::Clock& clock)
    : options_(std::move(options)),
      target_(absl::StrCat("/api/v1/jobs/", options_.job_id, "/metrics")),
      clock_(clock),
      client_(std::move(client)) {
  // Last: the thread reads every member above.
  thread_ = std::thread([this] { Run(); });
}

Reporter::~Reporter() {
  if (!Flush(options_.exit_timeout)) {
    spdlog::warn("kiln: {} metric points not delivered to {} within {} ms; they are lost",
                 stats().points_pending, client_->base_url(), options_.exit_timeout.count());
  }
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void Reporter::Report(int64_t step, std::string_view group,
                      const std::vector<std::pair<std::string, double>>& metrics) {
  const double time_s = static_cast<double>(clock_.NowMicros()) / 1e6;
  std::vector<std::string> bad_names;  // to warn about, after the lock is dropped
  bool overflowed = false;
  {
    std::lock_guard lock(mu_);
    const bool was_empty = buffer_.empty();
    Entry entry{step, group.empty() ? "test" : std::string(group), time_s, {}};
    for (const auto& [name, value] : metrics) {
      if (std::isfinite(value) && !name.empty() && name.size() <= kMaxMetricNameBytes) {
        // Reports larger than one batch are split so that every entry fits a batch.
        if (entry.metrics.size() == options_.max_batch_points) {
          buffered_points_ += entry.metrics.size();
          ++enqueued_;
          buffer_.push_back(entry);
          entry.metrics.clear();
        }
        entry.metrics.emplace_back(name, value);
      } else if (warned_names_.insert(name).second) {
        bad_names.push_back(name);
      }
    }
    if (!entry.metrics.empty()) {
      buffered_points_ += entry.metrics.size();
      ++enqueued_;
      buffer_.push_back(std::move(entry));
    }
    const bool first_overflow = !warned_overflow_;
    DropOverflowLocked();
    overflowed = first_overflow && warned_overflow_;
    // The sender sleeps while the buffer is empty and wakes for a full batch; other
    // reports need not wake it.
    if (!buffer_.empty() && (was_empty || buffered_points_ >= options_.max_batch_points)) {
      changed_.notify_all();
    }
  }
  for (const std::string& name : bad_names) {
    spdlog::warn(
        "kiln: skipping metric \"{}\": values must be finite and names 1 to {} characters "
        "(warned once per name)",
        name.size() > 64 ? absl::StrCat(name.substr(0, 64), "...") : name, kMaxMetricNameBytes);
  }
  if (overflowed) {
    spdlog::warn(
        "kiln: metrics buffer full ({} points unsent, master {} unreachable?); dropping the "
        "oldest points",
        options_.max_buffer_points, client_->base_url());
  }
}

bool Reporter::Flush(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(mu_);
  const int64_t target = enqueued_;
  if (resolved_ >= target) return true;
  ++flush_waiters_;
  changed_.notify_all();  // the sender stops waiting out flush_interval
  const bool done = changed_.wait_until(lock, deadline, [&] { return resolved_ >= target; });
  --flush_waiters_;
  return done;
}

ReporterStats Reporter::stats() const {
  std::lock_guard lock(mu_);
  ReporterStats out = stats_;
  out.points_pending = static_cast<int64_t>(buffered_points_ + in_flight_points_);
  return out;
}

void Reporter::DropOverflowLocked() {
  // Keeps at least one entry: each holds at most max_batch_points <= max_buffer_points.
  while (buffered_points_ > options_.max_buffer_points && buffer_.size() > 1) {
    const size_t n = buffer_.front().metrics.size();
    buffer_.pop_front();
    buffered_points_ -= n;
    ++resolved_;
    stats_.points_dropped += static_cast<int64_t>(n);
    warned_overflow_ = true;
  }
}

bool Reporter::SendNowLocked() const {
  if (buffered_points_ >= options_.max_batch_points) return true;
  // Only something to send may cut the interval short: a flush waiter that has not yet
  // woken up after its last batch would otherwise make the sender spin.
  return flush_waiters_ > 0 && !buffer_.empty();
}

Reporter::Batch Reporter::TakeBatchLocked() {
  Batch batch;
  while (!buffer_.empty()) {
    const size_t n = buffer_.front().metrics.size();
    if (!batch.entries.empty() && batch.points + n > options_.max_batch_points) break;
    batch.entries.push_back(std::move(buffer_.front()));
    buffer_.pop_front();
    batch.points += n;
  }
  buffered_points_ -= batch.points;
  if (!batch.entries.empty()) batch.seq = next_seq_++;
  return batch;
}

void Reporter::Run() {
  while (true) {
    Batch batch;
    {
      std::unique_lock lock(mu_);
      changed_.wait(lock, [&] { return stopping_ || !buffer_.empty(); });
      // The interval starts with the first buffered point, so an idle reporter never wakes.
      const auto deadline = std::chrono::steady_clock::now() + options_.flush_interval;
      changed_.wait_until(lock, deadline, [&] { return stopping_ || SendNowLocked(); });
      // Stopping comes after the destructor's Flush: what is left now is given up.
      if (stopping_) return;
      batch = TakeBatchLocked();
      if (batch.entries.empty()) continue;
      in_flight_points_ = batch.points;
    }
    Deliver(batch);
    {
      std::lock_guard lock(mu_);
      in_flight_points_ = 0;
      resolved_ += static_cast<int64_t>(batch.entries.size());
    }
    changed_.notify_all();
  }
}

void Reporter::Deliver(const Batch& batch) {
  base::Json reports = base::Json::array();
  for (const Entry& e : batch.entries) {
    base::Json values = base::Json::object();
    for (const auto& [name, value] : e.metrics) values[name] = value;
    reports.push_back(
        {{"step", e.step}, {"group", e.group}, {"time", e.time_s}, {"metrics", values}});
  }
  const base::Json body = {
      {"writer", options_.writer}, {"seq", batch.seq}, {"reports", std::move(reports)}};
  const auto points = static_cast<int64_t>(batch.points);

  std::chrono::milliseconds backoff = std::min(kInitialBackoff, options_.max_backoff);
  while (true) {
    absl::StatusOr<net::HttpResponse> response = client_->PostJson(target_, body);
    if (response.ok() && response->status >= 200 && response->status < 300) {
      std::lock_guard lock(mu_);
      ++stats_.batches_sent;
      stats_.points_sent += points;
      return;
    }
    if (response.ok() && !IsRetryable(response->status)) {
      const absl::Status error = net::StatusFromHttpResponse(*response);
      bool first = false;
      {
        std::lock_guard lock(mu_);
        stats_.points_rejected += points;
        first = warned_statuses_.insert(response->status).second;
      }
      if (first) {
        spdlog::warn(
            "kiln: the master rejected a metrics batch (HTTP {}: {}); dropping its {} points. "
            "This is a bug in the reporting code or a token problem, not a transient error; "
            "POST {}{}",
            response->status, error.ToString(), points, client_->base_url(), target_);
      }
      return;
    }
    if (!warned_retry_) {
      // Once per reporter: a master restart is routine, and the batch is kept.
      warned_retry_ = true;
      spdlog::warn(
          "kiln: cannot deliver metrics to {} ({}); retrying with backoff", client_->base_url(),
          response.ok() ? absl::StrCat("HTTP ", response->status) : response.status().ToString());
    }
    {
      std::lock_guard lock(mu_);
      ++stats_.retries;
    }
    if (!WaitUnlessStopped(backoff)) return;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

bool Reporter::WaitUnlessStopped(std::chrono::milliseconds delay) {
  std::unique_lock lock(mu_);
  return !changed_.wait_for(lock, delay, [&] { return stopping_; });
}

}  // namespace kiln::tracking
