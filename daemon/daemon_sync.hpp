// DaemonSync: the daemon's sync wiring. Owns the PeerManager on the daemon's io_context with
// its transports (TCP + TLS; Bluetooth LE when ble.enabled), adds the static [peer.<name>] peers
// from the config (again when it is reloaded), registers the peers route group and the "peers"
// member of GET /v1/status.
//
// Ownership: borrows the io_context, Store and Config (all outlive it).
// Thread-safety: like PeerManager: io_context thread only, except notify_change().
// Errors: start() returns PeerManager::start()'s errors (port in use) and invalid_argument
// for a static peer with a bad device id or address.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "common/result.hpp"
#include "config/config.hpp"
#include "ipc/discovered_peers.hpp"
#include "ipc/reader_pool.hpp"

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
namespace fieldsync::transports {
class TcpTls;
class BleTransport;
}  // namespace fieldsync::transports

namespace fieldsync::daemon {

class DaemonSync {
 public:
  DaemonSync(boost::asio::io_context& io, storage::Store& store, const config::Config& cfg);
  ~DaemonSync();

  // Starts listening and dialing (nothing when sync.enabled = false).
  Status start();
  // Registers the /v1/peers routes and the status section (call before serving);
  // `discovered` lists devices found on the local network (empty: discovery off).
  void attach_api(ipc::ApiService& api, ipc::DiscoveredPeers discovered = {});
  // The service, or null when sync.enabled = false.
  peers::PeerManager* service() { return service_.get(); }
  // The Bluetooth LE transport (owned by the service), or null when off.
  transports::BleTransport* ble() { return ble_; }
  // The bound sync port (0 when sync is off).
  std::uint16_t listen_port() const;
  // The store committed changes to `project` (any thread).
  void notify_change(const ProjectId& project);
  // The config file was reloaded (SIGHUP): static peers only in `after` are added and dialed,
  // those only in `before` are no longer dialed (PeerManager::unconfigure_peer), a peer whose
  // address changed is dialed at the new one. Matched by device id; each change is logged, a
  // peer that cannot be added is logged as an error and skipped. Nothing when sync is off.
  void reload_peers(const std::vector<config::StaticPeer>& before,
                    const std::vector<config::StaticPeer>& after);
  void stop();
  // Ends every session cleanly (peers are told this device shuts down); `done` runs on the
  // io_context thread once the connections are closed (at once when sync is off).
  void stop(std::function<void()> done);

 private:
  boost::asio::io_context& io_;
  storage::Store& store_;
  const config::Config& cfg_;
  // Threads of their own (api.reader_threads of them) that check and pack received batches
  // ahead of their apply (SessionParams::prepare), so a long query on the API's readers does not
  // hold sync up. Declared before service_: outlives the sessions that post to it.
  std::unique_ptr<ipc::ReaderPool> checkers_;
  std::unique_ptr<peers::PeerManager> service_;
  transports::TcpTls* tcp_ = nullptr;        // owned by service_
  transports::BleTransport* ble_ = nullptr;  // owned by service_
};

}  // namespace fieldsync::daemon
