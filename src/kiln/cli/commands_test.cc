// End-to-end tests of the `kiln` commands: argument handling, and the HTTP flows against
// a real loopback server answering with the bodies docs/api.md documents.
#include "kiln/cli/commands.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "kiln/base/testing/status_matchers.h"
#include "kiln/cli/connection.h"
#include "kiln/cli/testing/fake_master.h"

namespace kiln::cli {
namespace {

using ::testing::AllOf;
using testing::CliHarness;
using ::testing::ElementsAre;
using testing::FakeMaster;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::JobRecord;

// --- Arguments -------------------------------------------------------------------------

TEST(ArgumentsTest, HelpListsCommandsEnvironmentAndExitCodes) {
  CliHarness h;
  EXPECT_EQ(h.Run({"--help"}), 0);
  for (const char* word :
       {"run", "jobs", "logs", "metrics", "kill", "login", "up", "KILN_URL", "Exit codes"}) {
    EXPECT_THAT(h.out(), HasSubstr(word));
  }
}

TEST(ArgumentsTest, EveryCommandHasHelp) {
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"run", "--help"},
                                             {"jobs", "--help"},
                                             {"job", "show", "--help"},
                                             {"job", "scale", "--help"},
                                             {"logs", "--help"},
                                             {"metrics", "--help"},
                                             {"kill", "--help"},
                                             {"login", "--help"},
                                             {"logout", "--help"},
                                             {"up", "--help"},
                                             {"version", "--help"}}) {
    CliHarness h;
    EXPECT_EQ(h.Run(args), 0) << args[0];
    EXPECT_THAT(h.out(), HasSubstr("Usage")) << args[0];
  }
}

TEST(ArgumentsTest, NoCommandIsAUsageError) {
  CliHarness h;
  EXPECT_EQ(h.Run({}), 2);
  EXPECT_THAT(h.err(), HasSubstr("Usage"));
}

TEST(ArgumentsTest, VersionPrintsTheVersion) {
  CliHarness h;
  EXPECT_EQ(h.Run({"version"}), 0);
  EXPECT_EQ(h.out(), "kiln " + std::string(CliVersion()) + "\n");
  h.Clear();
  EXPECT_EQ(h.Run({"--version"}), 0);
  EXPECT_EQ(h.out(), "kiln " + std::string(CliVersion()) + "\n");
}

TEST(ArgumentsTest, UnknownCommandIsAUsageErrorWithAHint) {
  CliHarness h;
  EXPECT_EQ(h.Run({"submit"}), 2);
  EXPECT_THAT(h.err(), AllOf(HasSubstr("kiln: "), HasSubstr("kiln --help")));
}

TEST(ArgumentsTest, RunWithoutACommandSaysWhereTheCommandGoes) {
  CliHarness h;
  EXPECT_EQ(h.Run({"run", "--slots", "2"}), 2);
  EXPECT_THAT(h.err(), HasSubstr("kiln: kiln run needs a command: put the command to run after "
                                 "'--', for example: kiln run --slots 2 -- python3 train.py\n"));
}

TEST(ArgumentsTest, EnvWithoutEqualsIsAUsageError) {
  CliHarness h;
  EXPECT_EQ(h.Run({"run", "--env", "FOO", "--", "echo"}), 2);
  EXPECT_THAT(h.err(), HasSubstr("kiln: --env expects KEY=VALUE, got \"FOO\""));
}

TEST(ArgumentsTest, UnknownRunOptionSuggestsDashes) {
  CliHarness h;
  EXPECT_EQ(h.Run({"run", "--epochs", "2"}), 2);
  EXPECT_THAT(h.err(), AllOf(HasSubstr("kiln run has no option --epochs"), HasSubstr("'--'")));
}

TEST(ArgumentsTest, BadWorkersIsAUsageErrorNamingTheForms) {
  CliHarness h;
  EXPECT_EQ(h.Run({"run", "--no-package", "--workers", "3:1", "--", "echo"}), 2);
  EXPECT_THAT(h.err(), AllOf(HasSubstr("kiln: --workers 3:1: MIN (3) is larger than MAX (1)"),
                             HasSubstr("--workers N"), HasSubstr("--workers MIN:MAX")));
  h.Clear();
  EXPECT_EQ(h.Run({"run", "--no-package", "--workers", "a:b", "--", "echo"}), 2);
  EXPECT_THAT(h.err(), HasSubstr("kiln: --workers \"a:b\" is not MIN:MAX"));
  h.Clear();
  EXPECT_EQ(h.Run({"run", "--no-package", "--min-workers-timeout", "60", "--", "echo"}), 2);
  EXPECT_THAT(h.err(), HasSubstr("add --workers MIN:MAX"));
}

TEST(ArgumentsTest, ScaleNeedsAPositiveWorkerCount) {
  CliHarness h;
  EXPECT_EQ(h.Run({"job", "scale", "7"}), 2);
  EXPECT_THAT(h.err(), HasSubstr("kiln job scale --help"));
  h.Clear();
  EXPECT_EQ(h.Run({"job", "scale", "7", "0"}), 2);
  h.Clear();
  EXPECT_EQ(h.Run({"job", "scale", "7", "two"}), 2);
}

TEST(ArgumentsTest, PackageAndNoPackageExcludeEachOther) {
  CliHarness h;
  EXPECT_EQ(h.Run({"run", "--package", "x", "--no-package", "--", "echo"}), 2);
}

TEST(ArgumentsTest, DashesBelongOnlyToRun) {
  CliHarness h;
  EXPECT_EQ(h.Run({"logs", "--", "7"}), 2);
  EXPECT_THAT(h.err(), HasSubstr("'--' only goes before the command line of 'kiln run'"));
}

TEST(ArgumentsTest, JobIdMustBeANumber) {
  CliHarness h;
  EXPECT_EQ(h.Run({"logs", "seven"}), 2);
  EXPECT_EQ(h.Run({"kill"}), 2);
  EXPECT_THAT(h.err(), HasSubstr("kiln kill --help"));
}

TEST(ArgumentsTest, UnknownStateIsAUsageError) {
  CliHarness h;
  EXPECT_EQ(h.Run({"jobs", "--state", "DONE"}), 2);
  EXPECT_THAT(h.err(), HasSubstr("--state DONE is not a job state"));
}

// --- kiln up ---------------------------------------------------------------------------

TEST(UpCommandTest, ExecsKilndBesideKilnWithLocalAgent) {
  CliHarness h;
  testing::TempDir bin;
  KILN_ASSERT_OK(base::WriteFileAtomically(bin.path() + "/kilnd", "#!/bin/sh\n", 0755));
  h.self_exe = bin.path() + "/kiln";
  EXPECT_EQ(h.Run({"up", "--port", "9000"}), 0);
  EXPECT_EQ(h.exec_path, bin.path() + "/kilnd");
  EXPECT_THAT(h.exec_argv, ElementsAre(bin.path() + "/kilnd", "--local-agent", "--data-dir",
                                       h.home() + "/.kiln", "--port", "9000"));
  h.Run({"up", "--data-dir", "/data/k"});
  EXPECT_THAT(h.exec_argv, ElementsAre(bin.path() + "/kilnd", "--local-agent", "--data-dir",
                                       "/data/k", "--port", "8470"));
}

TEST(UpCommandTest, SaysWhereItLookedForKilnd) {
  CliHarness h;
  h.self_exe = "/opt/kiln/bin/kiln";
  EXPECT_EQ(h.Run({"up"}), 4);
  EXPECT_THAT(h.err(), HasSubstr("kilnd was not found at /opt/kiln/bin/kilnd"));
  EXPECT_TRUE(h.exec_path.empty());
}

// --- Connection errors -----------------------------------------------------------------

TEST(ConnectionErrorsTest, UnreachableMasterSaysHowToStartOne) {
  int port;
  {
    FakeMaster closed;
    closed.Start();
    port = closed.port();
  }
  CliHarness h;
  h.env["KILN_URL"] = "http://127.0.0.1:" + std::to_string(port);
  EXPECT_EQ(h.Run({"jobs"}), 5);
  EXPECT_EQ(h.err(), "kiln: cannot reach Kiln at http://127.0.0.1:" + std::to_string(port) +
                         " (connection refused). Start one with 'kiln up' or set KILN_URL.\n");
}

TEST(ConnectionErrorsTest, ErrorBodiesBecomeTheMessageAndExitCode) {
  FakeMaster master;
  master.On("GET", "/api/v1/jobs/{id}", [](net::HttpRequest&, net::Responder r) {
    r.Send(net::ErrorResponse(absl::NotFoundError("job 99 not found")));
  });
  master.On("POST", "/api/v1/jobs", [](net::HttpRequest&, net::Responder r) {
    r.Send(net::ErrorResponse(
        absl::FailedPreconditionError("no agent has 64 slots; the largest, host-a, has 8")));
  });
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();
  EXPECT_EQ(h.Run({"job", "show", "99"}), 4);
  EXPECT_EQ(h.err(), "kiln: job 99 not found\n");
  h.Clear();
  EXPECT_EQ(h.Run({"run", "--no-package", "--slots", "64", "--", "echo"}), 1);
  EXPECT_EQ(h.err(), "kiln: no agent has 64 slots; the largest, host-a, has 8\n");
  EXPECT_THAT(h.out(), IsEmpty());
}

TEST(ConnectionErrorsTest, UnauthenticatedSaysHowToLogIn) {
  FakeMaster master;
  master.On("GET", "/api/v1/jobs", [](net::HttpRequest&, net::Responder r) {
    r.Send(net::ErrorResponse(absl::UnauthenticatedError("authentication required")));
  });
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();
  EXPECT_EQ(h.Run({"jobs"}), 3);
  EXPECT_THAT(h.err(), AllOf(HasSubstr("kiln: authentication required"),
                             HasSubstr("set KILN_USER and KILN_PASSWORD, or run 'kiln login'")));
}

TEST(ConnectionErrorsTest, RunChecksCredentialsBeforePackagingAndKeepsTheMastersHint) {
  FakeMaster master;
  master.On("GET", "/api/v1/me", [](net::HttpRequest&, net::Responder r) {
    r.Send(net::ErrorResponse(
        absl::UnauthenticatedError("this request needs credentials; run 'kiln login'")));
  });
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();
  EXPECT_EQ(h.Run({"run", "--", "echo"}), 3);
  EXPECT_EQ(h.err(), "kiln: this request needs credentials; run 'kiln login'\n");
  EXPECT_EQ(master.requests().size(), 1u);
}

// --- Authentication --------------------------------------------------------------------

TEST(AuthTest, SendsBasicCredentialsFromTheEnvironment) {
  FakeMaster master;
  master.OnJson("GET", "/api/v1/jobs", 200, {{"jobs", base::Json::array()}});
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();
  h.env["KILN_USER"] = "admin";
  h.env["KILN_PASSWORD"] = "secret";
  EXPECT_EQ(h.Run({"jobs"}), 0);
  ASSERT_EQ(master.requests().size(), 1u);
  EXPECT_EQ(master.requests()[0].Header("authorization"), "Basic YWRtaW46c2VjcmV0");
  EXPECT_THAT(h.err(), HasSubstr("No jobs yet"));
}

TEST(AuthTest, LoginSavesATokenThatLaterCommandsUseAndLogoutRevokes) {
  FakeMaster master;
  master.OnJson("POST", "/api/v1/auth/login", 200,
                {{"token", "tok-123"}, {"user", "ann"}, {"expires_at", "2026-12-26T00:00:00Z"}});
  master.OnJson("POST", "/api/v1/auth/logout", 200, base::Json::object());
  master.OnJson("GET", "/api/v1/jobs", 200, {{"jobs", base::Json::array()}});
  master.Start();
  CliHarness h;
  h.secret = "pw";
  EXPECT_EQ(h.Run({"login", "--url", master.url(), "--user", "ann"}), 0) << h.err();
  ASSERT_EQ(h.prompts.size(), 1u);
  EXPECT_THAT(h.prompts[0], HasSubstr("Password for ann"));
  auto login = master.RequestsTo("/api/v1/auth/login");
  ASSERT_EQ(login.size(), 1u);
  EXPECT_EQ(base::Json::parse(login[0].body),
            base::Json::parse(R"({"username": "ann", "password": "pw"})"));
  EXPECT_THAT(h.out(), HasSubstr("Logged in to " + master.url() + " as ann"));

  std::string path = h.home() + "/.config/kiln/credentials.json";
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);

  EXPECT_EQ(h.Run({"jobs"}), 0);  // the saved URL and token, no environment needed
  auto jobs = master.RequestsTo("/api/v1/jobs");
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].Header("authorization"), "Bearer tok-123");

  EXPECT_EQ(h.Run({"logout"}), 0);
  auto logout = master.RequestsTo("/api/v1/auth/logout");
  ASSERT_EQ(logout.size(), 1u);
  EXPECT_EQ(logout[0].Header("authorization"), "Bearer tok-123");
  EXPECT_NE(stat(path.c_str(), &st), 0);
}

TEST(AuthTest, LoginTakesThePasswordFromTheEnvironmentAndReportsAWrongOne) {
  FakeMaster master;
  master.On("POST", "/api/v1/auth/login", [](net::HttpRequest&, net::Responder r) {
    r.Send(net::ErrorResponse(absl::UnauthenticatedError("invalid credentials")));
  });
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();
  h.env["KILN_USER"] = "ann";
  h.env["KILN_PASSWORD"] = "wrong";
  EXPECT_EQ(h.Run({"login"}), 3);
  EXPECT_TRUE(h.prompts.empty());
  EXPECT_THAT(h.err(), HasSubstr("wrong user name or password for \"ann\""));
}

// --- kiln run --------------------------------------------------------------------------

class RunCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    master_.OnJson("GET", "/api/v1/me", 200, {{"user", "admin"}, {"admin", true}});
    master_.On("POST", "/api/v1/packages", [](net::HttpRequest& req, net::Responder r) {
      r.Send(net::JsonResponse(201, {{"id", "sha256-abc"},
                                     {"name", req.Query("name").value_or("")},
                                     {"kind", "tar.gz"},
                                     {"size", req.body.size()}}));
    });
    master_.On("POST", "/api/v1/jobs", [](net::HttpRequest&, net::Responder r) {
      r.Send(net::JsonResponse(201, JobRecord(7, "QUEUED")));
    });
    master_.On("GET", "/api/v1/jobs/{id}", [this](net::HttpRequest&, net::Responder r) {
      r.Send(net::JsonResponse(200, ++job_polls_ < 2 ? JobRecord(7, "RUNNING") : final_job_));
    });
    master_.On("GET", "/api/v1/jobs/{id}/logs", [](net::HttpRequest& req, net::Responder r) {
      if (req.Query("follow") == "true") {
        auto stream = r.StartStream(200, "application/x-ndjson");
        stream->Write(
            R"({"seq": 1, "time": "2026-11-26T10:00:05Z", "stream": "stdout", "text": "epoch 1 loss 0.51"})"
            "\n");
        stream->Write(
            R"({"seq": 2, "time": "2026-11-26T10:00:06Z", "stream": "stderr", "text": "warning: slow"})"
            "\n");
        stream->Finish();
        return;
      }
      r.Send(net::JsonResponse(200, {{"lines", base::Json::array()}, {"next", 2}, {"done", true}}));
    });
    master_.Start();
    h_.env["KILN_URL"] = master_.url();
    KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/train.py", "print('hi')\n"));
    KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/.kilnignore", "data/\n"));
    KILN_ASSERT_OK(base::MakeDirs(h_.cwd + "/data"));
    KILN_ASSERT_OK(base::WriteFileAtomically(h_.cwd + "/data/big.bin", std::string(1000, 'x')));
  }

  base::Json JobRequest() {
    auto jobs = master_.RequestsTo("/api/v1/jobs");
    KILN_CHECK(jobs.size() == 1);
    return base::Json::parse(jobs[0].body);
  }

  FakeMaster master_;
  CliHarness h_;
  std::atomic<int> job_polls_{0};
  base::Json final_job_ = JobRecord(7, "FINISHED", 0);
};

TEST_F(RunCommandTest, UploadsThePackageThenCreatesTheJobAndPrintsItsId) {
  EXPECT_EQ(h_.Run({"run", "--name", "fmnist", "--slots", "2", "--env", "A=1", "--env", "B=x=y",
                    "--", "python3", "train.py", "--epochs", "2"}),
            0)
      << h_.err();
  EXPECT_EQ(h_.out(), "7\n");
  auto requests = master_.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].path, "/api/v1/me");  // fails fast before packaging
  requests.erase(requests.begin());
  EXPECT_EQ(requests[0].path, "/api/v1/packages");
  EXPECT_EQ(requests[0].Header("content-type"), "application/gzip");
  EXPECT_THAT(requests[0].Query("name"), ::testing::Optional(::testing::EndsWith(".tar.gz")));
  ASSERT_GE(requests[0].body.size(), 2u);
  EXPECT_EQ(requests[0].body.substr(0, 2), "\x1f\x8b");
  EXPECT_EQ(requests[1].path, "/api/v1/jobs");
  EXPECT_EQ(base::Json::parse(requests[1].body), base::Json::parse(R"({
      "name": "fmnist", "command": ["python3", "train.py", "--epochs", "2"],
      "package": {"id": "sha256-abc"}, "resources": {"slots": 2, "gpus": 0},
      "env": {"A": "1", "B": "x=y"}})"));
  // .kilnignore kept data/ out: two files (train.py, .kilnignore).
  EXPECT_THAT(h_.err(), HasSubstr("packaged 2 files from " + h_.cwd));
}

TEST_F(RunCommandTest, UploadsASingleFileAsIs) {
  EXPECT_EQ(h_.Run({"run", "--package", h_.cwd + "/train.py", "--", "python3", "train.py"}), 0)
      << h_.err();
  auto packages = master_.RequestsTo("/api/v1/packages");
  ASSERT_EQ(packages.size(), 1u);
  EXPECT_EQ(packages[0].Query("name"), "train.py");
  EXPECT_EQ(packages[0].Header("content-type"), "application/octet-stream");
  EXPECT_EQ(packages[0].body, "print('hi')\n");
}

TEST_F(RunCommandTest, AcceptsTheCommandWithoutDashes) {
  EXPECT_EQ(h_.Run({"run", "--no-package", "python3", "train.py", "--epochs", "2"}), 0);
  EXPECT_EQ(JobRequest()["command"],
            base::Json::parse(R"(["python3", "train.py", "--epochs", "2"])"));
  EXPECT_FALSE(JobRequest().contains("package"));
  EXPECT_TRUE(master_.RequestsTo("/api/v1/packages").empty());
}

TEST_F(RunCommandTest, JsonPrintsTheJobRecord) {
  EXPECT_EQ(h_.Run({"run", "--no-package", "--json", "--", "echo", "hi"}), 0);
  EXPECT_EQ(base::Json::parse(h_.out()), JobRecord(7, "QUEUED"));
}

TEST_F(RunCommandTest, FollowPrintsLogTextAndASummary) {
  final_job_ = JobRecord(7, "FINISHED", 0);
  EXPECT_EQ(h_.Run({"run", "--no-package", "--follow", "--", "python3", "train.py"}), 0);
  EXPECT_EQ(h_.out(), "epoch 1 loss 0.51\n");
  EXPECT_THAT(h_.err(), HasSubstr("warning: slow\n"));
  EXPECT_THAT(h_.err(), HasSubstr("job 7 FINISHED in 41.2 s\n"));
}

TEST_F(RunCommandTest, WaitExitsWithTheJobsExitCode) {
  final_job_ = JobRecord(7, "FAILED", 3, "exited with code 3");
  EXPECT_EQ(h_.Run({"run", "--no-package", "--wait", "--", "false"}), 3);
  EXPECT_EQ(h_.out(), "7\n");
  EXPECT_THAT(h_.err(), ::testing::Not(HasSubstr("FAILED")));
}

TEST_F(RunCommandTest, FollowAndWaitTogetherSummariseAndExitWithTheCode) {
  final_job_ = JobRecord(7, "FAILED", 2, "exited with code 2");
  EXPECT_EQ(h_.Run({"run", "--no-package", "--follow", "--wait", "--", "false"}), 2);
  EXPECT_THAT(h_.err(), HasSubstr("job 7 FAILED: exited with code 2\n"));
}

TEST_F(RunCommandTest, WaitOnAKilledJobExitsWith137) {
  final_job_ = JobRecord(7, "KILLED");
  EXPECT_EQ(h_.Run({"run", "--no-package", "--wait", "--", "sleep", "100"}), 137);
}

TEST_F(RunCommandTest, WorkersRangeSubmitsAnElasticJob) {
  EXPECT_EQ(h_.Run({"run", "--no-package", "--workers", "1:4", "--slots", "2",
                    "--min-workers-timeout", "30", "--", "python3", "train.py"}),
            0)
      << h_.err();
  EXPECT_EQ(h_.out(), "7\n");
  EXPECT_EQ(JobRequest(), base::Json::parse(R"({
      "command": ["python3", "train.py"], "resources": {"slots": 2, "gpus": 0}, "env": {},
      "min_workers": 1, "max_workers": 4, "min_workers_timeout_s": 30})"));
}

TEST_F(RunCommandTest, WorkersCountSubmitsAStaticJob) {
  EXPECT_EQ(h_.Run({"run", "--no-package", "--workers", "2", "--", "python3", "ddp.py"}), 0)
      << h_.err();
  EXPECT_EQ(JobRequest(), base::Json::parse(R"({
      "command": ["python3", "ddp.py"], "resources": {"slots": 1, "gpus": 0}, "env": {},
      "workers": 2})"));
}

// --- Reading jobs ----------------------------------------------------------------------

TEST(JobsCommandTest, FollowsPagesWithAll) {
  FakeMaster master;
  master.On("GET", "/api/v1/jobs", [](net::HttpRequest& req, net::Responder r) {
    if (!req.Query("page_token")) {
      r.Send(
          net::JsonResponse(200, {{"jobs", {JobRecord(9, "RUNNING")}}, {"next_page_token", "p2"}}));
    } else {
      r.Send(net::JsonResponse(200, {{"jobs", {JobRecord(8, "FINISHED", 0)}}}));
    }
  });
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();
  EXPECT_EQ(h.Run({"jobs", "--state", "running", "--state", "FINISHED", "--all"}), 0) << h.err();
  auto requests = master.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].QueryValues("state"), (std::vector<std::string>{"RUNNING", "FINISHED"}));
  EXPECT_EQ(requests[1].Query("page_token"), "p2");
  EXPECT_THAT(h.out(), HasSubstr("ID  NAME"));
  EXPECT_THAT(h.out(), HasSubstr("9   fmnist  admin  RUNNING"));
  EXPECT_THAT(h.out(), HasSubstr("8   fmnist  admin  FINISHED"));

  h.Clear();
  EXPECT_EQ(h.Run({"jobs"}), 0);
  EXPECT_THAT(h.err(), HasSubstr("--all"));
  EXPECT_EQ(master.requests().back().Query("limit"), "20");
}

TEST(JobsCommandTest, ShowKillAndMetrics) {
  FakeMaster master;
  master.OnJson("GET", "/api/v1/jobs/{id}", 200, JobRecord(7, "FAILED", 2, "exited with code 2"));
  master.OnJson("POST", "/api/v1/jobs/{id}/kill", 200, JobRecord(7, "KILLED"));
  master.OnJson("GET", "/api/v1/jobs/{id}/metrics", 200,
                base::Json::parse(R"({"series": [{"name": "loss", "group": "test", "points": [
                    {"step": 1, "value": 0.9, "time": "2026-11-26T10:00:10Z"},
                    {"step": 2, "value": 0.51, "time": "2026-11-26T10:00:20Z"}]}]})"));
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();

  EXPECT_EQ(h.Run({"job", "show", "7"}), 0);
  EXPECT_THAT(h.out(), AllOf(HasSubstr("reason:     exited with code 2\n"),
                             HasSubstr("duration:   41.2 s\n")));
  h.Clear();
  EXPECT_EQ(h.Run({"job", "show", "7", "--json"}), 0);
  EXPECT_EQ(base::Json::parse(h.out()), JobRecord(7, "FAILED", 2, "exited with code 2"));
  h.Clear();
  EXPECT_EQ(h.Run({"kill", "7"}), 0);
  EXPECT_EQ(h.out(), "job 7 KILLED\n");
  EXPECT_EQ(master.requests().back().target, "/api/v1/jobs/7/kill");
  h.Clear();
  EXPECT_EQ(h.Run({"metrics", "7"}), 0);
  EXPECT_EQ(h.out(),
            "NAME  GROUP  LAST  STEP  MIN   MAX  POINTS\n"
            "loss  test   0.51  2     0.51  0.9  2\n");
}

TEST(JobScaleTest, PostsTheTargetAndPrintsIt) {
  FakeMaster master;
  master.On("POST", "/api/v1/jobs/{id}/scale", [](net::HttpRequest& req, net::Responder r) {
    base::Json job = JobRecord(7, "RUNNING");
    job["workers"] = {
        {"min", 1}, {"max", 4}, {"target", base::Json::parse(req.body)["workers"]}, {"live", 1}};
    r.Send(net::JsonResponse(200, job));
  });
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();
  EXPECT_EQ(h.Run({"job", "scale", "7", "3"}), 0) << h.err();
  auto requests = master.RequestsTo("/api/v1/jobs/7/scale");
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(base::Json::parse(requests[0].body), base::Json::parse(R"({"workers": 3})"));
  EXPECT_EQ(h.out(), "job 7: target 3 workers (min 1, max 4; 1 live now)\n");
  EXPECT_THAT(h.err(), HasSubstr("kiln job show 7"));
  h.Clear();
  EXPECT_EQ(h.Run({"job", "scale", "--json", "7", "2"}), 0) << h.err();
  EXPECT_EQ(base::Json::parse(h.out())["workers"]["target"], 2);
}

TEST(JobScaleTest, ServerErrorsPassThroughWithTheirExitCodes) {
  FakeMaster master;
  master.On("POST", "/api/v1/jobs/{id}/scale", [](net::HttpRequest& req, net::Responder r) {
    if (req.path == "/api/v1/jobs/7/scale") {
      r.Send(net::ErrorResponse(absl::InvalidArgumentError(
          "\"workers\" must be between min_workers 1 and max_workers 4, got 9")));
    } else if (req.path == "/api/v1/jobs/8/scale") {
      r.Send(net::ErrorResponse(
          absl::FailedPreconditionError("job 8 is not elastic; only elastic jobs scale")));
    } else {
      r.Send(net::ErrorResponse(absl::NotFoundError("job 99 not found")));
    }
  });
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();
  EXPECT_EQ(h.Run({"job", "scale", "7", "9"}), 2);
  EXPECT_EQ(h.err(), "kiln: \"workers\" must be between min_workers 1 and max_workers 4, got 9\n");
  h.Clear();
  EXPECT_EQ(h.Run({"job", "scale", "8", "2"}), 1);
  EXPECT_EQ(h.err(), "kiln: job 8 is not elastic; only elastic jobs scale\n");
  h.Clear();
  EXPECT_EQ(h.Run({"job", "scale", "99", "2"}), 4);
  EXPECT_THAT(h.out(), IsEmpty());
}

TEST(LogsCommandTest, PrintsStreamedLinesAsText) {
  FakeMaster master;
  master.On("GET", "/api/v1/jobs/{id}/logs", [](net::HttpRequest& req, net::Responder r) {
    if (req.Query("follow") == "true") {
      EXPECT_EQ(req.Query("after"), "5");
      auto stream = r.StartStream(200, "application/x-ndjson");
      stream->Write(R"({"seq": 6, "time": "t", "stream": "stdout", "text": "step 6"})"
                    "\n"
                    R"({"seq": 7, "time": "t", "stream": "std)");
      stream->Write(R"(out", "text": "step 7"})"
                    "\n");
      stream->Finish();
      return;
    }
    r.Send(net::JsonResponse(200, {{"lines", base::Json::array()}, {"next", 7}, {"done", true}}));
  });
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();
  EXPECT_EQ(h.Run({"logs", "-f", "--since-seq", "5", "7"}), 0) << h.err();
  EXPECT_EQ(h.out(), "step 6\nstep 7\n");
}

TEST(LogsCommandTest, PrintsWhatExistsPageByPage) {
  FakeMaster master;
  master.On("GET", "/api/v1/jobs/{id}/logs", [](net::HttpRequest& req, net::Responder r) {
    if (req.Query("after") == "0") {
      r.Send(net::JsonResponse(200, base::Json::parse(R"({"lines": [
          {"seq": 1, "time": "t", "stream": "stdout", "text": "a"},
          {"seq": 2, "time": "t", "stream": "stderr", "text": "b"}], "next": 2, "done": false})")));
    } else {
      r.Send(
          net::JsonResponse(200, {{"lines", base::Json::array()}, {"next", 2}, {"done", false}}));
    }
  });
  master.Start();
  CliHarness h;
  h.env["KILN_URL"] = master.url();
  EXPECT_EQ(h.Run({"logs", "7"}), 0);
  EXPECT_EQ(h.out(), "a\n");
  EXPECT_EQ(h.err(), "b\n");
}

}  // namespace
}  // namespace kiln::cli
