// http_status.cc

#include "kiln/net/http_status.h"

#include <charconv>
#include <optional>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "kiln/base/json.h"

namespace kiln::net {
namespace {

// Payload key under which `WithHttpStatus` stores the explicit HTTP status.
constexpr char kHttpStatusPayload[] = "type.kiln.dev/http-status";

// Bodies quoted in client-side error messages are cut here so a large HTML error page
// does not flood a terminal.
constexpr size_t kMaxQuotedBody = 200;

std::optional<int> AttachedHttpStatus(const absl::Status& status) {
  auto payload = status.GetPayload(kHttpStatusPayload);
  if (!payload.has_value()) return std::nullopt;
  std::string text(*payload);
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  if (value < 400 || value > 599) return std::nullopt;
  return value;
}

absl::StatusCode CodeFromHttpStatus(int http_status) {
  switch (http_status) {
    case 400:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 408:
    case 504:
      return absl::StatusCode::kDeadlineExceeded;
    case 409:
      return absl::StatusCode::kFailedPrecondition;
    case 413:
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 501:
      return absl::StatusCode::kUnimplemented;
    case 502:
    case 503:
      return absl::StatusCode::kUnavailable;
    default:
      break;
  }
  if (http_status >= 400 && http_status < 500) return absl::StatusCode::kInvalidArgument;
  if (http_status >= 500 && http_status < 600) return absl::StatusCode::kInternal;
  return absl::StatusCode::kUnknown;
}

std::optional<absl::StatusCode> CodeFromName(std::string_view name) {
  // Canonical codes are 1..16; OK is not an error code and is not accepted here.
  for (int i = 1; i <= 16; ++i) {
    auto code = static_cast<absl::StatusCode>(i);
    if (absl::StatusCodeToString(code) == name) return code;
  }
  return std::nullopt;
}

}  // namespace

int HttpStatusFromStatus(const absl::Status& status) {
  if (std::optional<int> attached = AttachedHttpStatus(status)) return *attached;
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

absl::Status WithHttpStatus(absl::Status status, int http_status) {
  if (status.ok() || http_status < 400 || http_status > 599) return status;
  status.SetPayload(kHttpStatusPayload, absl::Cord(std::to_string(http_status)));
  return status;
}

absl::Status PayloadTooLargeError(std::string_view message) {
  return WithHttpStatus(absl::ResourceExhaustedError(std::string(message)), 413);
}

HttpResponse ErrorResponse(const absl::Status& status) {
  absl::Status error = status;
  if (error.ok()) error = absl::InternalError("ErrorResponse called with an OK status");
  nlohmann::json body = {{"error",
                          {{"code", absl::StatusCodeToString(error.code())},
                           {"message", std::string(error.message())}}}};
  HttpResponse response = JsonResponse(HttpStatusFromStatus(error), body);
  if (response.status == 401) {
    response.headers.emplace_back("WWW-Authenticate", "Basic realm=\"kiln\"");
  }
  return response;
}

HttpResponse JsonResponse(int status, const nlohmann::json& body) {
  HttpResponse response;
  response.status = status;
  response.content_type = "application/json";
  response.body = base::DumpJson(body);
  return response;
}

absl::Status StatusFromHttpResponse(const HttpResponse& response) {
  if (response.status >= 200 && response.status < 300) return absl::OkStatus();
  std::optional<absl::StatusCode> code;
  std::optional<std::string> message;
  // 1 MiB is far above any error body we produce; a larger body is not one of ours.
  absl::StatusOr<base::Json> parsed = base::ParseJson(response.body, 1 << 20);
  if (parsed.ok() && parsed->is_object()) {
    auto error = parsed->find("error");
    if (error != parsed->end() && error->is_object()) {
      auto code_it = error->find("code");
      if (code_it != error->end() && code_it->is_string()) {
        code = CodeFromName(code_it->get_ref<const std::string&>());
      }
      auto message_it = error->find("message");
      if (message_it != error->end() && message_it->is_string()) {
        message = message_it->get<std::string>();
      }
    }
  }
  if (!code.has_value()) code = CodeFromHttpStatus(response.status);
  if (!message.has_value()) {
    std::string text = response.body.substr(0, kMaxQuotedBody);
    if (response.body.size() > kMaxQuotedBody) text += "...";
    message = text.empty() ? absl::StrCat("HTTP ", response.status)
                           : absl::StrCat("HTTP ", response.status, ": ", text);
  }
  return absl::Status(*code, *message);
}

}  // namespace kiln::net
