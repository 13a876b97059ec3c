// router.cc

#include "kiln/net/router.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "kiln/base/status.h"

namespace kiln::net {
namespace {

// Splits "/a/b/" into {"a", "b"}; "/" into {}. One trailing slash is ignored.
std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> segments;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  if (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (path.empty()) return segments;
  while (true) {
    size_t slash = path.find('/');
    segments.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return segments;
}

}  // namespace

void Router::Add(std::string method, std::string pattern, Handler handler, RouteOptions options) {
  KILN_CHECK(!method.empty());
  KILN_CHECK(!pattern.empty() && pattern.front() == '/');
  KILN_CHECK(handler != nullptr);
  auto entry = std::make_unique<Entry>();
  for (std::string_view piece : SplitPath(pattern)) {
    KILN_CHECK(!piece.empty());  // "//" in a pattern
    Segment segment;
    if (piece.front() == '{') {
      KILN_CHECK(piece.size() > 2 && piece.back() == '}');
      segment.text = std::string(piece.substr(1, piece.size() - 2));
      segment.is_param = true;
      KILN_CHECK(segment.text.find_first_of("{}/") == std::string::npos);
      for (const Segment& other : entry->segments) {
        KILN_CHECK(!(other.is_param && other.text == segment.text));  // repeated name
      }
    } else {
      KILN_CHECK(piece.find_first_of("{}") == std::string_view::npos);
      segment.text = std::string(piece);
    }
    entry->segments.push_back(std::move(segment));
  }
  for (const auto& existing : entries_) {
    if (existing->route.method != method) continue;
    if (existing->segments.size() != entry->segments.size()) continue;
    bool same_shape = true;
    for (size_t i = 0; i < entry->segments.size() && same_shape; ++i) {
      const Segment& a = existing->segments[i];
      const Segment& b = entry->segments[i];
      same_shape = a.is_param == b.is_param && (a.is_param || a.text == b.text);
    }
    if (same_shape) {
      std::fprintf(stderr, "duplicate route %s %s (already added as %s)\n", method.c_str(),
                   pattern.c_str(), existing->route.pattern.c_str());
    }
    KILN_CHECK(!same_shape);
  }
  entry->route = Route{std::move(method), std::move(pattern), std::move(handler), options};
  entries_.push_back(std::move(entry));
}

bool Router::Matches(const Entry& entry, const std::vector<std::string_view>& segments) {
  if (entry.segments.size() != segments.size()) return false;
  for (size_t i = 0; i < segments.size(); ++i) {
    const Segment& segment = entry.segments[i];
    if (segment.is_param) {
      if (segments[i].empty()) return false;
    } else if (segment.text != segments[i]) {
      return false;
    }
  }
  return true;
}

bool Router::MoreSpecific(const Entry& a, const Entry& b) {
  for (size_t i = 0; i < a.segments.size() && i < b.segments.size(); ++i) {
    if (a.segments[i].is_param != b.segments[i].is_param) return !a.segments[i].is_param;
  }
  return false;
}

const Route* Router::Match(HttpRequest& request, bool* method_not_allowed) const {
  if (method_not_allowed != nullptr) *method_not_allowed = false;
  std::vector<std::string_view> segments = SplitPath(request.path);
  const Entry* best = nullptr;
  bool path_known = false;
  for (const auto& entry : entries_) {
    if (!Matches(*entry, segments)) continue;
    path_known = true;
    if (entry->route.method != request.method) continue;
    if (best == nullptr || MoreSpecific(*entry, *best)) best = entry.get();
  }
  if (best == nullptr) {
    if (method_not_allowed != nullptr) *method_not_allowed = path_known;
    return nullptr;
  }
  request.path_params.clear();
  for (size_t i = 0; i < segments.size(); ++i) {
    if (best->segments[i].is_param) {
      request.path_params[best->segments[i].text] = std::string(segments[i]);
    }
  }
  return &best->route;
}

std::vector<std::string> Router::AllowedMethods(std::string_view path) const {
  std::vector<std::string_view> segments = SplitPath(path);
  std::vector<std::string> methods;
  for (const auto& entry : entries_) {
    if (Matches(*entry, segments)) methods.push_back(entry->route.method);
  }
  std::sort(methods.begin(), methods.end());
  methods.erase(std::unique(methods.begin(), methods.end()), methods.end());
  return methods;
}

}  // namespace kiln::net
