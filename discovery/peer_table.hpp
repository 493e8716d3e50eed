// PeerTable: the devices found on the local network, built from resolved DNS-SD instances.
//
// One device may be seen as several instances (one per interface and IP protocol); the table
// keeps each instance's address and folds them into one DiscoveredDevice per device id. A
// device leaves the table when its last instance is removed (Avahi reported the service gone)
// or when it has not been confirmed for the TTL (expire()).
//
// Plain data, no I/O: DiscoveryService owns it on its thread. Not thread-safe.
// Errors (upsert): resource_exhausted when a new device would exceed max_devices.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/ids.hpp"
#include "common/result.hpp"
#include "discovery/discovery_source.hpp"
#include "discovery/txt_record.hpp"

namespace fieldsync::discovery {

struct DiscoveredDevice {
  DeviceId device;
  std::string name;                    // service instance name (the device name)
  std::vector<std::string> addresses;  // "ip:port" / "[ipv6]:port", preferred first
  std::vector<ProjectId> projects;     // our projects whose tag it announces
  std::vector<std::string> tags;       // its announced tags (for matching)
  std::uint16_t sync_protocol = 0;
  std::int64_t first_seen_ms = 0;  // unix ms
  std::int64_t last_seen_ms = 0;   // unix ms: last resolve, or last confirmation by Avahi
  bool local = false;              // announced from this machine (another daemon here)
};

class PeerTable {
 public:
  explicit PeerTable(std::size_t max_devices) : max_devices_(max_devices) {}

  // Adds or updates an instance. Returns the device it belongs to.
  Result<DeviceId> upsert(const ResolvedService& s, const TxtRecord& txt, std::int64_t now_ms);
  // Removes an instance; returns the device when that was its last instance.
  std::optional<DeviceId> remove(const ServiceKey& key);
  // Devices not confirmed since now_ms - ttl_ms are dropped and returned.
  std::vector<DeviceId> expire(std::int64_t now_ms, std::int64_t ttl_ms);
  // Avahi still lists every instance resolved since the last mark_unconfirmed(): those
  // devices count as seen now.
  void confirm_all(std::int64_t now_ms);
  // Avahi lost its state (daemon restart): no instance counts as listed until resolved again,
  // so one that vanished meanwhile ages out instead of being confirmed forever.
  void mark_unconfirmed();
  void set_projects(const DeviceId& device, std::vector<ProjectId> projects);

  const DiscoveredDevice* find(const DeviceId& device) const;
  std::vector<DiscoveredDevice> list() const;
  std::size_t size() const { return devices_.size(); }

 private:
  struct Instance {
    DeviceId device;
    std::string address;  // formatted host:port
    bool ipv6 = false;
    bool listed = true;  // resolved since Avahi last lost its state
    std::int64_t seen_ms = 0;
  };
  void rebuild_addresses(DiscoveredDevice& d) const;

  std::size_t max_devices_;
  std::map<ServiceKey, Instance> instances_;
  std::map<DeviceId, DiscoveredDevice> devices_;
};

// "1.2.3.4:7891", "[fe80::1%eth0]:7891".
std::string format_address(const std::string& ip, bool ipv6, std::uint16_t port);

}  // namespace fieldsync::discovery
