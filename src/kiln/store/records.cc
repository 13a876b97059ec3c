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

const char* ExperimentStateName(ExperimentState state) {
  switch (state) {
    case ExperimentState::kSubmitted:
      return "SUBMITTED";
    case ExperimentState::kRunning:
      return "RUNNING";
    case ExperimentState::kFinished:
      return "FINISHED";
    case ExperimentState::kFailed:
      return "FAILED";
    case ExperimentState::kStopped:
      return "STOPPED";
  }
  return "SUBMITTED";
}

absl::StatusOr<ExperimentState> ParseExperimentState(std::string_view name) {
  for (ExperimentState s :
       {ExperimentState::kSubmitted, ExperimentState::kRunning, ExperimentState::kFinished,
        ExperimentState::kFailed, ExperimentState::kStopped}) {
    if (ExperimentStateName(s) == name) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown experiment state \"", std::string(name),
                   "\"; use one of SUBMITTED, RUNNING, FINISHED, FAILED, STOPPED"));
}

const char* TrialStateName(TrialState state) {
  switch (state) {
    case TrialState::kRunning:
      return "RUNNING";
    case TrialState::kComplete:
      return "COMPLETE";
    case TrialState::kPruned:
      return "PRUNED";
    case TrialState::kFailed:
      return "FAILED";
    case TrialState::kStopped:
      return "STOPPED";
  }
  return "RUNNING";
}

absl::StatusOr<TrialState> ParseTrialState(std::string_view name) {
  for (TrialState s : {TrialState::kRunning, TrialState::kComplete, TrialState::kPruned,
                       TrialState::kFailed, TrialState::kStopped}) {
    if (TrialStateName(s) == name) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown trial state \"", std::string(name),
                   "\"; use one of RUNNING, COMPLETE, PRUNED, FAILED, STOPPED"));
}

const char* DeploymentStateName(DeploymentState state) {
  switch (state) {
    case DeploymentState::kPending:
      return "PENDING";
    case DeploymentState::kReady:
      return "READY";
    case DeploymentState::kUpdating:
      return "UPDATING";
    case DeploymentState::kFailed:
      return "FAILED";
    case DeploymentState::kStopped:
      return "STOPPED";
  }
  return "PENDING";
}

absl::StatusOr<DeploymentState> ParseDeploymentState(std::string_view name) {
  for (DeploymentState s :
       {DeploymentState::kPending, DeploymentState::kReady, DeploymentState::kUpdating,
        DeploymentState::kFailed, DeploymentState::kStopped}) {
    if (DeploymentStateName(s) == name) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown deployment state \"", std::string(name),
                   "\"; use one of PENDING, READY, UPDATING, FAILED, STOPPED"));
}

}  // namespace kiln::store
