// router.h
//
// Defines `Router`, the table from (method, path pattern) to handler that an HttpServer
// serves, and `Handler`, the signature every REST handler has. Patterns are paths whose
// "{name}" segments capture one non-empty path segment into `HttpRequest::path_params`.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/net/http_types.h"
#include "kiln/net/responder.h"

namespace kiln::net {

// A handler runs on one of the server's io threads. It must not block; it replies through
// `responder` now or later. `request` stays valid until the reply has been handed to the
// responder (copy what you need before replying from another thread).
using Handler = std::function<void(HttpRequest& request, Responder responder)>;

struct RouteOptions {
  // Largest accepted request body. Checked against Content-Length before the body is read
  // and against the bytes actually received for chunked bodies: 413 with a message.
  size_t max_body_bytes = 1 << 20;
};

struct Route {
  std::string method;
  std::string pattern;
  Handler handler;
  RouteOptions options;
};

// Built once at startup, then read-only: Add is not thread-safe, Match and AllowedMethods
// are (they are const).
class Router {
 public:
  // Adds a route. `pattern` starts with '/'; a segment "{name}" matches any one non-empty
  // segment. When several patterns match a path, the one whose first differing segment is
  // literal wins ("/jobs/search" over "/jobs/{id}"). A duplicate (method, pattern shape),
  // or a malformed pattern, is a programming error and crashes (KILN_CHECK).
  void Add(std::string method, std::string pattern, Handler handler, RouteOptions options = {});

  // Finds the route for `request.method` and the decoded `request.path` (one trailing '/'
  // is ignored) and fills `request.path_params`. Returns nullptr when none matches; then
  // `*method_not_allowed` (if given) says whether the path matched under another method.
  const Route* Match(HttpRequest& request, bool* method_not_allowed = nullptr) const;

  // Methods that have a route matching `path`, sorted; empty when the path is unknown.
  std::vector<std::string> AllowedMethods(std::string_view path) const;

  size_t size() const { return entries_.size(); }

 private:
  struct Segment {
    std::string text;  // the literal, or the parameter name
    bool is_param = false;
  };
  struct Entry {
    Route route;
    std::vector<Segment> segments;
  };

  static bool Matches(const Entry& entry, const std::vector<std::string_view>& segments);
  // True if `a` is more specific than `b` (both matching the same path).
  static bool MoreSpecific(const Entry& a, const Entry& b);

  // unique_ptr keeps the Route addresses Match hands out stable across moves of the Router.
  std::vector<std::unique_ptr<Entry>> entries_;
};

}  // namespace kiln::net
