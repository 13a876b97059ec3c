// multipart_test.cc

#include "kiln/net/multipart.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::net {
namespace {

using ::testing::HasSubstr;
using ::testing::Optional;

// A form as Python's requests writes it: files={'file': ...}, data={'data': ...}.
std::string RequestsStyleForm() {
  return "--b0undary\r\n"
         "Content-Disposition: form-data; name=\"data\"\r\n"
         "\r\n"
         "{\"hpoName\": \"x\"}\r\n"
         "--b0undary\r\n"
         "Content-Disposition: form-data; name=\"file\"; filename=\"model.modelDir.tar\"\r\n"
         "Content-Type: application/octet-stream\r\n"
         "\r\n"
         "\x1f\x8b binary\r\n\r\n--not-it\r\n"
         "\r\n"
         "--b0undary--\r\n";
}

TEST(MultipartBoundaryTest, ReadsPlainAndQuotedBoundaries) {
  EXPECT_EQ(MultipartBoundary("multipart/form-data; boundary=abc123").value(), "abc123");
  EXPECT_EQ(MultipartBoundary("Multipart/Form-Data;BOUNDARY=\"a b:c\"").value(), "a b:c");
  EXPECT_EQ(MultipartBoundary("multipart/form-data; charset=utf-8; boundary=----WebKit12").value(),
            "----WebKit12");
}

TEST(MultipartBoundaryTest, RefusesOtherTypesAndMissingBoundaries) {
  EXPECT_THAT(MultipartBoundary("application/json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not a multipart form: send the form as multipart/form-data")));
  EXPECT_THAT(MultipartBoundary(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got Content-Type none")));
  EXPECT_THAT(MultipartBoundary("multipart/form-data"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no boundary")));
  EXPECT_THAT(MultipartBoundary("multipart/form-data; boundary="),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no boundary")));
  EXPECT_THAT(MultipartBoundary("multipart/form-data; boundary=\"abc"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unterminated quote")));
  EXPECT_THAT(MultipartBoundary("multipart/form-data; boundary=" + std::string(71, 'x')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("longer than 70")));
  EXPECT_THAT(MultipartBoundary("multipart/form-data; boundary=\"ab \""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ends in a space")));
  EXPECT_THAT(MultipartBoundary("multipart/form-data; boundary=\"a\x01\""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("control character")));
}

TEST(ParseMultipartTest, SplitsFieldsAndFilesBinarySafe) {
  std::string body = RequestsStyleForm();
  KILN_ASSERT_OK_AND_ASSIGN(auto parts, ParseMultipart(body, "b0undary"));
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].name, "data");
  EXPECT_EQ(parts[0].filename, std::nullopt);
  EXPECT_EQ(parts[0].body, "{\"hpoName\": \"x\"}");
  EXPECT_EQ(parts[1].name, "file");
  EXPECT_THAT(parts[1].filename, Optional(std::string("model.modelDir.tar")));
  EXPECT_EQ(parts[1].content_type, "application/octet-stream");
  // CRLFs and "--" inside the data stay; only the CRLF before the boundary is dropped.
  EXPECT_EQ(parts[1].body, "\x1f\x8b binary\r\n\r\n--not-it\r\n");
}

TEST(ParseMultipartTest, KeepsNulAndHighBytes) {
  std::string payload("a\0b\xff\r\n\0", 7);
  std::string body = "--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x\"\r\n\r\n" +
                     payload + "\r\n--B--";
  KILN_ASSERT_OK_AND_ASSIGN(auto parts, ParseMultipart(body, "B"));
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].body, payload);
}

TEST(ParseMultipartTest, IgnoresPreambleEpilogueAndPadding) {
  std::string body =
      "preamble line\r\n--X  \t\r\n"
      "content-disposition: FORM-DATA; NAME=a\r\n\r\n1\r\n"
      "--X\r\n"
      "Content-Disposition: form-data; name=\"b\"\r\n\r\n\r\n"
      "--X--  epilogue\r\nmore";
  KILN_ASSERT_OK_AND_ASSIGN(auto parts, ParseMultipart(body, "X"));
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].name, "a");
  EXPECT_EQ(parts[0].body, "1");
  EXPECT_EQ(parts[1].name, "b");
  EXPECT_EQ(parts[1].body, "");
}

TEST(ParseMultipartTest, AcceptsBareLineFeedsInHeaders) {
  std::string body = "--X\nContent-Disposition: form-data; name=\"a\"\n\nvalue\r\n--X--\n";
  KILN_ASSERT_OK_AND_ASSIGN(auto parts, ParseMultipart(body, "X"));
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].body, "value");
}

TEST(ParseMultipartTest, ReadsQuotedNamesAndExtendedFilenames) {
  std::string body =
      "--X\r\nContent-Disposition: form-data; name=\"a;b\\\"c\"; filename=\"plain.py\"; "
      "filename*=UTF-8''na%C3%AFve.py\r\n\r\nv\r\n--X--";
  KILN_ASSERT_OK_AND_ASSIGN(auto parts, ParseMultipart(body, "X"));
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].name, "a;b\"c");
  EXPECT_THAT(parts[0].filename, Optional(std::string("na\xC3\xAFve.py")));
}

TEST(ParseMultipartTest, AnEmptyFormHasNoParts) {
  KILN_ASSERT_OK_AND_ASSIGN(auto parts, ParseMultipart("--X--\r\n", "X"));
  EXPECT_TRUE(parts.empty());
}

TEST(ParseMultipartTest, FindPartReturnsTheFirstOfAName) {
  std::string body =
      "--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
      "--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n2\r\n--X--";
  KILN_ASSERT_OK_AND_ASSIGN(auto parts, ParseMultipart(body, "X"));
  ASSERT_NE(FindPart(parts, "a"), nullptr);
  EXPECT_EQ(FindPart(parts, "a")->body, "1");
  EXPECT_EQ(FindPart(parts, "b"), nullptr);
}

TEST(ParseMultipartTest, RefusesABodyWithoutTheBoundary) {
  EXPECT_THAT(ParseMultipart("", "X"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("holds no boundary line \"--X\"")));
  EXPECT_THAT(ParseMultipart("--Y\r\n\r\n--Y--", "X"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("another boundary")));
}

TEST(ParseMultipartTest, RefusesUnterminatedParts) {
  std::string head = "--X\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n";
  EXPECT_THAT(ParseMultipart(head + "half of the bytes", "X"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("part 1 (\"file\") of the multipart body is not ended by the "
                                 "boundary (was the upload cut short?)")));
  EXPECT_THAT(ParseMultipart("--X\r\nContent-Disposition: form-data; name=\"a\"\r\n", "X"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("headers are not ended by an empty line")));
  EXPECT_THAT(ParseMultipart(head + "v\r\n--X", "X"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("ends without its closing boundary \"--X--\" after 1 part(s)")));
}

TEST(ParseMultipartTest, RefusesPartsWithoutANameOrWithAnotherDisposition) {
  EXPECT_THAT(ParseMultipart("--X\r\nContent-Type: text/plain\r\n\r\nv\r\n--X--", "X"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("part 1 of the multipart body has no Content-Disposition")));
  EXPECT_THAT(ParseMultipart("--X\r\nContent-Disposition: form-data\r\n\r\nv\r\n--X--", "X"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("with a name")));
  EXPECT_THAT(
      ParseMultipart("--X\r\nContent-Disposition: attachment; name=a\r\n\r\nv\r\n--X--", "X"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"form-data\"")));
  EXPECT_THAT(ParseMultipart("--X\r\nno colon here\r\n\r\nv\r\n--X--", "X"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed header line")));
}

TEST(ParseMultipartTest, RefusesGarbageAfterABoundary) {
  EXPECT_THAT(
      ParseMultipart("--X\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--Xtra\r\n", "X"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("instead of a line end")));
}

TEST(ParseMultipartTest, EnforcesLimits) {
  std::string many;
  for (int i = 0; i < 3; ++i) {
    many += "--X\r\nContent-Disposition: form-data; name=\"p\"\r\n\r\nv\r\n";
  }
  many += "--X--";
  EXPECT_THAT(ParseMultipart(many, "X", MultipartLimits{.max_parts = 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than 2 parts")));
  KILN_EXPECT_OK(ParseMultipart(many, "X", MultipartLimits{.max_parts = 3}));
  std::string big_header =
      "--X\r\nContent-Disposition: form-data; name=\"p\"\r\nX-Pad: " + std::string(100, 'x') +
      "\r\n\r\nv\r\n--X--";
  EXPECT_THAT(ParseMultipart(big_header, "X", MultipartLimits{.max_header_bytes = 64}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bytes of headers")));
}

TEST(ParseMultipartRequestTest, TakesTheBoundaryFromTheContentType) {
  HttpRequest req;
  req.headers.emplace_back("content-type", "multipart/form-data; boundary=b0undary");
  req.body = RequestsStyleForm();
  KILN_ASSERT_OK_AND_ASSIGN(auto parts, ParseMultipartRequest(req));
  EXPECT_EQ(parts.size(), 2u);
  req.headers.clear();
  EXPECT_THAT(ParseMultipartRequest(req),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a multipart form")));
}

}  // namespace
}  // namespace kiln::net
