// interrupt.h
//
// `ScopedFollowInterrupt`: while one is alive, Ctrl-C (SIGINT) stops following a job
// instead of killing the CLI silently: the handler prints a message saying the job keeps
// running and how to re-attach or kill it, then exits with 130. The job itself is on the
// master, so leaving it running needs no cleanup here.
#pragma once

#include <csignal>
#include <string>

namespace kiln::cli {

// At most one alive at a time; construct and destroy on the main thread.
class ScopedFollowInterrupt {
 public:
  // Installs the handler; `message` is written to stderr verbatim on SIGINT.
  explicit ScopedFollowInterrupt(std::string message);
  // Restores the previous SIGINT disposition.
  ~ScopedFollowInterrupt();

  ScopedFollowInterrupt(const ScopedFollowInterrupt&) = delete;
  ScopedFollowInterrupt& operator=(const ScopedFollowInterrupt&) = delete;

 private:
  std::string message_;
  struct sigaction previous_ {};
};

}  // namespace kiln::cli
