#include "kiln/cli/interrupt.h"

#include <unistd.h>

#include <atomic>

#include "kiln/cli/exit_codes.h"

namespace kiln::cli {
namespace {

// The handler may only touch async-signal-safe state: a pointer to a buffer that stays
// alive (owned by the scope object) for as long as the handler is installed.
std::atomic<const std::string*> g_message{nullptr};

void OnInterrupt(int) {
  const std::string* message = g_message.load();
  if (message != nullptr) {
    ssize_t ignored = write(STDERR_FILENO, message->data(), message->size());
    (void)ignored;
  }
  // _exit, not exit: atexit handlers and stdio are not async-signal-safe.
  _exit(kExitInterrupted);
}

}  // namespace

ScopedFollowInterrupt::ScopedFollowInterrupt(std::string message) : message_(std::move(message)) {
  g_message.store(&message_);
  struct sigaction action {};
  action.sa_handler = OnInterrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &previous_);
}

ScopedFollowInterrupt::~ScopedFollowInterrupt() {
  sigaction(SIGINT, &previous_, nullptr);
  g_message.store(nullptr);
}

}  // namespace kiln::cli
