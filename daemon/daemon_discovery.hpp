// DaemonDiscovery: the daemon's discovery wiring. Owns the DiscoveryService with its Avahi
// source on the daemon's io_context, adapts the PeerManager as its PeerConnector (the "auto"
// policy adds peers there), feeds discovered devices to the peers routes and adds the
// "discovery" member of GET /v1/status.
//
// Ownership: borrows the io_context, Store, Config and PeerManager (all outlive it; the
// PeerManager may be null when sync is disabled: then nothing is announced and nothing is
// dialed, but devices are still listed).
// Thread-safety: io_context thread only.
// Errors: none; Avahi trouble is logged and shown in the status.
#pragma once

#include <memory>

#include "config/config.hpp"
#include "ipc/discovered_peers.hpp"

namespace boost::asio {
class io_context;
}
namespace fieldsync::storage {
class Store;
}
namespace fieldsync::ipc {
class ApiService;
}
namespace fieldsync::peers {
class PeerManager;
}

namespace fieldsync::daemon {

class DaemonDiscovery {
 public:
  DaemonDiscovery(boost::asio::io_context& io, storage::Store& store, const config::Config& cfg,
                  peers::PeerManager* sync);
  ~DaemonDiscovery();

  // What the peers routes show of discovery (empty functions when discovery is off).
  ipc::DiscoveredPeers view();
  // Adds the "discovery" member of GET /v1/status (call before serving).
  void attach_api(ipc::ApiService& api);
  // Starts announcing (once sync listens) and browsing.
  // Announces `sync_port` (the TCP sync port; 0 announces nothing) and browses.
  void start(std::uint16_t sync_port);
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fieldsync::daemon
