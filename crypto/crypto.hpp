// The one wrapper around OpenSSL: hashing, randomness, HMAC, HKDF, AES-256-GCM and Ed25519.
// No OpenSSL type appears in this header. All functions are thread-safe.
#pragma once

#include <array>
#include <filesystem>
#include <memory>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"

namespace fieldsync::crypto {

using Digest = std::array<std::uint8_t, 32>;
using Signature = std::array<std::uint8_t, 64>;

Digest sha256(ByteView data);
// SHA-256 over the concatenation of several parts, without copying them together.
Digest sha256(std::initializer_list<ByteView> parts);
Digest hmac_sha256(ByteView key, ByteView message);

// SHA-256 fed piece by piece (a digest over data that is never held whole). Move-only.
class Sha256 {
 public:
  Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  ~Sha256();
  void update(ByteView data);
  // The digest of everything fed so far; the hasher then starts again from empty.
  Digest finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// HKDF-SHA256 (RFC 5869): fills `out` (1 .. 255 * 32 bytes) with key material derived from
// `ikm`, `salt` and `info`. invalid_argument for another output length.
Status hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::span<std::uint8_t> out);

// AES-256-GCM with a 12-byte nonce and a 16-byte tag. A (key, nonce) pair must never seal two
// different messages.
inline constexpr std::size_t kAeadKeyBytes = 32;
inline constexpr std::size_t kAeadNonceBytes = 12;
inline constexpr std::size_t kAeadTagBytes = 16;
using AeadKey = std::array<std::uint8_t, kAeadKeyBytes>;
using AeadNonce = std::array<std::uint8_t, kAeadNonceBytes>;
// Appends ciphertext || tag (plaintext size + kAeadTagBytes bytes) to `out`.
void aes256gcm_seal(const AeadKey& key, const AeadNonce& nonce, ByteView aad, ByteView plaintext,
                    Bytes& out);
// Appends the plaintext of `sealed` (ciphertext || tag) to `out` when the tag verifies for this
// key, nonce and aad. verification_failed otherwise, and `out` is left as it was.
Status aes256gcm_open(const AeadKey& key, const AeadNonce& nonce, ByteView aad, ByteView sealed,
                      Bytes& out);
void random_fill(std::span<std::uint8_t> out);
Bytes random_bytes(std::size_t n);
bool constant_time_equal(ByteView a, ByteView b);

// Verifies an Ed25519 signature made by the device whose public key is `signer`.
bool verify(const DeviceId& signer, ByteView message, const Signature& sig);

// An Ed25519 private key. Move-only; sign() is safe from several threads.
class SigningKey {
 public:
  static Result<SigningKey> generate();
  // Loads the PEM key at `path`, or creates one (file mode 0600) if it is absent.
  // Errors: data_loss if the file exists but is not an Ed25519 key; internal on I/O.
  static Result<SigningKey> load_or_create(const std::filesystem::path& path);

  SigningKey(SigningKey&&) noexcept;
  SigningKey& operator=(SigningKey&&) noexcept;
  ~SigningKey();

  const DeviceId& device_id() const { return id_; }
  Signature sign(ByteView message) const;
  // PKCS#8 PEM of the private key (for TLS certificates built by transports/).
  std::string private_pem() const;
  // An opaque EVP_PKEY* for the TLS layer in crypto/tls_context.cpp.
  void* native_handle() const;

 private:
  struct Impl;
  explicit SigningKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  DeviceId id_;
};

}  // namespace fieldsync::crypto
