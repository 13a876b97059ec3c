#include "kiln/elastic/worker/rendezvous_client.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"
#include "kiln/elastic/worker/local_address.h"
#include "kiln/net/http_client.h"
#include "kiln/net/http_status.h"

namespace kiln::elastic::worker {
namespace {

using std::chrono::milliseconds;

// Extra time a long-poll request may take beyond the wait the master was asked to hold it.
constexpr milliseconds kLongPollSlack{15000};
constexpr milliseconds kFirstBackoff{100};
constexpr milliseconds kMaxBackoff{2000};

bool IsValidJobId(std::string_view id) {
  return !id.empty() && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

absl::Status BadReply(const std::string& what, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed rendezvous ", what, " reply from the master: ", why));
}

// Whether an error talking to the master is worth retrying: it could not be reached, it
// took too long, or it answered with a server-side or overload status.
bool IsTransient(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
         absl::IsResourceExhausted(status) || absl::IsInternal(status);
}

absl::Status StatusOfResponse(const absl::StatusOr<net::HttpResponse>& response) {
  if (!response.ok()) return response.status();
  if (response->status == 408) return absl::DeadlineExceededError("HTTP 408 from the master");
  return net::StatusFromHttpResponse(*response);
}

milliseconds NextBackoff(milliseconds backoff) { return std::min(backoff * 2, kMaxBackoff); }

}  // namespace

absl::StatusOr<JoinReply> ParseJoinReply(const base::Json& reply, int64_t task_id) {
  if (!reply.is_object()) return BadReply("join", "expected a JSON object");
  auto field = [](const absl::Status& status) { return BadReply("join", status.message()); };
  JoinReply out;
  auto retry = base::GetBoolOr(reply, "retry", false);
  if (!retry.ok()) return field(retry.status());
  if (*retry) {
    out.retry = true;
    return out;
  }
  auto reason = base::GetStringOr(reply, "reason", "");
  if (!reason.ok()) return field(reason.status());
  auto leave = base::GetBoolOr(reply, "leave", false);
  if (!leave.ok()) return field(leave.status());
  if (*leave) {
    out.outcome.leave = true;
    out.outcome.reason = *reason;
    return out;
  }
  Assignment& a = out.outcome.assignment;
  a.reason = *reason;
  auto generation = base::GetInt(reply, "generation");
  if (!generation.ok()) return field(generation.status());
  if (*generation < 1) {
    return BadReply("join", absl::StrCat("field 'generation' must be >= 1, got ", *generation));
  }
  a.generation = *generation;
  auto world_size = base::GetInt(reply, "world_size");
  if (!world_size.ok()) return field(world_size.status());
  if (*world_size < 1 || *world_size > 1'000'000) {
    return BadReply("join", absl::StrCat("field 'world_size' must be >= 1, got ", *world_size));
  }
  a.world_size = static_cast<int>(*world_size);
  auto in_world = [&](std::string_view name, int64_t value) -> absl::Status {
    if (value >= 0 && value < a.world_size) return absl::OkStatus();
    return BadReply("join", absl::StrCat("field '", std::string(name), "' must be in [0, ",
                                         a.world_size, "), got ", value));
  };
  auto rank = base::GetInt(reply, "rank");
  if (!rank.ok()) return field(rank.status());
  KILN_RETURN_IF_ERROR(in_world("rank", *rank));
  a.rank = static_cast<int>(*rank);
  auto source_rank = base::GetIntOr(reply, "source_rank", 0);
  if (!source_rank.ok()) return field(source_rank.status());
  KILN_RETURN_IF_ERROR(in_world("source_rank", *source_rank));
  a.source_rank = static_cast<int>(*source_rank);

  const auto members = reply.find("members");
  if (members == reply.end() || !members->is_array()) {
    return BadReply("join", "field 'members' must be an array of task ids");
  }
  if (static_cast<int64_t>(members->size()) != a.world_size) {
    return BadReply("join", absl::StrCat("field 'members' lists ", members->size(),
                                         " task ids for a world_size of ", a.world_size));
  }
  for (const base::Json& member : *members) {
    int64_t id = 0;
    // Task ids are job ids: integers, which a JSON encoder may also write as strings.
    if (member.is_number_integer()) {
      id = member.get<int64_t>();
    } else if (!member.is_string() || !absl::SimpleAtoi(member.get<std::string>(), &id)) {
      return BadReply("join", "field 'members' must hold task ids (integers)");
    }
    a.members.push_back(id);
  }
  if (a.members[a.rank] != task_id) {
    return BadReply("join",
                    absl::StrCat("field 'members' has task ", a.members[a.rank],
                                 " at this worker's rank ", a.rank, "; expected task ", task_id));
  }

  const auto store = reply.find("store");
  if (store == reply.end() || !store->is_object()) {
    return BadReply("join", "field 'store' must be an object {\"host\", \"port\"}");
  }
  auto store_host = base::GetString(*store, "host");
  if (!store_host.ok())
    return BadReply("join", absl::StrCat("in 'store': ", store_host.status().message()));
  if (store_host->empty()) return BadReply("join", "field 'store.host' is empty");
  auto store_port = base::GetInt(*store, "port");
  if (!store_port.ok())
    return BadReply("join", absl::StrCat("in 'store': ", store_port.status().message()));
  if (*store_port < 1 || *store_port > 65535) {
    return BadReply("join",
                    absl::StrCat("field 'store.port' must be in [1, 65535], got ", *store_port));
  }
  a.store_host = *store_host;
  a.store_port = static_cast<int>(*store_port);
  return out;
}

absl::StatusOr<WatchReply> ParseWatchReply(const base::Json& reply) {
  if (!reply.is_object()) return BadReply("watch", "expected a JSON object");
  WatchReply out;
  auto next = base::GetBool(reply, "next");
  if (!next.ok()) return BadReply("watch", next.status().message());
  auto leave = base::GetBoolOr(reply, "leave", false);
  if (!leave.ok()) return BadReply("watch", leave.status().message());
  out.next = *next;
  out.leave = *leave;
  return out;
}

absl::StatusOr<std::unique_ptr<RendezvousClient>> RendezvousClient::FromEnvironment(
    const EnvLookup& lookup) {
  RendezvousClientOptions options;
  auto required = [&](const char* name) -> absl::StatusOr<std::string> {
    std::optional<std::string> value = lookup(name);
    if (!value) {
      return absl::InvalidArgumentError(
          absl::StrCat(name,
                       " is not set; an elastic worker needs KILN_MASTER, KILN_JOB_ID and "
                       "KILN_TASK_ID (Kiln sets them for the workers of an elastic job)"));
    }
    return *value;
  };
  KILN_ASSIGN_OR_RETURN(options.master_url, required("KILN_MASTER"));
  KILN_ASSIGN_OR_RETURN(options.job_id, required("KILN_JOB_ID"));
  KILN_ASSIGN_OR_RETURN(std::string task_id, required("KILN_TASK_ID"));
  if (!absl::SimpleAtoi(task_id, &options.task_id) || options.task_id < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KILN_TASK_ID must be a positive integer, got \"", task_id, "\""));
  }
  options.token = lookup("KILN_TOKEN").value_or("");
  return Create(std::move(options));
}

absl::StatusOr<std::unique_ptr<RendezvousClient>> RendezvousClient::Create(
    RendezvousClientOptions options) {
  if (!IsValidJobId(options.job_id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job id must be non-empty letters, digits, '_' or '-', got \"", options.job_id, "\""));
  }
  if (options.task_id < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("task id must be a positive integer, got ", options.task_id));
  }
  // Validates the URL the same way every request will see it.
  KILN_RETURN_IF_ERROR(net::HttpClient::Create(options.master_url).status());
  if (options.host.empty()) {
    KILN_ASSIGN_OR_RETURN(options.host, LocalAddressToward(options.master_url));
  }
  return std::unique_ptr<RendezvousClient>(new RendezvousClient(std::move(options)));
}

RendezvousClient::RendezvousClient(RendezvousClientOptions options)
    : options_(std::move(options)),
      join_target_(absl::StrCat("/api/v1/jobs/", options_.job_id, "/rendezvous/join")),
      watch_target_(absl::StrCat("/api/v1/jobs/", options_.job_id, "/rendezvous")),
      watch_(std::make_shared<Watch>()) {}

RendezvousClient::~RendezvousClient() {
  StopWatch();
  ReapWatchThreads(/*all=*/true);
}

absl::StatusOr<JoinOutcome> RendezvousClient::Join(const JoinRequest& request) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<net::HttpClient> client,
                        net::HttpClient::Create(options_.master_url));
  if (!options_.token.empty()) client->SetBearerToken(options_.token);
  const base::Json body = {{"task_id", options_.task_id},
                           {"host", options_.host},
                           {"store_port", request.store_port},
                           {"generation", request.generation},
                           {"step", request.step},
                           {"wait_ms", options_.join_wait.count()}};
  const std::string text = base::DumpJson(body);
  auto unreachable_since = std::optional<std::chrono::steady_clock::time_point>();
  milliseconds backoff = kFirstBackoff;
  while (true) {
    auto response = client->Request("POST", join_target_, text, "application/json",
                                    options_.join_wait + kLongPollSlack);
    const absl::Status status = StatusOfResponse(response);
    if (!status.ok()) {
      if (!IsTransient(status)) {
        return absl::Status(status.code(),
                            absl::StrCat("rendezvous join refused: ", status.message()));
      }
      const auto now = std::chrono::steady_clock::now();
      if (!unreachable_since) {
        unreachable_since = now;
        spdlog::warn("rendezvous join: {}; retrying for up to {} s", std::string(status.message()),
                     options_.unreachable_budget.count() / 1000);
      }
      if (now - *unreachable_since > options_.unreachable_budget) {
        return absl::Status(status.code(), absl::StrCat("rendezvous join: gave up after ",
                                                        options_.unreachable_budget.count() / 1000,
                                                        " s: ", status.message()));
      }
      std::this_thread::sleep_for(backoff);
      backoff = NextBackoff(backoff);
      continue;
    }
    unreachable_since.reset();
    backoff = kFirstBackoff;
    auto json = base::ParseJson(response->body);
    if (!json.ok()) return BadReply("join", json.status().message());
    KILN_ASSIGN_OR_RETURN(JoinReply reply, ParseJoinReply(*json, options_.task_id));
    if (!reply.retry) return reply.outcome;
  }
}

void RendezvousClient::StartWatch(int64_t generation) {
  StopWatch();
  ReapWatchThreads(/*all=*/false);
  watch_ = std::make_shared<Watch>();
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread thread([this, watch = watch_, done, generation] {
    RunWatch(watch, generation);
    done->store(true);
  });
  watch_threads_.push_back({watch_, std::move(done), std::move(thread)});
}

void RendezvousClient::StopWatch() { watch_->stop.store(true); }

bool RendezvousClient::next_pending() const { return watch_->next.load(); }

void RendezvousClient::RunWatch(std::shared_ptr<Watch> watch, int64_t generation) const {
  auto client = net::HttpClient::Create(options_.master_url);
  if (!client.ok()) return;  // Create validated the same URL; cannot happen
  if (!options_.token.empty()) (*client)->SetBearerToken(options_.token);
  const std::string target =
      absl::StrCat(watch_target_, "?task_id=", options_.task_id, "&generation=", generation,
                   "&wait_ms=", options_.watch_wait.count());
  milliseconds backoff = kFirstBackoff;
  bool warned = false;
  while (!watch->stop.load()) {
    const auto sent = std::chrono::steady_clock::now();
    auto response = (*client)->Request("GET", target, "", "application/json",
                                       options_.watch_wait + kLongPollSlack);
    if (watch->stop.load()) return;
    absl::Status status = StatusOfResponse(response);
    if (status.ok()) {
      auto json = base::ParseJson(response->body);
      status = json.status();
      if (json.ok()) {
        auto reply = ParseWatchReply(*json);
        status = reply.status();
        if (reply.ok() && reply->next) {
          watch->next.store(true);
          return;
        }
      }
    }
    if (status.ok()) {
      backoff = kFirstBackoff;
      // A master that answers "no change" at once instead of holding the request would
      // otherwise be polled in a tight loop.
      if (std::chrono::steady_clock::now() - sent < options_.watch_wait / 2) {
        std::this_thread::sleep_for(kFirstBackoff);
      }
      continue;
    }
    if (!warned) {
      spdlog::warn("rendezvous watch of generation {}: {}; retrying", generation,
                   std::string(status.message()));
      warned = true;
    }
    // Sleeps in slices so that a stopped watch's thread ends soon.
    for (milliseconds slept{0}; slept < backoff && !watch->stop.load(); slept += kFirstBackoff) {
      std::this_thread::sleep_for(kFirstBackoff);
    }
    backoff = NextBackoff(backoff);
  }
}

void RendezvousClient::ReapWatchThreads(bool all) {
  auto reap = [all](WatchThread& t) {
    if (!all && !t.done->load()) return false;
    t.thread.join();
    return true;
  };
  watch_threads_.erase(std::remove_if(watch_threads_.begin(), watch_threads_.end(), reap),
                       watch_threads_.end());
}

}  // namespace kiln::elastic::worker
