// http_parsing_test.cc

#include "kiln/net/http_parsing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::net {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;
using ::testing::Pair;

TEST(PercentDecodeTest, DecodesEscapesInEitherCase) {
  KILN_ASSERT_OK_AND_ASSIGN(std::string decoded, PercentDecode("a%20b%2fc%2Fd%7e"));
  EXPECT_EQ(decoded, "a b/c/d~");
}

TEST(PercentDecodeTest, TreatsPlusAsSpaceOnlyWhenAsked) {
  EXPECT_EQ(PercentDecode("a+b").value(), "a+b");
  EXPECT_EQ(PercentDecode("a+b", /*plus_as_space=*/true).value(), "a b");
  EXPECT_EQ(PercentDecode("a%2Bb", /*plus_as_space=*/true).value(), "a+b");
}

TEST(PercentDecodeTest, RejectsTruncatedAndNonHexEscapes) {
  EXPECT_THAT(PercentDecode("abc%"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
  EXPECT_THAT(PercentDecode("abc%4"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
  EXPECT_THAT(PercentDecode("%zz"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'%zz'")));
  EXPECT_THAT(PercentDecode("%00"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NUL")));
}

TEST(PercentDecodeTest, KeepsNonAsciiBytes) {
  EXPECT_EQ(PercentDecode("%C3%A9t%C3%A9").value(), "\xC3\xA9t\xC3\xA9");
}

TEST(PercentEncodeTest, RoundTripsThroughDecode) {
  std::string text = "a b/c?d=e&f+g%h\xC3\xA9~._-";
  std::string encoded = PercentEncode(text);
  EXPECT_EQ(encoded, "a%20b%2Fc%3Fd%3De%26f%2Bg%25h%C3%A9~._-");
  EXPECT_EQ(PercentDecode(encoded).value(), text);
}

TEST(ParseQueryTest, DecodesPairsInOrderWithRepeatsAndBareKeys) {
  KILN_ASSERT_OK_AND_ASSIGN(auto query, ParseQuery("a=1&b=x+y%21&&flag&a=2&empty="));
  EXPECT_THAT(query, ElementsAre(Pair("a", "1"), Pair("b", "x y!"), Pair("flag", ""),
                                 Pair("a", "2"), Pair("empty", "")));
}

TEST(ParseQueryTest, KeepsEqualsSignsInValues) {
  KILN_ASSERT_OK_AND_ASSIGN(auto query, ParseQuery("expr=a=b"));
  EXPECT_THAT(query, ElementsAre(Pair("expr", "a=b")));
}

TEST(ParseQueryTest, RejectsBadEscape) {
  EXPECT_THAT(ParseQuery("a=%G1"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("%G1")));
}

TEST(ParseRequestTargetTest, SplitsDecodedPathAndQuery) {
  HttpRequest request;
  KILN_ASSERT_OK(ParseRequestTarget("/api/v1/jobs/my%20job?state=RUNNING&n=2", &request));
  EXPECT_EQ(request.path, "/api/v1/jobs/my job");
  EXPECT_THAT(request.query, ElementsAre(Pair("state", "RUNNING"), Pair("n", "2")));
}

TEST(ParseRequestTargetTest, AcceptsRootAndTrailingSlash) {
  HttpRequest request;
  KILN_ASSERT_OK(ParseRequestTarget("/", &request));
  EXPECT_EQ(request.path, "/");
  KILN_ASSERT_OK(ParseRequestTarget("/jobs/", &request));
  EXPECT_EQ(request.path, "/jobs/");
  KILN_ASSERT_OK(ParseRequestTarget("/jobs?", &request));
  EXPECT_EQ(request.path, "/jobs");
  EXPECT_TRUE(request.query.empty());
}

TEST(ParseRequestTargetTest, KeepsPlusInPathButNotInQuery) {
  HttpRequest request;
  KILN_ASSERT_OK(ParseRequestTarget("/a+b?q=a+b", &request));
  EXPECT_EQ(request.path, "/a+b");
  EXPECT_EQ(request.Query("q"), "a b");
}

TEST(ParseRequestTargetTest, RejectsTargetsThatAreNotPlainPaths) {
  HttpRequest request;
  EXPECT_THAT(ParseRequestTarget("", &request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("starting with '/'")));
  EXPECT_THAT(ParseRequestTarget("http://evil/x", &request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("starting with '/'")));
  EXPECT_THAT(ParseRequestTarget("*", &request),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(ParseRequestTarget("/a%2Fb", &request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("%2F")));
  EXPECT_THAT(ParseRequestTarget("/a/../b", &request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'..'")));
  EXPECT_THAT(ParseRequestTarget("/a/%2e%2E/b", &request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'..'")));
  EXPECT_THAT(ParseRequestTarget("/a//b", &request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty segment")));
  EXPECT_THAT(ParseRequestTarget("/a%zz", &request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("%zz")));
  EXPECT_THAT(ParseRequestTarget("/a?b=%", &request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
}

TEST(Base64Test, EncodesRfc4648Vectors) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("foob"), "Zm9vYg==");
  EXPECT_EQ(Base64Encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode(std::string("\xff\xfe\x00", 3)), "//4A");
}

TEST(Base64Test, DecodesWithAndWithoutPadding) {
  EXPECT_EQ(Base64Decode("Zm9vYg==").value(), "foob");
  EXPECT_EQ(Base64Decode("Zm9vYg").value(), "foob");
  EXPECT_EQ(Base64Decode("Zm9vYmE=").value(), "fooba");
  EXPECT_EQ(Base64Decode("").value(), "");
  EXPECT_EQ(Base64Decode("//4A").value(), std::string("\xff\xfe\x00", 3));
}

TEST(Base64Test, RejectsMalformedInput) {
  EXPECT_THAT(Base64Decode("Zm9v!"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(Base64Decode("Z"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("impossible length")));
  EXPECT_THAT(Base64Decode("Zm9=v"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(Base64Decode("Zm9vYg="),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("padding")));
  EXPECT_THAT(Base64Decode("Zm9vYg==="),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(Base64Decode("QR=="),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("trailing bits")));
  EXPECT_THAT(Base64Decode("Zm 9v"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(ParseBasicAuthorizationTest, ReturnsUserAndPassword) {
  EXPECT_THAT(ParseBasicAuthorization("Basic " + Base64Encode("alice:s3cret")),
              Optional(Pair("alice", "s3cret")));
}

TEST(ParseBasicAuthorizationTest, SplitsAtTheFirstColonOnly) {
  EXPECT_THAT(ParseBasicAuthorization("Basic " + Base64Encode("bob:a:b:c")),
              Optional(Pair("bob", "a:b:c")));
  EXPECT_THAT(ParseBasicAuthorization("Basic " + Base64Encode("bob:")), Optional(Pair("bob", "")));
}

TEST(ParseBasicAuthorizationTest, AcceptsAnySchemeCaseAndExtraSpaces) {
  std::string credentials = Base64Encode("u:p");
  EXPECT_THAT(ParseBasicAuthorization("basic " + credentials), Optional(Pair("u", "p")));
  EXPECT_THAT(ParseBasicAuthorization("  BASIC   " + credentials + "  "), Optional(Pair("u", "p")));
}

TEST(ParseBasicAuthorizationTest, RejectsEverythingElse) {
  EXPECT_EQ(ParseBasicAuthorization(""), std::nullopt);
  EXPECT_EQ(ParseBasicAuthorization("Basic"), std::nullopt);
  EXPECT_EQ(ParseBasicAuthorization("Basic "), std::nullopt);
  EXPECT_EQ(ParseBasicAuthorization("BasicdTpw"), std::nullopt);
  EXPECT_EQ(ParseBasicAuthorization("Bearer " + Base64Encode("u:p")), std::nullopt);
  EXPECT_EQ(ParseBasicAuthorization("Basic !!!"), std::nullopt);
  EXPECT_EQ(ParseBasicAuthorization("Basic " + Base64Encode("nocolon")), std::nullopt);
  EXPECT_EQ(ParseBasicAuthorization("Basic " + Base64Encode(":password")), std::nullopt);
}

TEST(ParseBearerAuthorizationTest, ReturnsTheToken) {
  EXPECT_EQ(ParseBearerAuthorization("Bearer abc.def"), "abc.def");
  EXPECT_EQ(ParseBearerAuthorization("bearer  abc "), "abc");
  EXPECT_EQ(ParseBearerAuthorization("Bearer"), std::nullopt);
  EXPECT_EQ(ParseBearerAuthorization("Bearer a b"), std::nullopt);
  EXPECT_EQ(ParseBearerAuthorization("Basic abc"), std::nullopt);
}

}  // namespace
}  // namespace kiln::net
