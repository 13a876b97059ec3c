// json.h
//
// Typed access to JSON from outside the process (REST bodies, agent reports, workload
// files). Every accessor returns a Status naming the offending field instead of throwing,
// so a handler can turn bad input into a 400 that says what to fix.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln::base {

using Json = nlohmann::json;

// Parses `text`. Returns InvalidArgument with the parser's position on malformed input,
// or if `text` is longer than `max_bytes`.
absl::StatusOr<Json> ParseJson(std::string_view text, size_t max_bytes = 16 << 20);

// Required fields: InvalidArgument if `obj` is not an object, the field is missing, or
// it has the wrong type. The message names the field and the expected type.
absl::StatusOr<std::string> GetString(const Json& obj, std::string_view field);
absl::StatusOr<int64_t> GetInt(const Json& obj, std::string_view field);
absl::StatusOr<double> GetDouble(const Json& obj, std::string_view field);
absl::StatusOr<bool> GetBool(const Json& obj, std::string_view field);

// Optional fields: `fallback` when absent or null; InvalidArgument on a wrong type.
absl::StatusOr<std::string> GetStringOr(const Json& obj, std::string_view field,
                                        std::string fallback);
absl::StatusOr<int64_t> GetIntOr(const Json& obj, std::string_view field, int64_t fallback);
absl::StatusOr<double> GetDoubleOr(const Json& obj, std::string_view field, double fallback);
absl::StatusOr<bool> GetBoolOr(const Json& obj, std::string_view field, bool fallback);
absl::StatusOr<std::vector<std::string>> GetStringListOr(const Json& obj, std::string_view field,
                                                         std::vector<std::string> fallback);
absl::StatusOr<std::map<std::string, std::string>> GetStringMapOr(const Json& obj,
                                                                  std::string_view field);

// Serializes without throwing: invalid UTF-8 in strings is replaced, not an error.
std::string DumpJson(const Json& value, int indent = -1);

}  // namespace kiln::base
