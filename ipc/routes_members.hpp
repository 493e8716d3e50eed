// Route group of project membership (issue 5): members, roles and revocation, invites,
// leaving a project, and verification codes. Registered by the daemon next to the peer
// routes; `sync` (may be null) supplies the sync port that invite codes advertise.
#pragma once

#include "ipc/api_context.hpp"
#include "ipc/router.hpp"

namespace fieldsync::peers {
class PeerManager;
}

namespace fieldsync::ipc {

void register_member_routes(Router& router, ApiContext& ctx, peers::PeerManager* sync);

}  // namespace fieldsync::ipc
