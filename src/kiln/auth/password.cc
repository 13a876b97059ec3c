#include "kiln/auth/password.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kiln/base/random.h"
#include "kiln/base/status.h"

namespace kiln::auth {
namespace {

constexpr int kSaltBytes = 16;
constexpr int kHashBytes = 32;

std::string Pbkdf2(std::string_view password, std::string_view salt, int iterations) {
  std::string out(kHashBytes, '\0');
  int ok = PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                             reinterpret_cast<const unsigned char*>(salt.data()),
                             static_cast<int>(salt.size()), iterations, EVP_sha256(), kHashBytes,
                             reinterpret_cast<unsigned char*>(out.data()));
  KILN_CHECK(ok == 1);
  return out;
}

bool HexDecode(std::string_view hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  out->clear();
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

}  // namespace

std::string HashPassword(std::string_view password, int iterations) {
  std::string salt = base::SecureRandomBytes(kSaltBytes);
  return absl::StrCat("pbkdf2-sha256$", iterations, "$", base::HexEncode(salt), "$",
                      base::HexEncode(Pbkdf2(password, salt, iterations)));
}

bool VerifyPassword(std::string_view password, std::string_view stored) {
  std::vector<std::string> parts = absl::StrSplit(std::string(stored), '$');
  if (parts.size() != 4 || parts[0] != "pbkdf2-sha256") return false;
  int iterations = 0;
  if (!absl::SimpleAtoi(parts[1], &iterations) || iterations < 1 || iterations > 10'000'000) {
    return false;
  }
  std::string salt, expected;
  if (!HexDecode(parts[2], &salt) || !HexDecode(parts[3], &expected)) return false;
  if (expected.size() != kHashBytes) return false;
  std::string actual = Pbkdf2(password, salt, iterations);
  return CRYPTO_memcmp(actual.data(), expected.data(), kHashBytes) == 0;
}

std::string Sha256Hex(std::string_view data) {
  // Fetched once: OpenSSL 3's SHA256() looks the algorithm up on every call, which cost
  // more than hashing the credentials of a request (every HTTP Basic call hashes them).
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  unsigned int length = 0;
  if (sha256 == nullptr ||
      EVP_Digest(data.data(), data.size(), digest, &length, sha256, nullptr) != 1 ||
      length != sizeof(digest)) {
    SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  }
  return base::HexEncode(std::string_view(reinterpret_cast<char*>(digest), sizeof(digest)));
}

std::string GeneratePassword(int length) {
  // No 0/O, 1/l/I: a generated password is often read off a terminal and typed.
  static constexpr std::string_view kAlphabet =
      "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  std::string random = base::SecureRandomBytes(static_cast<size_t>(length));
  std::string out;
  for (unsigned char c : random) out.push_back(kAlphabet[c % kAlphabet.size()]);
  return out;
}

}  // namespace kiln::auth
