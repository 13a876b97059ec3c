// auth_command.cc
//
// `kiln login` and `kiln logout`: trade a user name and password for an API token and
// keep it in ~/.config/kiln/credentials.json (mode 0600), so later commands need no
// password in the environment.

#include <istream>
#include <memory>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "kiln/base/status.h"
#include "kiln/cli/commands_internal.h"
#include "kiln/cli/connection.h"

namespace kiln::cli::internal {
namespace {

struct LoginOptions {
  std::string user;
};

absl::Status Login(const LoginOptions& options, Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::string path, CredentialsPath(inv));
  std::string url;
  if (!inv.url_flag.empty()) {
    url = NormalizeUrl(inv.url_flag);
  } else if (auto env_url = inv.GetEnv("KILN_URL")) {
    url = NormalizeUrl(*env_url);
  } else {
    absl::StatusOr<std::optional<SavedCredentials>> saved = LoadCredentials(path);
    url = saved.ok() && *saved ? (*saved)->url : std::string(kDefaultUrl);
  }

  std::string user = options.user;
  if (user.empty()) user = inv.GetEnv("KILN_USER").value_or("");
  if (user.empty()) {
    *inv.err << "User for " << url << ": " << std::flush;
    if (!std::getline(*inv.in, user) || user.empty()) {
      return absl::InvalidArgumentError("no user name given; pass --user NAME");
    }
  }
  std::string password;
  if (auto env_password = inv.GetEnv("KILN_PASSWORD")) {
    password = *env_password;
  } else {
    KILN_ASSIGN_OR_RETURN(password,
                          inv.read_secret(absl::StrCat("Password for ", user, " at ", url, ": ")));
  }

  // The login call itself carries no credentials; the body is the credential.
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api, ApiClient::Create(Connection{.url = url}));
  absl::StatusOr<base::Json> answer =
      api->PostJson("/api/v1/auth/login", {{"username", user}, {"password", password}});
  if (absl::IsUnauthenticated(answer.status())) {
    return absl::UnauthenticatedError(
        absl::StrCat("login to ", url, " failed: wrong user name or password for \"", user, "\""));
  }
  KILN_RETURN_IF_ERROR(answer.status());
  SavedCredentials creds;
  creds.url = url;
  KILN_ASSIGN_OR_RETURN(creds.token, base::GetString(*answer, "token"));
  KILN_ASSIGN_OR_RETURN(creds.user, base::GetStringOr(*answer, "user", user));
  KILN_RETURN_IF_ERROR(SaveCredentials(path, creds));
  std::string expires = base::GetStringOr(*answer, "expires_at", "").value_or("");
  *inv.out << "Logged in to " << url << " as " << creds.user << "; token saved in " << path;
  if (!expires.empty()) *inv.out << " (expires " << expires << ")";
  *inv.out << ".\n";
  return absl::OkStatus();
}

absl::Status Logout(Invocation& inv) {
  KILN_ASSIGN_OR_RETURN(std::string path, CredentialsPath(inv));
  KILN_ASSIGN_OR_RETURN(std::optional<SavedCredentials> saved, LoadCredentials(path));
  if (!saved) {
    *inv.out << "Not logged in (no " << path << ").\n";
    return absl::OkStatus();
  }
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<ApiClient> api,
                        ApiClient::Create(Connection{.url = saved->url,
                                                     .auth = AuthMethod::kToken,
                                                     .user = saved->user,
                                                     .token = saved->token}));
  absl::StatusOr<base::Json> answer = api->PostJson("/api/v1/auth/logout", base::Json::object());
  // The local token goes either way: an expired token needs no revoking, and an
  // unreachable master must not keep the user logged in on this machine.
  if (!answer.ok() && !absl::IsUnauthenticated(answer.status())) {
    *inv.err << "kiln: warning: could not revoke the token at " << saved->url << ": "
             << answer.status().message() << "\n";
  }
  KILN_RETURN_IF_ERROR(RemoveCredentials(path));
  *inv.out << "Logged out of " << saved->url << ".\n";
  return absl::OkStatus();
}

}  // namespace

void RegisterAuthCommands(CLI::App& app, Invocation& inv) {
  auto options = std::make_shared<LoginOptions>();
  CLI::App* login =
      app.add_subcommand("login", "Log in and save a token in ~/.config/kiln/credentials.json");
  login->add_option("--user", options->user, "User name (default KILN_USER, else asked)")
      ->type_name("USER");
  AddUrlOption(*login, inv);
  login->footer(
      "The password is read from KILN_PASSWORD when set, otherwise asked for without echo.");
  login->callback(
      [&inv, options] { inv.command = [&inv, options] { return Login(*options, inv); }; });

  CLI::App* logout =
      app.add_subcommand("logout", "Revoke the saved token and delete it from this machine");
  logout->callback([&inv] { inv.command = [&inv] { return Logout(inv); }; });
}

}  // namespace kiln::cli::internal
