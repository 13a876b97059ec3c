// responder.cc

#include "kiln/net/responder.h"

#include <atomic>
#include <utility>

#include "absl/status/status.h"
#include "kiln/base/logging.h"
#include "kiln/base/status.h"
#include "kiln/net/http_status.h"

namespace kiln::net {
namespace {

// Handed out for a second StartStream call so that callers never see a null stream.
class ClosedResponseStream : public ResponseStream {
 public:
  bool Write(std::string) override { return false; }
  void Finish() override {}
  bool closed() const override { return true; }
};

}  // namespace

// Shared by all copies of one Responder; its destructor is what notices a handler that
// dropped the request without replying.
struct Responder::State {
  explicit State(std::shared_ptr<ReplySink> s) : sink(std::move(s)) {}
  ~State() {
    if (!replied.load()) {
      sink->Send(ErrorResponse(absl::InternalError("the handler finished without replying")));
    }
  }
  // Returns true for the first caller only.
  bool Claim(const char* what) {
    if (!replied.exchange(true)) return true;
    spdlog::error("HTTP handler bug: {} after the request was already answered; ignored", what);
    return false;
  }

  std::shared_ptr<ReplySink> sink;
  std::atomic<bool> replied{false};
};

Responder::Responder(std::shared_ptr<ReplySink> sink)
    : state_(std::make_shared<State>(std::move(sink))) {
  KILN_CHECK(state_->sink != nullptr);
}

void Responder::Send(HttpResponse response) {
  if (!state_->Claim("Send")) return;
  state_->sink->Send(std::move(response));
}

std::shared_ptr<ResponseStream> Responder::StartStream(int status, std::string content_type) {
  if (!state_->Claim("StartStream")) return std::make_shared<ClosedResponseStream>();
  std::shared_ptr<ResponseStream> stream =
      state_->sink->StartStream(status, std::move(content_type));
  if (stream == nullptr) return std::make_shared<ClosedResponseStream>();
  return stream;
}

bool Responder::ClientGone() const { return state_->sink->ClientGone(); }

bool Responder::replied() const { return state_->replied.load(); }

}  // namespace kiln::net
