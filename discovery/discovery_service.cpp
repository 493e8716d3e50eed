// The only Asio code of fs_discovery (a timer and posts; no sockets: Avahi does the network).
#include "discovery/discovery_service.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <set>

#include "common/clock.hpp"
#include "discovery/discovery_tag.hpp"
#include "discovery/project_discovery.hpp"
#include "discovery/txt_record.hpp"

namespace fieldsync::discovery {

namespace asio = boost::asio;

namespace {}  // namespace

struct DiscoveryService::Impl : std::enable_shared_from_this<DiscoveryService::Impl> {
  struct Project {
    ProjectId id;
    Bytes secret;
    ProjectDiscovery settings;
  };

  asio::io_context& io;
  storage::Store& store;
  config::DiscoveryOptions opt;
  std::string device_name;
  std::uint16_t sync_protocol;
  std::unique_ptr<DiscoverySource> source;
  PeerConnector* connector;
  asio::steady_timer timer;
  PeerTable table;
  std::vector<Project> projects;
  bool running = false;
  std::uint16_t port = 0;
  SourceState state = SourceState::off;
  std::string state_message;
  bool announcing = false;  // we asked the source to announce
  bool announced = false;   // the source confirmed it
  std::string announced_name;
  std::uint32_t registrations = 0;
  std::size_t visible = 0;
  std::set<DeviceId> auto_peers;                 // added by us to the sync layer
  std::map<DeviceId, std::string> auto_address;  // the address we gave it
  std::set<DeviceId> refused;                    // add() failed: not retried until it leaves
  std::set<ProjectId> bad_settings;              // logged once each
  // Matching costs 3 HMACs per (device, project): redo it only when the device's tags, our
  // projects or the hour changed, not on every refresh.
  std::uint64_t projects_generation = 0;
  struct Matched {
    std::vector<std::string> tags;
    std::int64_t bucket = 0;
    std::uint64_t generation = 0;
  };
  std::map<DeviceId, Matched> matched_cache;
  bool warned_full = false;
  bool warned_tags = false;

  Impl(asio::io_context& i, storage::Store& s, config::DiscoveryOptions o, std::string name,
       std::uint16_t sp, std::unique_ptr<DiscoverySource> src, PeerConnector* c)
      : io(i),
        store(s),
        opt(o),
        device_name(name.empty() ? "fieldsync" : std::move(name)),
        sync_protocol(sp),
        source(std::move(src)),
        connector(c),
        timer(i),
        table(o.max_devices) {}

  void arm() {
    timer.expires_after(std::chrono::milliseconds(opt.refresh_ms));
    timer.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || !self->running) return;
      self->refresh();
      self->arm();
    });
  }

  void load_projects() {
    std::vector<Project> old = std::move(projects);
    projects.clear();
    load_project_list();
    bool same = old.size() == projects.size();
    for (std::size_t i = 0; same && i < old.size(); ++i)
      same = old[i].id == projects[i].id && old[i].secret == projects[i].secret &&
             old[i].settings.policy == projects[i].settings.policy;
    if (!same) ++projects_generation;
  }

  void load_project_list() {
    auto list = store.list_projects();
    if (!list) {
      spdlog::warn("discovery: cannot list projects: {}", list.error().message);
      return;
    }
    for (const auto& p : *list) {
      auto secret = store.project_secret(p.id);
      if (!secret) continue;  // not a member (e.g. left): nothing to announce or match
      auto settings = ProjectDiscovery::parse(p.settings_json);
      Project pr{p.id, std::move(*secret), {}};
      if (settings) {
        pr.settings = *settings;
        bad_settings.erase(p.id);
      } else {
        // A malformed setting hides the project: a typo must not announce more than intended.
        if (bad_settings.insert(p.id).second)
          spdlog::warn("discovery: project {}: {}; the project is not announced", p.id.str(),
                       settings.error().message);
        pr.settings.visible = false;
      }
      projects.push_back(std::move(pr));
    }
  }

  void announce() {
    if (port == 0) return;
    std::int64_t bucket = DiscoveryTag::bucket_of(unix_ms() / 1000);
    TxtRecord txt;
    txt.sync_protocol = sync_protocol;
    txt.device = store.device_id();
    visible = 0;
    for (const auto& p : projects) {
      if (!p.settings.visible) continue;
      ++visible;
      if (txt.tags.size() >= opt.max_announced_projects) {
        if (!warned_tags)
          spdlog::warn(
              "discovery: more visible projects than discovery.max_announced_projects "
              "({}); the rest are not announced",
              opt.max_announced_projects);
        warned_tags = true;
        continue;
      }
      txt.tags.push_back(DiscoveryTag::compute(p.secret, txt.device, bucket));
    }
    if (txt.tags.empty()) {
      if (announcing) {
        spdlog::info("discovery: no visible project; this device is no longer announced");
        source->withdraw();
      }
      announcing = false;
      announced = false;
      return;
    }
    source->announce(Announcement{device_name, port, txt.encode()});
    announcing = true;
  }

  std::vector<ProjectId> match(const DiscoveredDevice& d) const {
    std::vector<ProjectId> out;
    std::int64_t now_s = unix_ms() / 1000;
    for (const auto& p : projects)
      if (DiscoveryTag::matches(p.secret, d.device, d.tags, now_s)) out.push_back(p.id);
    return out;
  }

  bool wants_auto(const DiscoveredDevice& d) const {
    for (const auto& id : d.projects)
      for (const auto& p : projects)
        if (p.id == id && p.settings.policy == SelectionPolicy::automatic) return true;
    return false;
  }

  // Matches one device against our projects and applies the policy.
  void evaluate(const DeviceId& id) {
    const DiscoveredDevice* d = table.find(id);
    if (!d) return;
    std::int64_t bucket = DiscoveryTag::bucket_of(unix_ms() / 1000);
    auto& cache = matched_cache[id];
    std::vector<ProjectId> matched;
    if (cache.generation == projects_generation && cache.bucket == bucket &&
        cache.tags == d->tags) {
      matched = d->projects;
    } else {
      matched = match(*d);
      cache = Matched{d->tags, bucket, projects_generation};
    }
    bool changed = matched != d->projects;
    table.set_projects(id, std::move(matched));
    d = table.find(id);
    if (changed && !d->projects.empty())
      spdlog::info("discovery: {} ('{}') shares {} project(s) with us", id.short_str(), d->name,
                   d->projects.size());
    if (!connector || d->addresses.empty()) return;
    if (auto_peers.count(id)) {
      const std::string& addr = d->addresses.front();
      if (auto_address[id] != addr) {
        if (auto st = connector->update_address(id, addr); st) {
          spdlog::info("discovery: {} moved to {}", id.short_str(), addr);
          auto_address[id] = addr;
        }
      }
      return;
    }
    if (!wants_auto(*d) || refused.count(id) || connector->configured(id)) return;
    auto st = connector->add(id, d->addresses.front(), d->name);
    if (!st) {
      spdlog::warn("discovery: cannot add {} as a peer: {}", id.short_str(), st.error().message);
      refused.insert(id);
      return;
    }
    spdlog::info("discovery: syncing with {} ('{}') at {} (policy auto)", id.short_str(), d->name,
                 d->addresses.front());
    auto_peers.insert(id);
    auto_address[id] = d->addresses.front();
  }

  // Peers we added that are gone (or no longer wanted) leave the sync layer once no session
  // is up: a live session stays as long as it lasts.
  void sweep() {
    for (auto it = auto_peers.begin(); it != auto_peers.end();) {
      const DiscoveredDevice* d = table.find(*it);
      bool keep = d && wants_auto(*d);
      if (keep || (connector && connector->connected(*it))) {
        ++it;
        continue;
      }
      if (connector) (void)connector->remove(*it);
      spdlog::info("discovery: {} left; no longer dialed", it->short_str());
      auto_address.erase(*it);
      it = auto_peers.erase(it);
    }
  }

  void device_gone(const DeviceId& id) {
    refused.erase(id);
    matched_cache.erase(id);
    spdlog::info("discovery: {} is gone", id.short_str());
  }

  void refresh() {
    if (!running) return;
    load_projects();
    announce();
    std::int64_t now = unix_ms();
    if (state == SourceState::running) table.confirm_all(now);
    for (const auto& id : table.expire(now, opt.ttl_ms)) device_gone(id);
    for (const auto& d : table.list()) evaluate(d.device);
    sweep();
  }

  void on_event(SourceEvent ev) {
    if (!running) return;
    if (auto* r = std::get_if<ResolvedService>(&ev)) return on_resolved(*r);
    if (auto* rm = std::get_if<ServiceRemoved>(&ev)) {
      if (auto id = table.remove(rm->key)) {
        device_gone(*id);
        sweep();
      }
      return;
    }
    if (auto* sc = std::get_if<SourceStateChanged>(&ev)) {
      state = sc->state;
      state_message = sc->message;
      if (state == SourceState::running) {
        spdlog::info("discovery: connected to avahi-daemon");
      } else {
        announced = false;
        table.mark_unconfirmed();
        spdlog::warn("discovery: {}{}", sc->message,
                     opt.enabled ? " (static peers keep working)" : "");
      }
      return;
    }
    if (auto* a = std::get_if<Announced>(&ev)) {
      announced = true;
      announced_name = a->name;
      ++registrations;
      spdlog::info("discovery: announced as '{}' (sync port {}, {} visible project(s))", a->name,
                   port, visible);
    }
  }

  void on_resolved(const ResolvedService& s) {
    auto txt = TxtRecord::parse(s.txt);
    if (!txt) {
      spdlog::debug("discovery: ignoring a service at {}: {}",
                    format_address(s.address, s.ipv6, s.port), txt.error().message);
      return;
    }
    if (txt->device == store.device_id()) return;  // ourselves
    bool fresh = table.find(txt->device) == nullptr;
    auto id = table.upsert(s, *txt, unix_ms());
    if (!id) {
      if (!warned_full) spdlog::warn("discovery: {}", id.error().message);
      warned_full = true;
      return;
    }
    if (fresh)
      spdlog::info("discovery: found {} ('{}') at {}", id->short_str(), table.find(*id)->name,
                   format_address(s.address, s.ipv6, s.port));
    evaluate(*id);
  }
};

DiscoveryService::DiscoveryService(asio::io_context& io, storage::Store& store,
                                   config::DiscoveryOptions options, std::string device_name,
                                   std::uint16_t sync_protocol,
                                   std::unique_ptr<DiscoverySource> source,
                                   PeerConnector* connector)
    : impl_(std::make_shared<Impl>(io, store, options, std::move(device_name), sync_protocol,
                                   std::move(source), connector)) {}

DiscoveryService::~DiscoveryService() { stop(); }

DiscoveryService::Post DiscoveryService::post_to(asio::io_context& io) {
  return [&io](std::function<void()> f) { asio::post(io, std::move(f)); };
}

void DiscoveryService::start(std::uint16_t sync_port) {
  Impl& im = *impl_;
  if (im.running || !im.opt.enabled) {
    if (!im.opt.enabled) spdlog::info("discovery: off (discovery.enabled = false)");
    return;
  }
  im.running = true;
  im.port = sync_port;
  im.source->start([weak = std::weak_ptr<Impl>(impl_)](SourceEvent ev) {
    if (auto self = weak.lock()) self->on_event(std::move(ev));
  });
  im.refresh();
  im.arm();
}

void DiscoveryService::stop() {
  Impl& im = *impl_;
  if (!im.running) return;
  im.running = false;
  im.timer.cancel();
  im.source->stop();  // frees the service: peers get a goodbye
  im.state = SourceState::off;
  im.announced = false;
}

void DiscoveryService::refresh() { impl_->refresh(); }

std::vector<DiscoveredPeer> DiscoveryService::peers() const {
  std::vector<DiscoveredPeer> out;
  for (auto& d : impl_->table.list()) {
    bool a = impl_->auto_peers.count(d.device) > 0;
    out.push_back(DiscoveredPeer{std::move(d), a});
  }
  return out;
}

std::optional<DiscoveredPeer> DiscoveryService::peer(const DeviceId& device) const {
  const DiscoveredDevice* d = impl_->table.find(device);
  if (!d) return std::nullopt;
  return DiscoveredPeer{*d, impl_->auto_peers.count(device) > 0};
}

DiscoveryStatus DiscoveryService::status() const {
  const Impl& im = *impl_;
  DiscoveryStatus s;
  s.enabled = im.opt.enabled;
  s.state = im.state;
  s.message = im.state_message;
  s.announced = im.announced && im.announcing;
  s.name = im.announced_name;
  s.port = im.port;
  s.registrations = im.registrations;
  s.visible_projects = im.visible;
  s.devices = im.table.size();
  return s;
}

}  // namespace fieldsync::discovery
