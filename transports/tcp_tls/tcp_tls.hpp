// TcpTls: the "tcp" transport: TCP with TLS 1.3, both ends authenticated by self-signed
// Ed25519 certificates made from the device key (crypto/tls_context.hpp). Dialing pins the
// expected device's key, so a wrong key fails the TLS handshake; incoming connections from
// any key are accepted at TLS level (the sync engine's membership proofs decide what is
// shared). The channel binding is the TLS exporter value; wire byte counters come from the
// kernel (TCP_INFO).
//
// Listening: binds listen_address:listen_port (port 0 = ephemeral); each accepted
// connection takes a handshake-budget slot and must finish TLS within
// tls_handshake_timeout_ms. Out of file descriptors, accept pauses (doubling up to
// accept_backoff_max_ms) instead of spinning. listen_addresses(): the bound address, or,
// when bound to 0.0.0.0 / ::, every up interface address (LAN first, loopback last), read at
// most once per kInterfaceCacheMs.
//
// Ownership: borrows the io_context; owns its listener and the streams until they are
// handed out. Thread-safety: the io_context's thread only (transport.hpp).
#pragma once

#include <memory>
#include <vector>

#include "common/rate_limited_log.hpp"
#include "config/config.hpp"
#include "crypto/crypto.hpp"
#include "crypto/renewal.hpp"
#include "transports/transport.hpp"

namespace boost::asio {
class io_context;
}

namespace fieldsync::transports {

struct TcpTlsOptions {
  std::string listen_address = "0.0.0.0";
  std::uint16_t listen_port = 7891;
  std::uint32_t connect_timeout_ms = 10000;       // resolve + TCP connect
  std::uint32_t handshake_timeout_ms = 10000;     // TLS handshake when dialing
  std::uint32_t tls_handshake_timeout_ms = 3000;  // TLS handshake of an accepted connection
  std::uint32_t accept_backoff_max_ms = 1000;     // longest pause at EMFILE
  std::uint32_t shutdown_timeout_ms = 2000;       // close_notify exchange
  std::uint32_t log_lines_per_key = 10;           // lines a remote party can cause...
  std::uint32_t log_interval_ms = 10000;          // ...per interval
  // The identities the device key continues (Store::renewal_links): a peer that dials us
  // under an old id accepts the new key (docs/protocol.md section 1).
  std::vector<crypto::RenewalLink> renewals;
};
TcpTlsOptions tcp_tls_options(const config::SyncOptions& sync);

// At most this many addresses are advertised (invite codes, discovery).
inline constexpr std::size_t kMaxListenAddresses = 8;
// How long listen_addresses() keeps the interface addresses it read.
inline constexpr int kInterfaceCacheMs = 1000;

class TcpTls final : public Transport {
 public:
  // Errors: internal when the TLS context cannot be made from `key`.
  static Result<std::unique_ptr<TcpTls>> create(boost::asio::io_context& io,
                                                const crypto::SigningKey& key,
                                                TcpTlsOptions options);
  ~TcpTls() override;

  std::string_view scheme() const override { return "tcp"; }
  LinkClass link_class() const override { return LinkClass::fast; }
  Status listen(HandshakeBudget& budget, IncomingHandler incoming) override;
  std::vector<Address> listen_addresses() const override;
  void dial(const Address& address, const DeviceId& expected, StreamHandler done) override;
  void stop() override;

  // The bound port (0 before listen()).
  std::uint16_t port() const;

  struct Impl;

 private:
  explicit TcpTls(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace fieldsync::transports
