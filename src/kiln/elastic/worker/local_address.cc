#include "kiln/elastic/worker/local_address.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kiln::elastic::worker {
namespace {

struct HostPort {
  std::string host;
  std::string port;
};

absl::StatusOr<HostPort> SplitUrl(std::string_view url) {
  std::string_view rest = url;
  if (size_t scheme = rest.find("://"); scheme != std::string_view::npos) {
    rest.remove_prefix(scheme + 3);
  }
  rest = rest.substr(0, rest.find_first_of("/?#"));
  HostPort out{.host = "", .port = "80"};
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad URL '", std::string(url), "': unterminated '[' in the host"));
    }
    out.host = std::string(rest.substr(1, close - 1));
    if (close + 1 < rest.size() && rest[close + 1] == ':') {
      out.port = std::string(rest.substr(close + 2));
    }
  } else {
    const size_t colon = rest.rfind(':');
    out.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) out.port = std::string(rest.substr(colon + 1));
  }
  if (out.host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("bad URL '", std::string(url), "': no host"));
  }
  if (out.port.empty()) out.port = "80";
  return out;
}

// The local address of a UDP socket connected to `addr`; connect() on UDP only picks the
// route and the source address, it sends nothing.
absl::StatusOr<std::string> LocalAddressOf(const addrinfo& addr) {
  const int fd = socket(addr.ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  const bool ok = connect(fd, addr.ai_addr, addr.ai_addrlen) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0;
  const int saved_errno = errno;
  close(fd);
  if (!ok) return absl::UnavailableError(std::strerror(saved_errno));
  char text[INET6_ADDRSTRLEN] = {};
  const void* raw =
      local.ss_family == AF_INET
          ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
          : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
  if (inet_ntop(local.ss_family, raw, text, sizeof(text)) == nullptr) {
    return absl::UnavailableError(absl::StrCat("inet_ntop: ", std::strerror(errno)));
  }
  return std::string(text);
}

}  // namespace

absl::StatusOr<std::string> LocalAddressToward(std::string_view url) {
  auto target = SplitUrl(url);
  if (!target.ok()) return target.status();
  std::string last_error = "no address";
  // IPv4 first: Gloo and the c10d store handle it everywhere, and a dual-stack master
  // resolving "localhost" to ::1 first should not push the workers onto IPv6.
  for (const int family : {AF_INET, AF_INET6}) {
    addrinfo hints{};
    hints.ai_family = family;
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo* found = nullptr;
    const int rc = getaddrinfo(target->host.c_str(), target->port.c_str(), &hints, &found);
    if (rc != 0) {
      last_error = gai_strerror(rc);
      continue;
    }
    for (const addrinfo* addr = found; addr != nullptr; addr = addr->ai_next) {
      auto local = LocalAddressOf(*addr);
      if (local.ok()) {
        freeaddrinfo(found);
        return local;
      }
      last_error = std::string(local.status().message());
    }
    freeaddrinfo(found);
  }
  return absl::UnavailableError(absl::StrCat("cannot find the local address toward ", target->host,
                                             ":", target->port, ": ", last_error));
}

}  // namespace kiln::elastic::worker
