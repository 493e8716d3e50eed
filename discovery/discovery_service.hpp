// DiscoveryService: fieldsync's local-network discovery (docs/operations.md "Discovery").
//
// Announces this device through a DiscoverySource (Avahi in the daemon) with a TXT record
// holding the device id and one rotating tag per visible project (DiscoveryTag), browses for
// other devices, keeps the table of discovered devices with the projects they proved to share
// (their tag matches one of our project secrets), and applies each project's selection policy:
// "manual" only lists devices; "auto" adds every matching device to the sync layer once
// (PeerConnector::add), follows its address when it changes, and removes it again when it
// has left the network and no session is up. Reconnect backoff is the sync layer's.
//
// Every refresh_ms it re-reads the projects (visibility, policy, new projects), re-announces
// when the tags change (hourly rotation) and re-matches the table. A device with no visible
// project does not announce itself at all.
//
// Ownership: borrows the io_context, the Store and the PeerConnector (all outlive it); owns
// the source and the table.
// Thread-safety: every method runs on the io_context's thread (the daemon's only thread); the
// source posts its events there.
// Errors: none returned; Avahi trouble is a state (status().state), logged once per change.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "discovery/discovery_source.hpp"
#include "discovery/peer_connector.hpp"
#include "discovery/peer_table.hpp"
#include "storage/store.hpp"

namespace boost::asio {
class io_context;
}

namespace fieldsync::discovery {

// A discovered device as the API shows it.
struct DiscoveredPeer {
  DiscoveredDevice device;
  bool auto_peer = false;  // added to the sync layer by the "auto" policy
};

struct DiscoveryStatus {
  bool enabled = false;
  SourceState state = SourceState::off;
  std::string message;     // why Avahi is not running, if it is not
  bool announced = false;  // our service is registered right now
  std::string name;        // the name it is registered under
  std::uint16_t port = 0;
  std::uint32_t registrations = 0;  // times it got registered (again after an Avahi restart)
  std::size_t visible_projects = 0;
  std::size_t devices = 0;
};

class DiscoveryService {
 public:
  using Post = std::function<void(std::function<void()>)>;

  DiscoveryService(boost::asio::io_context& io, storage::Store& store,
                   config::DiscoveryOptions options, std::string device_name,
                   std::uint16_t sync_protocol, std::unique_ptr<DiscoverySource> source,
                   PeerConnector* connector);
  ~DiscoveryService();
  DiscoveryService(const DiscoveryService&) = delete;
  DiscoveryService& operator=(const DiscoveryService&) = delete;

  // A Post that runs functions on `io` (for sources with their own threads).
  static Post post_to(boost::asio::io_context& io);

  // Starts announcing (sync_port != 0) and browsing; does nothing when discovery.enabled is off.
  void start(std::uint16_t sync_port);
  void stop();
  // Re-reads projects and settings now (after a settings change) instead of at the next tick.
  void refresh();

  std::vector<DiscoveredPeer> peers() const;
  std::optional<DiscoveredPeer> peer(const DeviceId& device) const;
  DiscoveryStatus status() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace fieldsync::discovery
