// password.h
//
// Password and token hashing. Passwords are stored as PBKDF2-HMAC-SHA256 with a random
// salt ("pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>"); API tokens are random and
// stored as their SHA-256, so a leaked database yields no usable credential.
#pragma once

#include <string>
#include <string_view>

namespace kiln::auth {

inline constexpr int kDefaultPbkdf2Iterations = 100'000;

// Hashes `password` with a fresh salt.
std::string HashPassword(std::string_view password, int iterations = kDefaultPbkdf2Iterations);

// True when `password` matches `stored` (a HashPassword result). Constant-time in the
// comparison; false for a malformed `stored`.
bool VerifyPassword(std::string_view password, std::string_view stored);

// SHA-256 of `token`, lower-case hex.
std::string Sha256Hex(std::string_view data);

// A random password of `length` characters from an unambiguous alphabet.
std::string GeneratePassword(int length = 20);

}  // namespace kiln::auth
