// PeerConnector: what discovery needs from the sync layer to act on the "auto" policy. The
// daemon implements it over peers::PeerManager; tests use a small recording fake.
// Thread-safety: called on the daemon's io_context thread only.
#pragma once

#include <string>

#include "common/ids.hpp"
#include "common/result.hpp"

namespace fieldsync::discovery {

class PeerConnector {
 public:
  virtual ~PeerConnector() = default;
  // The sync layer already dials this device (a static peer or one a user added).
  virtual bool configured(const DeviceId& device) const = 0;
  // A session with this device is up (whoever dialed).
  virtual bool connected(const DeviceId& device) const = 0;
  virtual Status add(const DeviceId& device, const std::string& address,
                     const std::string& name) = 0;
  // New address for a peer we added; keeps its backoff state and any live session.
  virtual Status update_address(const DeviceId& device, const std::string& address) = 0;
  virtual Status remove(const DeviceId& device) = 0;
};

}  // namespace fieldsync::discovery
