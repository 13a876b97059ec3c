#include "kiln/net/bundle.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::net {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(BundleTest, RequestsRoundTripInOrder) {
  std::string bundle;
  AppendBundledRequest(bundle, "/v2/models/m/infer", "application/json",
                       {{"Inference-Header-Content-Length", "14"}}, R"({"inputs": []})");
  AppendBundledRequest(bundle, "/api/v1/predict?x=1", "", {}, "");
  std::string binary("\0\xff\r\n", 4);
  AppendBundledRequest(bundle, "/ml/v4/deployments/7/predictions", "text/plain", {}, binary);
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<BundledRequest> items, DecodeBundleRequest(bundle));
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].target, "/v2/models/m/infer");
  EXPECT_EQ(items[0].content_type, "application/json");
  EXPECT_EQ(items[0].body, R"({"inputs": []})");
  // Header names come back lower-cased, as HttpRequest holds them.
  EXPECT_THAT(items[0].headers, ElementsAre(std::pair<std::string, std::string>(
                                    "inference-header-content-length", "14")));
  EXPECT_TRUE(items[1].headers.empty());
  EXPECT_EQ(items[1].target, "/api/v1/predict?x=1");
  EXPECT_EQ(items[1].content_type, "");
  EXPECT_EQ(items[1].body, "");
  EXPECT_EQ(items[2].body, binary);
}

TEST(BundleTest, ResponsesRoundTripAndMustMatchTheCount) {
  std::vector<HttpResponse> responses(2);
  responses[0].body = R"({"y": [1]})";
  responses[1].status = 400;
  responses[1].content_type = "text/plain";
  responses[1].body = "bad";
  responses[1].headers = {{"Inference-Header-Content-Length", "3"}, {"X-A", ""}};
  std::string bundle = EncodeBundleResponse(responses);
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<HttpResponse> back, DecodeBundleResponse(bundle, 2));
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].status, 200);
  EXPECT_EQ(back[0].content_type, "application/json");
  EXPECT_EQ(back[0].body, R"({"y": [1]})");
  EXPECT_EQ(back[1].status, 400);
  EXPECT_EQ(back[1].body, "bad");
  EXPECT_TRUE(back[0].headers.empty());
  EXPECT_EQ(back[1].Header("Inference-Header-Content-Length"), "3");
  EXPECT_EQ(back[1].headers.size(), 2u);
  EXPECT_THAT(DecodeBundleResponse(bundle, 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 responses for 3")));
  EXPECT_THAT(DecodeBundleResponse(bundle, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than the 1")));
}

TEST(BundleTest, TruncatedOrOddBundlesAreRefusedNamingTheItem) {
  std::string bundle;
  AppendBundledRequest(bundle, "/a", "application/json", {}, "{}");
  AppendBundledRequest(bundle, "/b", "application/json", {}, "{}");
  for (size_t cut = 1; cut < bundle.size(); ++cut) {
    auto items = DecodeBundleRequest(std::string_view(bundle).substr(0, cut));
    // A cut exactly after the first item is a valid one-item bundle.
    if (cut == bundle.size() / 2) {
      EXPECT_TRUE(items.ok()) << cut;
      continue;
    }
    EXPECT_THAT(items, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("past the end")))
        << cut;
  }
  EXPECT_THAT(DecodeBundleRequest(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no request")));
  std::string no_path;
  AppendBundledRequest(no_path, "predict", "", {}, "");
  EXPECT_THAT(DecodeBundleRequest(no_path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("item 0 has a target")));
  std::string huge_length("\xff\xff\xff\xff", 4);
  EXPECT_THAT(DecodeBundleRequest(huge_length),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("past the end")));
  HttpResponse odd;
  odd.status = 700;
  EXPECT_THAT(DecodeBundleResponse(EncodeBundleResponse({odd}), 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("status 700")));
}

TEST(BundleTest, HeadersThatCouldNotTravelAloneAreRefused) {
  struct Case {
    HeaderList headers;
    const char* error;
  };
  const Case cases[] = {
      {{{"", "1"}}, "item 0 has a header name that is not an HTTP token"},
      {{{"X A", "1"}}, "not an HTTP token"},
      {{{"X:A", "1"}}, "not an HTTP token"},
      {{{"X-A", "1\r\nX-Admin: 1"}}, "item 0 has a header value with CR, LF or NUL"},
      {{{"X-A", std::string("1\0", 2)}}, "CR, LF or NUL"},
      {HeaderList(kMaxBundleItemHeaders + 1, {"x", "1"}), "has 65 headers, more than 64"},
  };
  for (const Case& c : cases) {
    std::string bundle;
    AppendBundledRequest(bundle, "/p", "", c.headers, "");
    EXPECT_THAT(DecodeBundleRequest(bundle),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.error)))
        << c.error;
    HttpResponse response;
    response.headers = c.headers;
    EXPECT_THAT(DecodeBundleResponse(EncodeBundleResponse({response}), 1),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.error)))
        << c.error;
  }
}

TEST(BundleTest, MoreThanTheItemLimitIsRefused) {
  std::string bundle;
  for (size_t i = 0; i <= kMaxBundleItems; ++i) AppendBundledRequest(bundle, "/p", "", {}, "");
  EXPECT_THAT(DecodeBundleRequest(bundle),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than 4096")));
}

}  // namespace
}  // namespace kiln::net
