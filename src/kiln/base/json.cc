#include "kiln/base/json.h"

#include "absl/strings/str_cat.h"

namespace kiln::base {
namespace {

const char* TypeName(const Json& v) { return v.type_name(); }

absl::StatusOr<const Json*> Field(const Json& obj, std::string_view field, bool required) {
  if (!obj.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("expected a JSON object holding \"",
                                                   std::string(field), "\", got ", TypeName(obj)));
  }
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) {
    if (required) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing required field \"", std::string(field), "\""));
    }
    return nullptr;
  }
  return &*it;
}

absl::Status WrongType(std::string_view field, std::string_view want, const Json& got) {
  return absl::InvalidArgumentError(absl::StrCat("field \"", std::string(field), "\" must be ",
                                                 std::string(want), ", got ", TypeName(got)));
}

}  // namespace

absl::StatusOr<Json> ParseJson(std::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON body is ", text.size(), " bytes; the limit is ", max_bytes));
  }
  Json parsed = Json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    // Re-parse with exceptions only to recover the position for the message.
    try {
      Json unused = Json::parse(text);
      (void)unused;
    } catch (const Json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("malformed JSON: ", e.what()));
    }
    return absl::InvalidArgumentError("malformed JSON");
  }
  return parsed;
}

absl::StatusOr<std::string> GetString(const Json& obj, std::string_view field) {
  auto f = Field(obj, field, true);
  if (!f.ok()) return f.status();
  if (!(*f)->is_string()) return WrongType(field, "a string", **f);
  return (*f)->get<std::string>();
}

absl::StatusOr<int64_t> GetInt(const Json& obj, std::string_view field) {
  auto f = Field(obj, field, true);
  if (!f.ok()) return f.status();
  if (!(*f)->is_number_integer()) return WrongType(field, "an integer", **f);
  return (*f)->get<int64_t>();
}

absl::StatusOr<double> GetDouble(const Json& obj, std::string_view field) {
  auto f = Field(obj, field, true);
  if (!f.ok()) return f.status();
  if (!(*f)->is_number()) return WrongType(field, "a number", **f);
  return (*f)->get<double>();
}

absl::StatusOr<bool> GetBool(const Json& obj, std::string_view field) {
  auto f = Field(obj, field, true);
  if (!f.ok()) return f.status();
  if (!(*f)->is_boolean()) return WrongType(field, "true or false", **f);
  return (*f)->get<bool>();
}

absl::StatusOr<std::string> GetStringOr(const Json& obj, std::string_view field,
                                        std::string fallback) {
  auto f = Field(obj, field, false);
  if (!f.ok()) return f.status();
  if (*f == nullptr) return fallback;
  if (!(*f)->is_string()) return WrongType(field, "a string", **f);
  return (*f)->get<std::string>();
}

absl::StatusOr<int64_t> GetIntOr(const Json& obj, std::string_view field, int64_t fallback) {
  auto f = Field(obj, field, false);
  if (!f.ok()) return f.status();
  if (*f == nullptr) return fallback;
  if (!(*f)->is_number_integer()) return WrongType(field, "an integer", **f);
  return (*f)->get<int64_t>();
}

absl::StatusOr<double> GetDoubleOr(const Json& obj, std::string_view field, double fallback) {
  auto f = Field(obj, field, false);
  if (!f.ok()) return f.status();
  if (*f == nullptr) return fallback;
  if (!(*f)->is_number()) return WrongType(field, "a number", **f);
  return (*f)->get<double>();
}

absl::StatusOr<bool> GetBoolOr(const Json& obj, std::string_view field, bool fallback) {
  auto f = Field(obj, field, false);
  if (!f.ok()) return f.status();
  if (*f == nullptr) return fallback;
  if (!(*f)->is_boolean()) return WrongType(field, "true or false", **f);
  return (*f)->get<bool>();
}

absl::StatusOr<std::vector<std::string>> GetStringListOr(const Json& obj, std::string_view field,
                                                         std::vector<std::string> fallback) {
  auto f = Field(obj, field, false);
  if (!f.ok()) return f.status();
  if (*f == nullptr) return fallback;
  if (!(*f)->is_array()) return WrongType(field, "a list of strings", **f);
  std::vector<std::string> out;
  for (const Json& item : **f) {
    if (!item.is_string()) return WrongType(field, "a list of strings", item);
    out.push_back(item.get<std::string>());
  }
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> GetStringMapOr(const Json& obj,
                                                                  std::string_view field) {
  auto f = Field(obj, field, false);
  if (!f.ok()) return f.status();
  std::map<std::string, std::string> out;
  if (*f == nullptr) return out;
  if (!(*f)->is_object()) return WrongType(field, "an object of strings", **f);
  for (auto it = (*f)->begin(); it != (*f)->end(); ++it) {
    if (!it.value().is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"", std::string(field), ".", it.key(), "\" must be a string"));
    }
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

std::string DumpJson(const Json& value, int indent) {
  return value.dump(indent, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

}  // namespace kiln::base
