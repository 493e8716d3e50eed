// Store: the device's identity over time (docs/storage.md "One identity, one history").
//
// A device must never write two different histories under one key. That happens when its
// data directory is rolled back (a backup put back, a VM snapshot, an old SD-card image) or
// copied (two devices booted from one image) and it keeps writing. The defence:
//  * a restored backup renews the identity when it is first opened (RESTORED marker);
//  * peers compare log tips, and evidence that another copy writes under our key
//    (report_identity_conflict) renews it at the next open, which the daemon does at once;
//  * renewing = a fresh key; the old one is kept in retired/ and vouches for the new one in
//    a `_members` record (successor_of + succession signature), so the new identity keeps
//    the old one's role and peers accept its writes;
//  * writes of the old identity that exist in two versions (both sides of a fork) are
//    verified and re-published, with their original version ids, in the new identity's log
//    (store_log.cpp), so nothing written on either side is lost.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common/clock.hpp"
#include "common/encoding.hpp"
#include "common/json_parse.hpp"
#include "common/private_dir.hpp"
#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

const Bytes kMeKey = {'m', 'e'};
const Bytes kRotateKey = {'r', 'o', 't', 'a', 't', 'e'};
const Bytes kPrevKey = {'p', 'r', 'e', 'v'};
const Bytes kRenewalsKey = {'r', 'e', 'n', 'e', 'w', 'a', 'l', 's'};

std::vector<crypto::RenewalLink> read_renewals(const LmdbTxn& txn, const Tables& t) {
  auto v = txn.get(t.meta, kRenewalsKey);
  if (!v || !*v) return {};
  auto links = crypto::parse_renewal_links(**v);
  return links ? std::move(*links) : std::vector<crypto::RenewalLink>{};
}

// Appends `link`, keeping the newest crypto::kMaxRenewalLinks.
void add_renewal(std::vector<crypto::RenewalLink>& links, crypto::RenewalLink link) {
  links.push_back(std::move(link));
  if (links.size() > crypto::kMaxRenewalLinks)
    links.erase(links.begin(), links.begin() + static_cast<std::ptrdiff_t>(
                                                   links.size() - crypto::kMaxRenewalLinks));
}

Key suspect_key(const DeviceId& a) {
  Key k;
  k.u8('S').raw(a.view());
  return k;
}

Key fork_key(const ProjectId& p, const DeviceId& a) {
  Key k;
  k.u8('F').raw(p.view()).raw(a.view());
  return k;
}

// Writes `text` to `path` (mode 0600) and syncs it and its directory.
Status write_secret_file(const fs::path& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return make_error(Errc::internal, "cannot write " + path.string());
  ::fchmod(fd, 0600);
  std::size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n <= 0) {
      ::close(fd);
      return make_error(errno == ENOSPC ? Errc::resource_exhausted : Errc::internal,
                        "cannot write " + path.string());
    }
    off += static_cast<std::size_t>(n);
  }
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return make_error(Errc::internal, "cannot sync " + path.string());
  (void)sync_dir(path.parent_path());
  return {};
}

}  // namespace

Bytes succession_message(const ProjectId& p, const DeviceId& predecessor,
                         const DeviceId& successor) {
  Bytes m;
  append(m, as_bytes(std::string_view("fieldsync/succession/v1")));
  append(m, p.view());
  append(m, predecessor.view());
  append(m, successor.view());
  return m;
}

std::optional<DeviceId> verified_predecessor(const ProjectId& p, const VersionHeader& h,
                                             const std::optional<std::string>& body) {
  if (h.collection != kMembersCollection || h.kind != VersionKind::put || !body) return {};
  if (h.doc_id != h.author.str()) return {};
  boost::system::error_code ec;
  json::value v = parse_json(*body, ec);
  if (ec || !v.is_object()) return {};
  const auto& o = v.as_object();
  auto* pred = o.if_contains("successor_of");
  auto* sig = o.if_contains("succession");
  if (!pred || !sig || !pred->is_string() || !sig->is_string()) return {};
  auto pd = DeviceId::parse(std::string_view(pred->as_string()));
  auto raw = from_hex(std::string_view(sig->as_string()));
  if (!pd || !raw || raw->size() != 64 || *pd == h.author) return {};
  crypto::Signature s{};
  std::copy(raw->begin(), raw->end(), s.begin());
  if (!crypto::verify(*pd, succession_message(p, *pd, h.author), s)) return {};
  return pd;
}

const crypto::SigningKey* Store::Impl::retired_key(const DeviceId& a) const {
  for (const auto& k : retired)
    if (k.device_id() == a) return &k;
  return nullptr;
}

Status Store::Impl::open_identity() {
  const fs::path dir = opts.data_dir;
  const fs::path key_path = dir / "device.key";
  const fs::path new_path = dir / "device.key.new";
  const fs::path retired_dir = dir / "retired";
  auto key0 = crypto::SigningKey::load_or_create(key_path);
  if (!key0) return key0.error();
  key.emplace(std::move(*key0));
  std::error_code ec;
  if (fs::is_directory(retired_dir, ec)) {
    for (const auto& e : fs::directory_iterator(retired_dir, ec)) {
      if (e.path().extension() != ".key") continue;
      auto k = crypto::SigningKey::load_or_create(e.path());
      if (!k) return k.error();
      retired.push_back(std::move(*k));
    }
  }

  // The store records which key it is written with; a renewal interrupted between its
  // commit and the key file's rename is finished here.
  {
    auto txn = write_txn();
    if (!txn) return txn.error();
    auto me_rec = txn->get(t().meta, kMeKey);
    if (!me_rec) return me_rec.error();
    if (!*me_rec) {
      FS_TRY(txn->put(t().meta, kMeKey, me().view()));
      FS_TRY(txn->commit());
    } else if (!std::equal((*me_rec)->begin(), (*me_rec)->end(), me().view().begin(),
                           me().view().end())) {
      auto expected = id_from_bytes<DeviceId>(**me_rec);
      if (!expected) return make_error(Errc::data_loss, "corrupt identity record");
      std::optional<crypto::SigningKey> pending;
      if (fs::exists(new_path, ec)) {
        auto k = crypto::SigningKey::load_or_create(new_path);
        if (k && k->device_id() == *expected) pending.emplace(std::move(*k));
      }
      if (!pending)
        return make_error(Errc::failed_precondition,
                          key_path.string() + " holds device " + me().short_str() +
                              " but this store was written by " + expected->short_str() +
                              "; put back the matching device.key");
      fs::rename(new_path, key_path, ec);
      if (ec) return make_error(Errc::internal, "cannot rename " + new_path.string());
      key.emplace(std::move(*pending));
    }
  }

  std::string reason;
  {
    auto txn = read_txn();
    if (!txn) return txn.error();
    auto r = txn->get(t().meta, kRotateKey);
    if (!r) return r.error();
    if (*r) reason = std::string(as_chars(**r));
  }
  if (fs::exists(dir / "RESTORED", ec)) reason = "restored from a backup";
  if (!reason.empty()) FS_TRY(renew_identity(reason));
  return load_renewals();
}

// The renewal links of the current identity. A store renewed before links were recorded has
// only `prev`: its link is signed now with the retired key.
Status Store::Impl::load_renewals() {
  auto txn = write_txn();
  if (!txn) return txn.error();
  renewals = read_renewals(*txn, t());
  auto prev = txn->get(t().meta, kPrevKey);
  if (!prev) return prev.error();
  if (*prev && (renewals.empty() || renewals.back().to != me())) {
    ByteReader r(**prev);
    auto old = id_from_bytes<DeviceId>(r.raw(DeviceId::size));
    if (r.ok() && old && *old != me())
      if (const auto* k = retired_key(*old)) {
        add_renewal(renewals, crypto::sign_renewal(*k, me()));
        FS_TRY(txn->put(t().meta, kRenewalsKey, crypto::encode_renewal_links(renewals)));
        FS_TRY(txn->commit());
      }
  }
  return {};
}

Status Store::Impl::renew_identity(const std::string& reason) {
  const fs::path dir = opts.data_dir;
  auto fresh = crypto::SigningKey::generate();
  if (!fresh) return fresh.error();
  const DeviceId old = me();
  std::error_code ec;
  fs::create_directories(dir / "retired", ec);
  ::chmod((dir / "retired").c_str(), 0700);
  FS_TRY(write_secret_file(dir / "retired" / (old.str() + ".key"), key->private_pem()));
  FS_TRY(write_secret_file(dir / "device.key.new", fresh->private_pem()));

  crypto::SigningKey old_key = std::move(*key);
  key.emplace(std::move(*fresh));
  auto restore_old = [&] { key.emplace(std::move(old_key)); };
  auto txn = write_txn();
  if (!txn) {
    restore_old();
    return txn.error();
  }
  // In every project: a record for the new identity, vouched for by the old key.
  std::vector<ProjectId> projects;
  {
    LmdbCursor c(*txn, t().projects);
    for (bool ok = c.seek({}); ok; ok = c.next())
      if (auto id = id_from_bytes<ProjectId>(c.key())) projects.push_back(*id);
  }
  for (const auto& p : projects) {
    auto state = membership(*txn, p);
    if (!state) {
      restore_old();
      return state.error();
    }
    json::object body;
    body["device"] = me().str();
    auto was = state->find(old);
    body["role"] = role_name(was != state->end() ? was->second.role : Role::member);
    if (was != state->end() && !was->second.name.empty()) body["name"] = was->second.name;
    body["successor_of"] = old.str();
    auto sig = old_key.sign(succession_message(p, old, me()));
    body["succession"] = to_hex(ByteView(sig.data(), sig.size()));
    WriteRequest req;
    req.collection = std::string(kMembersCollection);
    req.doc_id = me().str();
    req.body = json::serialize(body);
    req.use_current = true;
    auto w = write_in_txn(*txn, p, {req}, /*system=*/true);
    if (!w) {
      restore_old();
      return w.error();
    }
  }
  Bytes prev;
  ByteWriter pw(prev);
  pw.raw(old.view());
  pw.u64(static_cast<std::uint64_t>(unix_ms()));
  pw.str16(reason.substr(0, 200));
  auto links = read_renewals(*txn, t());
  add_renewal(links, crypto::sign_renewal(old_key, me()));
  Status st = txn->put(t().meta, kMeKey, me().view());
  if (st) st = txn->put(t().meta, kPrevKey, prev);
  if (st) st = txn->put(t().meta, kRenewalsKey, crypto::encode_renewal_links(links));
  if (st) st = txn->put(t().meta, suspect_key(old), ByteView{});
  if (st) st = txn->del(t().meta, kRotateKey);
  if (st) st = txn->commit();
  if (!st) {
    restore_old();
    return st;
  }
  retired.push_back(std::move(old_key));
  fs::rename(dir / "device.key.new", dir / "device.key", ec);
  if (ec) return make_error(Errc::internal, "cannot install the renewed device.key");
  (void)sync_dir(dir);
  fs::remove(dir / "RESTORED", ec);
  return {};
}

std::vector<DeviceId> Store::retired_ids() const {
  std::vector<DeviceId> out;
  for (const auto& k : impl_->retired) out.push_back(k.device_id());
  return out;
}

const std::vector<crypto::RenewalLink>& Store::renewal_links() const { return impl_->renewals; }

bool Store::holds_retired_key(const DeviceId& author) const {
  return impl_->retired_key(author) != nullptr;
}

std::optional<IdentityChange> Store::last_identity_change() const {
  auto txn = impl_->read_txn();
  if (!txn) return std::nullopt;
  auto v = txn->get(impl_->t().meta, kPrevKey);
  if (!v || !*v) return std::nullopt;
  ByteReader r(**v);
  auto prev = id_from_bytes<DeviceId>(r.raw(DeviceId::size));
  IdentityChange c;
  c.at_ms = static_cast<std::int64_t>(r.u64());
  c.reason = std::string(r.str16());
  if (!prev || !r.ok()) return std::nullopt;
  c.previous = *prev;
  return c;
}

void Store::report_identity_conflict(const std::string& evidence) {
  bool first = !impl_->renewal_pending.exchange(true);
  if (!first) return;
  {
    auto txn = impl_->write_txn();
    if (txn) {
      std::string why = "another copy of this device wrote under its identity: " + evidence;
      if (txn->put(impl_->t().meta, kRotateKey, as_bytes(std::string_view(why))))
        (void)txn->commit();
    }
  }
  std::lock_guard lock(impl_->listener_mu);
  if (impl_->identity_listener) impl_->identity_listener(evidence);
}

bool Store::identity_renewal_pending() const { return impl_->renewal_pending.load(); }

void Store::set_identity_listener(IdentityListener listener) {
  std::lock_guard lock(impl_->listener_mu);
  impl_->identity_listener = std::move(listener);
}

bool Store::Impl::suspect(const LmdbTxn& txn, const DeviceId& a) const {
  auto v = txn.get(t().meta, suspect_key(a));
  return v && *v;
}

void Store::mark_suspect(const DeviceId& retired_author) {
  if (!holds_retired_key(retired_author)) return;
  auto txn = impl_->write_txn();
  if (!txn) return;
  if (txn->put(impl_->t().meta, suspect_key(retired_author), ByteView{})) (void)txn->commit();
}

void Store::clear_suspects() {
  auto txn = impl_->write_txn();
  if (!txn) return;
  bool any = false;
  for (const auto& k : impl_->retired) {
    Key sk = suspect_key(k.device_id());
    auto v = txn->get(impl_->t().meta, sk);
    if (v && *v) {
      any = true;
      (void)txn->del(impl_->t().meta, sk);
    }
  }
  if (any) (void)txn->commit();
}

Result<VersionTips> Store::version_tips(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  VersionTips tips;
  Key prefix = Key{}.raw(project.view());
  LmdbCursor c(*txn, impl_->t().heads);
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto author = id_from_bytes<DeviceId>(c.key().subspan(ProjectId::size));
    auto h = HeadValue::decode(c.value());
    if (!author || !h) return make_error(Errc::data_loss, "corrupt log head");
    // A retired identity of ours whose other copies may hold a different history: ask for
    // its whole log (seq 0) so the point where the histories part can be found.
    if (impl_->retired_key(*author) && impl_->suspect(*txn, *author))
      tips[*author] = LogTip{0, chain_genesis(project, *author)};
    else
      tips[*author] = LogTip{h->seq, h->chain};
  }
  return tips;
}

Result<std::optional<crypto::Digest>> Store::chain_at(const ProjectId& project,
                                                      const DeviceId& author,
                                                      std::uint64_t seq) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  return impl_->chain_at(*txn, project, author, seq);
}

Status Store::Impl::note_fork(LmdbTxn& txn, const ProjectId& p, const DeviceId& a,
                              std::uint64_t seq, bool resolved) const {
  Key k = fork_key(p, a);
  auto v = txn.get(t().meta, k);
  if (!v) return v.error();
  std::uint64_t first = seq;
  std::int64_t seen = unix_ms();
  bool was_resolved = false;
  if (*v) {
    ByteReader r(**v);
    first = std::min(r.u64(), seq);
    seen = static_cast<std::int64_t>(r.u64());
    was_resolved = r.u8() != 0;
  }
  Bytes out;
  ByteWriter w(out);
  w.u64(first);
  w.u64(static_cast<std::uint64_t>(seen));
  w.u8(resolved || was_resolved ? 1 : 0);
  return txn.put(t().meta, k, out);
}

Status Store::record_fork(const ProjectId& project, const DeviceId& author, std::uint64_t seq) {
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->note_fork(*txn, project, author, seq, false));
  return txn->commit();
}

Result<std::vector<ForkInfo>> Store::forks(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  std::vector<ForkInfo> out;
  Key prefix;
  prefix.u8('F').raw(project.view());
  LmdbCursor c(*txn, impl_->t().meta);
  std::optional<std::map<DeviceId, Member>> members;
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto a = id_from_bytes<DeviceId>(c.key().subspan(prefix.b.size()));
    if (!a) continue;
    ByteReader r(c.value());
    ForkInfo f;
    f.author = *a;
    f.seq = r.u64();
    f.seen_ms = static_cast<std::int64_t>(r.u64());
    f.resolved = r.u8() != 0;
    if (!r.ok()) continue;
    if (!members) {
      auto m = impl_->membership(*txn, project);
      if (m) members = std::move(*m);
    }
    if (members)
      for (const auto& [id, m] : *members)
        if (m.successor_of == *a) f.successor = id;
    if (f.successor) f.resolved = true;  // its device re-published both sides
    out.push_back(f);
  }
  return out;
}

}  // namespace fieldsync::storage
