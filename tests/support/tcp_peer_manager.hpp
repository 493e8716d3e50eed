// A PeerManager with the TCP + TLS transport, as the daemon builds it, for tests that talk
// to real sockets on 127.0.0.1. listen_port() is the TCP port (sync.listen_port = 0 picks
// one).
#pragma once

#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "peers/peer_manager.hpp"
#include "storage/store.hpp"
#include "transports/tcp_tls/tcp_tls.hpp"

namespace fieldsync::test {

class TcpPeerManager : public peers::PeerManager {
 public:
  TcpPeerManager(boost::asio::io_context& io, storage::Store& store, config::SyncOptions o,
                 std::string name)
      : peers::PeerManager(io, store, o, std::move(name)) {
    auto t = transports::TcpTls::create(io, store.signing_key(), transports::tcp_tls_options(o));
    REQUIRE(t.ok());
    tcp_ = t->get();
    add_transport(std::move(*t));
  }
  std::uint16_t listen_port() const { return tcp_->port(); }
  transports::TcpTls& tcp() { return *tcp_; }

 private:
  transports::TcpTls* tcp_;
};

}  // namespace fieldsync::test
