// Route group of the sync engine: /v1/peers..., /v1/projects/{pid}/sync, and the project
// transfer routes (import/secret, docs/api.md "Peers and sync"). Registered by the daemon
// when sync is configured; `sync` may be null (sync.enabled = false): peer routes then
// answer 503 unavailable.
// Handlers run on the daemon's io_context thread, as PeerManager requires.
#pragma once

#include "ipc/api_context.hpp"
#include "ipc/discovered_peers.hpp"
#include "ipc/metrics.hpp"
#include "ipc/router.hpp"

namespace fieldsync::peers {
class PeerManager;
}

namespace fieldsync::ipc {

// `discovered` (optional) adds local-network discovery: discovered devices appear in
// GET /v1/peers with state "discovered", and POST /v1/peers may omit the address of one.
void register_peer_routes(Router& router, ApiContext& ctx, peers::PeerManager* sync,
                          DiscoveredPeers discovered = {});
// JSON text for GET /v1/status "peers": counts of known, connected and in-sync peers.
std::string peers_status_json(const peers::PeerManager* sync);
// GET /metrics families of the sync engine (docs/api.md "Metrics"): peers by state, and per
// transport the bytes and versions sent and received over the daemon's life. Nothing when
// `sync` is null.
void write_peer_metrics(MetricsWriter& w, const peers::PeerManager* sync);

}  // namespace fieldsync::ipc
