// Route group of joining a project with an invite code: POST /v1/join (docs/api.md
// "Joining a project"). Registered by the daemon next to the member routes; with `sync` null
// (sync.enabled = false) the route answers 503. Unix socket only: joining hands this device
// a project and its secret, like the project transfer (import).
// The handler answers later (a deferred response): once the inviter answered, or with the
// reason the join failed, within PeerManager::join_timeout_ms.
#pragma once

#include "ipc/api_context.hpp"
#include "ipc/router.hpp"

namespace fieldsync::peers {
class PeerManager;
}

namespace fieldsync::ipc {

void register_join_routes(Router& router, ApiContext& ctx, peers::PeerManager* sync);

}  // namespace fieldsync::ipc
