// local_address.h
//
// `LocalAddressToward`: the address of this host on the route to a server, which is the
// address an elastic worker announces to its peers (they reach it the way it reaches the
// master). Kept apart from the HTTP code because the c10d side needs the same answer.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kiln::elastic::worker {

// The local IP address (numeric, IPv6 without brackets) the kernel would use to reach the
// host of `url` ("http://host[:port][/...]"). Resolves the host and prefers IPv4. Sends
// nothing: it connects a UDP socket and reads its local address. InvalidArgument for a
// URL without a host; Unavailable when the host does not resolve or has no route.
[[nodiscard]] absl::StatusOr<std::string> LocalAddressToward(std::string_view url);

}  // namespace kiln::elastic::worker
