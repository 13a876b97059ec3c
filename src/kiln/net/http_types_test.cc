// http_types_test.cc

#include "kiln/net/http_types.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln::net {
namespace {

TEST(HttpRequestTest, HeaderLookupIsCaseInsensitiveAndReturnsTheFirst) {
  HttpRequest request;
  request.headers = {{"content-type", "text/plain"}, {"x-a", "1"}, {"x-a", "2"}};
  EXPECT_EQ(request.Header("Content-Type"), "text/plain");
  EXPECT_EQ(request.Header("X-A"), "1");
  EXPECT_EQ(request.Header("missing"), "");
}

TEST(HttpRequestTest, QueryReturnsFirstValueAndQueryValuesAll) {
  HttpRequest request;
  request.query = {{"tag", "a"}, {"n", ""}, {"tag", "b"}};
  EXPECT_EQ(request.Query("tag"), "a");
  EXPECT_EQ(request.Query("n"), "");
  EXPECT_EQ(request.Query("missing"), std::nullopt);
  EXPECT_THAT(request.QueryValues("tag"), ::testing::ElementsAre("a", "b"));
  EXPECT_TRUE(request.QueryValues("missing").empty());
}

TEST(HttpResponseTest, HeaderLookupIsCaseInsensitive) {
  HttpResponse response;
  response.headers = {{"Retry-After", "3"}};
  EXPECT_EQ(response.Header("retry-after"), "3");
}

}  // namespace
}  // namespace kiln::net
