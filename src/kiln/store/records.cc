#include "kiln/store/records.h"

#include "absl/strings/str_cat.h"

namespace kiln::store {

const char* TokenKindName(TokenKind kind) {
  switch (kind) {
    case TokenKind::kSession:
      return "session";
    case TokenKind::kTask:
      return "task";
    case TokenKind::kAgent:
      return "agent";
  }
  return "session";
}

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "QUEUED";
    case JobState::kScheduled:
      return "SCHEDULED";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kFinished:
      return "FINISHED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kKilled:
      return "KILLED";
  }
  return "QUEUED";
}

absl::StatusOr<JobState> ParseJobState(std::string_view name) {
  for (JobState s : {JobState::kQueued, JobState::kScheduled, JobState::kRunning,
                     JobState::kFinished, JobState::kFailed, JobState::kKilled}) {
    if (JobStateName(s) == name) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown job state \"", std::string(name),
                   "\"; use one of QUEUED, SCHEDULED, RUNNING, FINISHED, FAILED, KILLED"));
}

bool IsTerminal(JobState state) {
  return state == JobState::kFinished || state == JobState::kFailed || state == JobState::kKilled;
}

}  // namespace kiln::store
