#include "kiln/elastic/worker/rendezvous_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "kiln/base/testing/status_matchers.h"
#include "kiln/net/http_server.h"
#include "kiln/net/testing/server_thread.h"

namespace kiln::elastic::worker {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

base::Json Formed() {
  return base::Json::parse(R"({"generation": 3, "rank": 1, "world_size": 2, "members": [11, 12],
                               "store": {"host": "10.0.0.5", "port": 41234},
                               "source_rank": 0, "reason": "worker 12 joined"})");
}

TEST(ParseJoinReplyTest, ReadsAFormedGeneration) {
  KILN_ASSERT_OK_AND_ASSIGN(JoinReply reply, ParseJoinReply(Formed(), 12));
  EXPECT_FALSE(reply.retry);
  EXPECT_FALSE(reply.outcome.leave);
  const Assignment& a = reply.outcome.assignment;
  EXPECT_EQ(a.generation, 3);
  EXPECT_EQ(a.rank, 1);
  EXPECT_EQ(a.world_size, 2);
  EXPECT_THAT(a.members, ElementsAre(11, 12));
  EXPECT_EQ(a.store_host, "10.0.0.5");
  EXPECT_EQ(a.store_port, 41234);
  EXPECT_EQ(a.source_rank, 0);
  EXPECT_EQ(a.reason, "worker 12 joined");
}

TEST(ParseJoinReplyTest, ReadsRetryAndLeave) {
  KILN_ASSERT_OK_AND_ASSIGN(JoinReply retry,
                            ParseJoinReply(base::Json::parse(R"({"retry": true})"), 1));
  EXPECT_TRUE(retry.retry);
  KILN_ASSERT_OK_AND_ASSIGN(
      JoinReply leave,
      ParseJoinReply(base::Json::parse(R"({"leave": true, "reason": "scaled down"})"), 1));
  EXPECT_FALSE(leave.retry);
  EXPECT_TRUE(leave.outcome.leave);
  EXPECT_EQ(leave.outcome.reason, "scaled down");
}

TEST(ParseJoinReplyTest, AcceptsTaskIdsWrittenAsStrings) {
  base::Json reply = Formed();
  reply["members"] = {"11", "12"};
  KILN_ASSERT_OK_AND_ASSIGN(JoinReply parsed, ParseJoinReply(reply, 12));
  EXPECT_THAT(parsed.outcome.assignment.members, ElementsAre(11, 12));
}

TEST(ParseJoinReplyTest, BadRepliesNameTheField) {
  auto with = [](const char* field, base::Json value) {
    base::Json reply = Formed();
    if (value.is_discarded()) {
      reply.erase(field);
    } else {
      reply[field] = std::move(value);
    }
    return reply;
  };
  const base::Json missing = base::Json(base::Json::value_t::discarded);
  struct Case {
    base::Json reply;
    std::string message;
  };
  const std::vector<Case> cases = {
      {base::Json::array(), "expected a JSON object"},
      {with("generation", missing), "generation"},
      {with("generation", 0), "'generation' must be >= 1"},
      {with("rank", "1"), "rank"},
      {with("rank", 2), "'rank' must be in [0, 2), got 2"},
      {with("world_size", 0), "'world_size' must be >= 1"},
      {with("source_rank", -1), "'source_rank' must be in [0, 2)"},
      {with("members", missing), "'members' must be an array"},
      {with("members", {11}), "'members' lists 1 task ids for a world_size of 2"},
      {with("members", {11, 13}), "has task 13 at this worker's rank 1; expected task 12"},
      {with("members", {11, true}), "'members' must hold task ids"},
      {with("store", missing), "'store' must be an object"},
      {with("store", {{"port", 5}}), "host"},
      {with("store", {{"host", ""}, {"port", 5}}), "'store.host' is empty"},
      {with("store", {{"host", "h"}, {"port", 70000}}), "'store.port' must be in [1, 65535]"},
      {with("retry", "yes"), "retry"},
      {with("leave", 1), "leave"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ParseJoinReply(c.reply, 12),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         ::testing::AllOf(HasSubstr("malformed rendezvous join reply"),
                                          HasSubstr(c.message))))
        << c.reply.dump();
  }
}

TEST(ParseWatchReplyTest, ReadsNextAndLeave) {
  KILN_ASSERT_OK_AND_ASSIGN(WatchReply quiet,
                            ParseWatchReply(base::Json::parse(R"({"next": false})")));
  EXPECT_FALSE(quiet.next);
  EXPECT_FALSE(quiet.leave);
  KILN_ASSERT_OK_AND_ASSIGN(
      WatchReply next,
      ParseWatchReply(base::Json::parse(R"({"generation": 2, "next": true, "leave": true})")));
  EXPECT_TRUE(next.next);
  EXPECT_TRUE(next.leave);
  EXPECT_THAT(ParseWatchReply(base::Json::parse(R"({"generation": 2})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("next")));
  EXPECT_THAT(ParseWatchReply(base::Json::parse(R"({"next": "no"})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("next")));
}

// A fake kilnd serving the two rendezvous routes on a real HttpServer; each route answers
// from its own script (status, body) and repeats the last entry once the script runs out.
class FakeMaster {
 public:
  struct Answer {
    int status;
    std::string body;
  };

  FakeMaster() {
    net::Router router;
    router.Add("POST", "/api/v1/jobs/{job}/rendezvous/join",
               [this](net::HttpRequest& req, net::Responder res) { Handle("join", req, res); });
    router.Add("GET", "/api/v1/jobs/{job}/rendezvous",
               [this](net::HttpRequest& req, net::Responder res) { Handle("watch", req, res); });
    server_ = std::make_unique<net::ServerThread>(std::move(router));
  }

  std::string url() const { return server_->base_url(); }

  void Script(const std::string& route, std::vector<Answer> answers) {
    std::lock_guard lock(mu_);
    scripts_[route] = std::deque<Answer>(answers.begin(), answers.end());
  }

  std::vector<net::HttpRequest> requests(const std::string& route) const {
    std::lock_guard lock(mu_);
    auto it = requests_.find(route);
    return it == requests_.end() ? std::vector<net::HttpRequest>() : it->second;
  }

 private:
  void Handle(const std::string& route, net::HttpRequest& req, net::Responder res) {
    net::HttpResponse response;
    {
      std::lock_guard lock(mu_);
      requests_[route].push_back(req);
      std::deque<Answer>& script = scripts_[route];
      KILN_CHECK(!script.empty());
      response.status = script.front().status;
      response.body = script.front().body;
      if (script.size() > 1) script.pop_front();
    }
    res.Send(std::move(response));
  }

  mutable std::mutex mu_;
  std::map<std::string, std::deque<Answer>> scripts_;
  std::map<std::string, std::vector<net::HttpRequest>> requests_;
  std::unique_ptr<net::ServerThread> server_;
};

std::unique_ptr<RendezvousClient> ClientOf(const FakeMaster& master) {
  auto client = RendezvousClient::Create({.master_url = master.url(),
                                          .token = "task-token",
                                          .job_id = "7",
                                          .task_id = 12,
                                          .host = "",
                                          .join_wait = 20000ms,
                                          .watch_wait = 1000ms,
                                          .unreachable_budget = 20000ms});
  KILN_CHECK_OK(client.status());
  return std::move(client).value();
}

TEST(RendezvousClientTest, JoinRepeatsRetriesUntilAGenerationIsFormed) {
  FakeMaster master;
  master.Script("join", {{200, R"({"retry": true})"}, {200, Formed().dump()}});
  auto client = ClientOf(master);
  EXPECT_EQ(client->host(), "127.0.0.1");  // the route toward a loopback master

  KILN_ASSERT_OK_AND_ASSIGN(JoinOutcome outcome,
                            client->Join({.generation = 2, .step = 40, .store_port = 5555}));
  EXPECT_FALSE(outcome.leave);
  EXPECT_EQ(outcome.assignment.generation, 3);
  EXPECT_EQ(outcome.assignment.rank, 1);

  const auto requests = master.requests("join");
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].path, "/api/v1/jobs/7/rendezvous/join");
  EXPECT_EQ(requests[0].Header("authorization"), "Bearer task-token");
  const base::Json body = base::Json::parse(requests[0].body);
  EXPECT_EQ(body["task_id"], 12);
  EXPECT_EQ(body["host"], "127.0.0.1");
  EXPECT_EQ(body["store_port"], 5555);
  EXPECT_EQ(body["generation"], 2);
  EXPECT_EQ(body["step"], 40);
  EXPECT_EQ(body["wait_ms"], 20000);
  EXPECT_EQ(requests[1].body, requests[0].body);
}

TEST(RendezvousClientTest, JoinRidesOutAMasterThatIsBriefly503) {
  FakeMaster master;
  master.Script("join", {{503, R"({"error": {"code": "UNAVAILABLE", "message": "restarting"}})"},
                         {200, R"({"leave": true, "reason": "job ending"})"}});
  auto client = ClientOf(master);
  KILN_ASSERT_OK_AND_ASSIGN(JoinOutcome outcome, client->Join({}));
  EXPECT_TRUE(outcome.leave);
  EXPECT_EQ(outcome.reason, "job ending");
}

TEST(RendezvousClientTest, JoinReturnsTheMastersRefusal) {
  FakeMaster master;
  master.Script("join", {{409, R"({"error": {"code": "FAILED_PRECONDITION",
                                             "message": "job 7 is FINISHED"}})"}});
  auto client = ClientOf(master);
  EXPECT_THAT(client->Join({}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("job 7 is FINISHED")));
}

TEST(RendezvousClientTest, JoinRejectsAMalformedReply) {
  FakeMaster master;
  master.Script("join", {{200, R"({"generation": 1, "rank": 0})"}});
  auto client = ClientOf(master);
  EXPECT_THAT(client->Join({}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("world_size")));
}

TEST(RendezvousClientTest, JoinGivesUpOnAnUnreachableMasterAfterItsBudget) {
  std::string url;
  {
    FakeMaster gone;
    url = gone.url();
  }
  auto client = RendezvousClient::Create(
      {.master_url = url, .job_id = "7", .task_id = 12, .unreachable_budget = 300ms});
  KILN_ASSERT_OK(client);
  EXPECT_THAT((*client)->Join({}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("gave up after")));
}

// Waits (bounded) for `client` to see a pending generation.
bool WaitForPending(const RendezvousClient& client) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!client.next_pending()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

TEST(RendezvousClientTest, WatchRaisesNextPendingWhenTheMasterSaysSo) {
  FakeMaster master;
  master.Script("watch", {{200, R"({"next": false})"},
                          {500, "oops"},
                          {200, R"({"generation": 3, "next": true, "leave": false})"}});
  auto client = ClientOf(master);
  client->StartWatch(3);
  ASSERT_TRUE(WaitForPending(*client));
  const auto requests = master.requests("watch");
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].path, "/api/v1/jobs/7/rendezvous");
  EXPECT_EQ(requests[0].Query("task_id"), "12");
  EXPECT_EQ(requests[0].Query("generation"), "3");
  EXPECT_EQ(requests[0].Query("wait_ms"), "1000");
  EXPECT_EQ(requests[0].Header("authorization"), "Bearer task-token");

  // A new watch starts with the flag down.
  master.Script("watch", {{200, R"({"next": false})"}});
  client->StartWatch(4);
  EXPECT_FALSE(client->next_pending());
  client->StopWatch();
}

TEST(RendezvousClientTest, FromEnvironmentNamesWhatIsMissingOrMalformed) {
  std::map<std::string, std::string> env = {
      {"KILN_MASTER", "http://127.0.0.1:1"}, {"KILN_JOB_ID", "7"}, {"KILN_TASK_ID", "12"}};
  auto lookup = [&](const char* name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  KILN_EXPECT_OK(RendezvousClient::FromEnvironment(lookup));
  env["KILN_TASK_ID"] = "twelve";
  EXPECT_THAT(RendezvousClient::FromEnvironment(lookup),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("KILN_TASK_ID")));
  env.erase("KILN_TASK_ID");
  EXPECT_THAT(RendezvousClient::FromEnvironment(lookup),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("KILN_TASK_ID is not set")));
  env["KILN_TASK_ID"] = "12";
  env["KILN_MASTER"] = "ftp://x";
  EXPECT_THAT(RendezvousClient::FromEnvironment(lookup),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ftp://x")));
}

}  // namespace
}  // namespace kiln::elastic::worker
