// model_command.h
//
// `kiln model`: the model registry through the native API (docs/api.md, "Models").
// `register` adds a version from a finished job's saved model (--job) or from a local
// TorchScript file (--file, uploaded as a package first); `list`, `show` and `delete` read
// and manage models. The renderers are declared here so tests pin them down without a
// server.
#pragma once

#include <cstdint>
#include <string>

#include "kiln/base/json.h"

namespace kiln::cli {

// The `kiln model list` table of `models` (model records, each with its latest version):
// NAME USER LATEST INPUTS OUTPUTS METRICS SOURCE AGE.
std::string RenderModelsTable(const base::Json& models, int64_t now_micros);

// "image: float32[1,28,28]" for each tensor of a signature's `inputs` or `outputs`,
// joined with ", "; "-" when there are none.
std::string RenderTensors(const base::Json& tensors);

// The `kiln model show` view of a model record with its versions: "key: value" lines for
// the model, then a VERSION INPUTS OUTPUTS METRICS SOURCE FILE SIZE CREATED table.
std::string RenderModelDetails(const base::Json& model, int64_t now_micros);

// The `kiln model show NAME --version V` view of one version: signature, metrics,
// lineage (job, experiment, trial, hyperparameters) and file.
std::string RenderModelVersion(const base::Json& version, int64_t now_micros);

}  // namespace kiln::cli
