// DiscoveredPeerInfo: a device found on the local network, as the peers routes show it
// (GET /v1/peers: state "discovered" until it is added; POST /v1/peers without an address
// takes its address). Plain data so ipc/ does not depend on discovery/; the daemon fills it
// from discovery::DiscoveryService.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/ids.hpp"

namespace fieldsync::ipc {

struct DiscoveredPeerInfo {
  DeviceId device;
  std::string name;
  std::vector<std::string> addresses;  // "ip:port", preferred first
  std::vector<ProjectId> projects;     // our projects it proved to share (tag matched)
  std::int64_t first_seen_ms = 0;
  std::int64_t last_seen_ms = 0;
  bool auto_peer = false;  // added for sync by a project's "auto" policy
  bool local = false;      // announced from this machine
};

// Called on the daemon's io_context thread. An empty function = discovery is off.
struct DiscoveredPeers {
  std::function<std::vector<DiscoveredPeerInfo>()> list;
  std::function<std::optional<DiscoveredPeerInfo>(const DeviceId&)> find;
};

}  // namespace fieldsync::ipc
