#include "kiln/base/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <string>

namespace kiln::base {

void InitLogging(std::string_view name, std::string_view level) {
  auto logger = spdlog::stderr_color_mt(std::string(name));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %n: %v");
  logger->set_level(spdlog::level::from_str(std::string(level)));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace kiln::base
