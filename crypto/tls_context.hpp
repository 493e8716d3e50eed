// TlsContext: the OpenSSL side of fieldsync's sync transport (the only place besides
// crypto.cpp that uses OpenSSL). Builds an SSL_CTX for TLS 1.3 only, with mutual
// authentication by self-signed Ed25519 certificates made from the device key, and a
// verify callback that accepts exactly one Ed25519 leaf certificate (no CA). When a
// connection has an expected peer (tls_expect_peer, the dialer's pin), the callback also
// requires the certificate key to equal it, so a wrong key fails the TLS handshake, unless
// the certificate carries renewal links (crypto/renewal.hpp) that lead from the pinned key to
// the presented one: then the peer renewed its identity, and the handshake goes on.
//
// No OpenSSL type crosses this header: handles are void* (SSL_CTX*, SSL*) for the Asio
// ssl layer in transports/.
// Thread-safety: create() and the per-connection functions are thread-safe; one SSL* is
// used by one connection at a time.
// Errors: create() returns internal on OpenSSL failures.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"
#include "crypto/crypto.hpp"
#include "crypto/renewal.hpp"

namespace fieldsync::crypto {

class TlsContext {
 public:
  // `renewals`: the identities `key` continues (oldest first), carried in the certificate as
  // a private extension (docs/protocol.md section 1).
  static Result<TlsContext> create(const SigningKey& key,
                                   std::span<const RenewalLink> renewals = {});
  TlsContext(TlsContext&&) noexcept;
  TlsContext& operator=(TlsContext&&) noexcept;
  ~TlsContext();

  // A new reference to the SSL_CTX* (the caller owns it, e.g. asio::ssl::context takes it).
  void* new_reference() const;

 private:
  TlsContext() = default;
  void* ctx_ = nullptr;
};

// Pins the peer of connection `ssl` (an SSL*) before the handshake.
void tls_expect_peer(void* ssl, const DeviceId& expected);
// The device id (Ed25519 key) a peer presented that was not the pinned one: the handshake
// failed because of it. nullopt when the handshake did not fail for that.
std::optional<DeviceId> tls_rejected_peer(void* ssl);
// The device id (Ed25519 key) of the connection's verified peer certificate.
std::optional<DeviceId> tls_peer_device(void* ssl);
// The renewal links a DER certificate carries (empty when it has none or they do not parse,
// as the verify callback reads them); nullopt when `der` is not one certificate. For tests
// and the fuzz target.
std::optional<std::vector<RenewalLink>> certificate_renewal_links(ByteView der);
// 32 bytes of keying material exported from the TLS session (RFC 8446 exporter, label
// "EXPORTER-fieldsync-channel"): the same on both ends of one connection, different on
// every other connection. Membership proofs are bound to it.
Result<Bytes> tls_channel_binding(void* ssl);

}  // namespace fieldsync::crypto
