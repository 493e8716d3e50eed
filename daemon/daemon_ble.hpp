// DaemonBle: the daemon's Bluetooth LE discovery (docs/operations.md "Bluetooth LE"). Puts
// this device's projects into the BLE advertisement (rotating tags, discovery/ble_advert.hpp)
// and identity value of the transport, recognises devices in range that share a project,
// reads their identity and adds them to the PeerManager at their ble:// address, like the
// mDNS "auto" policy does (the same per-project settings: a project that is not visible is
// not advertised, and only projects with policy "auto" make this device connect). A device
// the PeerManager already dials at another address (TCP) is left to it. Adds the "ble"
// member of GET /v1/status.
//
// Ownership: borrows the io_context, Store, Config, and (from start()) the PeerManager and
// the transport; all outlive it. Thread-safety: io_context thread only.
// Errors: none returned; BlueZ trouble is a state in the status.
#pragma once

#include <memory>

#include "config/config.hpp"

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
class BleTransport;
}

namespace fieldsync::daemon {

class DaemonBle {
 public:
  DaemonBle(boost::asio::io_context& io, storage::Store& store, const config::Config& cfg);
  ~DaemonBle();

  // Adds the "ble" member of GET /v1/status (call before serving).
  void attach_api(ipc::ApiService& api);
  // Starts advertising and acting on sightings (nothing when either is null).
  void start(peers::PeerManager* sync, transports::BleTransport* ble);
  void stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace fieldsync::daemon
