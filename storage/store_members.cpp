// Store: membership records, invites, revocation enforcement, leaving a project.
#include <algorithm>
#include <boost/json.hpp>
#include <map>
#include <set>

#include "common/json_parse.hpp"
#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {
namespace json = boost::json;

std::string_view role_name(Role r) {
  switch (r) {
    case Role::coordinator: return "coordinator";
    case Role::member: return "member";
    case Role::removed: return "removed";
  }
  return "member";
}

std::optional<Role> parse_role(std::string_view s) {
  if (s == "coordinator") return Role::coordinator;
  if (s == "member") return Role::member;
  if (s == "removed") return Role::removed;
  return std::nullopt;
}

namespace {

struct InviteRecord {
  static Bytes encode(const Invite& i) {
    Bytes out;
    ByteWriter w(out);
    w.u8(1);
    w.raw(ByteView(i.secret));
    w.raw(i.project.view());
    w.u8(static_cast<std::uint8_t>(i.role));
    w.u64(static_cast<std::uint64_t>(i.expires_ms));
    w.u8(i.used_by ? 1 : 0);
    if (i.used_by) w.raw(i.used_by->view());
    return out;
  }
  static std::optional<Invite> decode(ByteView key, ByteView v) {
    ByteReader r(v);
    Invite i;
    if (key.size() != i.id.size() || r.u8() != 1) return std::nullopt;
    std::copy(key.begin(), key.end(), i.id.begin());
    i.secret = r.fixed<32>();
    i.project.bytes = r.fixed<16>();
    i.role = static_cast<Role>(r.u8());
    i.expires_ms = static_cast<std::int64_t>(r.u64());
    if (r.u8()) i.used_by = DeviceId{{r.fixed<32>()}};
    if (!r.ok()) return std::nullopt;
    return i;
  }
};

}  // namespace

namespace {
Result<std::map<DeviceId, Member>> replay_membership(
    const Store::Impl& im, const LmdbTxn& txn, const ProjectId& p,
    std::vector<Store::Impl::AuthorityProbe>& probes);
}  // namespace

Result<std::map<DeviceId, Member>> Store::Impl::membership(const LmdbTxn& txn,
                                                           const ProjectId& p) const {
  std::vector<AuthorityProbe> none;
  return replay_membership(*this, txn, p, none);
}

Status Store::Impl::coordinators_at(const LmdbTxn& txn, const ProjectId& p,
                                    std::vector<AuthorityProbe>& probes) const {
  auto r = replay_membership(*this, txn, p, probes);
  if (!r) return r.error();
  return {};
}

namespace {

Result<std::map<DeviceId, Member>> replay_membership(
    const Store::Impl& im, const LmdbTxn& txn, const ProjectId& p,
    std::vector<Store::Impl::AuthorityProbe>& probes) {
  auto proj = im.project(txn, p);
  if (!proj) return proj.error();
  std::map<DeviceId, Member> state;
  const DeviceId& creator = proj->info.creator;
  state[creator] = Member{creator, Role::coordinator, {}, 0, creator, proj->info.created_hlc};

  // Every held `_members` version (not only heads): authority is decided in hlc order.
  std::vector<Version> records;
  Key prefix = collection_prefix(p, kMembersCollection);
  LmdbCursor c(txn, im.t().docs);
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto rec = DocRecord::decode(c.value());
    if (!rec) return make_error(Errc::data_loss, "corrupt document record");
    auto held = im.doc_versions(txn, c.key(), *rec);
    if (!held) return held.error();
    for (const auto& h : *held) {
      auto v = im.load_version(txn, p, h.at);
      if (!v) return v.error();
      records.push_back(std::move(*v));
    }
  }
  std::sort(records.begin(), records.end(), [](const Version& a, const Version& b) {
    return a.header.hlc != b.header.hlc ? a.header.hlc < b.header.hlc : a.id < b.id;
  });
  std::sort(probes.begin(), probes.end(), [](const auto& a, const auto& b) {
    return a.hlc != b.hlc ? a.hlc < b.hlc : a.id < b.id;
  });
  std::size_t next_probe = 0;
  auto answer_until = [&](std::uint64_t hlc, const VersionId* id) {
    for (; next_probe < probes.size(); ++next_probe) {
      auto& q = probes[next_probe];
      if (id && !(q.hlc < hlc || (q.hlc == hlc && q.id < *id))) break;
      auto m = state.find(q.author);
      q.coordinator = m != state.end() && m->second.role == Role::coordinator;
    }
  };
  for (const auto& v : records) {
    answer_until(v.header.hlc, &v.id);
    // A device's successor (the same device under a renewed identity) takes its role,
    // vouched for by the earlier identity's key; a removed device vouches for no one.
    if (auto pred = verified_predecessor(p, v.header, v.body)) {
      auto was = state.find(*pred);
      if (was != state.end() && was->second.role != Role::removed) {
        Member m{v.header.author, was->second.role, was->second.name, 0, *pred, v.header.hlc};
        m.successor_of = *pred;
        state[v.header.author] = std::move(m);
        continue;
      }
    }
    auto author = state.find(v.header.author);
    if (author == state.end() || author->second.role != Role::coordinator)
      continue;  // no authority
    if (v.header.kind != VersionKind::put || !v.body) continue;
    auto device = DeviceId::parse(v.header.doc_id);
    if (!device) continue;
    boost::system::error_code ec;
    json::value body = parse_json(*v.body, ec);
    if (ec || !body.is_object()) continue;
    const auto& o = body.as_object();
    auto role = o.if_contains("role") && o.at("role").is_string()
                    ? parse_role(std::string_view(o.at("role").as_string()))
                    : std::nullopt;
    if (!role) continue;
    Member m{*device, *role, {}, 0, v.header.author, v.header.hlc};
    if (auto n = o.if_contains("name"); n && n->is_string()) m.name = std::string(n->as_string());
    if (auto s = o.if_contains("max_seq"); s && s->is_uint64()) m.max_seq = s->as_uint64();
    if (auto s = o.if_contains("max_seq"); s && s->is_int64() && s->as_int64() >= 0)
      m.max_seq = static_cast<std::uint64_t>(s->as_int64());
    state[*device] = std::move(m);
  }
  answer_until(0, nullptr);
  return state;
}

}  // namespace

Result<std::vector<Member>> Store::members(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto state = impl_->membership(*txn, project);
  if (!state) return state.error();
  std::vector<Member> out;
  for (auto& [id, m] : *state) out.push_back(std::move(m));
  return out;
}

Result<std::optional<Member>> Store::member(const ProjectId& project,
                                            const DeviceId& device) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto state = impl_->membership(*txn, project);
  if (!state) return state.error();
  auto it = state->find(device);
  if (it == state->end()) return std::optional<Member>{};
  return std::optional<Member>{it->second};
}

Result<Member> Store::set_member(const ProjectId& project, const DeviceId& device, Role role,
                                 std::string name) {
  Member written;
  {
    auto txn = impl_->write_txn();
    if (!txn) return txn.error();
    auto r = impl_->write_member(*txn, project, device, role, std::move(name));
    if (!r) return r.error();
    written = *r;
    FS_TRY(txn->commit());
  }
  auto seq = last_change_seq(project);
  if (seq) impl_->notify(project, *seq);
  return written;
}

Status Store::Impl::require_coordinator(const LmdbTxn& txn, const ProjectId& p,
                                        std::string_view to_do) const {
  auto state = membership(txn, p);
  if (!state) return state.error();
  auto mine = state->find(me());
  if (mine == state->end() || mine->second.role != Role::coordinator)
    return make_error(Errc::permission_denied,
                      "only a coordinator of the project can " + std::string(to_do));
  return {};
}

Result<Member> Store::Impl::write_member(LmdbTxn& txn, const ProjectId& p, const DeviceId& device,
                                         Role role, std::string name) {
  FS_TRY(require_coordinator(txn, p, "change its members"));
  json::object body;
  body["device"] = device.str();
  body["role"] = role_name(role);
  if (!name.empty()) body["name"] = name;
  std::uint64_t max_seq = 0;
  if (role == Role::removed) {
    auto h = head(txn, p, device);
    if (!h) return h.error();
    max_seq = h->seq;
    body["max_seq"] = max_seq;
  }
  WriteRequest req;
  req.collection = std::string(kMembersCollection);
  req.doc_id = device.str();
  req.body = json::serialize(body);
  req.use_current = true;
  auto w = write_in_txn(txn, p, {req}, /*system=*/true);
  if (!w) return w.error();
  FS_TRY(enforce_removals(txn, p));
  Member m{device, role, std::move(name), max_seq, me(), 0};
  return m;
}

// Versions of removed devices authored after their removal leave every document DAG.
// Applied when a removal is written or received; idempotent (excluded entries are marked).
Status Store::Impl::enforce_removals(LmdbTxn& txn, const ProjectId& p) const {
  auto state = membership(txn, p);
  if (!state) return state.error();
  for (const auto& [device, m] : *state) {
    if (m.role != Role::removed) continue;
    auto h = head(txn, p, device);
    if (!h) return h.error();
    std::set<Bytes> docs;  // doc keys to rebuild
    for (std::uint64_t seq = m.max_seq + 1; seq <= h->seq; ++seq) {
      Key k = log_key(p, device, seq);
      auto v = txn.get(t().logs, k);
      if (!v) return v.error();
      if (!*v) continue;  // skipped in a proven run: in no document here
      auto lr = LogRecord::decode(**v, bodies);
      if (!lr) return make_error(Errc::data_loss, "corrupt log entry");
      if (lr->excluded || lr->elided) continue;  // in no document already
      auto hdr = decode_header(lr->header);
      if (!hdr) return make_error(Errc::data_loss, "corrupt version header");
      docs.insert(doc_key(p, hdr->collection, hdr->doc_id).bytes());
      lr->excluded = true;
      lr->body.reset();
      Bytes enc = lr->encode(bodies, p);
      FS_TRY(txn.put(t().logs, k, enc));
    }
    for (const auto& dk : docs) FS_TRY(rebuild_doc(txn, p, dk));
  }
  return {};
}

// Recomputes a document's heads from the versions held here that are not excluded.
Status Store::Impl::rebuild_doc(LmdbTxn& txn, const ProjectId& p, ByteView dk) const {
  auto rec = doc(txn, dk);
  if (!rec) return rec.error();
  if (!*rec) return {};
  auto held = doc_versions(txn, dk, **rec);
  if (!held) return held.error();
  struct Kept {
    Held h;
    VersionHeader header;
  };
  std::vector<Kept> kept;
  std::set<VersionId> named;
  for (const auto& h : *held) {
    auto lr = held_log(txn, p, h.at);
    if (!lr) return lr.error();
    if (lr->excluded) continue;
    auto hdr = decode_header(lr->header);
    if (!hdr) return make_error(Errc::data_loss, "corrupt version header");
    for (const auto& parent : hdr->parents) named.insert(parent);
    kept.push_back(Kept{h, std::move(*hdr)});
  }
  // Rewrite the history index and heads from scratch.
  Key prefix = doc_sub_prefix(dk);
  for (auto dbi : {t().docver, t().superseded}) FS_TRY(delete_prefix(txn, dbi, prefix));
  DocRecord out;
  out.flags = (*rec)->flags & DocRecord::kPurged;
  std::set<VersionId> held_ids;
  for (const auto& k : kept) held_ids.insert(k.h.id);
  for (const auto& k : kept) {
    if (named.count(k.h.id)) {
      FS_TRY(txn.put(t().docver, docver_key(dk, k.h.hlc, k.h.id), encode_location(k.h.at)));
    } else {
      out.heads.push_back(
          HeadRef{k.h.id, k.h.hlc, k.h.at, k.header.kind == VersionKind::tombstone});
    }
  }
  for (const auto& n : named)
    if (!held_ids.count(n)) FS_TRY(txn.put(t().superseded, superseded_key(dk, n), ByteView{}));
  if (out.heads.empty()) return del_doc(txn, dk);  // only the removed device ever wrote it
  if (out.heads.size() > kMaxDocHeads)
    return make_error(Errc::resource_exhausted, "document has too many concurrent versions");
  std::sort(out.heads.begin(), out.heads.end(), head_ranks_before);
  if (out.heads.front().tombstone) out.flags |= DocRecord::kDeleted;
  auto seq = change_counter(txn, p);
  if (!seq) return seq.error();
  out.local_seq = *seq + 1;
  FS_TRY(put_change_counter(txn, p, out.local_seq));
  FS_TRY(txn.put(t().changes, change_key(p, out.local_seq), encode_location(out.heads.front().at)));
  return put_doc(txn, dk, out);
}

Result<Invite> Store::create_invite(const ProjectId& project, Role role, std::int64_t expires_ms) {
  if (role == Role::removed)
    return make_error(Errc::invalid_argument, "an invite cannot carry the removed role");
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->require_coordinator(*txn, project, "invite devices"));
  Invite inv;
  crypto::random_fill(inv.id);
  crypto::random_fill(inv.secret);
  inv.project = project;
  inv.role = role;
  inv.expires_ms = expires_ms;
  FS_TRY(txn->put(impl_->t().invites, ByteView(inv.id), InviteRecord::encode(inv)));
  FS_TRY(txn->commit());
  return inv;
}

Result<std::vector<Invite>> Store::list_invites(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  std::vector<Invite> out;
  LmdbCursor c(*txn, impl_->t().invites);
  for (bool ok = c.seek({}); ok; ok = c.next()) {
    auto inv = InviteRecord::decode(c.key(), c.value());
    if (!inv) return make_error(Errc::data_loss, "corrupt invite");
    if (inv->project == project) out.push_back(*inv);
  }
  return out;
}

Result<Invite> Store::get_invite(const std::array<std::uint8_t, 16>& invite_id) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto v = txn->get(impl_->t().invites, ByteView(invite_id));
  if (!v) return v.error();
  if (!*v) return make_error(Errc::not_found, "unknown invite");
  auto inv = InviteRecord::decode(ByteView(invite_id), **v);
  if (!inv) return make_error(Errc::data_loss, "corrupt invite");
  return *inv;
}

Result<Invite> Store::redeem_invite(const std::array<std::uint8_t, 16>& invite_id,
                                    const DeviceId& joiner, std::int64_t now_ms) {
  Invite inv;
  {
    auto txn = impl_->write_txn();
    if (!txn) return txn.error();
    auto v = txn->get(impl_->t().invites, ByteView(invite_id));
    if (!v) return v.error();
    if (!*v) return make_error(Errc::not_found, "unknown invite");
    auto dec = InviteRecord::decode(ByteView(invite_id), **v);
    if (!dec) return make_error(Errc::data_loss, "corrupt invite");
    inv = *dec;
    if (inv.used_by) return make_error(Errc::failed_precondition, "invite already used");
    if (now_ms > inv.expires_ms) return make_error(Errc::failed_precondition, "invite expired");
    inv.used_by = joiner;
    FS_TRY(txn->put(impl_->t().invites, ByteView(invite_id), InviteRecord::encode(inv)));
    auto m = impl_->write_member(*txn, inv.project, joiner, inv.role, {});
    if (!m) return m.error();
    FS_TRY(txn->commit());
  }
  auto seq = last_change_seq(inv.project);
  if (seq) impl_->notify(inv.project, *seq);
  return inv;
}

Status Store::leave_project(const ProjectId& project) {
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  // Existence only: a project whose record cannot be decoded can still be left (removed).
  auto existing = txn->get(impl_->t().projects, project.view());
  if (!existing) return existing.error();
  if (!*existing) return make_error(Errc::not_found, "no project " + project.str());
  const Tables& t = impl_->t();
  Key prefix = prefix_of(project);
  // Every table but invites is keyed by project id first (the per-document tables start
  // with the document key, which starts with it too; peer_holds with project + peer).
  for (auto dbi : {t.docs, t.logs, t.heads, t.checkpoints, t.changes, t.docver, t.superseded,
                   t.peer_holds, t.blob_proj, t.blob_refs})
    FS_TRY(delete_prefix(*txn, dbi, prefix));
  std::vector<Bytes> invites;
  {
    LmdbCursor c(*txn, t.invites);
    for (bool ok = c.seek({}); ok; ok = c.next()) {
      auto inv = InviteRecord::decode(c.key(), c.value());
      if (inv && inv->project == project) invites.emplace_back(c.key().begin(), c.key().end());
    }
  }
  for (const auto& k : invites) FS_TRY(txn->del(t.invites, k));
  FS_TRY(txn->del(t.meta, counter_key(project)));
  FS_TRY(txn->del(t.meta, blob_cursor_key(project)));
  FS_TRY(txn->del(t.meta, blob_policy_key(project)));
  FS_TRY(delete_prefix(*txn, t.meta, blob_demand_prefix(project)));
  FS_TRY(delete_prefix(*txn, t.meta, peer_blobs_prefix(project)));
  FS_TRY(impl_->forget_bundles(*txn, project));
  FS_TRY(impl_->forget_subscriptions(*txn, project));
  FS_TRY(impl_->forget_erasures(*txn, project));
  FS_TRY(impl_->forget_indexes(*txn, project));
  FS_TRY(impl_->forget_body_dictionary(*txn, project));
  FS_TRY(txn->del(t.projects, project.view()));
  FS_TRY(txn->commit());
  impl_->bodies.forget_project(project);
  impl_->blobs_left(project);
  return {};
}

}  // namespace fieldsync::storage
