#include "kiln/base/random.h"

#include <sys/random.h>

#include <cerrno>
#include <string_view>

#include "kiln/base/status.h"

namespace kiln::base {

std::string SecureRandomBytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    KILN_CHECK(r > 0);
    got += static_cast<size_t>(r);
  }
  return out;
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string RandomHexToken(size_t n_bytes) { return HexEncode(SecureRandomBytes(n_bytes)); }

}  // namespace kiln::base
