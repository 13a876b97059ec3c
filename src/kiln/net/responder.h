// responder.h
//
// Defines `Responder`, the reply handle every HTTP handler receives, and
// `ResponseStream`, a chunked response in progress. A handler may reply at once or keep a
// copy of its Responder and reply later from any thread (long-polls, work handed to a
// loop). `ReplySink` is the seam between a Responder and the connection that carries the
// reply; the server implements it, and so can a test that calls a handler directly.
#pragma once

#include <memory>
#include <string>

#include "kiln/net/http_types.h"

namespace kiln::net {

// A chunked response being written. Thread-safe: Write and Finish may be called from any
// thread; chunks go out in the order Write was called.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;

  // Queues `chunk` (empty chunks are skipped). Returns false, dropping the chunk, once the
  // stream is finished or the client is gone, and also when the client has fallen so far
  // behind that the queue is over its bound (the connection is then closed).
  virtual bool Write(std::string chunk) = 0;

  // Sends the final chunk; the response is complete. Later calls do nothing. Dropping the
  // last reference without calling Finish cuts the response short (the connection is
  // closed), so the client can tell it is incomplete.
  virtual void Finish() = 0;

  // True after Finish or once the client is gone.
  virtual bool closed() const = 0;
};

// The connection side of a Responder. Implementations are thread-safe.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  virtual void Send(HttpResponse response) = 0;
  virtual std::shared_ptr<ResponseStream> StartStream(int status, std::string content_type) = 0;
  virtual bool ClientGone() const = 0;
};

// The reply handle given to every handler. Cheap to copy; all copies share one reply.
// Exactly one of Send / StartStream must be called, possibly later and from any thread.
// If the last copy is dropped without a reply, the client gets a 500. A second reply is a
// handler bug: it is logged and ignored. Thread-safe.
class Responder {
 public:
  explicit Responder(std::shared_ptr<ReplySink> sink);

  // Sends `response` (Content-Length is set from the body).
  void Send(HttpResponse response);

  // Starts a chunked response (Transfer-Encoding: chunked; for an HTTP/1.0 client the body
  // is sent raw and the connection closed at the end). Never returns null; after a
  // previous reply the returned stream is already closed.
  std::shared_ptr<ResponseStream> StartStream(int status, std::string content_type);

  // True once the client has disconnected (useful for long-polls). Does not block.
  bool ClientGone() const;

  // True once Send or StartStream has been called on any copy.
  bool replied() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace kiln::net
