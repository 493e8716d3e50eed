// Store: destinations (hubs named by a coordinator) and their delivery receipts
// (docs/storage.md "Destinations and receipts").
#include <algorithm>
#include <boost/json.hpp>
#include <map>

#include "common/json_parse.hpp"
#include "storage/blob_ref.hpp"
#include "storage/hybrid_clock.hpp"
#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {
namespace json = boost::json;

Result<std::map<std::string, std::vector<Version>>> Store::Impl::collection_versions(
    const LmdbTxn& txn, const ProjectId& p, std::string_view coll, bool heads_only) const {
  std::map<std::string, std::vector<Version>> out;
  Key prefix = collection_prefix(p, coll);
  LmdbCursor c(txn, t().docs);
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto rec = DocRecord::decode(c.value());
    if (!rec) return make_error(Errc::data_loss, "corrupt document record");
    std::vector<Location> at;
    if (heads_only) {
      for (const auto& id : rec->head_ids()) {
        auto loc = find_version(txn, c.key(), *rec, id);
        if (!loc) return loc.error();
        if (*loc) at.push_back(**loc);
      }
    } else {
      auto held = doc_versions(txn, c.key(), *rec);
      if (!held) return held.error();
      for (const auto& h : *held) at.push_back(h.at);
    }
    for (const auto& l : at) {
      auto v = load_version(txn, p, l);
      if (!v) return v.error();
      out[v->header.doc_id].push_back(std::move(*v));
    }
  }
  return out;
}

namespace {

// meta: 'A' + project + author -> u64: blobs_whole_upto's progress. 'C' + project: documents
// of the project left this device by clean-up.
Key blobs_upto_key(const ProjectId& p, const DeviceId& a) {
  Key k;
  k.u8('A').raw(p.view()).raw(a.view());
  return k;
}
Key cleaned_key(const ProjectId& p) {
  Key k;
  k.u8('C').raw(p.view());
  return k;
}

// The 'C' value: u64 documents removed, u64 body bytes freed, u64 last removal (unix ms).
struct CleanedTotals {
  std::uint64_t documents = 0, bytes = 0, at_ms = 0;
};
Result<std::optional<CleanedTotals>> cleaned_totals(const Store::Impl& im, const LmdbTxn& txn,
                                                    const ProjectId& p) {
  auto v = txn.get(im.t().meta, cleaned_key(p));
  if (!v) return v.error();
  if (!*v) return std::optional<CleanedTotals>{};
  ByteReader r(**v);
  CleanedTotals c{r.u64(), r.u64(), r.u64()};
  if (!r.ok() || !r.at_end()) return make_error(Errc::data_loss, "corrupt clean-up record");
  return std::optional<CleanedTotals>{c};
}

}  // namespace

Result<std::uint64_t> Store::Impl::blobs_whole_upto(LmdbTxn& txn, const ProjectId& p,
                                                    const DeviceId& author,
                                                    std::uint64_t head_seq) const {
  Key k = blobs_upto_key(p, author);
  std::uint64_t upto = 0;
  auto v = txn.get(t().meta, k);
  if (!v) return v.error();
  if (*v) {
    if ((*v)->size() != 8) return make_error(Errc::data_loss, "corrupt receipt progress");
    upto = ByteReader(**v).u64();
  }
  const std::uint64_t start = upto;
  for (std::uint64_t seq = upto + 1; seq <= head_seq; ++seq) {
    auto e = txn.get(t().logs, log_key(p, author, seq));
    if (!e) return e.error();
    if (!*e) continue;  // skipped in a proven run: in no document here
    auto lr = LogRecord::decode(**e, bodies);
    if (!lr) return make_error(Errc::data_loss, "corrupt log entry");
    // Most bodies refer to no blob: parsed only when "$blob" may be spelled in them (directly,
    // or with \u escapes).
    std::string_view text = lr->body ? as_chars(*lr->body) : std::string_view{};
    if (lr->body && !lr->excluded &&
        (text.find("$blob") != std::string_view::npos ||
         text.find("\\u") != std::string_view::npos)) {
      bool all = true;
      for (const auto& ref : find_blob_refs(text)) {
        auto held = txn.get(t().blob_held, ByteView(ref.id));
        if (!held) return held.error();
        if (!*held) {
          all = false;
          break;
        }
      }
      if (!all) break;  // checked again from here next time
    }
    upto = seq;
  }
  if (upto != start) {
    Bytes b;
    ByteWriter(b).u64(upto);
    FS_TRY(txn.put(t().meta, k, b));
  }
  return upto;
}

namespace {

// The latest version (by hlc, then id) of `versions` that `counts` accepts.
template <class Pred>
const Version* latest(const std::vector<Version>& versions, Pred counts) {
  const Version* best = nullptr;
  for (const auto& v : versions) {
    if (!counts(v)) continue;
    if (!best || v.header.hlc > best->header.hlc ||
        (v.header.hlc == best->header.hlc && best->id < v.id))
      best = &v;
  }
  return best;
}

std::optional<Receipt> parse_receipt(const DeviceId& hub, const std::string& body) {
  boost::system::error_code ec;
  json::value v = parse_json(body, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  auto* held = o.if_contains("held");
  auto* at = o.if_contains("at_ms");
  if (!held || !held->is_object() || held->as_object().size() > kMaxReceiptAuthors || !at ||
      !at->is_int64())
    return std::nullopt;
  Receipt r;
  r.hub = hub;
  r.at_ms = at->as_int64();
  for (const auto& [k, s] : held->as_object()) {
    auto a = DeviceId::parse(std::string_view(k));
    if (!a) return std::nullopt;
    if (s.is_uint64()) {
      r.held[*a] = s.as_uint64();
    } else if (s.is_int64() && s.as_int64() >= 0) {
      r.held[*a] = static_cast<std::uint64_t>(s.as_int64());
    } else {
      return std::nullopt;
    }
  }
  return r;
}

Result<std::vector<Destination>> named_destinations(const Store::Impl& im, const LmdbTxn& txn,
                                                    const ProjectId& p) {
  auto members = im.membership(txn, p);
  if (!members) return members.error();
  auto docs = im.collection_versions(txn, p, kDestinationsCollection, false);
  if (!docs) return docs.error();
  std::vector<Destination> out;
  for (const auto& [doc_id, versions] : *docs) {
    auto device = DeviceId::parse(doc_id);
    if (!device) continue;
    const Version* v = latest(versions, [&](const Version& x) {
      auto m = members->find(x.header.author);
      return m != members->end() && m->second.role == Role::coordinator;
    });
    if (!v || v->header.kind != VersionKind::put || !v->body) continue;
    boost::system::error_code ec;
    json::value body = parse_json(*v->body, ec);
    if (ec || !body.is_object()) continue;
    Destination d;
    d.device = *device;
    if (auto* n = body.as_object().if_contains("name"); n && n->is_string())
      d.name = std::string(n->as_string());
    d.named_by = v->header.author;
    d.hlc = v->header.hlc;
    out.push_back(std::move(d));
    if (out.size() == kMaxDestinations) break;
  }
  return out;
}

Result<std::vector<Receipt>> latest_receipts(const Store::Impl& im, const LmdbTxn& txn,
                                             const ProjectId& p,
                                             const std::vector<Destination>& dests) {
  auto docs = im.collection_versions(txn, p, kReceiptsCollection, true);
  if (!docs) return docs.error();
  std::vector<Receipt> out;
  for (const auto& d : dests) {
    auto it = docs->find(d.device.str());
    if (it == docs->end()) continue;
    // Only the destination's own records count; the latest that reads back.
    std::vector<Version> own;
    for (const auto& v : it->second)
      if (v.header.author == d.device && v.header.kind == VersionKind::put && v.body)
        own.push_back(v);
    std::sort(own.begin(), own.end(), [](const Version& a, const Version& b) {
      return a.header.hlc != b.header.hlc ? a.header.hlc > b.header.hlc : b.id < a.id;
    });
    for (const auto& v : own) {
      if (auto r = parse_receipt(d.device, *v.body)) {
        out.push_back(std::move(*r));
        break;
      }
    }
  }
  return out;
}

}  // namespace

Result<std::vector<Destination>> Store::destinations(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  return named_destinations(*impl_, *txn, project);
}

Result<Destination> Store::set_destination(const ProjectId& project, const DeviceId& device,
                                           std::string name, bool named) {
  if (name.size() > kMaxDestinationNameBytes)
    return make_error(
        Errc::invalid_argument,
        "destination name longer than " + std::to_string(kMaxDestinationNameBytes) + " bytes");
  Destination out;
  {
    auto txn = impl_->write_txn();
    if (!txn) return txn.error();
    FS_TRY(impl_->project(*txn, project));
    FS_TRY(impl_->require_coordinator(*txn, project, "name its destinations"));
    auto current = named_destinations(*impl_, *txn, project);
    if (!current) return current.error();
    bool known = std::any_of(current->begin(), current->end(),
                             [&](const Destination& d) { return d.device == device; });
    WriteRequest req;
    req.collection = std::string(kDestinationsCollection);
    req.doc_id = device.str();
    req.use_current = true;
    if (named) {
      if (!known && current->size() >= kMaxDestinations)
        return make_error(
            Errc::resource_exhausted,
            "a project has at most " + std::to_string(kMaxDestinations) + " destinations");
      json::object body;
      body["device"] = device.str();
      if (!name.empty()) body["name"] = name;
      req.body = json::serialize(body);
    } else {
      if (!known)
        return make_error(Errc::not_found, "device " + device.str() + " is not a destination");
      req.kind = VersionKind::tombstone;
    }
    auto w = impl_->write_in_txn(*txn, project, {req}, /*system=*/true);
    if (!w) return w.error();
    FS_TRY(txn->commit());
    out.device = device;
    out.name = std::move(name);
    out.named_by = impl_->me();
  }
  if (auto seq = last_change_seq(project)) impl_->notify(project, *seq);
  return out;
}

Result<std::vector<Receipt>> Store::receipts(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto dests = named_destinations(*impl_, *txn, project);
  if (!dests) return dests.error();
  return latest_receipts(*impl_, *txn, project, *dests);
}

Result<bool> Store::write_receipt(const ProjectId& project, std::int64_t now_ms) {
  // Most devices are no destination: a read transaction tells, before any write transaction
  // (this runs for every project every hub.receipt_interval_ms) and before the subscription
  // check (a subscribed phone is no reason for a warning).
  {
    auto txn = impl_->read_txn();
    if (!txn) return txn.error();
    FS_TRY(impl_->project(*txn, project));
    auto dests = named_destinations(*impl_, *txn, project);
    if (!dests) return dests.error();
    if (std::none_of(dests->begin(), dests->end(),
                     [&](const Destination& d) { return d.device == impl_->me(); }))
      return false;
  }
  auto sub = subscription(project);
  if (!sub) return sub.error();
  if (!sub->everything())
    return make_error(Errc::failed_precondition,
                      "this device holds only part of the project (a subscription): a "
                      "destination must hold all of it");
  // What is held whole: versions left out under an earlier subscription are not claimed.
  auto whole = whole_heads(project);
  if (!whole) return whole.error();
  {
    auto txn = impl_->write_txn();
    if (!txn) return txn.error();
    FS_TRY(impl_->project(*txn, project));
    auto dests = named_destinations(*impl_, *txn, project);
    if (!dests) return dests.error();
    if (std::none_of(dests->begin(), dests->end(),
                     [&](const Destination& d) { return d.device == impl_->me(); }))
      return false;
    auto vv = impl_->version_vector(*txn, project);
    if (!vv) return vv.error();
    for (const auto& [a, seq] : *whole) {
      auto it = vv->find(a);
      if (it != vv->end()) it->second = std::min(it->second, seq);
    }
    // Nor versions whose attachments have not arrived here yet.
    for (auto& [a, seq] : *vv) {
      auto blobs = impl_->blobs_whole_upto(*txn, project, a, seq);
      if (!blobs) return blobs.error();
      seq = std::min(seq, *blobs);
    }
    // Unchanged apart from this device's own log (its receipts are writes too): nothing new.
    auto last = latest_receipts(*impl_, *txn, project, *dests);
    if (!last) return last.error();
    auto mine = std::find_if(last->begin(), last->end(),
                             [&](const Receipt& r) { return r.hub == impl_->me(); });
    if (mine != last->end()) {
      auto others = [&](std::map<DeviceId, std::uint64_t> m) {
        m.erase(impl_->me());
        std::erase_if(m, [](const auto& e) { return e.second == 0; });
        return m;
      };
      if (others(mine->held) == others(*vv)) return false;
    }
    if (vv->size() > kMaxReceiptAuthors)
      return make_error(Errc::resource_exhausted, "more authors than a receipt may name");
    json::object held;
    for (const auto& [a, seq] : *vv)
      if (seq > 0) held[a.str()] = seq;
    json::object body;
    body["held"] = std::move(held);
    body["at_ms"] = now_ms;
    WriteRequest req;
    req.collection = std::string(kReceiptsCollection);
    req.doc_id = impl_->me().str();
    req.body = json::serialize(body);
    req.use_current = true;
    auto w = impl_->write_in_txn(*txn, project, {req}, /*system=*/true);
    if (!w) return w.error();
    FS_TRY(txn->commit());
  }
  if (auto seq = last_change_seq(project)) impl_->notify(project, *seq);
  return true;
}

Result<Delivery> Store::delivery(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  Delivery out;
  auto h = impl_->head(*txn, project, impl_->me());
  if (!h) return h.error();
  out.written = h->seq;
  auto dests = named_destinations(*impl_, *txn, project);
  if (!dests) return dests.error();
  auto rs = latest_receipts(*impl_, *txn, project, *dests);
  if (!rs) return rs.error();
  for (const auto& r : *rs) {
    auto it = r.held.find(impl_->me());
    if (it != r.held.end()) out.delivered = std::max(out.delivered, it->second);
  }
  // A destination holds its own writes.
  if (std::any_of(dests->begin(), dests->end(),
                  [&](const Destination& d) { return d.device == impl_->me(); }))
    out.delivered = out.written;
  out.delivered = std::min(out.delivered, out.written);
  if (out.delivered < out.written) {
    auto v = txn->get(impl_->t().logs, log_key(project, impl_->me(), out.delivered + 1));
    if (v && *v) {
      auto lr = LogRecord::decode_stored(**v);
      if (lr && !lr->header.empty()) {
        auto header = decode_header(lr->header);
        if (header)
          out.oldest_undelivered_ms =
              static_cast<std::int64_t>(HybridClock::physical_ms(header->hlc));
      }
    }
  }
  auto cleaned = cleaned_totals(*impl_, *txn, project);
  if (!cleaned) return cleaned.error();
  if (*cleaned) {
    out.cleaned_documents = (*cleaned)->documents;
    out.cleaned_bytes = (*cleaned)->bytes;
    out.cleaned_at_ms = static_cast<std::int64_t>((*cleaned)->at_ms);
  }
  out.destinations = std::move(*dests);
  out.receipts = std::move(*rs);
  return out;
}

Result<bool> Store::cleaned(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto c = cleaned_totals(*impl_, *txn, project);
  if (!c) return c.error();
  return c->has_value();
}

Result<CleanupResult> Store::clean_up(const ProjectId& project, std::int64_t min_age_ms,
                                      std::int64_t now_ms) {
  CleanupResult out;
  std::uint64_t last_change = 0;
  {
    auto txn = impl_->write_txn();
    if (!txn) return txn.error();
    FS_TRY(impl_->project(*txn, project));
    auto dests = named_destinations(*impl_, *txn, project);
    if (!dests) return dests.error();
    if (std::any_of(dests->begin(), dests->end(),
                    [&](const Destination& d) { return d.device == impl_->me(); }))
      return make_error(Errc::failed_precondition,
                        "this device is a destination of the project: it keeps everything");
    auto sub = impl_->subscription(*txn, project);
    if (!sub) return sub.error();
    if (!sub->everything())
      return make_error(Errc::failed_precondition,
                        "this device holds only part of the project (a subscription): clean-up "
                        "works on a device that subscribes to everything");
    auto rs = latest_receipts(*impl_, *txn, project, *dests);
    if (!rs) return rs.error();
    std::map<DeviceId, std::uint64_t> covered;  // per log, the highest seq a receipt covers
    for (const auto& r : *rs)
      for (const auto& [a, seq] : r.held) covered[a] = std::max(covered[a], seq);
    if (covered.empty()) return out;
    const std::uint64_t newest_ok =
        now_ms > min_age_ms ? static_cast<std::uint64_t>(now_ms - min_age_ms) : 0;

    std::vector<Bytes> leaving;
    Key prefix;
    prefix.raw(project.view());
    // The cursor is closed before anything is written and before the commit (LMDB frees a
    // write transaction's cursors when it commits).
    {
      LmdbCursor c(*txn, impl_->t().docs);
      for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
        ByteView dk = c.key();
        auto parts = split_doc_key(dk);
        if (!parts) return make_error(Errc::data_loss, "corrupt document key");
        if (!parts->collection.empty() && parts->collection.front() == '_')
          continue;  // reserved: stays
        auto rec = DocRecord::decode(c.value());
        if (!rec || rec->heads.empty())
          return make_error(Errc::data_loss, "corrupt document record");
        auto held = impl_->doc_versions(*txn, dk, *rec);
        if (!held) return held.error();
        bool delivered = std::all_of(held->begin(), held->end(), [&](const Impl::Held& h) {
          auto it = covered.find(h.at.author);
          return it != covered.end() && h.at.seq <= it->second;
        });
        if (!delivered) {
          ++out.documents_kept;
          continue;
        }
        bool old_enough = std::all_of(held->begin(), held->end(), [&](const Impl::Held& h) {
          return HybridClock::physical_ms(h.hlc) <= newest_ok;
        });
        if (!old_enough) {
          ++out.documents_too_new;
          continue;
        }
        out.versions_removed += held->size();
        leaving.emplace_back(dk.begin(), dk.end());
      }
    }
    for (const auto& dkb : leaving) {
      ByteView dk(dkb);
      auto rec = impl_->doc(*txn, dk);
      if (!rec) return rec.error();
      if (!*rec) continue;
      auto left = impl_->leave_document(*txn, project, dk, **rec);
      if (!left) return left.error();
      last_change = left->first;
      out.bytes_freed += left->second;
      ++out.documents_removed;
    }
    if (out.documents_removed) {
      auto before = cleaned_totals(*impl_, *txn, project);
      if (!before) return before.error();
      CleanedTotals sum = before->value_or(CleanedTotals{});
      Bytes v;
      ByteWriter w(v);
      w.u64(sum.documents + out.documents_removed);
      w.u64(sum.bytes + out.bytes_freed);
      w.u64(static_cast<std::uint64_t>(now_ms));
      FS_TRY(txn->put(impl_->t().meta, cleaned_key(project), v));
    }
    FS_TRY(txn->commit());
  }
  if (out.documents_removed) {
    impl_->blobs_changed(project);
    impl_->notify(project, last_change);
  }
  return out;
}

}  // namespace fieldsync::storage
