#include "kiln/auth/authenticator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kiln/auth/password.h"
#include "kiln/base/random.h"
#include "kiln/base/status.h"

namespace kiln::auth {
namespace {

constexpr int64_t kBasicCacheMicros = int64_t{5} * 60 * 1'000'000;
constexpr int64_t kSessionCacheMicros = int64_t{60} * 1'000'000;
constexpr size_t kBasicCacheMaxEntries = 4096;
constexpr int kMaxCredentialBytes = 1024;

absl::Status BadCredentials() {
  return absl::UnauthenticatedError(
      "wrong user name or password; check KILN_USER and KILN_PASSWORD, or run 'kiln login'");
}

absl::Status ValidateUsername(std::string_view name) {
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError("user name must be 1 to 64 characters");
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == '@';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "user name \"", std::string(name), "\" may contain only letters, digits and _ - . @"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<std::string>> Authenticator::EnsureAdmin(std::string_view password) {
  KILN_ASSIGN_OR_RETURN(auto users, store_.ListUsers());
  if (!users.empty()) return std::optional<std::string>();
  std::string chosen = password.empty() ? GeneratePassword() : std::string(password);
  KILN_ASSIGN_OR_RETURN(auto admin, CreateUser("admin", chosen, /*admin=*/true));
  (void)admin;
  return std::optional<std::string>(chosen);
}

absl::StatusOr<store::UserRecord> Authenticator::CreateUser(std::string_view username,
                                                            std::string_view password, bool admin) {
  KILN_RETURN_IF_ERROR(ValidateUsername(username));
  if (password.size() < 8 || password.size() > kMaxCredentialBytes) {
    return absl::InvalidArgumentError("password must be 8 to 1024 characters");
  }
  store::UserRecord user;
  user.username = std::string(username);
  user.password_hash = HashPassword(password);
  user.admin = admin;
  user.created_at = clock_.NowMicros();
  return store_.CreateUser(std::move(user));
}

absl::StatusOr<Principal> Authenticator::AuthenticateBasic(std::string_view username,
                                                           std::string_view password) {
  if (username.size() > kMaxCredentialBytes || password.size() > kMaxCredentialBytes) {
    return BadCredentials();
  }
  int64_t now = clock_.NowMicros();
  std::string key =
      Sha256Hex(absl::StrCat(std::string(username), std::string(1, '\0'), std::string(password)));
  auto it = basic_cache_.find(key);
  if (it != basic_cache_.end() && it->second.valid_until > now) return it->second.principal;

  auto user = store_.GetUserByName(std::string(username));
  if (!user.ok()) {
    if (absl::IsNotFound(user.status())) return BadCredentials();
    return user.status();
  }
  if (!VerifyPassword(password, user->password_hash)) return BadCredentials();
  Principal p;
  p.kind = Principal::Kind::kUser;
  p.user_id = user->id;
  p.username = user->username;
  p.admin = user->admin;
  if (basic_cache_.size() >= kBasicCacheMaxEntries) basic_cache_.clear();
  basic_cache_[key] = {p, now + kBasicCacheMicros};
  return p;
}

absl::StatusOr<Principal> Authenticator::AuthenticateToken(std::string_view token) {
  if (token.empty() || token.size() > kMaxCredentialBytes) {
    return absl::UnauthenticatedError("empty or oversized token");
  }
  std::string hash = Sha256Hex(token);
  const int64_t now = clock_.NowMicros();
  if (auto it = session_cache_.find(hash); it != session_cache_.end()) {
    if (it->second.valid_until > now) return it->second.principal;
    session_cache_.erase(it);
  }
  auto record = store_.GetToken(hash, now);
  if (!record.ok()) {
    if (absl::IsNotFound(record.status())) {
      return absl::UnauthenticatedError(absl::StrCat(
          "token not accepted (", record.status().message(), "); log in again with 'kiln login'"));
    }
    return record.status();
  }
  Principal p;
  p.token_hash = hash;
  switch (record->kind) {
    case store::TokenKind::kAgent:
      p.kind = Principal::Kind::kAgent;
      p.username = "agent";
      return p;
    case store::TokenKind::kTask:
      p.kind = Principal::Kind::kTask;
      p.job_id = record->job_id;
      break;
    case store::TokenKind::kSession:
      p.kind = Principal::Kind::kUser;
      break;
  }
  if (!record->user_id) return absl::InternalError("stored user token has no user");
  KILN_ASSIGN_OR_RETURN(store::UserRecord user, store_.GetUser(*record->user_id));
  p.user_id = user.id;
  p.username = user.username;
  p.admin = user.admin && p.kind == Principal::Kind::kUser;
  if (p.kind == Principal::Kind::kUser) {
    // Task tokens are revoked in the store when their job ends, so only sessions (revoked
    // through Logout, below) may be cached.
    int64_t valid_until = now + kSessionCacheMicros;
    if (record->expires_at) valid_until = std::min(valid_until, *record->expires_at);
    if (session_cache_.size() >= kBasicCacheMaxEntries) session_cache_.clear();
    session_cache_[hash] = {p, valid_until};
  }
  return p;
}

absl::StatusOr<IssuedToken> Authenticator::Login(std::string_view username,
                                                 std::string_view password) {
  KILN_ASSIGN_OR_RETURN(Principal p, AuthenticateBasic(username, password));
  IssuedToken issued;
  issued.token = base::RandomHexToken();
  issued.expires_at = clock_.NowMicros() + kSessionLifetimeMicros;
  store::TokenRecord record;
  record.hash = Sha256Hex(issued.token);
  record.kind = store::TokenKind::kSession;
  record.user_id = p.user_id;
  record.created_at = clock_.NowMicros();
  record.expires_at = issued.expires_at;
  KILN_RETURN_IF_ERROR(store_.PutToken(record));
  return issued;
}

absl::Status Authenticator::Logout(const Principal& principal) {
  if (principal.token_hash.empty()) {
    return absl::InvalidArgumentError(
        "this request did not use a token; there is nothing to log out");
  }
  session_cache_.erase(principal.token_hash);
  return store_.DeleteToken(principal.token_hash);
}

absl::StatusOr<std::string> Authenticator::IssueTaskToken(int64_t job_id, int64_t owner_user_id) {
  std::string token = base::RandomHexToken();
  store::TokenRecord record;
  record.hash = Sha256Hex(token);
  record.kind = store::TokenKind::kTask;
  record.user_id = owner_user_id;
  record.job_id = job_id;
  record.created_at = clock_.NowMicros();
  KILN_RETURN_IF_ERROR(store_.PutToken(record));
  return token;
}

absl::Status Authenticator::RegisterAgentToken(std::string_view token) {
  store::TokenRecord record;
  record.hash = Sha256Hex(token);
  record.kind = store::TokenKind::kAgent;
  record.created_at = clock_.NowMicros();
  return store_.PutToken(record);
}

bool CanAccessJob(const Principal& principal, const store::JobRecord& job) {
  switch (principal.kind) {
    case Principal::Kind::kAgent:
      return true;
    case Principal::Kind::kTask:
      return principal.job_id == job.id;
    case Principal::Kind::kUser:
      return principal.admin || principal.user_id == job.user_id;
  }
  return false;
}

}  // namespace kiln::auth
