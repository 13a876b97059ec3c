// status.h
//
// Error-handling vocabulary shared by every component: Kiln's code does not throw;
// fallible functions return `absl::Status` or `absl::StatusOr<T>` and propagate them
// with the macros below. A broken internal invariant is a crash (`KILN_CHECK`), never a
// Status.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KILN_INTERNAL_CONCAT_(a, b) a##b
#define KILN_INTERNAL_CONCAT(a, b) KILN_INTERNAL_CONCAT_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define KILN_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status kiln_status_ = (expr);        \
    if (!kiln_status_.ok()) return kiln_status_; \
  } while (false)

// `KILN_ASSIGN_OR_RETURN(auto x, F())` declares `x` from F()'s value, or returns F()'s
// error from the enclosing function.
#define KILN_ASSIGN_OR_RETURN(lhs, expr) \
  KILN_INTERNAL_ASSIGN_OR_RETURN(KILN_INTERNAL_CONCAT(kiln_statusor_, __LINE__), lhs, expr)
#define KILN_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()

// Crashes with a message when an internal invariant does not hold. Always on, also in
// release builds: continuing past a broken invariant corrupts stored state.
#define KILN_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: KILN_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (false)

// Crashes unless `status` is OK; for calls that cannot fail unless the program is wrong.
#define KILN_CHECK_OK(status)                                                       \
  do {                                                                              \
    const ::absl::Status& kiln_check_status_ = (status);                            \
    if (!kiln_check_status_.ok()) {                                                 \
      std::fprintf(stderr, "%s:%d: KILN_CHECK_OK failed: %s\n", __FILE__, __LINE__, \
                   kiln_check_status_.ToString().c_str());                          \
      std::abort();                                                                 \
    }                                                                               \
  } while (false)
