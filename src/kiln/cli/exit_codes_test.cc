#include "kiln/cli/exit_codes.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln::cli {
namespace {

TEST(ExitCodeForStatusTest, MapsEachCodeToTheDocumentedNumber) {
  EXPECT_EQ(ExitCodeForStatus(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCodeForStatus(absl::InvalidArgumentError("")), 2);
  EXPECT_EQ(ExitCodeForStatus(absl::OutOfRangeError("")), 2);
  EXPECT_EQ(ExitCodeForStatus(absl::UnauthenticatedError("")), 3);
  EXPECT_EQ(ExitCodeForStatus(absl::PermissionDeniedError("")), 3);
  EXPECT_EQ(ExitCodeForStatus(absl::NotFoundError("")), 4);
  EXPECT_EQ(ExitCodeForStatus(absl::UnavailableError("")), 5);
  EXPECT_EQ(ExitCodeForStatus(absl::DeadlineExceededError("")), 5);
  EXPECT_EQ(ExitCodeForStatus(absl::FailedPreconditionError("")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::InternalError("")), 1);
  EXPECT_EQ(ExitCodeForStatus(absl::AlreadyExistsError("")), 1);
}

TEST(ExitCodeHelpTest, ListsEveryCode) {
  std::string help(ExitCodeHelp());
  for (const char* code : {"0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130", "137"}) {
    EXPECT_THAT(help, ::testing::HasSubstr(code));
  }
}

}  // namespace
}  // namespace kiln::cli
