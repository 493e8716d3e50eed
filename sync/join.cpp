#include "sync/join.hpp"

#include "common/text.hpp"
#include "crypto/crypto.hpp"
#include "sync/messages.hpp"

namespace fieldsync::sync {

void encode_join(Bytes& out, const Join& m) {
  Bytes p;
  ByteWriter w(p);
  w.raw(ByteView(m.invite_id));
  w.raw(ByteView(m.proof));
  encode_frame(out, kMsgJoin, p);
}

void encode_joined(Bytes& out, const Joined& m) {
  Bytes p;
  ByteWriter w(p);
  w.raw(m.project.id.view());
  w.str16(m.project.name);
  w.blob(m.project.settings_json);
  w.u64(m.project.created_hlc);
  w.raw(m.project.creator.view());
  w.raw(ByteView(m.secret));
  w.u8(static_cast<std::uint8_t>(m.role));
  encode_frame(out, kMsgJoined, p);
}

Result<Join> decode_join(ByteView payload) {
  ByteReader r(payload);
  Join m;
  m.invite_id = r.fixed<16>();
  m.proof = r.fixed<32>();
  if (!r.ok() || !r.at_end()) return make_error(Errc::invalid_argument, "malformed JOIN");
  return m;
}

Result<Joined> decode_joined(ByteView payload) {
  ByteReader r(payload);
  Joined m;
  m.project.id.bytes = r.fixed<16>();
  m.project.name = sanitize_text(r.str16(), kMaxProjectNameBytes);  // shown to the user
  m.project.settings_json = std::string(as_chars(r.blob(1u << 20)));
  m.project.created_hlc = r.u64();
  m.project.creator.bytes = r.fixed<32>();
  m.secret = r.fixed<32>();
  std::uint8_t role = r.u8();
  if (!r.ok() || !r.at_end()) return make_error(Errc::invalid_argument, "malformed JOINED");
  if (role != static_cast<std::uint8_t>(storage::Role::member) &&
      role != static_cast<std::uint8_t>(storage::Role::coordinator))
    return make_error(Errc::invalid_argument, "JOINED carries an unknown role");
  m.role = static_cast<storage::Role>(role);
  return m;
}

Join make_join(const InviteCode& code, ByteView channel_binding, const DeviceId& joiner) {
  return Join{code.invite_id, join_proof(code.secret, code.invite_id, channel_binding, joiner)};
}

Result<Joined> answer_join(storage::Store& store, const Join& join, ByteView channel_binding,
                           const DeviceId& joiner, std::int64_t now_ms) {
  auto inv = store.get_invite(join.invite_id);
  if (!inv) return inv.error();
  auto expected = join_proof(inv->secret, inv->id, channel_binding, joiner);
  if (!crypto::constant_time_equal(ByteView(expected), ByteView(join.proof)))
    return make_error(Errc::permission_denied, "invite proof does not match");
  auto used = store.redeem_invite(join.invite_id, joiner, now_ms);
  if (!used) return used.error();
  auto project = store.get_project(used->project);
  if (!project) return project.error();
  auto secret = store.project_secret(used->project);
  if (!secret) return secret.error();
  Joined out;
  out.project = *project;
  std::copy(secret->begin(), secret->end(), out.secret.begin());
  out.role = used->role;
  return out;
}

Result<storage::ProjectInfo> accept_joined(storage::Store& store, const InviteCode& code,
                                           const Joined& joined) {
  if (joined.project.id != code.project)
    return make_error(Errc::invalid_argument,
                      "the inviter answered with another project than the invite names");
  auto added = store.add_project(joined.project, ByteView(joined.secret));
  if (!added && added.error().code == Errc::already_exists)
    return store.get_project(joined.project.id);
  return added;
}

}  // namespace fieldsync::sync
