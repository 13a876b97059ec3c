#include "kiln/auth/password.h"

#include <gtest/gtest.h>

namespace kiln::auth {
namespace {

TEST(PasswordTest, VerifiesTheRightPasswordOnly) {
  std::string stored = HashPassword("correct horse", 1000);
  EXPECT_TRUE(VerifyPassword("correct horse", stored));
  EXPECT_FALSE(VerifyPassword("correct horsf", stored));
  EXPECT_FALSE(VerifyPassword("", stored));
}

TEST(PasswordTest, SaltsMakeEqualPasswordsHashDifferently) {
  EXPECT_NE(HashPassword("pw", 1000), HashPassword("pw", 1000));
}

TEST(PasswordTest, MalformedStoredHashesNeverVerify) {
  for (const char* bad : {"", "plain", "pbkdf2-sha256$x$00$00", "pbkdf2-sha256$10$zz$00",
                          "md5$1$00$00", "pbkdf2-sha256$10$00$0011"}) {
    EXPECT_FALSE(VerifyPassword("pw", bad)) << bad;
  }
}

TEST(PasswordTest, Sha256MatchesKnownVector) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(PasswordTest, GeneratedPasswordsHaveTheRequestedLength) {
  EXPECT_EQ(GeneratePassword(24).size(), 24u);
  EXPECT_NE(GeneratePassword(), GeneratePassword());
}

}  // namespace
}  // namespace kiln::auth
