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
    BleAdvert::Holdings holdings{};
  };
  // A device in range with a fieldsync advertisement (by its ble:// address).
  struct Device {
    std::array<std::uint8_t, BleAdvert::kNonceBytes> nonce{};
    bool matched_once = false;
    std::optional<Bytes> secret;  // of the first "auto" project its tags match
    bool same = false;            // it holds what we hold of that project (its digest)
    bool hint_hidden = false;     // it has a TCP address hint encrypted for another of its projects
    bool reading = false;
    std::uint64_t retry_at_ms = 0;
    std::optional<DeviceId> device;
    std::uint64_t last_seen_ms = 0;
  };
  // How to reach a device found over BLE: its ble:// address and the TCP address it
  // advertises; which the PeerManager dials (docs/operations.md "Bluetooth LE").
  struct Route {
    std::string ble;
    std::string tcp;
    std::uint64_t tcp_retry_at_ms = 0;  // TCP failed: not before this again
    bool trying = false;                // a handover attempt is under way
  };

  asio::io_context& io;
  storage::Store& store;
  const config::Config& cfg;
  peers::PeerManager* sync = nullptr;
  transports::BleTransport* ble = nullptr;
  asio::steady_timer timer;
  bool running = false;
  std::vector<Project> projects;
  // What the advertisement says now (a new one, with a new nonce, when any of it changes).
  std::int64_t advert_bucket = -1;
  std::vector<BleAdvert::Project> advertised_projects;
  std::optional<BleAdvert::Hint> advertised_hint;
  std::size_t advertised = 0;
  std::map<std::string, Device> devices;  // by ble:// address
  std::map<DeviceId, Route> routes;
  std::uint32_t peers_added = 0;
  std::uint32_t skipped_in_sync = 0;  // devices in range not connected to: they hold what we hold
  std::uint32_t handovers = 0;        // sessions moved from BLE to TCP by this device
  std::uint32_t tcp_fallbacks = 0;    // TCP hint unreachable: synced over BLE instead

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
      Project proj{
          p.id, std::move(*secret), settings->policy == discovery::SelectionPolicy::automatic, {}};
      if (auto vv = store.version_vector(p.id); vv.ok())
        proj.holdings = BleAdvert::holdings_of(*vv);
      projects.push_back(std::move(proj));
    }
  }

  // Where this device listens for sync over TCP, as an advertisement hint (the first IPv4
  // address: a LAN one before loopback).
  std::optional<BleAdvert::Hint> own_hint() const {
    if (!cfg.ble.ip_hint || !sync) return std::nullopt;
    for (const auto& a : sync->listen_addresses())
      if (auto h = BleAdvert::Hint::from_uri(a.str())) return h;
    return std::nullopt;
  }

  void refresh() {
    // Devices not seen for discovery.ttl_ms are forgotten (their identity is read again).
    std::uint64_t now = mono_ms();
    for (auto it = devices.begin(); it != devices.end();)
      it = !it->second.reading && now - it->second.last_seen_ms > cfg.discovery.ttl_ms
               ? devices.erase(it)
               : std::next(it);
    for (auto it = routes.begin(); it != routes.end();)
      it = !devices.count(it->second.ble) && !it->second.trying ? routes.erase(it) : std::next(it);
    load_projects();
    advertise();
    for (auto& [id, r] : routes) steer(id, r);
  }

  void advertise() {
    std::int64_t bucket = discovery::DiscoveryTag::bucket_of(unix_s());
    auto hint = own_hint();
    // More projects than fit: a different few each period, so each is found in turn.
    std::size_t cap = BleAdvert::capacity(hint.has_value());
    std::vector<BleAdvert::Project> chosen;
    std::size_t n = projects.size();
    for (std::size_t i = 0; i < n && chosen.size() < cap; ++i) {
      const auto& p = projects[(static_cast<std::size_t>(bucket) + i) % n];
      chosen.push_back(BleAdvert::Project{p.secret, p.holdings});
    }
    if (bucket == advert_bucket && chosen == advertised_projects && hint == advertised_hint) return;
    if (n > cap && bucket != advert_bucket)
      spdlog::info("ble: {} visible projects; the advertisement carries {} of them this hour", n,
                   cap);
    // A new nonce with every change: rotation, projects, holdings, the TCP address.
    advert_bucket = bucket;
    advertised_projects = chosen;
    advertised_hint = hint;
    advertised = chosen.size();
    if (chosen.empty() || !cfg.ble.advertise) {
      ble->set_advertisement({}, {});
      return;
    }
    auto adv = BleAdvert::make(sync::kProtocolMax, chosen, hint, bucket);
    ble->set_advertisement(adv.encode(),
                           BleAdvert::identity(adv, store.device_id(), chosen, hint, bucket));
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
    bool changed = !d.matched_once || d.nonce != adv->nonce;
    if (changed) {
      d.nonce = adv->nonce;
      d.matched_once = true;
      d.secret.reset();
      d.same = false;
      d.hint_hidden = false;
      for (const auto& p : projects) {
        if (!p.automatic) continue;
        auto m = adv->match(p.secret, unix_s());
        if (!m) continue;
        d.secret = p.secret;
        d.same = adv->holds_same(*m, p.secret, p.holdings);
        d.hint_hidden = adv->hint.has_value() && m->index != 0;
        if (d.device)
          if (auto h = adv->open_hint(*m, p.secret)) learn_tcp(*d.device, key, h->uri());
        break;
      }
    }
    if (!d.secret) return;
    // A hint for another of its projects is read from its identity value, once.
    if (d.device && !(changed && d.hint_hidden && !knows_tcp(*d.device)))
      return add(key, *d.device, s.fresh, d.same);
    // Unknown, and it holds what we hold: nothing to exchange, no connection.
    if (!d.device && d.same) {
      if (changed) ++skipped_in_sync;
      return;
    }
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
          if (id->device == self->store.device_id()) return;
          dev.device = id->device;
          if (id->hint) self->learn_tcp(id->device, key, id->hint->uri());
          self->add(key, id->device, false, dev.same);
        });
  }

  bool knows_tcp(const DeviceId& id) const {
    auto it = routes.find(id);
    return it != routes.end() && !it->second.tcp.empty();
  }

  // The TCP address a device advertises; a new one is tried at once.
  void learn_tcp(const DeviceId& id, const std::string& ble_address, const std::string& tcp) {
    Route& r = routes[id];
    r.ble = ble_address;
    if (r.tcp == tcp) return;
    spdlog::info("ble: {} listens on TCP at {}", id.short_str(), tcp);
    r.tcp = tcp;
    r.tcp_retry_at_ms = 0;
  }

  // `back`: BlueZ found the device anew (it was out of range, or the adapter or BlueZ was
  // away): a peer we dial at this address is dialed now, not after its backoff, which grew
  // while it could not be reached. `same`: it holds what we hold.
  void add(const std::string& address, const DeviceId& id, bool back, bool same) {
    if (!sync) return;
    Route& r = routes[id];
    r.ble = address;
    auto p = sync->peer(id);
    if (p.ok() && p->configured) {  // dialed already (here, or over TCP)
      if (back && !same && !p->connected && p->address == address && p->failures > 0) {
        spdlog::info("ble: {} is in range again at {}: dialing it now", id.short_str(), address);
        (void)sync->sync_now(id);
      }
      return steer(id, r);
    }
    if (p.ok() && p->connected) return;  // it dialed us
    // TCP first when it listens there: the same sync, hundreds of times faster.
    bool tcp = !r.tcp.empty();
    auto st = sync->add_peer(tcp ? r.tcp : address, id);
    if (!st) {
      spdlog::info("ble: cannot add {} as a peer: {}", id.short_str(), st.error().message);
      return;
    }
    ++peers_added;
    if (tcp)
      spdlog::info(
          "ble: syncing with {} (a shared project, policy auto) at {}, its TCP address, "
          "before {}",
          id.short_str(), r.tcp, address);
    else
      spdlog::info("ble: syncing with {} at {} (a shared project, policy auto)", id.short_str(),
                   address);
  }

  // Keeps a device found over BLE on its fastest working way: TCP when it answers there, BLE
  // otherwise, and a BLE session moved to TCP once TCP answers.
  void steer(const DeviceId& id, Route& r) {
    if (!sync || r.trying) return;
    auto p = sync->peer(id);
    if (!p.ok() || !p->configured) return;
    if (p->address != r.ble && p->address != r.tcp) return;  // dialed where the user said
    std::uint64_t now = mono_ms();
    if (p->connected) {
      if (p->link != transports::LinkClass::slow || r.tcp.empty() || now < r.tcp_retry_at_ms)
        return;
      r.trying = true;
      sync->handover(id, r.tcp, [weak = weak_from_this(), id](Status st) {
        auto self = weak.lock();
        if (!self) return;
        auto it = self->routes.find(id);
        if (it == self->routes.end()) return;
        it->second.trying = false;
        if (st) {
          ++self->handovers;
          spdlog::info("ble: {} answers on TCP at {}: its session moved there from Bluetooth LE",
                       id.short_str(), it->second.tcp);
          return;
        }
        it->second.tcp_retry_at_ms = mono_ms() + self->cfg.ble.tcp_retry_ms;
        spdlog::debug("ble: {} does not answer at {} yet: {}", id.short_str(), it->second.tcp,
                      st.error().message);
      });
      return;
    }
    bool in_range = devices.count(r.ble) != 0;
    if (!r.tcp.empty() && p->address == r.tcp && p->state == peers::PeerState::backoff &&
        p->transport == "tcp" && p->failures > 0 && in_range) {
      ++tcp_fallbacks;
      r.tcp_retry_at_ms = now + cfg.ble.tcp_retry_ms;
      spdlog::info("ble: {} does not answer at its TCP address {}: syncing over Bluetooth LE at {}",
                   id.short_str(), r.tcp, r.ble);
      (void)sync->set_peer_address(id, r.ble);
      (void)sync->sync_now(id);
    } else if (!r.tcp.empty() && p->address == r.ble && now >= r.tcp_retry_at_ms) {
      (void)sync->set_peer_address(id, r.tcp);  // the next dial tries TCP again
      r.tcp_retry_at_ms = now + cfg.ble.tcp_retry_ms;
      if (p->state == peers::PeerState::backoff) (void)sync->sync_now(id);
    }
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
    o["ip_hint"] = self->advertised_hint ? boost::json::value(self->advertised_hint->uri())
                                         : boost::json::value(nullptr);
    o["skipped_in_sync"] = self->skipped_in_sync;
    o["handovers"] = self->handovers;
    o["tcp_fallbacks"] = self->tcp_fallbacks;
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
