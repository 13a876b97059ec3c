#include "kiln/base/json.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::base {
namespace {

using ::testing::HasSubstr;

TEST(JsonTest, ParseRejectsMalformedInputWithPosition) {
  auto r = ParseJson("{\"a\": ");
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed JSON")));
}

TEST(JsonTest, ParseRejectsOversizedInput) {
  auto r = ParseJson("[1,2,3]", 3);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit is 3")));
}

TEST(JsonTest, AccessorsNameTheFieldAndTheExpectedType) {
  KILN_ASSERT_OK_AND_ASSIGN(Json j, ParseJson(R"({"slots": "two", "name": "x"})"));
  EXPECT_THAT(GetInt(j, "slots"), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("\"slots\" must be an integer, got string")));
  EXPECT_THAT(GetString(j, "command"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing required field")));
  EXPECT_EQ(GetIntOr(j, "gpus", 0).value(), 0);
  EXPECT_EQ(GetString(j, "name").value(), "x");
}

TEST(JsonTest, AccessorsRejectNonObjects) {
  KILN_ASSERT_OK_AND_ASSIGN(Json j, ParseJson("[1]"));
  EXPECT_THAT(GetString(j, "a"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected a JSON object")));
}

TEST(JsonTest, StringListAndMapCheckElementTypes) {
  KILN_ASSERT_OK_AND_ASSIGN(Json j, ParseJson(R"({"cmd": ["a", 1], "env": {"A": 2}})"));
  EXPECT_FALSE(GetStringListOr(j, "cmd", {}).ok());
  EXPECT_THAT(GetStringMapOr(j, "env"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("env.A")));
}

TEST(JsonTest, DumpReplacesInvalidUtf8InsteadOfThrowing) {
  Json j = std::string("ok\xff");
  EXPECT_THAT(DumpJson(j), HasSubstr("ok"));
}

}  // namespace
}  // namespace kiln::base
