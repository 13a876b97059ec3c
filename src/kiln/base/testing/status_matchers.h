// status_matchers.h
//
// GoogleTest helpers for absl::Status (this Abseil version ships none).
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/base/status.h"

namespace kiln::testing_internal {
inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}
}  // namespace kiln::testing_internal

#define KILN_EXPECT_OK(expr)                                  \
  EXPECT_TRUE(::kiln::testing_internal::GetStatus(expr).ok()) \
      << ::kiln::testing_internal::GetStatus(expr)
#define KILN_ASSERT_OK(expr)                                  \
  ASSERT_TRUE(::kiln::testing_internal::GetStatus(expr).ok()) \
      << ::kiln::testing_internal::GetStatus(expr)
#define KILN_ASSERT_OK_AND_ASSIGN(lhs, expr)                \
  auto KILN_INTERNAL_CONCAT(kiln_t_, __LINE__) = (expr);    \
  ASSERT_TRUE(KILN_INTERNAL_CONCAT(kiln_t_, __LINE__).ok()) \
      << KILN_INTERNAL_CONCAT(kiln_t_, __LINE__).status();  \
  lhs = std::move(KILN_INTERNAL_CONCAT(kiln_t_, __LINE__)).value()

// EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound, HasSubstr("job 7")))
MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& s = ::kiln::testing_internal::GetStatus(arg);
  if (s.code() != code) {
    *result_listener << "code is " << absl::StatusCodeToString(s.code()) << " (" << s.message()
                     << ")";
    return false;
  }
  return ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}
