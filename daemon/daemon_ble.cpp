#include "daemon/daemon_ble.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <map>

#include "discovery/ble_advert.hpp"
#include "discovery/discovery_tag.hpp"
#include "discovery/project_discovery.hpp"
#include "ipc/api_service.hpp"
#include "peers/peer_manager.hpp"
#include "storage/store.hpp"
#include "sync/messages.hpp"
#include "transports/ble/ble_transport.hpp"

namespace fieldsync::daemon {

namespace asio = boost::asio;
using discovery::BleAdvert;

namespace {

std::int64_t unix_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::uint64_t mono_ms() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

}  // namespace

struct DaemonBle::Impl : std::enable_shared_from_this<DaemonBle::Impl> {
  struct Project {
    ProjectId id;
    Bytes secret;
    bool automatic = false;
  };
  // A device in range with a fieldsync advertisement.
  struct Device {
    std::array<std::uint8_t, BleAdvert::kNonceBytes> nonce{};
    bool matched_once = false;
    std::optional<Bytes> secret;  // of the first "auto" project its tags match
    bool reading = false;
    std::uint64_t retry_at_ms = 0;
    std::optional<DeviceId> device;
    std::uint64_t last_seen_ms = 0;
  };

  asio::io_context& io;
  storage::Store& store;
  const config::Config& cfg;
  peers::PeerManager* sync = nullptr;
  transports::BleTransport* ble = nullptr;
  asio::steady_timer timer;
  bool running = false;
  std::vector<Project> projects;
  std::int64_t advert_bucket = -1;
  std::vector<Bytes> advertised_secrets;
  std::size_t advertised = 0;
  std::map<std::string, Device> devices;  // by ble:// address
  std::uint32_t peers_added = 0;

  Impl(asio::io_context& i, storage::Store& s, const config::Config& c)
      : io(i), store(s), cfg(c), timer(i) {}

  void arm() {
    timer.expires_after(std::chrono::milliseconds(cfg.ble.refresh_ms));
    timer.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || !self->running) return;
      self->refresh();
      self->arm();
    });
  }

  void load_projects() {
    projects.clear();
    auto list = store.list_projects();
    if (!list) return;
    for (const auto& p : *list) {
      auto secret = store.project_secret(p.id);
      if (!secret) continue;
      auto settings = discovery::ProjectDiscovery::parse(p.settings_json);
      if (!settings || !settings->visible) continue;  // a hidden project is not advertised
      projects.push_back(Project{p.id, std::move(*secret),
                                 settings->policy == discovery::SelectionPolicy::automatic});
    }
  }

  void refresh() {
    // Devices not seen for discovery.ttl_ms are forgotten (their identity is read again).
    std::uint64_t now = mono_ms();
    for (auto it = devices.begin(); it != devices.end();)
      it = !it->second.reading && now - it->second.last_seen_ms > cfg.discovery.ttl_ms
               ? devices.erase(it)
               : std::next(it);
    load_projects();
    std::vector<Bytes> secrets;
    for (const auto& p : projects)
      if (secrets.size() < BleAdvert::kMaxTags) secrets.push_back(p.secret);
    std::int64_t bucket = discovery::DiscoveryTag::bucket_of(unix_s());
    if (bucket == advert_bucket && secrets == advertised_secrets) return;
    // A new nonce with every rotation and every change of the projects.
    advert_bucket = bucket;
    advertised_secrets = secrets;
    advertised = secrets.size();
    if (projects.size() > BleAdvert::kMaxTags)
      spdlog::warn("ble: {} visible projects; the advertisement carries the first {}",
                   projects.size(), BleAdvert::kMaxTags);
    if (secrets.empty() || !cfg.ble.advertise) {
      ble->set_advertisement({}, {});
      return;
    }
    auto adv = BleAdvert::make(sync::kProtocolMax, secrets, bucket);
    ble->set_advertisement(adv.encode(),
                           BleAdvert::identity(adv, store.device_id(), secrets, bucket));
    // Devices matched against the old projects are matched again.
    for (auto& [a, d] : devices) d.matched_once = false;
  }

  void on_sighting(const transports::BleSighting& s) {
    if (!running) return;
    auto adv = BleAdvert::parse(s.data);
    if (!adv) return;
    std::string key = s.address.str();
    if (devices.size() >= cfg.discovery.max_devices && !devices.count(key)) return;
    Device& d = devices[key];
    d.last_seen_ms = mono_ms();
    if (!d.matched_once || d.nonce != adv->nonce) {
      d.nonce = adv->nonce;
      d.matched_once = true;
      d.secret.reset();
      for (const auto& p : projects)
        if (p.automatic && adv->match(p.secret, unix_s())) {
          d.secret = p.secret;
          break;
        }
    }
    if (!d.secret) return;
    if (d.device) return add(key, *d.device, s.fresh);
    if (d.reading || mono_ms() < d.retry_at_ms) return;
    d.reading = true;
    ble->read_identity(
        s.address, [weak = weak_from_this(), key, secret = *d.secret](Result<Bytes> r) {
          auto self = weak.lock();
          if (!self || !self->running) return;
          auto it = self->devices.find(key);
          if (it == self->devices.end()) return;
          Device& dev = it->second;
          dev.reading = false;
          if (!r) {
            dev.retry_at_ms = mono_ms() + self->cfg.ble.retry_ms;
            spdlog::info("ble: cannot read the identity of {}: {}", key, r.error().message);
            return;
          }
          auto id = BleAdvert::open_identity(*r, secret, unix_s());
          if (!id) {
            dev.retry_at_ms = mono_ms() + self->cfg.ble.retry_ms;
            spdlog::info("ble: {}: {}", key, id.error().message);
            return;
          }
          if (*id == self->store.device_id()) return;
          dev.device = *id;
          self->add(key, *id, false);
        });
  }

  // `back`: BlueZ found the device anew (it was out of range, or the adapter or BlueZ was
  // away): a peer we dial at this address is dialed now, not after its backoff, which grew
  // while it could not be reached.
  void add(const std::string& address, const DeviceId& id, bool back) {
    if (!sync) return;
    auto p = sync->peer(id);
    if (p.ok() && p->configured) {  // dialed already (here, or over TCP)
      if (back && !p->connected && p->address == address && p->failures > 0) {
        spdlog::info("ble: {} is in range again at {}: dialing it now", id.short_str(), address);
        (void)sync->sync_now(id);
      }
      return;
    }
    if (p.ok() && p->connected) return;  // it dialed us
    auto st = sync->add_peer(address, id);
    if (!st) {
      spdlog::info("ble: cannot add {} as a peer: {}", id.short_str(), st.error().message);
      return;
    }
    ++peers_added;
    spdlog::info("ble: syncing with {} at {} (a shared project, policy auto)", id.short_str(),
                 address);
  }
};

DaemonBle::DaemonBle(asio::io_context& io, storage::Store& store, const config::Config& cfg)
    : impl_(std::make_shared<Impl>(io, store, cfg)) {}

DaemonBle::~DaemonBle() { stop(); }

void DaemonBle::attach_api(ipc::ApiService& api) {
  std::weak_ptr<Impl> weak = impl_;
  api.set_status_section("ble", [weak] {
    boost::json::object o;
    auto self = weak.lock();
    o["enabled"] = self && self->cfg.ble.enabled;
    if (!self || !self->ble) {
      o["state"] = "off";
      o["message"] = self && self->cfg.ble.enabled ? "sync is off" : "ble.enabled = false";
      return boost::json::serialize(o);
    }
    auto s = self->ble->status();
    o["state"] = transports::ble_state_name(s.state);
    o["message"] = s.message;
    o["adapter"] = s.adapter;
    o["advertising"] = s.advertising;
    o["scanning"] = s.scanning;
    o["gatt_registered"] = s.gatt_registered;
    o["advertised_projects"] = self->advertised;
    o["devices"] = self->devices.size();
    o["links"] = s.links;
    o["peers_added"] = self->peers_added;
    return boost::json::serialize(o);
  });
}

void DaemonBle::start(peers::PeerManager* sync, transports::BleTransport* ble) {
  Impl& im = *impl_;
  if (!ble || im.running) return;
  im.sync = sync;
  im.ble = ble;
  im.running = true;
  ble->set_sighting_handler([weak = std::weak_ptr<Impl>(impl_)](const transports::BleSighting& s) {
    if (auto self = weak.lock()) self->on_sighting(s);
  });
  im.refresh();
  im.arm();
}

void DaemonBle::stop() {
  Impl& im = *impl_;
  if (!im.running) return;
  im.running = false;
  im.timer.cancel();
  if (im.ble) im.ble->set_sighting_handler(nullptr);
}

}  // namespace fieldsync::daemon
