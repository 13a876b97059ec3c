// random.h
//
// Randomness for secrets (tokens, salts, generated passwords) from the kernel's CSPRNG.
// Seeded, deterministic generators for algorithms live with those algorithms.
#pragma once

#include <string>

namespace kiln::base {

// `n` bytes from getrandom(2). Crashes if the kernel cannot provide them: there is no
// safe fallback for secret material.
std::string SecureRandomBytes(size_t n);

// Lower-case hex of `bytes`.
std::string HexEncode(std::string_view bytes);

// A random token of `n_bytes` entropy, hex-encoded (2 * n_bytes characters).
std::string RandomHexToken(size_t n_bytes = 32);

}  // namespace kiln::base
