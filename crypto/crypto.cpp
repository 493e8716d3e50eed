#include "crypto/crypto.hpp"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace fieldsync::crypto {
namespace {

const EVP_MD* sha256_md() {
  // Fetched once: implicit fetching on every call costs a provider lookup.
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

}  // namespace

Digest sha256(ByteView data) { return sha256({data}); }

// With the low-level SHA-256 functions (the same assembly as the EVP digest): OpenSSL 3.0's
// EVP_DigestInit_ex frees and re-creates the provider's context at every init, one allocation
// per hash even with a reused EVP_MD_CTX, and hashing is on every write's hot path (3 per
// version). They are deprecated in 3.0 but kept; SHA256_CTX lives on the stack.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
Digest sha256(std::initializer_list<ByteView> parts) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  for (auto p : parts) SHA256_Update(&ctx, p.data(), p.size());
  Digest out{};
  SHA256_Final(out.data(), &ctx);
  return out;
}
#pragma GCC diagnostic pop

Digest hmac_sha256(ByteView key, ByteView message) {
  Digest out{};
  unsigned int len = 0;
  HMAC(sha256_md(), key.data(), static_cast<int>(key.size()), message.data(), message.size(),
       out.data(), &len);
  return out;
}

struct Sha256::Impl {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  Impl() { EVP_DigestInit_ex(ctx, sha256_md(), nullptr); }
  ~Impl() { EVP_MD_CTX_free(ctx); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {}
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;
Sha256::~Sha256() = default;

void Sha256::update(ByteView data) { EVP_DigestUpdate(impl_->ctx, data.data(), data.size()); }

Digest Sha256::finish() {
  Digest out{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx, out.data(), &len);
  EVP_DigestInit_ex(impl_->ctx, sha256_md(), nullptr);
  return out;
}

Status hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::span<std::uint8_t> out) {
  if (out.empty() || out.size() > 255 * 32)
    return make_error(Errc::invalid_argument, "HKDF-SHA256 output must be 1..8160 bytes");
  static EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (!kdf) return make_error(Errc::internal, "HKDF is not available");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  if (!ctx) return make_error(Errc::internal, "HKDF context");
  char digest[] = "SHA256";
  OSSL_PARAM params[5];
  OSSL_PARAM* p = params;
  *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  // OSSL_PARAM takes non-const pointers; OpenSSL only reads these buffers.
  *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                           const_cast<std::uint8_t*>(ikm.data()), ikm.size());
  if (!salt.empty())  // no salt = HashLen zero bytes (RFC 5869), the same as an empty one
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                             const_cast<std::uint8_t*>(salt.data()), salt.size());
  *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                           const_cast<std::uint8_t*>(info.data()), info.size());
  *p = OSSL_PARAM_construct_end();
  bool ok = EVP_KDF_derive(ctx, out.data(), out.size(), params) == 1;
  EVP_KDF_CTX_free(ctx);
  if (!ok) return make_error(Errc::internal, "HKDF-SHA256 failed");
  return {};
}

namespace {

const EVP_CIPHER* aes256gcm() {
  static EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return c;
}

struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

// EVP_*Update takes an int length: feed large inputs in pieces.
constexpr std::size_t kUpdatePiece = 1u << 30;

}  // namespace

void aes256gcm_seal(const AeadKey& key, const AeadNonce& nonce, ByteView aad, ByteView plaintext,
                    Bytes& out) {
  CipherCtx c;
  int len = 0;
  bool ok = c.ctx && aes256gcm() &&
            EVP_EncryptInit_ex(c.ctx, aes256gcm(), nullptr, key.data(), nonce.data()) == 1;
  for (std::size_t i = 0; ok && i < aad.size(); i += kUpdatePiece) {
    std::size_t n = std::min(kUpdatePiece, aad.size() - i);
    ok = EVP_EncryptUpdate(c.ctx, nullptr, &len, aad.data() + i, static_cast<int>(n)) == 1;
  }
  std::size_t at = out.size();
  out.resize(at + plaintext.size() + kAeadTagBytes);
  std::uint8_t* dst = out.data() + at;
  for (std::size_t i = 0; ok && i < plaintext.size(); i += kUpdatePiece) {
    std::size_t n = std::min(kUpdatePiece, plaintext.size() - i);
    ok = EVP_EncryptUpdate(c.ctx, dst + i, &len, plaintext.data() + i, static_cast<int>(n)) == 1;
  }
  ok = ok && EVP_EncryptFinal_ex(c.ctx, dst + plaintext.size(), &len) == 1 &&
       EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kAeadTagBytes),
                           dst + plaintext.size()) == 1;
  if (!ok) std::abort();  // only on allocation failure inside OpenSSL: no safe fallback
}

Status aes256gcm_open(const AeadKey& key, const AeadNonce& nonce, ByteView aad, ByteView sealed,
                      Bytes& out) {
  if (sealed.size() < kAeadTagBytes)
    return make_error(Errc::verification_failed, "sealed data shorter than its tag");
  ByteView cipher = sealed.first(sealed.size() - kAeadTagBytes);
  ByteView tag = sealed.last(kAeadTagBytes);
  CipherCtx c;
  if (!c.ctx || !aes256gcm()) return make_error(Errc::internal, "AES-256-GCM is not available");
  int len = 0;
  bool ok = EVP_DecryptInit_ex(c.ctx, aes256gcm(), nullptr, key.data(), nonce.data()) == 1;
  for (std::size_t i = 0; ok && i < aad.size(); i += kUpdatePiece) {
    std::size_t n = std::min(kUpdatePiece, aad.size() - i);
    ok = EVP_DecryptUpdate(c.ctx, nullptr, &len, aad.data() + i, static_cast<int>(n)) == 1;
  }
  std::size_t at = out.size();
  out.resize(at + cipher.size());
  std::uint8_t* dst = out.data() + at;
  for (std::size_t i = 0; ok && i < cipher.size(); i += kUpdatePiece) {
    std::size_t n = std::min(kUpdatePiece, cipher.size() - i);
    ok = EVP_DecryptUpdate(c.ctx, dst + i, &len, cipher.data() + i, static_cast<int>(n)) == 1;
  }
  ok = ok &&
       EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kAeadTagBytes),
                           const_cast<std::uint8_t*>(tag.data())) == 1 &&
       EVP_DecryptFinal_ex(c.ctx, dst + cipher.size(), &len) == 1;
  if (!ok) {
    // Nothing unauthenticated leaves this function.
    OPENSSL_cleanse(dst, cipher.size());
    out.resize(at);
    return make_error(Errc::verification_failed, "authentication failed");
  }
  return {};
}

void random_fill(std::span<std::uint8_t> out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) std::abort();  // no safe fallback
}

Bytes random_bytes(std::size_t n) {
  Bytes b(n);
  random_fill(b);
  return b;
}

bool constant_time_equal(ByteView a, ByteView b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool verify(const DeviceId& signer, ByteView message, const Signature& sig) {
  PkeyPtr key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, signer.bytes.data(),
                                          signer.bytes.size()));
  if (!key) return false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, key.get()) == 1 &&
            EVP_DigestVerify(ctx, sig.data(), sig.size(), message.data(), message.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

struct SigningKey::Impl {
  PkeyPtr key;
};

SigningKey::SigningKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  std::size_t len = id_.bytes.size();
  EVP_PKEY_get_raw_public_key(impl_->key.get(), id_.bytes.data(), &len);
}
SigningKey::SigningKey(SigningKey&&) noexcept = default;
SigningKey& SigningKey::operator=(SigningKey&&) noexcept = default;
SigningKey::~SigningKey() = default;

Result<SigningKey> SigningKey::generate() {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (!k) return make_error(Errc::internal, "Ed25519 key generation failed");
  auto impl = std::make_unique<Impl>();
  impl->key.reset(k);
  return SigningKey(std::move(impl));
}

Result<SigningKey> SigningKey::load_or_create(const std::filesystem::path& path) {
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    EVP_PKEY* k = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    if (!k || EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
      EVP_PKEY_free(k);
      return make_error(Errc::data_loss,
                        "device key " + path.string() + " is not an Ed25519 PEM key");
    }
    auto impl = std::make_unique<Impl>();
    impl->key.reset(k);
    return SigningKey(std::move(impl));
  }
  auto key = generate();
  if (!key) return key.error();
  // Write to a temp file created 0600, fsync, then rename: a crash never leaves half a key.
  std::string pem = key->private_pem();
  auto tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return make_error(Errc::internal, "cannot create " + tmp.string());
  bool ok =
      ::write(fd, pem.data(), pem.size()) == static_cast<ssize_t>(pem.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0)
    return make_error(Errc::internal, "cannot write " + path.string());
  return key;
}

Signature SigningKey::sign(ByteView message) const {
  Signature sig{};
  std::size_t len = sig.size();
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, impl_->key.get());
  EVP_DigestSign(ctx, sig.data(), &len, message.data(), message.size());
  EVP_MD_CTX_free(ctx);
  return sig;
}

std::string SigningKey::private_pem() const {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, impl_->key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return pem;
}

void* SigningKey::native_handle() const { return impl_->key.get(); }

}  // namespace fieldsync::crypto
