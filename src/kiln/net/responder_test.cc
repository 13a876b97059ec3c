// responder_test.cc

#include "kiln/net/responder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "kiln/net/testing/recording_reply_sink.h"

namespace kiln::net {
namespace {

using ::testing::HasSubstr;

TEST(ResponderTest, SendsOnce) {
  auto sink = std::make_shared<RecordingReplySink>();
  {
    Responder responder(sink);
    responder.Send(HttpResponse{201, "text/plain", "made", {}});
    EXPECT_TRUE(responder.replied());
    responder.Send(HttpResponse{500, "text/plain", "second", {}});  // ignored
  }
  HttpResponse response = sink->WaitForResponse();
  EXPECT_EQ(response.status, 201);
  EXPECT_EQ(response.body, "made");
}

TEST(ResponderTest, DroppingTheLastCopyWithoutReplyingSends500) {
  auto sink = std::make_shared<RecordingReplySink>();
  {
    Responder responder(sink);
    Responder copy = responder;
  }
  HttpResponse response = sink->WaitForResponse();
  EXPECT_EQ(response.status, 500);
  EXPECT_THAT(response.body, HasSubstr("without replying"));
}

TEST(ResponderTest, CopiesShareOneReplyAcrossThreads) {
  auto sink = std::make_shared<RecordingReplySink>();
  Responder responder(sink);
  std::thread other([copy = responder]() mutable { copy.Send(HttpResponse{204, "", "", {}}); });
  other.join();
  EXPECT_TRUE(responder.replied());
  EXPECT_EQ(sink->WaitForResponse().status, 204);
}

TEST(ResponderTest, StreamsAndReportsClientGone) {
  auto sink = std::make_shared<RecordingReplySink>();
  Responder responder(sink);
  std::shared_ptr<ResponseStream> stream = responder.StartStream(200, "text/plain");
  EXPECT_TRUE(stream->Write("a"));
  EXPECT_TRUE(stream->Write("b"));
  EXPECT_FALSE(responder.ClientGone());
  sink->set_client_gone(true);
  EXPECT_TRUE(responder.ClientGone());
  EXPECT_FALSE(stream->Write("c"));
  EXPECT_TRUE(stream->closed());
  stream->Finish();
  EXPECT_EQ(sink->WaitForResponse().body, "ab");
  EXPECT_TRUE(sink->stream_finished());
}

TEST(ResponderTest, SecondStartStreamGetsAClosedStream) {
  auto sink = std::make_shared<RecordingReplySink>();
  Responder responder(sink);
  responder.Send(HttpResponse{});
  std::shared_ptr<ResponseStream> stream = responder.StartStream(200, "text/plain");
  ASSERT_NE(stream, nullptr);
  EXPECT_TRUE(stream->closed());
  EXPECT_FALSE(stream->Write("x"));
}

}  // namespace
}  // namespace kiln::net
