// The trust policy of a session (docs/protocol.md section 7 "Trust", sync.trust_policy).
// With TrustPolicy::ask, a project the peer proves but whose membership does not list it
// (nor as creator) and that the user did not approve is pending: nothing of it is exchanged,
// the peer's VV and TIPS for it are held, until approve() or a membership record naming the
// peer (notify_local_change). A peer removed from a project never syncs it.
#include <spdlog/spdlog.h>

#include "sync/session_impl.hpp"

namespace fieldsync::sync {

// "ask": a device that proves `p` but is neither its creator, a listed member nor
// approved waits for the user. Records it as pending (and says so once) when it must.
bool Session::Impl::must_ask(const storage::ProjectInfo& p) {
  if (params.options.trust_policy != TrustPolicy::ask || params.peer_approved) return false;
  if (p.creator == peer_hello.device) return false;
  auto m = store.member(p.id, peer_hello.device);
  if (m.ok() && m->has_value() && (*m)->role != storage::Role::removed) return false;
  if (pending.insert(p.id).second) {
    notify(NoticeKind::awaiting_approval, p.id,
           "waiting for approval by " + self_label() + " (trust_policy = ask there) of project " +
               quote_input(p.name));
    spdlog::warn(
        "sync: {} ({}) proves project {} but is not a member (trust_policy = ask): held until "
        "approved (syncctl peers approve; verification code in syncctl peers show)",
        peer_label(), peer_hello.device_name, p.name);
  }
  return true;
}

// Pending projects that may now sync (approved, or the device became a listed member).
void Session::Impl::admit_pending() {
  if (state != SessionState::active || pending.empty()) return;
  auto list = store.list_projects();
  if (!list.ok()) return fail(list.error(), true);
  std::vector<ProjectId> ids;
  for (const auto& p : *list) {
    if (!pending.count(p.id) || must_ask(p)) continue;
    pending.erase(p.id);
    ids.push_back(p.id);
  }
  if (ids.empty()) return;
  spdlog::info("sync: {} admitted: {} more project(s)", peer_label(), ids.size());
  for (const auto& id : ids) {
    ProjectSync ps;
    ps.id = id;
    ps.stats.project = id;
    auto vv = offer_vector(ps);
    if (!vv.ok()) return fail(vv.error(), true);
    ps.mine = std::move(*vv);
    ps.recorded = known_holds(id);
    auto& placed = projects.emplace(id, std::move(ps)).first->second;
    rr.push_back(id);
    send_vv(placed);
    if (finished()) return;
  }
  for (const auto& id : ids) {
    auto held = held_vv.find(id);
    if (held == held_vv.end()) continue;
    VectorMsg vv = std::move(held->second);
    held_vv.erase(held);
    on_vector(std::move(vv), false);
    if (finished()) break;
    if (auto t = held_tips.find(id); t != held_tips.end()) {
      TipsMsg tips = std::move(t->second);
      held_tips.erase(t);
      on_tips(std::move(tips));
      if (finished()) break;
    }
  }
  record_holds();  // the held VVs
}

void Session::Impl::approve() {
  params.peer_approved = true;
  admit_pending();
}

std::string Session::Impl::removed_message(const storage::ProjectInfo& p) const {
  return "this device was removed from project " + quote_input(p.name) + " (" + p.id.str() +
         "): " + self_label() + " no longer syncs it with this device";
}

// The project's membership records say the peer was removed (revoked): it gets nothing more.
bool Session::Impl::peer_removed(const ProjectId& project) const {
  auto m = store.member(project, peer_hello.device);
  return m.ok() && m->has_value() && (*m)->role == storage::Role::removed;
}

}  // namespace fieldsync::sync
