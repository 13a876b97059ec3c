// logging.h
//
// Process logging for Kiln's own binaries (not workload logs, which are data). One
// spdlog default logger per process, set up once by each app's main.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace kiln::base {

// Sets the default logger's pattern and level ("debug", "info", "warn", "error").
// `name` appears in every line so interleaved output from several processes stays legible.
void InitLogging(std::string_view name, std::string_view level = "info");

}  // namespace kiln::base
