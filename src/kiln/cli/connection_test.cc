#include "kiln/cli/connection.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "kiln/base/testing/status_matchers.h"
#include "kiln/cli/testing/fake_master.h"

namespace kiln::cli {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

class ResolveConnectionTest : public ::testing::Test {
 protected:
  ResolveConnectionTest() { inv_.env["HOME"] = home_.path(); }

  void SaveLogin(std::string url, std::string token) {
    KILN_ASSERT_OK(SaveCredentials(*CredentialsPath(inv_),
                                   SavedCredentials{.url = url, .user = "ann", .token = token}));
  }

  TempDir home_;
  Invocation inv_;
};

TEST_F(ResolveConnectionTest, DefaultsToLocalKilnWithoutCredentials) {
  KILN_ASSERT_OK_AND_ASSIGN(Connection conn, ResolveConnection(inv_));
  EXPECT_EQ(conn.url, "http://127.0.0.1:8470");
  EXPECT_EQ(conn.auth, AuthMethod::kNone);
}

TEST_F(ResolveConnectionTest, UsesTheSavedLoginsUrlAndToken) {
  SaveLogin("http://kiln.example:8470", "tok");
  KILN_ASSERT_OK_AND_ASSIGN(Connection conn, ResolveConnection(inv_));
  EXPECT_EQ(conn.url, "http://kiln.example:8470");
  EXPECT_EQ(conn.auth, AuthMethod::kToken);
  EXPECT_EQ(conn.token, "tok");
  EXPECT_EQ(conn.user, "ann");
}

TEST_F(ResolveConnectionTest, EnvironmentCredentialsWinOverTheSavedToken) {
  SaveLogin("http://127.0.0.1:8470", "tok");
  inv_.env["KILN_USER"] = "bob";
  inv_.env["KILN_PASSWORD"] = "pw";
  KILN_ASSERT_OK_AND_ASSIGN(Connection conn, ResolveConnection(inv_));
  EXPECT_EQ(conn.auth, AuthMethod::kBasic);
  EXPECT_EQ(conn.user, "bob");
  EXPECT_EQ(conn.password, "pw");
}

TEST_F(ResolveConnectionTest, UrlFlagWinsOverKilnUrlWhichWinsOverTheSavedUrl) {
  SaveLogin("http://saved:1", "tok");
  inv_.env["KILN_URL"] = "http://env:2/";
  KILN_ASSERT_OK_AND_ASSIGN(Connection from_env, ResolveConnection(inv_));
  EXPECT_EQ(from_env.url, "http://env:2");
  inv_.url_flag = "flag:3";
  KILN_ASSERT_OK_AND_ASSIGN(Connection from_flag, ResolveConnection(inv_));
  EXPECT_EQ(from_flag.url, "http://flag:3");
}

TEST_F(ResolveConnectionTest, NeverSendsASavedTokenToAnotherServer) {
  SaveLogin("http://saved:1", "tok");
  inv_.env["KILN_URL"] = "http://other:2";
  KILN_ASSERT_OK_AND_ASSIGN(Connection conn, ResolveConnection(inv_));
  EXPECT_EQ(conn.auth, AuthMethod::kNone);
  EXPECT_EQ(conn.token, "");
}

TEST_F(ResolveConnectionTest, RefusesAUserWithoutAPassword) {
  inv_.env["KILN_USER"] = "bob";
  EXPECT_THAT(ResolveConnection(inv_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("KILN_PASSWORD")));
}

TEST_F(ResolveConnectionTest, TreatsEmptyVariablesAsUnset) {
  inv_.env["KILN_URL"] = "";
  inv_.env["KILN_USER"] = "";
  KILN_ASSERT_OK_AND_ASSIGN(Connection conn, ResolveConnection(inv_));
  EXPECT_EQ(conn.url, "http://127.0.0.1:8470");
  EXPECT_EQ(conn.auth, AuthMethod::kNone);
}

TEST_F(ResolveConnectionTest, ExplainsACorruptCredentialsFile) {
  std::string path = *CredentialsPath(inv_);
  KILN_ASSERT_OK(base::MakeDirs(home_.path() + "/.config/kiln"));
  KILN_ASSERT_OK(base::WriteFileAtomically(path, "{not json"));
  EXPECT_THAT(ResolveConnection(inv_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr(path), HasSubstr("kiln login"))));
}

TEST(CredentialsFileTest, IsPrivateAndRoundTrips) {
  TempDir home;
  Invocation inv;
  inv.env["HOME"] = home.path();
  KILN_ASSERT_OK_AND_ASSIGN(std::string path, CredentialsPath(inv));
  EXPECT_EQ(path, home.path() + "/.config/kiln/credentials.json");
  KILN_ASSERT_OK(SaveCredentials(path, {.url = "http://h:1", .user = "ann", .token = "t"}));
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  KILN_ASSERT_OK_AND_ASSIGN(auto loaded, LoadCredentials(path));
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->url, "http://h:1");
  EXPECT_EQ(loaded->user, "ann");
  EXPECT_EQ(loaded->token, "t");
  KILN_ASSERT_OK(RemoveCredentials(path));
  KILN_ASSERT_OK_AND_ASSIGN(auto gone, LoadCredentials(path));
  EXPECT_FALSE(gone.has_value());
  KILN_EXPECT_OK(RemoveCredentials(path));
}

TEST(CredentialsPathTest, NeedsHome) {
  Invocation inv;
  EXPECT_THAT(CredentialsPath(inv),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("HOME")));
}

TEST(NormalizeUrlTest, AddsASchemeAndDropsTrailingSlashes) {
  EXPECT_EQ(NormalizeUrl("localhost:8470/"), "http://localhost:8470");
  EXPECT_EQ(NormalizeUrl("https://k.example//"), "https://k.example");
}

TEST(EncodeQueryValueTest, EscapesReservedBytes) {
  EXPECT_EQ(EncodeQueryValue("train.py"), "train.py");
  EXPECT_EQ(EncodeQueryValue("my code&x=1.tar.gz"), "my%20code%26x%3D1.tar.gz");
}

}  // namespace
}  // namespace kiln::cli
