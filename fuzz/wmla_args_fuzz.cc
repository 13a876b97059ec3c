// wmla_args_fuzz.cc
//
// Feeds arbitrary text to WMLA's `args` parser, as `POST /execs?args=...` and an HPO
// task's modelSpec.args deliver it. Nothing may crash or hang, and an accepted string must
// make a job the job validation accepts after the storage round trip: a job is stored as
// JSON and parsed again when the master restarts.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "kiln/api/wmla_args.h"
#include "kiln/base/json.h"
#include "kiln/master/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto args = kiln::api::ParseWmlaArgs(text);
  if (!args.ok()) return 0;
  if (args->model_main.empty()) {
    std::fprintf(stderr, "wmla_args_fuzz: accepted without --model-main\n");
    std::abort();
  }
  kiln::master::JobSpec spec = kiln::api::WmlaArgsToJobSpec(*args, {.data_fs = "/dli/data"});
  auto stored = kiln::base::ParseJson(kiln::base::DumpJson(kiln::master::JobSpecToJson(spec)));
  if (!stored.ok() || !kiln::master::ParseJobSpec(*stored).ok()) {
    std::fprintf(stderr, "wmla_args_fuzz: accepted args make a job that does not validate\n");
    std::abort();
  }
  return 0;
}
