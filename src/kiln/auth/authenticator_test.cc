#include "kiln/auth/authenticator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/testing/fake_clock.h"
#include "kiln/base/testing/status_matchers.h"
#include "kiln/store/sqlite_store.h"

namespace kiln::auth {
namespace {

using ::testing::HasSubstr;

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = store::SqliteStore::Open(":memory:");
    KILN_ASSERT_OK(store);
    store_ = std::move(store).value();
    auth_ = std::make_unique<Authenticator>(*store_, clock_);
  }
  base::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<Authenticator> auth_;
};

TEST_F(AuthenticatorTest, EnsureAdminCreatesOnceWithTheGivenPassword) {
  KILN_ASSERT_OK_AND_ASSIGN(auto pw, auth_->EnsureAdmin("s3cret-pass"));
  ASSERT_TRUE(pw.has_value());
  EXPECT_EQ(*pw, "s3cret-pass");
  KILN_ASSERT_OK_AND_ASSIGN(auto again, auth_->EnsureAdmin("other-pass"));
  EXPECT_FALSE(again.has_value());
  KILN_ASSERT_OK_AND_ASSIGN(Principal p, auth_->AuthenticateBasic("admin", "s3cret-pass"));
  EXPECT_TRUE(p.admin);
}

TEST_F(AuthenticatorTest, EnsureAdminGeneratesAPasswordWhenNoneGiven) {
  KILN_ASSERT_OK_AND_ASSIGN(auto pw, auth_->EnsureAdmin(""));
  ASSERT_TRUE(pw.has_value());
  EXPECT_GE(pw->size(), 16u);
  KILN_EXPECT_OK(auth_->AuthenticateBasic("admin", *pw));
}

TEST_F(AuthenticatorTest, WrongPasswordAndUnknownUserGiveTheSameError) {
  KILN_ASSERT_OK(auth_->CreateUser("ada", "password1", false));
  auto wrong = auth_->AuthenticateBasic("ada", "password2");
  auto unknown = auth_->AuthenticateBasic("bob", "password1");
  EXPECT_THAT(wrong, StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("kiln login")));
  EXPECT_EQ(wrong.status().message(), unknown.status().message());
}

TEST_F(AuthenticatorTest, SessionTokensWorkUntilLogoutOrExpiry) {
  KILN_ASSERT_OK(auth_->CreateUser("ada", "password1", false));
  KILN_ASSERT_OK_AND_ASSIGN(IssuedToken t, auth_->Login("ada", "password1"));
  KILN_ASSERT_OK_AND_ASSIGN(Principal p, auth_->AuthenticateToken(t.token));
  EXPECT_EQ(p.username, "ada");
  EXPECT_FALSE(p.admin);
  KILN_ASSERT_OK(auth_->Logout(p));
  EXPECT_THAT(auth_->AuthenticateToken(t.token),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("token")));

  KILN_ASSERT_OK_AND_ASSIGN(IssuedToken t2, auth_->Login("ada", "password1"));
  KILN_ASSERT_OK(auth_->AuthenticateToken(t2.token));  // now cached
  KILN_ASSERT_OK(auth_->AuthenticateToken(t2.token));
  clock_.AdvanceMicros(Authenticator::kSessionLifetimeMicros + 1);
  EXPECT_FALSE(auth_->AuthenticateToken(t2.token).ok());
}

TEST_F(AuthenticatorTest, ACachedSessionIsStillRevokedAtOnceByLogout) {
  KILN_ASSERT_OK(auth_->CreateUser("ada", "password1", false));
  KILN_ASSERT_OK_AND_ASSIGN(IssuedToken t, auth_->Login("ada", "password1"));
  KILN_ASSERT_OK_AND_ASSIGN(Principal p, auth_->AuthenticateToken(t.token));
  KILN_ASSERT_OK(auth_->AuthenticateToken(t.token));  // served from the cache
  KILN_ASSERT_OK(auth_->Logout(p));
  EXPECT_FALSE(auth_->AuthenticateToken(t.token).ok());
}

TEST_F(AuthenticatorTest, TaskTokensAreNotCachedPastTheirJob) {
  KILN_ASSERT_OK_AND_ASSIGN(auto ada, auth_->CreateUser("ada", "password1", false));
  KILN_ASSERT_OK_AND_ASSIGN(std::string token, auth_->IssueTaskToken(7, ada.id));
  KILN_ASSERT_OK(auth_->AuthenticateToken(token));
  // The job ended: its tokens go from the store directly, not through the Authenticator.
  KILN_ASSERT_OK(store_->DeleteJobTokens(7));
  EXPECT_FALSE(auth_->AuthenticateToken(token).ok());
}

TEST_F(AuthenticatorTest, TaskTokensReachOnlyTheirJob) {
  KILN_ASSERT_OK_AND_ASSIGN(auto ada, auth_->CreateUser("ada", "password1", false));
  KILN_ASSERT_OK_AND_ASSIGN(std::string token, auth_->IssueTaskToken(7, ada.id));
  KILN_ASSERT_OK_AND_ASSIGN(Principal p, auth_->AuthenticateToken(token));
  EXPECT_EQ(p.kind, Principal::Kind::kTask);
  store::JobRecord own, other;
  own.id = 7;
  own.user_id = ada.id;
  other.id = 8;
  other.user_id = ada.id;
  EXPECT_TRUE(CanAccessJob(p, own));
  EXPECT_FALSE(CanAccessJob(p, other));
}

TEST_F(AuthenticatorTest, UsersSeeOnlyTheirOwnJobsAdminsAll) {
  Principal ada{Principal::Kind::kUser, 1, "ada", false, std::nullopt, ""};
  Principal root{Principal::Kind::kUser, 2, "root", true, std::nullopt, ""};
  store::JobRecord job;
  job.user_id = 3;
  EXPECT_FALSE(CanAccessJob(ada, job));
  EXPECT_TRUE(CanAccessJob(root, job));
}

TEST_F(AuthenticatorTest, RejectsBadUserNamesAndShortPasswords) {
  EXPECT_THAT(auth_->CreateUser("a b", "password1", false),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("may contain only")));
  EXPECT_THAT(auth_->CreateUser("ada", "short", false),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("8 to 1024")));
}

}  // namespace
}  // namespace kiln::auth
