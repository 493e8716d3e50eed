// A PeerManager with the TCP + TLS transport, as the daemon builds it, for tests that talk
// to real sockets on 127.0.0.1 (listen_port() is the TCP port; sync.listen_port = 0 picks
// one), and TcpDevice: a store in a temp dir with such a manager, started.
#pragma once

#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "../sync/sync_test_util.hpp"
#include "peers/peer_manager.hpp"
#include "storage/store.hpp"
#include "transports/tcp_tls/tcp_tls.hpp"

namespace fieldsync::test {

class TcpPeerManager : public peers::PeerManager {
 public:
  TcpPeerManager(boost::asio::io_context& io, storage::Store& store, config::SyncOptions o,
                 std::string name)
      : peers::PeerManager(io, store, o, std::move(name)) {
    auto to = transports::tcp_tls_options(o);
    to.renewals = store.renewal_links();  // as the daemon does
    auto t = transports::TcpTls::create(io, store.signing_key(), std::move(to));
    REQUIRE(t.ok());
    tcp_ = t->get();
    add_transport(std::move(*t));
  }
  std::uint16_t listen_port() const { return tcp_->port(); }
  transports::TcpTls& tcp() { return *tcp_; }

 private:
  transports::TcpTls* tcp_;
};

// Options for devices that sync on 127.0.0.1 with quick redials.
inline config::SyncOptions loopback_options() {
  config::SyncOptions o;
  o.listen_address = "127.0.0.1";
  o.listen_port = 0;
  o.retry_min_ms = 50;
  o.retry_max_ms = 400;
  return o;
}

// A device: a store in a temp dir and its started TcpPeerManager; local writes are pushed.
struct TcpDevice {
  sync::test::Node node;
  std::unique_ptr<TcpPeerManager> svc;
  TcpDevice(boost::asio::io_context& io, std::string name,
            config::SyncOptions o = loopback_options()) {
    svc = std::make_unique<TcpPeerManager>(io, *node.store, o, std::move(name));
    node.store->set_change_listener(
        [this](const ProjectId& p, std::uint64_t) { svc->notify_change(p); });
    REQUIRE(svc->start().ok());
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(svc->listen_port()); }
  DeviceId id() const { return node.store->device_id(); }
  storage::VersionVector vv(const ProjectId& p) { return *node.store->version_vector(p); }
  std::optional<peers::PeerStatus> status(const DeviceId& d) {
    auto s = svc->peer(d);
    if (!s.ok()) return std::nullopt;
    return *s;
  }
};

}  // namespace fieldsync::test
