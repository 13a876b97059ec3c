// http_status_test.cc

#include "kiln/net/http_status.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kiln/base/json.h"
#include "kiln/base/testing/status_matchers.h"

namespace kiln::net {
namespace {

using ::testing::HasSubstr;

TEST(HttpStatusFromStatusTest, MapsCanonicalCodes) {
  EXPECT_EQ(HttpStatusFromStatus(absl::OkStatus()), 200);
  EXPECT_EQ(HttpStatusFromStatus(absl::InvalidArgumentError("x")), 400);
  EXPECT_EQ(HttpStatusFromStatus(absl::OutOfRangeError("x")), 400);
  EXPECT_EQ(HttpStatusFromStatus(absl::UnauthenticatedError("x")), 401);
  EXPECT_EQ(HttpStatusFromStatus(absl::PermissionDeniedError("x")), 403);
  EXPECT_EQ(HttpStatusFromStatus(absl::NotFoundError("x")), 404);
  EXPECT_EQ(HttpStatusFromStatus(absl::AlreadyExistsError("x")), 409);
  EXPECT_EQ(HttpStatusFromStatus(absl::FailedPreconditionError("x")), 409);
  EXPECT_EQ(HttpStatusFromStatus(absl::AbortedError("x")), 409);
  EXPECT_EQ(HttpStatusFromStatus(absl::ResourceExhaustedError("x")), 429);
  EXPECT_EQ(HttpStatusFromStatus(absl::UnimplementedError("x")), 501);
  EXPECT_EQ(HttpStatusFromStatus(absl::UnavailableError("x")), 503);
  EXPECT_EQ(HttpStatusFromStatus(absl::DeadlineExceededError("x")), 504);
  EXPECT_EQ(HttpStatusFromStatus(absl::InternalError("x")), 500);
  EXPECT_EQ(HttpStatusFromStatus(absl::DataLossError("x")), 500);
  EXPECT_EQ(HttpStatusFromStatus(absl::UnknownError("x")), 500);
}

TEST(HttpStatusFromStatusTest, PrefersAnAttachedHttpStatus) {
  EXPECT_EQ(HttpStatusFromStatus(PayloadTooLargeError("too big")), 413);
  EXPECT_EQ(HttpStatusFromStatus(WithHttpStatus(absl::InvalidArgumentError("m"), 405)), 405);
  // Out-of-range values are ignored.
  EXPECT_EQ(HttpStatusFromStatus(WithHttpStatus(absl::NotFoundError("m"), 200)), 404);
  EXPECT_EQ(HttpStatusFromStatus(WithHttpStatus(absl::NotFoundError("m"), 600)), 404);
}

TEST(ErrorResponseTest, HasCodeAndMessageInJsonBody) {
  HttpResponse response = ErrorResponse(absl::NotFoundError("job 7 not found"));
  EXPECT_EQ(response.status, 404);
  EXPECT_EQ(response.content_type, "application/json");
  KILN_ASSERT_OK_AND_ASSIGN(base::Json body, base::ParseJson(response.body));
  EXPECT_EQ(body["error"]["code"], "NOT_FOUND");
  EXPECT_EQ(body["error"]["message"], "job 7 not found");
  EXPECT_TRUE(response.headers.empty());
}

TEST(ErrorResponseTest, AsksForBasicCredentialsOn401) {
  HttpResponse response = ErrorResponse(absl::UnauthenticatedError("who are you"));
  EXPECT_EQ(response.status, 401);
  EXPECT_EQ(response.Header("www-authenticate"), "Basic realm=\"kiln\"");
}

TEST(ErrorResponseTest, TurnsAnOkStatusInto500) {
  EXPECT_EQ(ErrorResponse(absl::OkStatus()).status, 500);
}

TEST(ErrorResponseTest, SurvivesInvalidUtf8InTheMessage) {
  HttpResponse response = ErrorResponse(absl::InvalidArgumentError("bad \xff byte"));
  EXPECT_EQ(response.status, 400);
  KILN_EXPECT_OK(base::ParseJson(response.body));
}

TEST(StatusFromHttpResponseTest, IsOkFor2xx) {
  HttpResponse response;
  response.status = 204;
  KILN_EXPECT_OK(StatusFromHttpResponse(response));
}

TEST(StatusFromHttpResponseTest, RoundTripsErrorResponses) {
  for (absl::Status status :
       {absl::InvalidArgumentError("bad field 'lr'"), absl::NotFoundError("no job 9"),
        absl::AlreadyExistsError("exists"), absl::AbortedError("conflict"),
        absl::UnauthenticatedError("login"), PayloadTooLargeError("body too large")}) {
    absl::Status back = StatusFromHttpResponse(ErrorResponse(status));
    EXPECT_EQ(back.code(), status.code()) << status;
    EXPECT_EQ(back.message(), status.message());
  }
}

TEST(StatusFromHttpResponseTest, FallsBackToHttpStatusAndBodyText) {
  HttpResponse response;
  response.status = 503;
  response.content_type = "text/html";
  response.body = "<html>Service Unavailable</html>";
  EXPECT_THAT(StatusFromHttpResponse(response),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("HTTP 503: <html>Service Unavailable</html>")));
  response.status = 404;
  response.body = "";
  EXPECT_THAT(StatusFromHttpResponse(response),
              StatusIs(absl::StatusCode::kNotFound, ::testing::Eq("HTTP 404")));
  response.status = 418;
  EXPECT_THAT(StatusFromHttpResponse(response),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(StatusFromHttpResponseTest, TruncatesLongBodies) {
  HttpResponse response;
  response.status = 500;
  response.body = std::string(10000, 'x');
  absl::Status status = StatusFromHttpResponse(response);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_LT(status.message().size(), 300u);
}

TEST(StatusFromHttpResponseTest, IgnoresUnknownOrOkCodeNames) {
  HttpResponse response;
  response.status = 409;
  response.body = R"({"error":{"code":"OK","message":"odd"}})";
  EXPECT_THAT(StatusFromHttpResponse(response),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::Eq("odd")));
  response.body = R"({"error":{"code":"WHATEVER"}})";
  EXPECT_THAT(StatusFromHttpResponse(response),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("HTTP 409")));
}

}  // namespace
}  // namespace kiln::net
