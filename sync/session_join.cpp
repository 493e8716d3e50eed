// Joining a project with an invite over a session (docs/protocol.md section 7 "Joining").
// Joiner: JOIN instead of the first PROJECTS (or at once on an active session), the peer's
// PROJECTS held back until JOINED added the project, then PROJECTS as usual. Inviter: checks
// and redeems the invite, answers JOINED. The proofs and the store's part: sync/join.hpp.
#include <spdlog/spdlog.h>

#include "sync/session_impl.hpp"

namespace fieldsync::sync {

Status Session::Impl::join(const InviteCode& code) {
  if (join_pending || (join_code && !join_result))
    return make_error(Errc::failed_precondition, "a join is already under way on this session");
  if (state != SessionState::hello && state != SessionState::active)
    return make_error(Errc::failed_precondition, std::string("cannot join while the session is ") +
                                                     std::string(session_state_name(state)));
  join_code = code;
  join_result.reset();
  if (state == SessionState::active) send_join();  // else on_hello sends it
  return {};
}

// Joiner: JOIN proves we hold the invite, bound to this channel and our key.
void Session::Impl::send_join() {
  if (peer_hello.device != join_code->inviter)
    return fail(
        make_error(Errc::unauthenticated, "this peer is not the device that made the invite"),
        true);
  encode_join(control, make_join(*join_code, params.channel_binding, store.device_id()));
  join_pending = true;
}

// Joiner, still proving: the inviter's proofs cover the project we are about to receive.
void Session::Impl::hold_projects(Projects m) {
  if (held_projects)
    return fail(make_error(Errc::failed_precondition, "PROJECTS sent twice"), true);
  held_projects = std::move(m);
}

// Inviter: check the proof, redeem the invite (single use, expiry) and hand over the
// project. Any refusal ends the session, so guessing costs a connection per try.
void Session::Impl::on_join(Join m) {
  auto r = answer_join(store, m, params.channel_binding, peer_hello.device, params.clock());
  if (!r.ok()) return fail(r.error(), true);
  spdlog::info("sync: {} ({}) joined project {} ({}) as {}", peer_label(), peer_hello.device_name,
               r->project.name, r->project.id.str(), storage::role_name(r->role));
  encode_joined(control, *r);
}

// Joiner: add the project, then prove it like any other (PROJECTS, held proofs).
void Session::Impl::on_joined(Joined m) {
  if (!join_pending)
    return fail(make_error(Errc::failed_precondition, "JOINED without a JOIN"), true);
  auto added = accept_joined(store, *join_code, m);
  if (!added.ok()) return fail(added.error(), true);
  join_pending = false;
  spdlog::info("sync: joined project {} ({}) via {} as {}", added->name, added->id.str(),
               peer_label(), storage::role_name(m.role));
  join_result = std::move(added);
  params.peer_approved = true;  // its key was pinned by the code we chose to use: trusted
  if (state == SessionState::active) return reannounce();
  send_projects();
  if (held_projects) {
    Projects held = std::move(*held_projects);
    held_projects.reset();
    on_projects(std::move(held));
  }
}

}  // namespace fieldsync::sync
