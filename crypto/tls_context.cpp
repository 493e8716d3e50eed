#include "crypto/tls_context.hpp"

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <vector>

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

// The certificate extension carrying renewal links (docs/protocol.md section 1): a private
// OID under the UUID arc (2.25, ITU-T X.667), non-critical, its value an OCTET STRING holding
// crypto::encode_renewal_links.
constexpr char kRenewalOid[] = "2.25.185561365906629470343255184026366423648";

const ASN1_OBJECT* renewal_oid() {
  static ASN1_OBJECT* const obj = OBJ_txt2obj(kRenewalOid, 1);
  return obj;
}

void set_ex_device(SSL* ssl, int index, const DeviceId& id) {
  delete static_cast<DeviceId*>(SSL_get_ex_data(ssl, index));
  SSL_set_ex_data(ssl, index, new DeviceId(id));
}

// The renewal links a certificate carries; empty when it has none or they do not parse.
std::vector<RenewalLink> renewal_links_of(X509* cert) {
  const ASN1_OBJECT* oid = renewal_oid();
  if (!oid) return {};
  int at = X509_get_ext_by_OBJ(cert, oid, -1);
  if (at < 0) return {};
  X509_EXTENSION* ext = X509_get_ext(cert, at);
  ASN1_OCTET_STRING* outer = ext ? X509_EXTENSION_get_data(ext) : nullptr;
  if (!outer) return {};
  const unsigned char* p = ASN1_STRING_get0_data(outer);
  const long len = ASN1_STRING_length(outer);
  if (len <= 0 || static_cast<std::size_t>(len) > 16 + kMaxRenewalLinks * kRenewalLinkBytes)
    return {};
  const unsigned char* end = p + len;
  std::unique_ptr<ASN1_OCTET_STRING, decltype(&ASN1_OCTET_STRING_free)> inner(
      d2i_ASN1_OCTET_STRING(nullptr, &p, len), ASN1_OCTET_STRING_free);
  if (!inner || p != end) return {};
  auto links =
      parse_renewal_links(ByteView(ASN1_STRING_get0_data(inner.get()),
                                   static_cast<std::size_t>(ASN1_STRING_length(inner.get()))));
  return links ? std::move(*links) : std::vector<RenewalLink>{};
}

// Adds the renewal extension to `cert`; false on an OpenSSL failure.
bool add_renewal_extension(X509* cert, std::span<const RenewalLink> renewals) {
  const ASN1_OBJECT* oid = renewal_oid();
  if (!oid) return false;
  Bytes links = encode_renewal_links(renewals);
  std::unique_ptr<ASN1_OCTET_STRING, decltype(&ASN1_OCTET_STRING_free)> inner(
      ASN1_OCTET_STRING_new(), ASN1_OCTET_STRING_free);
  if (!inner ||
      ASN1_OCTET_STRING_set(inner.get(), links.data(), static_cast<int>(links.size())) != 1)
    return false;
  unsigned char* der = nullptr;
  int der_len = i2d_ASN1_OCTET_STRING(inner.get(), &der);
  if (der_len <= 0) return false;
  std::unique_ptr<ASN1_OCTET_STRING, decltype(&ASN1_OCTET_STRING_free)> outer(
      ASN1_OCTET_STRING_new(), ASN1_OCTET_STRING_free);
  bool ok = outer && ASN1_OCTET_STRING_set(outer.get(), der, der_len) == 1;
  OPENSSL_free(der);
  if (!ok) return false;
  X509_EXTENSION* ext =
      X509_EXTENSION_create_by_OBJ(nullptr, const_cast<ASN1_OBJECT*>(oid), 0, outer.get());
  if (!ext) return false;
  ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
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
      // Another key: accepted only if the certificate proves it continues the pinned one (the
      // stream's peer() is then the new key, which the dialer compares with what it pinned).
      if (!renewal_chain_proves(renewal_links_of(cert), *pin, *device)) {
        set_ex_device(ssl, rejected_index(), *device);
        return 0;
      }
    }
  }
  X509_STORE_CTX_set_error(store, X509_V_OK);
  return 1;
}

Error ssl_error(const char* what) {
  return make_error(Errc::internal, std::string("TLS setup: ") + what);
}

}  // namespace

Result<TlsContext> TlsContext::create(const SigningKey& key,
                                      std::span<const RenewalLink> renewals) {
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
  // Subject and issuer stay empty: the key is the identity, and every byte of the certificate
  // travels twice in each handshake's worth of a no-op sync (both ways).
  if (!renewals.empty() && !add_renewal_extension(cert.get(), renewals))
    return ssl_error("renewal extension");
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
  // Only what two devices use: Ed25519 keys sign, X25519 agrees the key. Each list is sent in
  // every handshake (ClientHello, CertificateRequest), so naming only these keeps a no-op
  // sync small (bench/README.md, S4).
  if (SSL_CTX_set1_sigalgs_list(ctx, "ed25519") != 1) return ssl_error("sigalgs");
  if (SSL_CTX_set1_groups_list(ctx, "X25519") != 1) return ssl_error("groups");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_callback);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  // No resumption and no middleboxes to please between two devices: without the compatibility
  // mode neither side sends the 32-byte legacy session id nor a ChangeCipherSpec record, and
  // without tickets the ClientHello carries no session_ticket extension.
  SSL_CTX_clear_options(ctx, SSL_OP_ENABLE_MIDDLEBOX_COMPAT);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
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
  set_ex_device(static_cast<SSL*>(ssl), pin_index(), expected);
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

std::optional<std::vector<RenewalLink>> certificate_renewal_links(ByteView der) {
  const unsigned char* p = der.data();
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      d2i_X509(nullptr, &p, static_cast<long>(der.size())), X509_free);
  if (!cert || p != der.data() + der.size()) return std::nullopt;
  return renewal_links_of(cert.get());
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
