#include "kiln/api/elastic_api.h"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/api/handler_util.h"
#include "kiln/api/native_api.h"
#include "kiln/net/http_status.h"

namespace kiln::api {
namespace {

using base::Json;
using net::HttpRequest;
using net::Responder;

constexpr int64_t kMaxWaitMs = 60'000;
constexpr int64_t kDefaultWaitMs = 20'000;

}  // namespace

absl::StatusOr<elastic::JoinRequest> JoinRequestFromJson(const Json& body) {
  if (!body.is_object()) {
    return absl::InvalidArgumentError("the join request must be a JSON object");
  }
  elastic::JoinRequest r;
  KILN_ASSIGN_OR_RETURN(r.task_id, base::GetInt(body, "task_id"));
  KILN_ASSIGN_OR_RETURN(r.host, base::GetString(body, "host"));
  if (r.host.empty() || r.host.size() > 255) {
    return absl::InvalidArgumentError(
        "field \"host\" must be the worker's address (1 to 255 characters)");
  }
  KILN_ASSIGN_OR_RETURN(int64_t port, base::GetInt(body, "store_port"));
  if (port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"store_port\" must be a TCP port (1-65535), got ", port));
  }
  r.store_port = static_cast<int>(port);
  KILN_ASSIGN_OR_RETURN(r.generation, base::GetIntOr(body, "generation", 0));
  if (r.generation < 0) {
    return absl::InvalidArgumentError("field \"generation\" must be 0 or more");
  }
  KILN_ASSIGN_OR_RETURN(r.step, base::GetIntOr(body, "step", -1));
  if (r.step < -1) return absl::InvalidArgumentError("field \"step\" must be -1 or more");
  return r;
}

Json JoinAnswerToJson(const elastic::JoinAnswer& a) {
  switch (a.kind) {
    case elastic::JoinAnswer::kWait:
      return {{"retry", true}};
    case elastic::JoinAnswer::kLeave:
      return {{"leave", true}, {"reason", a.reason}};
    case elastic::JoinAnswer::kAssigned:
      break;
  }
  const elastic::Generation& g = a.generation;
  return {{"generation", g.id},
          {"rank", a.rank},
          {"world_size", g.world_size()},
          {"members", g.members},
          {"store", {{"host", g.store_host}, {"port", g.store_port}}},
          {"source_rank", 0},
          {"reason", g.reason}};
}

Json WatchAnswerToJson(const elastic::WatchAnswer& a, int64_t generation) {
  return {{"generation", generation}, {"next", a.next}, {"leave", a.leave}};
}

struct ElasticApi::Held {
  Responder responder;
  boost::asio::steady_timer timer;
  bool is_join = false;
  int64_t job_id = 0;
  int64_t task_id = 0;
  int64_t generation = 0;
  auth::Principal who;
  bool answered = false;
  Held(boost::asio::io_context& io, Responder r) : responder(std::move(r)), timer(io) {}
};

ElasticApi::ElasticApi(boost::asio::io_context& io, store::Store& store, auth::Authenticator& auth,
                       master::ElasticController& elastic)
    : io_(io), store_(store), auth_(auth), elastic_(elastic) {}

ElasticApi::~ElasticApi() {
  for (auto& [id, h] : held_) h->timer.cancel();
}

void ElasticApi::Register(net::Router& router) {
  auto bind = [this](void (ElasticApi::*fn)(HttpRequest&, Responder)) {
    return [this, fn](HttpRequest& req, Responder res) { (this->*fn)(req, std::move(res)); };
  };
  router.Add("POST", "/api/v1/jobs/{id}/scale", bind(&ElasticApi::Scale),
             net::RouteOptions{64 << 10});
  router.Add("POST", "/api/v1/jobs/{id}/rendezvous/join", bind(&ElasticApi::Join),
             net::RouteOptions{64 << 10});
  router.Add("GET", "/api/v1/jobs/{id}/rendezvous", bind(&ElasticApi::Watch));
  elastic_.SetChangeObserver([this](int64_t job_id) {
    // Answer on a later turn of the loop: the controller is in the middle of a change.
    boost::asio::post(io_, [this, job_id]() { Wake(job_id); });
  });
}

void ElasticApi::Scale(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(int64_t id, PathId(req));
  KILN_API_ASSIGN(Json body, ParseBody(req));
  if (!body.is_object() || !body.contains("workers") || !body["workers"].is_number_integer()) {
    return SendError(res, absl::InvalidArgumentError(
                              "the body must be {\"workers\": N}, N an integer between the job's "
                              "min_workers and max_workers"));
  }
  int64_t workers = body["workers"].get<int64_t>();
  if (workers < 1 || workers > 1'000'000) {
    return SendError(
        res, absl::InvalidArgumentError(absl::StrCat("workers must be at least 1, got ", workers)));
  }
  KILN_API_ASSIGN(store::JobRecord job, elastic_.Scale(who, id, static_cast<int>(workers)));
  Json j = JobToJson(job);
  if (absl::Status s = AddDistributedDetails(store_, j); !s.ok()) return SendError(res, s);
  SendJson(res, 200, j);
}

void ElasticApi::Join(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(int64_t id, PathId(req));
  KILN_API_ASSIGN(Json body, ParseBody(req));
  KILN_API_ASSIGN(elastic::JoinRequest request, JoinRequestFromJson(body));
  KILN_API_ASSIGN(int64_t wait_ms, body.is_object() && body.contains("wait_ms")
                                       ? base::GetInt(body, "wait_ms")
                                       : absl::StatusOr<int64_t>(kDefaultWaitMs));
  if (wait_ms < 0 || wait_ms > kMaxWaitMs) {
    return SendError(res, absl::InvalidArgumentError(absl::StrCat(
                              "field \"wait_ms\" must be between 0 and ", kMaxWaitMs)));
  }
  KILN_API_ASSIGN(elastic::JoinAnswer answer, elastic_.Join(who, id, request));
  if (answer.kind != elastic::JoinAnswer::kWait || wait_ms == 0) {
    return SendJson(res, 200, JoinAnswerToJson(answer));
  }
  auto held = std::make_shared<Held>(io_, std::move(res));
  held->is_join = true;
  held->job_id = id;
  held->task_id = request.task_id;
  held->generation = request.generation;
  held->who = who;
  Hold(id, held, wait_ms);
}

void ElasticApi::Watch(HttpRequest& req, Responder res) {
  KILN_API_ASSIGN(auth::Principal who, AuthenticateRequest(auth_, req));
  KILN_API_ASSIGN(int64_t id, PathId(req));
  KILN_API_ASSIGN(int64_t task_id, QueryInt(req, "task_id", 0, 0, INT64_MAX));
  if (task_id == 0) {
    return SendError(res, absl::InvalidArgumentError(
                              "query parameter task_id is required (the worker's KILN_TASK_ID)"));
  }
  KILN_API_ASSIGN(int64_t generation, QueryInt(req, "generation", 0, 0, INT64_MAX));
  KILN_API_ASSIGN(int64_t wait_ms, QueryInt(req, "wait_ms", kDefaultWaitMs, 0, kMaxWaitMs));
  KILN_API_ASSIGN(elastic::WatchAnswer answer, elastic_.Watch(who, id, task_id, generation));
  if (answer.next || wait_ms == 0) return SendJson(res, 200, WatchAnswerToJson(answer, generation));
  auto held = std::make_shared<Held>(io_, std::move(res));
  held->job_id = id;
  held->task_id = task_id;
  held->generation = generation;
  held->who = who;
  Hold(id, held, wait_ms);
}

void ElasticApi::Hold(int64_t job_id, std::shared_ptr<Held> held, int64_t wait_ms) {
  held->timer.expires_after(std::chrono::milliseconds(wait_ms));
  held->timer.async_wait(
      [this, weak = std::weak_ptr<Held>(held)](const boost::system::error_code& ec) {
        auto h = weak.lock();
        if (ec || !h || h->answered) return;
        Answer(*h);
        for (auto it = held_.begin(); it != held_.end(); ++it) {
          if (it->second == h) {
            held_.erase(it);
            break;
          }
        }
      });
  held_.emplace(job_id, std::move(held));
}

void ElasticApi::Answer(Held& h) {
  h.answered = true;
  h.timer.cancel();
  if (h.is_join) {
    elastic::JoinAnswer a = elastic_.AnswerJoin(h.job_id, h.task_id, h.generation);
    h.responder.Send(net::JsonResponse(200, JoinAnswerToJson(a)));
    return;
  }
  auto a = elastic_.Watch(h.who, h.job_id, h.task_id, h.generation);
  h.responder.Send(a.ok() ? net::JsonResponse(200, WatchAnswerToJson(*a, h.generation))
                          : net::ErrorResponse(a.status()));
}

void ElasticApi::Wake(int64_t job_id) {
  auto [begin, end] = held_.equal_range(job_id);
  std::vector<std::shared_ptr<Held>> ready;
  for (auto it = begin; it != end;) {
    Held& h = *it->second;
    bool has_answer;
    if (h.is_join) {
      has_answer =
          elastic_.AnswerJoin(h.job_id, h.task_id, h.generation).kind != elastic::JoinAnswer::kWait;
    } else {
      auto a = elastic_.Watch(h.who, h.job_id, h.task_id, h.generation);
      has_answer = !a.ok() || a->next;
    }
    if (has_answer) {
      ready.push_back(it->second);
      it = held_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& h : ready) Answer(*h);
}

void ElasticApi::ReleaseHeld() {
  auto held = std::move(held_);
  held_.clear();
  for (auto& [id, h] : held) {
    if (!h->answered) Answer(*h);
  }
}

}  // namespace kiln::api
