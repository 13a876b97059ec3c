// authenticator.h
//
// `Authenticator` turns credentials (HTTP Basic user and password, or a bearer token)
// into a `Principal`, issues and revokes tokens, and answers who may see which job.
// Header parsing is the HTTP layer's job; this class sees only the credentials.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/base/clock.h"
#include "kiln/store/store.h"

namespace kiln::auth {

// Who is calling.
struct Principal {
  enum class Kind { kUser, kTask, kAgent };
  Kind kind = Kind::kUser;
  int64_t user_id = 0;  // kUser; kTask: the job's owner
  std::string username;
  bool admin = false;
  std::optional<int64_t> job_id;  // kTask only: the one job it may act for
  std::string token_hash;         // set when authenticated by token (for logout)

  bool is_user() const { return kind == Kind::kUser; }
};

struct IssuedToken {
  std::string token;  // give to the client; never stored
  int64_t expires_at = 0;
};

// Not thread-safe: owned by the master's loop, like the store it reads.
class Authenticator {
 public:
  // Session tokens from Login live this long (WMLA's logon sessions last 8 h).
  static constexpr int64_t kSessionLifetimeMicros = int64_t{24} * 3600 * 1'000'000;

  Authenticator(store::Store& store, const base::Clock& clock) : store_(store), clock_(clock) {}

  // Creates the "admin" user when no user exists yet, with `password` or, if empty, a
  // generated one. Returns the password it set (to be printed once) or nullopt if an
  // admin already existed.
  absl::StatusOr<std::optional<std::string>> EnsureAdmin(std::string_view password);

  // Unauthenticated (same message whether the user or the password is wrong).
  // Successful checks are cached for a few minutes keyed by a hash of the credentials,
  // so HTTP Basic on every call does not pay PBKDF2 every time.
  absl::StatusOr<Principal> AuthenticateBasic(std::string_view username, std::string_view password);
  // Unauthenticated for unknown, expired or revoked tokens. Session tokens are cached for
  // a minute (never past their expiry; Logout drops the entry), so a notebook that sends
  // its Bearer token with every prediction does not cost two store reads each time.
  absl::StatusOr<Principal> AuthenticateToken(std::string_view token);

  // Checks the password and issues a session token.
  absl::StatusOr<IssuedToken> Login(std::string_view username, std::string_view password);
  absl::Status Logout(const Principal& principal);

  // A token that lets one task of `job_id` report for it (revoked when the job ends).
  absl::StatusOr<std::string> IssueTaskToken(int64_t job_id, int64_t owner_user_id);
  // Registers `token` as a credential for agents (the master's agent secret).
  absl::Status RegisterAgentToken(std::string_view token);

  absl::StatusOr<store::UserRecord> CreateUser(std::string_view username, std::string_view password,
                                               bool admin);

  // Forgets cached Basic credentials (after a password change, or in tests).
  void ClearCache() {
    basic_cache_.clear();
    session_cache_.clear();
  }

 private:
  struct CachedPrincipal {
    Principal principal;
    int64_t valid_until = 0;
  };
  store::Store& store_;
  const base::Clock& clock_;
  std::unordered_map<std::string, CachedPrincipal> basic_cache_;
  std::unordered_map<std::string, CachedPrincipal> session_cache_;  // by token hash
};

// True if `principal` may read and change job `job` (its owner, an admin, or the job's own
// task token).
bool CanAccessJob(const Principal& principal, const store::JobRecord& job);

}  // namespace kiln::auth
