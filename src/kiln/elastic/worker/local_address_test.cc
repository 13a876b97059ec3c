#include "kiln/elastic/worker/local_address.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::elastic::worker {
namespace {

using ::testing::HasSubstr;

TEST(LocalAddressTowardTest, LoopbackMasterIsReachedFromLoopback) {
  EXPECT_EQ(LocalAddressToward("http://127.0.0.1:8470").value_or(""), "127.0.0.1");
  EXPECT_EQ(LocalAddressToward("http://127.0.0.1").value_or(""), "127.0.0.1");
  EXPECT_EQ(LocalAddressToward("http://127.0.0.1:8470/prefix").value_or(""), "127.0.0.1");
}

TEST(LocalAddressTowardTest, UrlWithoutAHostIsRejected) {
  EXPECT_THAT(LocalAddressToward("http://:8470"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no host")));
  EXPECT_THAT(LocalAddressToward("http://[::1"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unterminated")));
}

}  // namespace
}  // namespace kiln::elastic::worker
