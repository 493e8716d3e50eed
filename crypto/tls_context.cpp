#include "crypto/tls_context.hpp"

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace fieldsync::crypto {

namespace {

// SSL ex_data slot holding the pinned DeviceId of a connection (dialer side).
int pin_index() {
  static const int index = SSL_get_ex_new_index(
      0, nullptr, nullptr, nullptr, [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
        delete static_cast<DeviceId*>(ptr);
      });
  return index;
}

// SSL ex_data slot holding the device id a dialed peer presented when it was not the pinned
// one (tls_rejected_peer).
int rejected_index() {
  static const int index = SSL_get_ex_new_index(
      0, nullptr, nullptr, nullptr, [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
        delete static_cast<DeviceId*>(ptr);
      });
  return index;
}

std::optional<DeviceId> device_of(EVP_PKEY* key) {
  if (!key || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) return std::nullopt;
  DeviceId id;
  std::size_t len = id.bytes.size();
  if (EVP_PKEY_get_raw_public_key(key, id.bytes.data(), &len) != 1 || len != id.bytes.size())
    return std::nullopt;
  return id;
}

// Self-signed certificates: `preverified` is false (DEPTH_ZERO_SELF_SIGNED_CERT) and is
// ignored; identity is the key itself.
int verify_callback(int /*preverified*/, X509_STORE_CTX* store) {
  if (X509_STORE_CTX_get_error_depth(store) != 0) return 0;
  X509* cert = X509_STORE_CTX_get_current_cert(store);
  auto device = cert ? device_of(X509_get0_pubkey(cert)) : std::nullopt;
  if (!device) return 0;
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (ssl) {
    if (auto* pin = static_cast<DeviceId*>(SSL_get_ex_data(ssl, pin_index()));
        pin && *pin != *device) {
      delete static_cast<DeviceId*>(SSL_get_ex_data(ssl, rejected_index()));
      SSL_set_ex_data(ssl, rejected_index(), new DeviceId(*device));
      return 0;
    }
  }
  X509_STORE_CTX_set_error(store, X509_V_OK);
  return 1;
}

Error ssl_error(const char* what) {
  return make_error(Errc::internal, std::string("TLS setup: ") + what);
}

}  // namespace

Result<TlsContext> TlsContext::create(const SigningKey& key, std::string_view common_name) {
  auto* pkey = static_cast<EVP_PKEY*>(key.native_handle());
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
  if (!cert) return ssl_error("X509_new");
  X509_set_version(cert.get(), 2);
  Bytes serial = random_bytes(8);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 20L * 365 * 24 * 3600);
  if (X509_set_pubkey(cert.get(), pkey) != 1) return ssl_error("X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(cert.get());
  std::string cn(common_name.empty() ? std::string_view("fieldsync") : common_name.substr(0, 64));
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  if (X509_sign(cert.get(), pkey, nullptr) == 0)
    return ssl_error("X509_sign");  // Ed25519: no digest

  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (!ctx) return ssl_error("SSL_CTX_new");
  TlsContext out;
  out.ctx_ = ctx;
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
    return ssl_error("TLS 1.3 only");
  if (SSL_CTX_use_certificate(ctx, cert.get()) != 1) return ssl_error("use_certificate");
  if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1) return ssl_error("use_PrivateKey");
  if (SSL_CTX_check_private_key(ctx) != 1) return ssl_error("check_private_key");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_callback);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  return out;
}

TlsContext::TlsContext(TlsContext&& o) noexcept : ctx_(o.ctx_) { o.ctx_ = nullptr; }
TlsContext& TlsContext::operator=(TlsContext&& o) noexcept {
  std::swap(ctx_, o.ctx_);
  return *this;
}
TlsContext::~TlsContext() {
  if (ctx_) SSL_CTX_free(static_cast<SSL_CTX*>(ctx_));
}

void* TlsContext::new_reference() const {
  SSL_CTX_up_ref(static_cast<SSL_CTX*>(ctx_));
  return ctx_;
}

void tls_expect_peer(void* ssl, const DeviceId& expected) {
  auto* s = static_cast<SSL*>(ssl);
  delete static_cast<DeviceId*>(SSL_get_ex_data(s, pin_index()));
  SSL_set_ex_data(s, pin_index(), new DeviceId(expected));
}

std::optional<DeviceId> tls_rejected_peer(void* ssl) {
  auto* id = static_cast<DeviceId*>(SSL_get_ex_data(static_cast<SSL*>(ssl), rejected_index()));
  if (!id) return std::nullopt;
  return *id;
}

std::optional<DeviceId> tls_peer_device(void* ssl) {
  X509* cert = SSL_get0_peer_certificate(static_cast<SSL*>(ssl));
  if (!cert) return std::nullopt;
  return device_of(X509_get0_pubkey(cert));
}

Result<Bytes> tls_channel_binding(void* ssl) {
  static constexpr char kLabel[] = "EXPORTER-fieldsync-channel";
  Bytes out(32);
  if (SSL_export_keying_material(static_cast<SSL*>(ssl), out.data(), out.size(), kLabel,
                                 sizeof kLabel - 1, nullptr, 0, 0) != 1)
    return make_error(Errc::internal, "TLS keying material export failed");
  return out;
}

}  // namespace fieldsync::crypto
