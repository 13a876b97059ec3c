#include "kiln/net/bundle.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::net {
namespace {

using ::testing::HasSubstr;

TEST(BundleTest, RequestsRoundTripInOrder) {
  std::string bundle;
  AppendBundledRequest(bundle, "/v2/models/m/infer", "application/json", R"({"inputs": []})");
  AppendBundledRequest(bundle, "/api/v1/predict?x=1", "", "");
  std::string binary("\0\xff\r\n", 4);
  AppendBundledRequest(bundle, "/ml/v4/deployments/7/predictions", "text/plain", binary);
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<BundledRequest> items, DecodeBundleRequest(bundle));
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].target, "/v2/models/m/infer");
  EXPECT_EQ(items[0].content_type, "application/json");
  EXPECT_EQ(items[0].body, R"({"inputs": []})");
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
  std::string bundle = EncodeBundleResponse(responses);
  KILN_ASSERT_OK_AND_ASSIGN(std::vector<HttpResponse> back, DecodeBundleResponse(bundle, 2));
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].status, 200);
  EXPECT_EQ(back[0].content_type, "application/json");
  EXPECT_EQ(back[0].body, R"({"y": [1]})");
  EXPECT_EQ(back[1].status, 400);
  EXPECT_EQ(back[1].body, "bad");
  EXPECT_THAT(DecodeBundleResponse(bundle, 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 responses for 3")));
  EXPECT_THAT(DecodeBundleResponse(bundle, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than the 1")));
}

TEST(BundleTest, TruncatedOrOddBundlesAreRefusedNamingTheItem) {
  std::string bundle;
  AppendBundledRequest(bundle, "/a", "application/json", "{}");
  AppendBundledRequest(bundle, "/b", "application/json", "{}");
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
  AppendBundledRequest(no_path, "predict", "", "");
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

TEST(BundleTest, MoreThanTheItemLimitIsRefused) {
  std::string bundle;
  for (size_t i = 0; i <= kMaxBundleItems; ++i) AppendBundledRequest(bundle, "/p", "", "");
  EXPECT_THAT(DecodeBundleRequest(bundle),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than 4096")));
}

}  // namespace
}  // namespace kiln::net
