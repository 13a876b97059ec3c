// deploy_command.h
//
// `kiln deploy` and `kiln predict`: deployments of registered model versions through the
// native API (docs/api.md, "Deployments"). `deploy create|list|show|update|delete`
// manage them (`--wait` follows a deployment until its replicas serve); `predict` posts a
// native prediction payload and prints the JSON answer. The renderers and the wait rule
// are declared here so tests pin them down without a server.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "kiln/base/json.h"

namespace kiln::cli {

// Where a deployment stands for `--wait`.
enum class DeploymentProgress {
  kWaiting,  // replicas still starting, or a rollout still running
  kServing,  // the wanted version is READY with every replica ready
  kFailed,   // FAILED, or the rollout to the wanted version was rolled back
};

// `wanted_version`: the version an update asked for (nullopt: any).
DeploymentProgress DeploymentProgressOf(const base::Json& deployment,
                                        std::optional<int64_t> wanted_version);

// "READY, version 2, 2/2 replicas ready": the one progress line of `--wait`.
std::string DeploymentSummary(const base::Json& deployment);

// The `kiln deploy list` table: ID NAME MODEL VERSION STATE READY AGE.
std::string RenderDeploymentsTable(const base::Json& deployments, int64_t now_micros);

// The `kiln deploy show` view: one "key: value" line per field, then the replicas table
// (JOB VERSION STATE ADDRESS).
std::string RenderDeploymentDetails(const base::Json& deployment, int64_t now_micros);

}  // namespace kiln::cli
