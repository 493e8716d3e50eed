// A hand-driven sync peer for transport tests: real TLS (its own Ed25519 key) to a
// SyncService on 127.0.0.1, blocking I/O on the caller's thread, frames written as given.
#pragma once

#include <catch2/catch.hpp>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <optional>

#include "../support/run_until.hpp"
#include "crypto/crypto.hpp"
#include "crypto/tls_context.hpp"
#include "sync/frame_decoder.hpp"
#include "sync/messages.hpp"
#include "sync/wire_error.hpp"

namespace fieldsync::test {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

struct RawPeer {
  asio::io_context io;
  crypto::SigningKey key;
  ssl::context ctx;
  ssl::stream<tcp::socket> s;
  Bytes binding;
  sync::FrameDecoder dec{64u << 20};

  explicit RawPeer(crypto::SigningKey k) : key(std::move(k)), ctx(make_ctx(key)), s(io, ctx) {}

  static ssl::context make_ctx(const crypto::SigningKey& key) {
    auto tls = crypto::TlsContext::create(key);
    REQUIRE(tls.ok());
    return ssl::context(static_cast<SSL_CTX*>(tls->new_reference()));
  }
  static crypto::SigningKey fresh_key() {
    auto k = crypto::SigningKey::generate();
    REQUIRE(k.ok());
    return std::move(*k);
  }

  const DeviceId& id() const { return key.device_id(); }

  // TCP connect + TLS handshake pinned to `victim`. False when the handshake fails.
  bool connect(std::uint16_t port, const DeviceId& victim) {
    s.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port});
    crypto::tls_expect_peer(s.native_handle(), victim);
    boost::system::error_code ec;
    s.handshake(ssl::stream_base::client, ec);
    if (ec) return false;
    auto b = crypto::tls_channel_binding(s.native_handle());
    REQUIRE(b.ok());
    binding = *b;
    return true;
  }

  void hello(std::string name = "raw", std::optional<DeviceId> device = std::nullopt) {
    Bytes out;
    sync::Hello h;
    h.device = device ? *device : id();
    h.device_name = std::move(name);
    // A raw name (encode_hello sanitizes ours): write the frame by hand.
    ByteWriter w(out);
    Bytes payload;
    ByteWriter p(payload);
    p.raw(ByteView(sync::kHelloMagic, 4));
    p.u16(h.min_version);
    p.u16(h.max_version);
    p.raw(h.device.view());
    p.str16(h.device_name);
    p.u64(0);
    p.u32(0);
    sync::encode_frame(out, static_cast<std::uint8_t>(sync::MsgType::hello), payload);
    send(out);
  }

  void projects(std::vector<crypto::Digest> proofs) {
    Bytes out;
    sync::encode_projects(out, sync::Projects{std::move(proofs)});
    send(out);
  }

  crypto::Digest proof(ByteView secret) const {
    return sync::membership_proof(secret, binding, id());
  }

  void send(const Bytes& b) {
    boost::system::error_code ec;
    asio::write(s, asio::buffer(b), ec);
  }

  // Reads frames until the victim sends ERROR (its code) or closes (nullopt), or ms pass.
  std::optional<Errc> wait_error(int ms = 10000) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    Bytes buf(65536);
    s.lowest_layer().non_blocking(true);
    while (std::chrono::steady_clock::now() < end) {
      boost::system::error_code ec;
      std::size_t n = s.read_some(asio::buffer(buf), ec);
      if (ec == asio::error::would_block || ec == ssl::error::stream_truncated) {
        if (ec == ssl::error::stream_truncated) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      if (ec) return std::nullopt;
      dec.feed(ByteView(buf.data(), n));
      for (;;) {
        auto f = dec.next();
        if (!f.ok() || !*f) break;
        if ((*f)->type == static_cast<std::uint8_t>(sync::MsgType::error)) {
          auto e = sync::decode_error((*f)->payload);
          if (e.ok()) return sync::from_wire_code(e->code);
        }
      }
    }
    return std::nullopt;
  }

  // True once the victim closed the connection (EOF or reset), within ms.
  bool closed_by_peer(int ms) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    Bytes buf(65536);
    s.lowest_layer().non_blocking(true);
    while (std::chrono::steady_clock::now() < end) {
      boost::system::error_code ec;
      s.read_some(asio::buffer(buf), ec);
      if (ec == asio::error::would_block) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      if (ec) return true;
    }
    return false;
  }
};

}  // namespace fieldsync::test
