// rendezvous_fuzz.cc
//
// The elastic rendezvous (ARCHITECTURE.md §5.2) from both ends. The input's first byte
// picks what it drives:
// - JSON for the master's join-request decoder and the worker's join/watch reply parsers:
//   none may crash, and a join answer kilnd encodes must parse on the worker's side;
// - a script of worker events (join, death, leave request, time passing) for the master's
//   `Rendezvous` state machine: every generation it forms must have at least min_workers
//   distinct members, none of them dead or leaving, with ranks the workers agree on.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string_view>

#include "kiln/api/elastic_api.h"
#include "kiln/base/json.h"
#include "kiln/elastic/rendezvous.h"
#include "kiln/elastic/worker/rendezvous_client.h"

namespace {

void Fail(const char* what) {
  std::fprintf(stderr, "rendezvous_fuzz: %s\n", what);
  std::abort();
}

void FuzzJson(std::string_view text) {
  auto json = kiln::base::ParseJson(text);
  if (!json.ok()) return;
  (void)kiln::elastic::worker::ParseWatchReply(*json);
  (void)kiln::elastic::worker::ParseJoinReply(*json, 1);
  auto request = kiln::api::JoinRequestFromJson(*json);
  if (!request.ok()) return;
  // What kilnd would answer this worker must be readable by the worker.
  kiln::elastic::JoinAnswer answer;
  answer.kind = kiln::elastic::JoinAnswer::kAssigned;
  answer.generation.id = request->generation + 1;
  answer.generation.members = {request->task_id};
  answer.generation.store_host = request->host;
  answer.generation.store_port = request->store_port;
  auto reply =
      kiln::elastic::worker::ParseJoinReply(kiln::api::JoinAnswerToJson(answer), request->task_id);
  if (!reply.ok()) Fail("a join answer for an accepted request does not parse");
}

void FuzzStateMachine(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const int min_workers = 1 + data[0] % 3;
  kiln::elastic::Rendezvous rv(min_workers, /*join_timeout_micros=*/100);
  std::set<int64_t> dead, leaving;
  int64_t now = 0;
  int64_t last_generation = 0;
  for (size_t i = 1; i + 1 < size; i += 2) {
    const int64_t task = 1 + data[i + 1] % 6;
    switch (data[i] % 5) {
      case 0:
      case 1: {
        if (dead.count(task)) break;  // the dead do not join
        kiln::elastic::JoinRequest r;
        r.task_id = task;
        r.host = "h";
        r.store_port = 1000 + static_cast<int>(task);
        r.generation = data[i] % 2 ? last_generation : 0;
        r.step = data[i + 1] % 4;
        rv.Join(r, now);
        break;
      }
      case 2:
        dead.insert(task);
        rv.RemoveWorker(task, "dead", now);
        break;
      case 3:
        if (dead.count(task)) break;
        leaving.insert(task);
        rv.RequestLeave(task, "leave", now);
        break;
      case 4:
        now += data[i + 1];
        break;
    }
    auto g = rv.MaybeForm(now, nullptr);
    if (!g) continue;
    if (g->id != last_generation + 1) Fail("generation ids are not consecutive");
    last_generation = g->id;
    if (g->world_size() < min_workers) Fail("a generation below min_workers");
    std::set<int64_t> members(g->members.begin(), g->members.end());
    if (members.size() != g->members.size()) Fail("a member appears twice");
    for (int64_t m : g->members) {
      if (dead.count(m)) Fail("a dead worker is a member");
      if (leaving.count(m)) Fail("a leaving worker is a member");
      auto answer = rv.AnswerJoin(m, last_generation - 1);
      if (answer.kind != kiln::elastic::JoinAnswer::kAssigned || g->members[answer.rank] != m) {
        Fail("a member is not assigned its rank");
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] % 2 == 0) {
    FuzzJson(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  } else {
    FuzzStateMachine(data + 1, size - 1);
  }
  return 0;
}
