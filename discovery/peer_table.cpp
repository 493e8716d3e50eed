#include "discovery/peer_table.hpp"

#include <algorithm>

#include "common/text.hpp"

namespace fieldsync::discovery {

namespace {

// Instance names come from the network: valid UTF-8 without control characters (logs, JSON,
// tables) and bounded (cut at a character boundary).
std::string clean_name(const std::string& name) { return sanitize_text(name, 63); }

}  // namespace

std::string format_address(const std::string& ip, bool ipv6, std::uint16_t port) {
  return (ipv6 ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
}

Result<DeviceId> PeerTable::upsert(const ResolvedService& s, const TxtRecord& txt,
                                   std::int64_t now_ms) {
  auto it = devices_.find(txt.device);
  if (it == devices_.end()) {
    if (devices_.size() >= max_devices_)
      return make_error(Errc::resource_exhausted,
                        "discovered devices at the limit (discovery.max_devices = " +
                            std::to_string(max_devices_) + ")");
    it = devices_.emplace(txt.device, DiscoveredDevice{}).first;
    it->second.device = txt.device;
    it->second.first_seen_ms = now_ms;
  }
  // An instance name reused by another device (a renamed or replaced device): move it.
  if (auto old = instances_.find(s.key);
      old != instances_.end() && old->second.device != txt.device) {
    DeviceId prev = old->second.device;
    instances_.erase(old);
    if (auto d = devices_.find(prev); d != devices_.end()) {
      bool any = std::any_of(instances_.begin(), instances_.end(),
                             [&](const auto& kv) { return kv.second.device == prev; });
      if (!any)
        devices_.erase(d);
      else
        rebuild_addresses(d->second);
    }
  }
  Instance& inst = instances_[s.key];
  inst.device = txt.device;
  inst.address = format_address(s.address, s.ipv6, s.port);
  inst.ipv6 = s.ipv6;
  inst.listed = true;
  inst.seen_ms = now_ms;
  DiscoveredDevice& d = it->second;
  d.name = clean_name(s.key.name);
  d.tags = txt.tags;
  d.sync_protocol = txt.sync_protocol;
  d.last_seen_ms = now_ms;
  d.local = s.local;
  rebuild_addresses(d);
  return txt.device;
}

std::optional<DeviceId> PeerTable::remove(const ServiceKey& key) {
  auto it = instances_.find(key);
  if (it == instances_.end()) return std::nullopt;
  DeviceId dev = it->second.device;
  instances_.erase(it);
  auto d = devices_.find(dev);
  if (d == devices_.end()) return std::nullopt;
  rebuild_addresses(d->second);
  if (!d->second.addresses.empty()) return std::nullopt;
  devices_.erase(d);
  return dev;
}

std::vector<DeviceId> PeerTable::expire(std::int64_t now_ms, std::int64_t ttl_ms) {
  std::vector<DeviceId> gone;
  for (auto it = devices_.begin(); it != devices_.end();) {
    if (now_ms - it->second.last_seen_ms > ttl_ms) {
      gone.push_back(it->first);
      it = devices_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = instances_.begin(); it != instances_.end();) {
    if (!devices_.count(it->second.device))
      it = instances_.erase(it);
    else
      ++it;
  }
  return gone;
}

void PeerTable::confirm_all(std::int64_t now_ms) {
  for (auto& [k, i] : instances_) {
    if (!i.listed) continue;
    i.seen_ms = now_ms;
    if (auto d = devices_.find(i.device); d != devices_.end()) d->second.last_seen_ms = now_ms;
  }
}

void PeerTable::mark_unconfirmed() {
  for (auto& [k, i] : instances_) i.listed = false;
}

void PeerTable::set_projects(const DeviceId& device, std::vector<ProjectId> projects) {
  if (auto it = devices_.find(device); it != devices_.end())
    it->second.projects = std::move(projects);
}

const DiscoveredDevice* PeerTable::find(const DeviceId& device) const {
  auto it = devices_.find(device);
  return it == devices_.end() ? nullptr : &it->second;
}

std::vector<DiscoveredDevice> PeerTable::list() const {
  std::vector<DiscoveredDevice> out;
  out.reserve(devices_.size());
  for (const auto& [id, d] : devices_) out.push_back(d);
  return out;
}

void PeerTable::rebuild_addresses(DiscoveredDevice& d) const {
  // IPv4 first (no scope to get wrong), then the most recently seen.
  std::vector<const Instance*> mine;
  for (const auto& [k, i] : instances_)
    if (i.device == d.device) mine.push_back(&i);
  std::stable_sort(mine.begin(), mine.end(), [](const Instance* a, const Instance* b) {
    if (a->ipv6 != b->ipv6) return !a->ipv6;
    return a->seen_ms > b->seen_ms;
  });
  d.addresses.clear();
  for (const auto* i : mine)
    if (std::find(d.addresses.begin(), d.addresses.end(), i->address) == d.addresses.end())
      d.addresses.push_back(i->address);
}

}  // namespace fieldsync::discovery
