#include "daemon/daemon.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "config/config_loader.hpp"
#include "daemon/daemon_ble.hpp"
#include "daemon/daemon_discovery.hpp"
#include "daemon/daemon_mirror.hpp"
#include "daemon/daemon_sync.hpp"
#include "daemon/data_dir.hpp"
#include "daemon/variant_maker.hpp"
#include "ipc/api_access.hpp"
#include "ipc/api_server.hpp"
#include "ipc/api_service.hpp"
#include "ipc/routes_blobs.hpp"
#include "ipc/routes_bundles.hpp"
#include "storage/store.hpp"
#include "systemd/sd_notify.hpp"

namespace fieldsync::daemon {

namespace asio = boost::asio;

namespace {
void log_notify_failure(const Status& st) {
  if (!st) spdlog::warn("sd_notify: {}", st.error().message);
}

// Bundles are written and read with the same limits as the network (sync.batch_*,
// sync.max_projects, storage.max_body_bytes) and the [bundle] section's own.
ipc::BundleRouteOptions bundle_route_options(const config::Config& cfg) {
  ipc::BundleRouteOptions o;
  o.export_options.chunk_bytes = cfg.bundle.chunk_bytes;
  o.export_options.batch_entries = cfg.sync.batch_entries;
  o.export_options.batch_bytes = cfg.sync.batch_bytes;
  o.export_options.max_record_bytes = cfg.bundle.max_record_bytes;
  o.export_options.device_name = cfg.device_name;
  o.import_options.max_record_bytes = cfg.bundle.max_record_bytes;
  o.import_options.limits.max_projects = cfg.sync.max_projects;
  o.import_options.limits.max_body_bytes = cfg.storage.max_body_bytes;
  return o;
}
}  // namespace

struct Daemon::Impl {
  explicit Impl(config::Config c)
      : cfg(std::move(c)),
        loaded(cfg),
        signals(io, SIGTERM, SIGINT),
        hangup(io, SIGHUP),
        watchdog(io),
        blob_gc(io),
        receipts(io) {}

  config::Config cfg;
  // The configuration as built (cfg as the daemon runs it may differ: an ephemeral port kept
  // across an identity renewal); a reload compares the new one with this.
  config::Config loaded;
  std::function<Result<config::Config>()> load_config;  // set_reload
  std::string config_source;
  asio::io_context io{1};
  asio::signal_set signals;
  asio::signal_set hangup;  // SIGHUP: reload
  asio::steady_timer watchdog;
  asio::steady_timer blob_gc;            // blob.gc_interval_ms
  asio::steady_timer receipts;           // hub.receipt_interval_ms
  std::set<std::string> receipt_warned;  // projects (or "durable") already warned about
  // Per project: what the destinations confirmed at the last clean-up, and when it ran.
  std::map<std::string, std::pair<std::string, std::int64_t>> cleanup_seen;
  std::unique_ptr<DataDirLock> lock;  // held until the process ends
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<ipc::ApiService> api;
  std::unique_ptr<ipc::ApiServer> server;
  std::unique_ptr<DaemonSync> sync;
  std::unique_ptr<DaemonDiscovery> discovery;
  std::unique_ptr<DaemonBle> ble;
  std::unique_ptr<DaemonMirror> mirror;    // its worker reads the store: stopped before it closes
  std::unique_ptr<VariantMaker> variants;  // after the server (it queues), before the store
  std::uint64_t variants_watch = 0;        // its BlobStore::watch_held token (0: none)
  bool stopping = false;
  // Set when another copy of this device was detected: the loop reopens the store, which
  // renews the device's identity (docs/storage.md "One identity, one history").
  bool renew_identity = false;

  // Pinged from the event loop itself, so a stuck loop stops the pings and systemd notices.
  void arm_watchdog(std::chrono::microseconds period) {
    watchdog.expires_after(period);
    watchdog.async_wait([this, period](boost::system::error_code ec) {
      if (ec || stopping) return;
      log_notify_failure(systemd::notify_watchdog());
      arm_watchdog(period);
    });
  }

  // Blob garbage collection every blob.gc_interval_ms, on the blob worker (never this loop).
  void arm_blob_gc() {
    blob_gc.expires_after(std::chrono::milliseconds(cfg.storage.blobs.gc_interval_ms));
    blob_gc.async_wait([this](boost::system::error_code ec) {
      if (ec || stopping || !store) return;
      storage::BlobStore* blobs = &store->blobs();
      blobs->post([blobs] {
        auto r = blobs->gc(std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count());
        if (!r)
          spdlog::warn("blob gc failed: {}", r.error().message);
        else if (r->files_deleted > 0)
          spdlog::info("blob gc: {} blob file(s) deleted, {} bytes freed", r->files_deleted,
                       r->bytes_freed);
      });
      arm_blob_gc();
    });
  }

  // Delivery receipts every hub.receipt_interval_ms, for the projects this device is a named
  // destination of (docs/operations.md "Destinations and delivery receipts"). A receipt says
  // what is held durably: with storage.durable = false no receipt is written.
  void arm_receipts() {
    receipts.expires_after(std::chrono::milliseconds(cfg.hub.receipt_interval_ms));
    receipts.async_wait([this](boost::system::error_code ec) {
      if (ec || stopping || !store) return;
      write_receipts();
      clean_up_delivered();
      arm_receipts();
    });
  }
  // Clean-up after delivery (docs/operations.md "Clean-up after delivery"), on the same
  // timer: for the projects in hub.cleanup_projects, when what the destinations confirm
  // changed, or hourly (documents age into hub.cleanup_min_age_ms), or while the disk is
  // short of hub.cleanup_free_below (then whatever their age).
  void clean_up_delivered() {
    if (cfg.hub.cleanup_projects.empty()) return;
    auto projects = store->list_projects();
    if (!projects) return;
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    bool short_of_space = false;
    if (cfg.hub.cleanup_free_below_bytes > 0) {
      std::error_code ec;
      auto space = std::filesystem::space(cfg.data_dir, ec);
      short_of_space = !ec && space.available < cfg.hub.cleanup_free_below_bytes;
    }
    const bool all = cfg.hub.cleanup_projects == "all";
    const auto listed = config::split_project_list(cfg.hub.cleanup_projects);
    for (const auto& p : *projects) {
      const std::string id = p.id.str();
      if (!all && std::find(listed.begin(), listed.end(), id) == listed.end()) continue;
      auto d = store->delivery(p.id);
      if (!d) continue;
      std::string seen = std::to_string(d->delivered);
      for (const auto& r : d->receipts) seen += "," + std::to_string(r.at_ms);
      auto& last = cleanup_seen[id];
      if (!short_of_space && last.first == seen && now - last.second < 3600 * 1000) continue;
      last = {seen, now};
      auto r = store->clean_up(
          p.id, short_of_space ? 0 : static_cast<std::int64_t>(cfg.hub.cleanup_min_age_ms), now);
      if (!r) {
        if (r.error().code != Errc::failed_precondition)  // a destination keeps everything
          spdlog::warn("clean-up of project {}: {}", id, r.error().message);
        continue;
      }
      if (r->documents_removed)
        spdlog::info(
            "clean-up of project {}: {} delivered documents removed ({} bytes){}; {} not "
            "delivered yet",
            id, r->documents_removed, r->bytes_freed,
            short_of_space ? " (the disk is short of hub.cleanup_free_below)" : "",
            r->documents_kept);
    }
  }

  void write_receipts() {
    if (!cfg.storage.durable) {
      if (receipt_warned.insert("durable").second)
        spdlog::warn(
            "delivery receipts are not written: storage.durable = false (a receipt "
            "must only state what survives a power loss)");
      return;
    }
    auto projects = store->list_projects();
    if (!projects) return;
    auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    for (const auto& p : *projects) {
      auto r = store->write_receipt(p.id, now);
      if (!r && receipt_warned.insert(p.id.str()).second)
        spdlog::warn("no delivery receipt for project {}: {}", p.id.str(), r.error().message);
      if (r) receipt_warned.erase(p.id.str());
    }
  }

  void wait_signal() {
    signals.async_wait([this](boost::system::error_code ec, int sig) {
      if (ec) return;
      if (stopping) {
        spdlog::warn("second signal ({}): stopping now", sig);
        io.stop();
        return;
      }
      spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      shutdown();
      wait_signal();
    });
  }

  void wait_hangup() {
    hangup.async_wait([this](boost::system::error_code ec, int) {
      if (ec || stopping) return;
      reload();
      wait_hangup();
    });
  }

  // What READY=1 and a finished reload show in `systemctl status`.
  std::string serving_status() const {
    return "serving the API on " + (server ? server->socket_path().string() : std::string("?"));
  }

  // SIGHUP: tells systemd RELOADING=1 (with MONOTONIC_USEC), reloads, then READY=1 with a
  // STATUS saying how it went, whether or not the new configuration was taken.
  void reload() {
    log_notify_failure(systemd::notify_reloading("reloading the configuration"));
    std::string outcome = reload_config();
    log_notify_failure(systemd::notify_ready(serving_status() + "; " + outcome));
  }

  // The log level and the static peers change now; other keys are reported. Returns a
  // one-line outcome for STATUS=.
  std::string reload_config() {
    if (!load_config) {
      spdlog::warn("received SIGHUP: nothing to reload");
      return "nothing to reload";
    }
    spdlog::info("received SIGHUP, reloading the configuration ({})", config_source);
    auto next = load_config();
    if (!next) {
      spdlog::error("configuration not reloaded, the running one stays: {}", next.error().message);
      return "configuration not reloaded: " + next.error().message;
    }
    std::vector<std::string> restart;
    for (auto key : config::setting_keys()) {
      if (key == "daemon.log_level") continue;
      auto before = config::get_setting(loaded, key);
      auto after = config::get_setting(*next, key);
      if (!before || !after || *before != *after) restart.emplace_back(key);
    }
    std::string changed;
    auto note = [&changed](const std::string& what) {
      changed += (changed.empty() ? "" : ", ") + what;
    };
    if (next->log_level != loaded.log_level) {
      spdlog::default_logger()->set_level(spdlog::level::from_str(next->log_level));
      note("daemon.log_level " + loaded.log_level + " -> " + next->log_level);
      loaded.log_level = cfg.log_level = next->log_level;
    }
    auto same_peer = [](const config::StaticPeer& a, const config::StaticPeer& b) {
      return a.name == b.name && a.address == b.address && a.device_id == b.device_id;
    };
    if (!std::equal(loaded.peers.begin(), loaded.peers.end(), next->peers.begin(),
                    next->peers.end(), same_peer)) {
      if (sync) sync->reload_peers(loaded.peers, next->peers);
      note("static peers");
      loaded.peers = cfg.peers = next->peers;
    }
    spdlog::info("configuration reloaded: {}", changed.empty() ? "nothing changed" : changed);
    if (!restart.empty()) {
      std::string keys;
      for (const auto& k : restart) keys += (keys.empty() ? "" : ", ") + k;
      spdlog::warn("configuration changed, needs a restart: {}", keys);
      return "configuration reloaded; changed keys need a restart: " + keys;
    }
    return "configuration reloaded";
  }

  void shutdown() {
    stopping = true;
    if (!renew_identity) log_notify_failure(systemd::notify_stopping("shutting down"));
    watchdog.cancel();
    blob_gc.cancel();
    receipts.cancel();
    if (discovery) discovery->stop();  // withdraws our service: peers see us leave at once
    if (ble) ble->stop();
    // The loop stops once the API has drained and every sync peer was told we shut down.
    auto left = std::make_shared<int>(2);
    auto finish = [this, left] {
      if (--*left != 0) return;
      signals.cancel();
      hangup.cancel();
      io.stop();
    };
    if (sync)
      sync->stop(finish);
    else
      finish();
    server->stop(std::chrono::milliseconds(cfg.api.shutdown_grace_ms), finish);
  }
};

Daemon::Daemon(config::Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}

void Daemon::set_reload(std::function<Result<config::Config>()> load, std::string source) {
  impl_->load_config = std::move(load);
  impl_->config_source = std::move(source);
}

Daemon::~Daemon() {
  if (impl_->store) impl_->store->set_change_listener(nullptr);
}

Status Daemon::run() {
  auto& d = *impl_;
  d.cfg.storage.data_dir = d.cfg.data_dir;
  // First of all: one daemon per data directory, before a key or a socket is touched.
  auto lock = DataDirLock::acquire(d.cfg.data_dir);
  if (!lock) return lock.error();
  d.lock = std::move(*lock);
  auto token_group = ipc::token_group_id(d.cfg.api.token_group);
  if (!token_group) return token_group.error();
  auto tightened = secure_data_files(d.cfg.data_dir, *token_group);
  if (!tightened) return tightened.error();
  for (const auto& notice : *tightened) spdlog::warn("{}", notice);
  for (bool first = true;; first = false) {
    FS_TRY(run_once(first));
    if (!d.renew_identity) return {};
    // Same ports again, so local apps and peers find the daemon where it was.
    d.renew_identity = false;
    d.stopping = false;
    d.io.restart();
  }
}

Status Daemon::run_once(bool first) {
  auto& d = *impl_;
  auto store = storage::Store::open(d.cfg.storage);
  if (!store) return store.error();
  d.store = std::move(*store);
  if (first)
    spdlog::info("fieldsyncd {} starting; data in {}", FIELDSYNC_VERSION, d.cfg.data_dir.string());
  spdlog::info("device id {} ({})", d.store->device_id().str(), d.store->device_id().short_str());
  if (const auto& conv = d.store->converted())
    spdlog::warn(
        "the data directory was converted from storage format {} to {}; the data as it was is "
        "kept in {} (docs/operations.md \"Upgrading\"; delete it once this release is kept)",
        conv->from_format, conv->to_format, conv->copy.string());
  if (auto change = d.store->last_identity_change()) {
    std::int64_t age_s = (std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count() -
                          change->at_ms) /
                         1000;
    if (age_s < 60)
      spdlog::warn(
          "this device now writes as {} (before: {}) because it was {}; nothing is lost: "
          "what it wrote before is re-published by the new identity where needed "
          "(docs/operations.md \"Backup and restore\")",
          d.store->device_id().short_str(), change->previous.short_str(), change->reason);
  }
  if (first)
    for (const auto& notice : config::config_notices(d.cfg)) spdlog::warn("{}", notice);
  {
    std::vector<storage::ProjectProblem> unreadable;
    if (d.store->list_projects(&unreadable))
      for (const auto& p : unreadable)
        spdlog::error("project {} cannot be read and is skipped: {}", p.id, p.error);
  }
  d.store->set_identity_listener([&d](const std::string& evidence) {
    // Called on the thread that noticed (the io thread); the loop reopens the store.
    asio::post(d.io, [&d, evidence] {
      if (d.stopping) return;
      spdlog::warn(
          "another copy of this device wrote under its identity ({}); renewing the "
          "identity now",
          evidence);
      d.renew_identity = true;
      if (d.server) d.cfg.api.http_port = d.server->http_port();
      if (d.sync && d.sync->listen_port()) d.cfg.sync.listen_port = d.sync->listen_port();
      d.shutdown();
    });
  });

  d.api = std::make_unique<ipc::ApiService>(*d.store, d.cfg.api, d.cfg.device_name);
  d.sync = std::make_unique<DaemonSync>(d.io, *d.store, d.cfg);
  d.discovery = std::make_unique<DaemonDiscovery>(d.io, *d.store, d.cfg, d.sync->service());
  d.sync->attach_api(*d.api, d.discovery->view());
  ipc::register_bundle_routes(d.api->router(), d.api->context(), bundle_route_options(d.cfg));
  ipc::register_blob_routes(d.api->router(), d.api->context(), d.store->blobs());
  if (d.cfg.storage.blobs.make_variants) {
    d.variants = std::make_unique<VariantMaker>(*d.store);
    VariantMaker* maker = d.variants.get();
    d.api->context().blob_uploaded = [maker](const ProjectId& p, const storage::BlobInfo& info) {
      maker->uploaded(p, info);
    };
    // Originals that arrive from peers or bundles without variants (it only queues).
    d.variants_watch = d.store->blobs().watch_held(
        [maker](const ProjectId& p, const storage::BlobId& id) { maker->held(p, id); });
  }
  d.discovery->attach_api(*d.api);
  d.ble = std::make_unique<DaemonBle>(d.io, *d.store, d.cfg);
  d.ble->attach_api(*d.api);
  d.mirror = std::make_unique<DaemonMirror>(*d.store, d.cfg);
  FS_TRY(d.mirror->start());
  d.mirror->attach_api(*d.api);
  d.server = std::make_unique<ipc::ApiServer>(d.io, *d.api, d.cfg.api, d.cfg.data_dir);
  FS_TRY(d.server->start());
  FS_TRY(d.sync->start());
  d.discovery->start(d.sync->listen_port());
  d.ble->start(d.sync->service(), d.sync->ble());
  // Commits happen on whichever thread writes; the server and sync post the wake-up to
  // their own thread.
  ipc::ApiServer* server = d.server.get();
  DaemonSync* sync = d.sync.get();
  DaemonMirror* mirror = d.mirror.get();
  d.store->set_change_listener([server, sync, mirror](const ProjectId& p, std::uint64_t seq) {
    server->notify_change(p, seq);
    sync->notify_change(p);
    mirror->notify();
  });

  spdlog::info("API on unix socket {} (mode {:o}{}{})", d.server->socket_path().string(),
               d.cfg.api.socket_mode, d.cfg.api.socket_group.empty() ? "" : ", group ",
               d.cfg.api.socket_group);
  if (d.cfg.api.http_enabled)
    spdlog::info("API on http://{}:{} (bearer token in {})", d.cfg.api.http_address,
                 d.server->http_port(), d.server->token_path().string());

  d.wait_signal();  // (the previous round's stop cancelled the waits)
  d.wait_hangup();
  if (auto period = systemd::watchdog_ping_interval()) d.arm_watchdog(*period);
  d.arm_blob_gc();
  d.arm_receipts();
  if (first) log_notify_failure(systemd::notify_ready(d.serving_status()));

  d.io.run();

  d.store->set_change_listener(nullptr);
  d.store->set_identity_listener(nullptr);
  d.mirror.reset();
  d.ble.reset();
  d.discovery.reset();
  d.sync.reset();
  d.server.reset();
  d.api.reset();
  if (d.variants_watch) d.store->blobs().unwatch_held(d.variants_watch);
  d.variants_watch = 0;
  d.variants.reset();  // waits for the image in hand
  d.store.reset();     // closes LMDB
  if (!d.renew_identity) spdlog::info("fieldsyncd stopped");
  return {};
}

}  // namespace fieldsync::daemon
