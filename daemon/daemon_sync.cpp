#include "daemon/daemon_sync.hpp"

#include <map>

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "ipc/api_service.hpp"
#include "ipc/routes_join.hpp"
#include "ipc/routes_members.hpp"
#include "ipc/routes_peers.hpp"
#include "peers/peer_manager.hpp"
#include "storage/store.hpp"
#include "transports/ble/ble_transport.hpp"
#include "transports/tcp_tls/tcp_tls.hpp"

namespace fieldsync::daemon {

DaemonSync::DaemonSync(boost::asio::io_context& io, storage::Store& store,
                       const config::Config& cfg)
    : io_(io), store_(store), cfg_(cfg) {
  if (cfg.sync.enabled)
    service_ = std::make_unique<peers::PeerManager>(io, store, cfg.sync, cfg.device_name);
}

DaemonSync::~DaemonSync() { stop(); }

Status DaemonSync::start() {
  if (!service_) {
    spdlog::info("sync disabled (sync.enabled = false)");
    return {};
  }
  // The certificate shows how this identity continues earlier ones, so peers that dial an
  // old id after a restore follow the new one (docs/protocol.md section 1).
  auto tcp_opt = transports::tcp_tls_options(cfg_.sync);
  tcp_opt.renewals = store_.renewal_links();
  auto tcp = transports::TcpTls::create(io_, store_.signing_key(), std::move(tcp_opt));
  if (!tcp.ok()) return tcp.error();
  tcp_ = tcp->get();
  service_->add_transport(std::move(*tcp));
  if (cfg_.ble.enabled) {
    auto ble_opt = transports::ble_options(cfg_.ble);
    ble_opt.renewals = store_.renewal_links();
    auto ble = transports::BleTransport::create(io_, store_.signing_key(), std::move(ble_opt));
    if (!ble.ok()) return ble.error();
    ble_ = ble->get();
    service_->add_transport(std::move(*ble));
  }
  for (const auto& p : cfg_.peers) {
    auto id = DeviceId::parse(p.device_id);
    if (!id) return make_error(Errc::invalid_argument, "peer." + p.name + ".device: bad device id");
    if (auto st = service_->add_peer(p.address, *id, p.name); !st)
      return make_error(st.error().code, "peer." + p.name + ": " + st.error().message);
  }
  return service_->start();
}

void DaemonSync::attach_api(ipc::ApiService& api, ipc::DiscoveredPeers discovered) {
  peers::PeerManager* svc = service_.get();
  // Received batches are applied on the API's writer thread, grouped with its writes.
  if (svc && api.writer())
    svc->set_writer(
        [w = api.writer()](std::function<void()> work, std::function<void(const Status&)> done) {
          w->post({std::move(work), std::move(done), false});
        });
  // ...each checked and packed on a thread of its own while the one before commits.
  if (svc && api.writer() && cfg_.api.reader_threads > 0) {
    checkers_ = std::make_unique<ipc::ReaderPool>(cfg_.api.reader_threads);
    svc->set_preparer(
        [pool = checkers_.get()](std::function<void()> work, std::function<void()> done) {
          pool->post([work = std::move(work), done = std::move(done)] {
            work();
            done();
          });
        });
  }
  ipc::register_peer_routes(api.router(), api.context(), svc, std::move(discovered));
  ipc::register_member_routes(api.router(), api.context(), svc);
  ipc::register_join_routes(api.router(), api.context(), svc);
  api.set_status_section("peers", [svc] { return ipc::peers_status_json(svc); });
  api.context().metrics_sections.emplace_back(
      [svc](ipc::MetricsWriter& w) { ipc::write_peer_metrics(w, svc); });
}

void DaemonSync::notify_change(const ProjectId& project) {
  if (service_) service_->notify_change(project);
}

void DaemonSync::reload_peers(const std::vector<config::StaticPeer>& before,
                              const std::vector<config::StaticPeer>& after) {
  if (!service_) return;
  auto by_device = [](const std::vector<config::StaticPeer>& list) {
    std::map<DeviceId, const config::StaticPeer*> out;
    for (const auto& p : list)
      if (auto id = DeviceId::parse(p.device_id)) out.emplace(*id, &p);
    return out;
  };
  auto old_peers = by_device(before), new_peers = by_device(after);
  for (const auto& [id, p] : old_peers) {
    if (new_peers.count(id)) continue;
    if (auto st = service_->unconfigure_peer(id); st)
      spdlog::info("sync: static peer {} ({}) removed from the config: no longer dialed", p->name,
                   id.short_str());
    else
      spdlog::info("sync: static peer {} ({}) removed from the config: {}", p->name, id.short_str(),
                   st.error().message);
  }
  for (const auto& [id, p] : new_peers) {
    auto was = old_peers.find(id);
    if (was == old_peers.end()) {
      if (auto st = service_->add_peer(p->address, id, p->name); st)
        spdlog::info("sync: static peer {} ({}) added from the config: dialing {}", p->name,
                     id.short_str(), p->address);
      else if (st.error().code == Errc::already_exists)
        spdlog::info("sync: static peer {} ({}) added from the config: already a peer", p->name,
                     id.short_str());
      else
        spdlog::error("peer.{}: not added: {}", p->name, st.error().message);
    } else if (was->second->address != p->address) {
      if (auto st = service_->set_peer_address(id, p->address); !st) {
        spdlog::error("peer.{}: address not changed: {}", p->name, st.error().message);
        continue;
      }
      spdlog::info("sync: static peer {} ({}) now at {}", p->name, id.short_str(), p->address);
      (void)service_->sync_now(id);
    }
  }
}

std::uint16_t DaemonSync::listen_port() const { return tcp_ ? tcp_->port() : 0; }

void DaemonSync::stop() {
  if (service_) service_->stop();
}

void DaemonSync::stop(std::function<void()> done) {
  if (service_) return service_->stop(std::move(done));
  boost::asio::post(io_, std::move(done));
}

}  // namespace fieldsync::daemon
