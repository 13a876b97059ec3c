// recording_reply_sink.h
//
// A `ReplySink` that records what a handler answers, so handlers can be unit-tested by
// calling them directly, without a server or sockets:
//
//   auto sink = std::make_shared<RecordingReplySink>();
//   handler(request, Responder(sink));
//   HttpResponse response = sink->WaitForResponse();
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "kiln/net/responder.h"

namespace kiln::net {

// Thread-safe. A streamed reply is recorded as one response whose body is the chunks
// joined; it counts as complete once the stream is finished (or dropped).
class RecordingReplySink : public ReplySink,
                           public std::enable_shared_from_this<RecordingReplySink> {
 public:
  void Send(HttpResponse response) override {
    std::lock_guard<std::mutex> lock(mu_);
    response_ = std::move(response);
    complete_ = true;
    cv_.notify_all();
  }

  std::shared_ptr<ResponseStream> StartStream(int status, std::string content_type) override {
    std::lock_guard<std::mutex> lock(mu_);
    response_ = HttpResponse{status, std::move(content_type), "", {}};
    streamed_ = true;
    return std::make_shared<Stream>(shared_from_this());
  }

  bool ClientGone() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return client_gone_;
  }

  // Makes ClientGone() (and Write on streams) report a disconnected client.
  void set_client_gone(bool gone) {
    std::lock_guard<std::mutex> lock(mu_);
    client_gone_ = gone;
  }

  // Blocks until the reply is complete and returns it.
  HttpResponse WaitForResponse() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return complete_; });
    return *response_;
  }

  // The reply so far (for a stream: status and the chunks written yet), if any.
  std::optional<HttpResponse> response() const {
    std::lock_guard<std::mutex> lock(mu_);
    return response_;
  }

  bool complete() const {
    std::lock_guard<std::mutex> lock(mu_);
    return complete_;
  }

  bool streamed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return streamed_;
  }

  // For a stream: true if it was finished, false if it was dropped without Finish.
  bool stream_finished() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stream_finished_;
  }

 private:
  class Stream : public ResponseStream {
   public:
    explicit Stream(std::shared_ptr<RecordingReplySink> sink) : sink_(std::move(sink)) {}
    ~Stream() override { End(false); }
    bool Write(std::string chunk) override {
      std::lock_guard<std::mutex> lock(sink_->mu_);
      if (ended_ || sink_->client_gone_) return false;
      sink_->response_->body += chunk;
      return true;
    }
    void Finish() override { End(true); }
    bool closed() const override {
      std::lock_guard<std::mutex> lock(sink_->mu_);
      return ended_ || sink_->client_gone_;
    }

   private:
    void End(bool finished) {
      std::lock_guard<std::mutex> lock(sink_->mu_);
      if (ended_) return;
      ended_ = true;
      sink_->stream_finished_ = finished;
      sink_->complete_ = true;
      sink_->cv_.notify_all();
    }
    std::shared_ptr<RecordingReplySink> sink_;
    bool ended_ = false;  // guarded by sink_->mu_
  };

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<HttpResponse> response_;
  bool complete_ = false;
  bool streamed_ = false;
  bool stream_finished_ = false;
  bool client_gone_ = false;
};

}  // namespace kiln::net
