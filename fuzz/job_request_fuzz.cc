// job_request_fuzz.cc
//
// Feeds arbitrary bytes, as a REST client or an agent could send them, to the JSON parser
// and every decoder behind it: job requests (`master::ParseJobSpec`) and each agent
// protocol message (`api::*FromJson`). None may crash, throw or hang. What a decoder
// accepts must also survive its own encoding: a job spec is stored as JSON and parsed
// again after a master restart, and protocol messages cross the wire both ways.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "kiln/api/agent_protocol.h"
#include "kiln/base/json.h"
#include "kiln/master/job_spec.h"

namespace {

using kiln::base::Json;

void Fail(const char* what) {
  std::fprintf(stderr, "job_request_fuzz: %s\n", what);
  std::abort();
}

Json Reparsed(const Json& j) {
  auto parsed = kiln::base::ParseJson(kiln::base::DumpJson(j));
  if (!parsed.ok()) Fail("an encoded message does not parse");
  return *parsed;
}

// decode(encode(m)) must succeed and encode to the same JSON as m.
template <typename Decode>
void CheckRoundTrip(const Json& input, Decode decode, const char* name) {
  auto first = decode(input);
  if (!first.ok()) return;
  Json encoded = kiln::api::ToJson(*first);
  auto second = decode(Reparsed(encoded));
  if (!second.ok()) Fail(name);
  if (kiln::api::ToJson(*second) != encoded) Fail(name);
}

void CheckJobSpec(const Json& input) {
  auto spec = kiln::master::ParseJobSpec(input);
  if (!spec.ok()) return;
  Json stored = kiln::master::JobSpecToJson(*spec);
  auto recovered = kiln::master::JobSpecFromStoredJson(Reparsed(stored));
  if (!recovered.ok()) Fail("a stored job spec does not parse again");
  if (kiln::master::JobSpecToJson(*recovered) != stored) Fail("a stored job spec changed");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto json = kiln::base::ParseJson(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!json.ok()) return 0;
  CheckJobSpec(*json);
  CheckRoundTrip(*json, kiln::api::AgentHelloFromJson, "AgentHello");
  CheckRoundTrip(*json, kiln::api::RegisterReplyFromJson, "RegisterReply");
  CheckRoundTrip(*json, kiln::api::TaskSpecFromJson, "TaskSpec");
  CheckRoundTrip(*json, kiln::api::SyncRequestFromJson, "SyncRequest");
  CheckRoundTrip(*json, kiln::api::SyncReplyFromJson, "SyncReply");
  CheckRoundTrip(*json, kiln::api::AgentReportFromJson, "AgentReport");
  CheckRoundTrip(*json, kiln::api::ReportReplyFromJson, "ReportReply");
  return 0;
}
