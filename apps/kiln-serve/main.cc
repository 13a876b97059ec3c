// kiln-serve: one scoring replica. Loads a TorchScript model, checks it against its
// signature with a warm-up batch, serves the native, Watson ML v4 and KServe v2
// prediction routes with dynamic batching, and drains gracefully on SIGTERM. Under a
// Kiln agent it tells the master when it is ready (or why it failed). Flags are parsed
// here and nowhere else.
#include <dlfcn.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kiln/base/files.h"
#include "kiln/base/json.h"
#include "kiln/base/logging.h"
#include "kiln/net/http_client.h"
#include "kiln/net/http_server.h"
#include "kiln/net/http_status.h"
#include "kiln/serving/serve_server.h"
#include "kiln/serving/signature.h"
#include "kiln/torch/jit_engine.h"

namespace {

// Exit status of every startup failure (bad flags aside): the agent reports it, and the
// master's deployment controller reads the reason from `/failed` or the log.
constexpr int kStartupFailure = 2;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The master's replica callbacks, when running as a deployment replica under an agent
// (KILN_MASTER, KILN_TOKEN, KILN_JOB_ID and KILN_DEPLOYMENT_ID all set).
class MasterLink {
 public:
  static std::optional<MasterLink> FromEnv() {
    MasterLink link{Env("KILN_MASTER"), Env("KILN_TOKEN"), Env("KILN_JOB_ID"),
                    Env("KILN_DEPLOYMENT_ID")};
    if (link.master_.empty() || link.token_.empty() || link.job_.empty() ||
        link.deployment_.empty()) {
      return std::nullopt;
    }
    return link;
  }

  // POSTs `body` to the replica's `what` callback ("ready" or "failed"). Retries while
  // the master cannot be reached (it may be restarting), for about 30 s.
  absl::Status Post(const std::string& what, const kiln::base::Json& body) const {
    const std::string target =
        absl::StrCat("/api/v1/deployments/", deployment_, "/replicas/", job_, "/", what);
    absl::Status last;
    for (int attempt = 0; attempt < 30; ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(std::chrono::seconds(1));
      auto client = kiln::net::HttpClient::Create(master_);
      if (!client.ok()) return client.status();
      (*client)->SetBearerToken(token_);
      auto response = (*client)->PostJson(target, body);
      if (!response.ok()) {
        last = response.status();
        if (last.code() == absl::StatusCode::kUnavailable ||
            last.code() == absl::StatusCode::kDeadlineExceeded) {
          continue;
        }
        return last;
      }
      if (response->status >= 500) {
        last = kiln::net::StatusFromHttpResponse(*response);
        continue;
      }
      return kiln::net::StatusFromHttpResponse(*response);
    }
    return last;
  }

 private:
  MasterLink(std::string master, std::string token, std::string job, std::string deployment)
      : master_(std::move(master)),
        token_(std::move(token)),
        job_(std::move(job)),
        deployment_(std::move(deployment)) {}

  std::string master_, token_, job_, deployment_;
};

// Prints why startup failed, tells the master (under an agent), and returns the exit code.
int StartupFailure(const std::optional<MasterLink>& master, const std::string& reason) {
  std::fprintf(stderr, "kiln-serve: %s\n", reason.c_str());
  if (master) {
    absl::Status posted = master->Post("failed", {{"reason", reason}});
    if (!posted.ok()) {
      std::fprintf(stderr, "kiln-serve: could not report the failure to the master: %s\n",
                   std::string(posted.message()).c_str());
    }
  }
  return kStartupFailure;
}

// The signature from `path`: a signature object, or any object with a "signature" key
// (the master passes the replica job's config.json).
absl::StatusOr<kiln::serving::Signature> ReadSignature(const std::string& path) {
  auto text = kiln::base::ReadFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read --signature ", path, ": ", text.status().message()));
  }
  auto json = kiln::base::ParseJson(*text);
  if (!json.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--signature ", path, " is not JSON: ", json.status().message()));
  }
  const kiln::base::Json* sig = &*json;
  if (json->is_object() && json->contains("signature")) sig = &(*json)["signature"];
  auto parsed = kiln::serving::ParseSignature(*sig);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--signature ", path, ": ", parsed.status().message(),
        " (expected {\"inputs\": [{\"name\", \"dtype\", \"shape\"}], \"outputs\": [...]}, "
        "as kiln.save_model writes to signature.json)"));
  }
  return parsed;
}

// OpenBLAS picks its kernels from the CPU's family and model, which some VMs mask; it
// then falls back to its oldest x86-64 kernels ("Prescott", SSE3), about 4x slower on the
// matrix sizes a served MLP multiplies. When that happened on a CPU with AVX2 or AVX-512,
// re-execute with OPENBLAS_CORETYPE set (OpenBLAS reads it only when it loads). Returns
// when there is nothing to fix or the exec failed (the model then runs, only slower).
void UseFastBlasKernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  using CoreName = char* (*)();
  auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (core_name == nullptr || std::string_view(core_name()) != "Prescott") return;
  const char* core = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                     : __builtin_cpu_supports("avx2")  ? "Haswell"
                                                       : nullptr;
  if (core == nullptr) return;
  setenv("OPENBLAS_CORETYPE", core, 1);
  // The binary's real path, not /proc/self/exe: the process's name (ps, top, pgrep) comes
  // from the file executed, and would otherwise read "exe".
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return;
  path[n] = '\0';
  execv(path, argv);
}

// Each batch worker runs its forward on one core (torch intra-op threads = 1), so the
// parallelism comes from the workers. OpenBLAS keeps its own thread pool, sized from
// OPENBLAS_NUM_THREADS (the agent sets it to the task's slots): its threads would spin in
// sched_yield between a replica's batches and take the cores the workers and the HTTP
// thread need. One BLAS thread per calling worker.
void KeepBlasSingleThreaded() {
  using SetThreads = void (*)(int);
  auto set_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set_threads != nullptr) set_threads(1);
}

int DefaultThreads() {
  const int slots = std::atoi(Env("KILN_SLOTS").c_str());
  return slots > 0 ? slots : 1;
}

}  // namespace

int main(int argc, char** argv) {
  UseFastBlasKernels(argv);
  KeepBlasSingleThreaded();
  CLI::App app{
      "kiln-serve: serves one TorchScript model over HTTP (native /api/v1/predict, Watson ML "
      "/ml/v4/deployments/{id}/predictions, KServe v2 /v2/models/{name}/infer, /metrics) with "
      "dynamic batching. SIGTERM drains: queued requests are answered before exit."};
  std::string model_path, signature_path, port_file, log_level = "info";
  kiln::serving::ServeOptions options;
  std::string host = "127.0.0.1";
  int port = 0;
  int io_threads = 1;
  int64_t max_queue_delay_us = 0;
  options.batching.threads = DefaultThreads();
  app.add_option("--model", model_path, "the TorchScript file (torch.jit.save / kiln.save_model)")
      ->required();
  app.add_option("--signature", signature_path,
                 "JSON file with the model's signature ({\"inputs\": [...], \"outputs\": [...]}, "
                 "shapes per sample), or any JSON object with a \"signature\" key")
      ->required();
  app.add_option("--name", options.model_name,
                 "model name: the KServe {name} this server answers to, echoed in responses")
      ->capture_default_str();
  app.add_option("--version", options.version, "model version echoed in responses")
      ->capture_default_str();
  app.add_option("--host", host, "address to listen on (0.0.0.0 for every interface)")
      ->capture_default_str();
  app.add_option("--port", port, "port to listen on (0 picks a free one; see --port-file)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--port-file", port_file,
                 "write the bound port to this file once the model is warm and serving");
  app.add_option("--max-batch-size", options.batching.max_batch_size,
                 "most samples per forward (1 turns batching off)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16))
      ->capture_default_str();
  app.add_option("--max-queue-delay-us", max_queue_delay_us,
                 "how long the oldest queued request waits for others to share its forward "
                 "(0: no added delay, batch only what is already queued)")
      ->check(CLI::Range(int64_t{0}, int64_t{60'000'000}))
      ->capture_default_str();
  app.add_option("--threads", options.batching.threads,
                 "batch workers, each running one forward on one core (default: $KILN_SLOTS "
                 "or 1)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--io-threads", io_threads, "threads running HTTP and request decoding")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--max-body-bytes", options.max_body_bytes,
                 "largest request body accepted (413 above it)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 32))
      ->capture_default_str();
  app.add_option("--max-queued-samples", options.batching.max_queued_samples,
                 "samples allowed to wait before new requests get 503")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24))
      ->capture_default_str();
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  kiln::base::InitLogging("kiln-serve", log_level);
  options.batching.max_queue_delay = std::chrono::microseconds(max_queue_delay_us);
  options.secret = Env("KILN_SERVE_SECRET");
  const std::optional<MasterLink> master = MasterLink::FromEnv();

  auto signature = ReadSignature(signature_path);
  if (!signature.ok()) return StartupFailure(master, std::string(signature.status().message()));
  options.signature = *signature;
  auto engine = kiln::torch::JitEngine::Load(model_path, *signature);
  if (!engine.ok()) return StartupFailure(master, std::string(engine.status().message()));

  kiln::serving::ServeServer serve(**engine, options);
  boost::asio::io_context io;
  kiln::net::HttpServerOptions http;
  http.address = host;
  http.port = port;
  auto server = kiln::net::HttpServer::Create(io, http, serve.BuildRouter());
  if (!server.ok()) {
    return StartupFailure(master, absl::StrCat("cannot listen on ", host, ":", port, ": ",
                                               server.status().message()));
  }

  // SIGTERM / SIGINT start the drain; the main thread does the (blocking) rest.
  std::promise<int> stop;
  std::future<int> stopped = stop.get_future();
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (!ec) stop.set_value(signo);
  });
  auto work = boost::asio::make_work_guard(io);
  std::vector<std::thread> io_pool;
  for (int i = 0; i < io_threads; ++i) io_pool.emplace_back([&io] { io.run(); });

  // Listening already, so health checks see 503 until the model has answered one batch of
  // zeros (of one sample, then of a full batch) the way its signature says it should.
  absl::Status warm = (*engine)->WarmUp(1);
  if (warm.ok() && options.batching.max_batch_size > 1) {
    warm = (*engine)->WarmUp(options.batching.max_batch_size);
  }
  int exit_code = 0;
  if (!warm.ok()) {
    exit_code = StartupFailure(master, std::string(warm.message()));
  } else {
    if (!port_file.empty()) {
      absl::Status written =
          kiln::base::WriteFileAtomically(port_file, std::to_string((*server)->port()));
      if (!written.ok()) exit_code = StartupFailure(master, std::string(written.message()));
    }
  }
  if (exit_code == 0) {
    serve.SetReady(true);
    spdlog::info(
        "serving model {} version {} on {}:{} ({} batch workers, max batch {}, "
        "max queue delay {} us)",
        options.model_name, options.version, host, (*server)->port(), options.batching.threads,
        options.batching.max_batch_size, max_queue_delay_us);
    // A replica told to stop during its warm-up must not announce itself.
    if (master && stopped.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      absl::Status announced = master->Post("ready", {{"port", (*server)->port()}});
      if (!announced.ok()) {
        spdlog::warn("could not tell the master this replica is ready: {}",
                     std::string(announced.message()));
      }
    }
    const int signo = stopped.get();
    spdlog::info("signal {}: draining", signo);
  }

  // Graceful drain: readiness goes to 503 and new connections are refused, then every
  // queued request is run and answered before the io threads are let go.
  serve.SetReady(false);
  (*server)->Stop();
  serve.Drain();
  signals.cancel();
  work.reset();
  // Connections close once their last reply is written; cap the wait for slow clients.
  for (int i = 0; i < 100 && !io.stopped(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  io.stop();
  for (std::thread& t : io_pool) t.join();
  server->reset();
  if (exit_code == 0) spdlog::info("drained; exiting");
  return exit_code;
}
