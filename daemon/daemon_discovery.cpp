#include "daemon/daemon_discovery.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "discovery/avahi_source.hpp"
#include "discovery/discovery_service.hpp"
#include "ipc/api_service.hpp"
#include "peers/peer_manager.hpp"
#include "storage/store.hpp"
#include "sync/messages.hpp"

namespace fieldsync::daemon {

namespace {

// The sync layer as discovery's "auto" policy sees it.
class SyncConnector final : public discovery::PeerConnector {
 public:
  explicit SyncConnector(peers::PeerManager& s) : sync_(s) {}
  bool configured(const DeviceId& d) const override {
    auto p = sync_.peer(d);
    return p.ok() && p->configured;
  }
  bool connected(const DeviceId& d) const override {
    auto p = sync_.peer(d);
    return p.ok() && p->connected;
  }
  Status add(const DeviceId& d, const std::string& address, const std::string& name) override {
    return sync_.add_peer(address, d, name);
  }
  Status update_address(const DeviceId& d, const std::string& address) override {
    return sync_.set_peer_address(d, address);
  }
  Status remove(const DeviceId& d) override { return sync_.remove_peer(d); }

 private:
  peers::PeerManager& sync_;
};

ipc::DiscoveredPeerInfo to_info(const discovery::DiscoveredPeer& p) {
  ipc::DiscoveredPeerInfo i;
  i.device = p.device.device;
  i.name = p.device.name;
  i.addresses = p.device.addresses;
  i.projects = p.device.projects;
  i.first_seen_ms = p.device.first_seen_ms;
  i.last_seen_ms = p.device.last_seen_ms;
  i.auto_peer = p.auto_peer;
  i.local = p.device.local;
  return i;
}

}  // namespace

struct DaemonDiscovery::Impl {
  const config::Config& cfg;
  peers::PeerManager* sync;
  std::unique_ptr<SyncConnector> connector;
  std::unique_ptr<discovery::DiscoveryService> service;

  Impl(boost::asio::io_context& io, storage::Store& store, const config::Config& c,
       peers::PeerManager* s)
      : cfg(c), sync(s) {
    if (sync) connector = std::make_unique<SyncConnector>(*sync);
    discovery::AvahiSource::Options ao;
    ao.retry_ms = cfg.discovery.avahi_retry_ms;
    ao.max_services = cfg.discovery.max_devices;
    auto source =
        std::make_unique<discovery::AvahiSource>(discovery::DiscoveryService::post_to(io), ao);
    service = std::make_unique<discovery::DiscoveryService>(io, store, cfg.discovery,
                                                            cfg.device_name, sync::kProtocolMax,
                                                            std::move(source), connector.get());
  }
};

DaemonDiscovery::DaemonDiscovery(boost::asio::io_context& io, storage::Store& store,
                                 const config::Config& cfg, peers::PeerManager* sync)
    : impl_(std::make_unique<Impl>(io, store, cfg, sync)) {}

DaemonDiscovery::~DaemonDiscovery() { stop(); }

ipc::DiscoveredPeers DaemonDiscovery::view() {
  if (!impl_->cfg.discovery.enabled) return {};
  discovery::DiscoveryService* svc = impl_->service.get();
  ipc::DiscoveredPeers v;
  v.list = [svc] {
    std::vector<ipc::DiscoveredPeerInfo> out;
    for (const auto& p : svc->peers()) out.push_back(to_info(p));
    return out;
  };
  v.find = [svc](const DeviceId& d) -> std::optional<ipc::DiscoveredPeerInfo> {
    auto p = svc->peer(d);
    if (!p) return std::nullopt;
    return to_info(*p);
  };
  return v;
}

void DaemonDiscovery::attach_api(ipc::ApiService& api) {
  discovery::DiscoveryService* svc = impl_->service.get();
  api.set_status_section("discovery", [svc] {
    auto s = svc->status();
    boost::json::object o;
    o["enabled"] = s.enabled;
    o["avahi"] = discovery::source_state_name(s.state);
    o["message"] = s.message;
    o["announced"] = s.announced;
    o["name"] = s.name;
    o["port"] = s.port;
    o["registrations"] = s.registrations;
    o["visible_projects"] = s.visible_projects;
    o["devices"] = s.devices;
    return boost::json::serialize(o);
  });
}

void DaemonDiscovery::start(std::uint16_t sync_port) {
  // Without sync there is nothing to connect to: browse only (port 0 announces nothing).
  impl_->service->start(impl_->sync ? sync_port : 0);
}

void DaemonDiscovery::stop() { impl_->service->stop(); }

}  // namespace fieldsync::daemon
