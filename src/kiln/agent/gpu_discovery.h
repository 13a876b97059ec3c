// gpu_discovery.h
//
// How an agent learns which GPUs its host has: it runs `nvidia-smi` once at start-up and
// reports the list to the master as the host's GPU slots. A host without the NVIDIA
// driver tools simply has no GPUs; a host whose nvidia-smi is present but broken (driver
// not loaded) is an error the operator must see.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::agent {

// One GPU as nvidia-smi names it. `index` is what CUDA_VISIBLE_DEVICES takes (with the
// default CUDA_DEVICE_ORDER=PCI_BUS_ID order nvidia-smi uses); `uuid` ("GPU-...") is
// stable across reboots and reorderings.
struct GpuInfo {
  int index;
  std::string uuid;
  std::string name;    // e.g. "NVIDIA A100-SXM4-80GB".
  int64_t memory_mib;  // Total memory; 0 when nvidia-smi reports "[N/A]".
};

// Parses the output of
//   nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits
// one GPU per line ("0, GPU-5f3c..., NVIDIA H100 80GB HBM3, 81559"). Blank lines and
// spaces around fields are ignored. Returns InvalidArgument naming the line when a line
// does not have the four fields or its index or memory is not a number.
[[nodiscard]] absl::StatusOr<std::vector<GpuInfo>> ParseNvidiaSmiCsv(std::string_view csv);

// Runs `nvidia_smi` (a bare name is looked up in PATH) with the query above and parses
// its output. Blocks for up to `timeout` (then kills it). Returns an empty list, not an
// error, when the program does not exist. Returns FailedPrecondition when it exists but
// fails (a nonzero exit; the message carries the first line of its stderr, or of its
// stdout where nvidia-smi puts some of its errors), DeadlineExceeded when it does not
// finish in time, InvalidArgument when its output does not parse.
[[nodiscard]] absl::StatusOr<std::vector<GpuInfo>> DiscoverGpus(
    const std::string& nvidia_smi = "nvidia-smi",
    std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace kiln::agent
