// Store: erasure of documents by a coordinator (docs/storage.md "Erasure").
//
// An `_erasures` record names a document of the project. It counts when its author was a
// coordinator at its time (the membership replay, like `_members` records). Every device that
// holds a counting record drops the bodies of the document's versions it covers (those whose
// writer had not learnt of the erasure: erasure_epoch() below its hlc), keeps their headers as
// excluded log entries (so the chain still verifies and relays), takes them out of the document,
// and stores the covered versions that arrive later the same way. Nothing undoes it.
#include <algorithm>
#include <boost/json.hpp>
#include <map>

#include "common/encoding.hpp"
#include "common/json_parse.hpp"
#include "common/text.hpp"
#include "crypto/crypto.hpp"
#include "storage/store_impl.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {
namespace json = boost::json;

namespace {

// meta: 'X' + document key -> u64 hlc of the latest erasure of the document that counts here.
Key erasure_key(ByteView dk) {
  Key k;
  k.u8('X').raw(dk);
  return k;
}

Key erasure_prefix(const ProjectId& p) {
  Key k;
  k.u8('X').raw(p.view());
  return k;
}

struct Parsed {
  std::string collection;
  std::string doc_id;
  std::string reason;
};

// A record's body, if it names a document an erasure may cover: an app collection (not `_`),
// valid names, and the record's own id derived from them (one record per document).
std::optional<Parsed> parse_erasure(std::string_view record_id, const std::string& body) {
  boost::system::error_code ec;
  json::value v = parse_json(body, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  auto* c = o.if_contains("collection");
  auto* d = o.if_contains("id");
  if (!c || !c->is_string() || !d || !d->is_string()) return std::nullopt;
  Parsed out{std::string(c->as_string()), std::string(d->as_string()), {}};
  if (!valid_collection(out.collection) || out.collection.front() == '_' ||
      !valid_doc_id(out.doc_id) || erasure_doc_id(out.collection, out.doc_id) != record_id)
    return std::nullopt;
  if (auto* r = o.if_contains("reason");
      r && r->is_string() && is_clean_text(r->as_string(), kMaxErasureReasonBytes))
    out.reason = std::string(r->as_string());
  return out;
}

// The erasures that count: per erased document, the latest counting record.
Result<std::vector<Erasure>> counted_erasures(const Store::Impl& im, const LmdbTxn& txn,
                                              const ProjectId& p) {
  auto docs = im.collection_versions(txn, p, kErasuresCollection, false);
  if (!docs) return docs.error();
  std::vector<std::pair<Parsed, const Version*>> candidates;
  std::vector<Store::Impl::AuthorityProbe> probes;
  for (const auto& [record_id, versions] : *docs) {
    for (const auto& v : versions) {
      if (v.header.kind != VersionKind::put || !v.body) continue;
      auto parsed = parse_erasure(record_id, *v.body);
      if (!parsed) continue;
      candidates.emplace_back(std::move(*parsed), &v);
      probes.push_back({v.header.hlc, v.id, v.header.author, false});
    }
  }
  FS_TRY(im.coordinators_at(txn, p, probes));
  std::map<VersionId, bool> authority;
  for (const auto& q : probes) authority[q.id] = q.coordinator;
  std::map<std::pair<std::string, std::string>, Erasure> latest;
  for (auto& [parsed, v] : candidates) {
    if (!authority[v->id]) continue;
    auto& e = latest[{parsed.collection, parsed.doc_id}];
    if (e.hlc >= v->header.hlc) continue;
    e.collection = parsed.collection;
    e.doc_id = parsed.doc_id;
    e.reason = parsed.reason;
    e.by = v->header.author;
    e.hlc = v->header.hlc;
  }
  std::vector<Erasure> out;
  out.reserve(latest.size());
  for (auto& [k, e] : latest) out.push_back(std::move(e));
  return out;
}

}  // namespace

std::string erasure_doc_id(std::string_view collection, std::string_view doc_id) {
  std::uint8_t n = static_cast<std::uint8_t>(collection.size());
  auto d = crypto::sha256({as_bytes(std::string_view("fieldsync/erasure/v1")), ByteView(&n, 1),
                           as_bytes(collection), as_bytes(doc_id)});
  return to_hex(ByteView(d.data(), d.size()));
}

Result<std::uint64_t> Store::Impl::erasure_hlc(const LmdbTxn& txn, ByteView dk) const {
  auto v = txn.get(t().meta, erasure_key(dk));
  if (!v) return v.error();
  if (!*v) return std::uint64_t{0};
  if ((*v)->size() != 8) return make_error(Errc::data_loss, "corrupt erasure record");
  return ByteReader(**v).u64();
}

Result<bool> Store::Impl::any_erasure(const LmdbTxn& txn, const ProjectId& p) const {
  Key prefix = erasure_prefix(p);
  LmdbCursor c(txn, t().meta);
  return c.seek(prefix) && has_prefix(c.key(), prefix);
}

Result<bool> Store::Impl::erased(const LmdbTxn& txn, const VersionHeader& h) const {
  auto eh = erasure_hlc(txn, doc_key(h.project, h.collection, h.doc_id));
  if (!eh) return eh.error();
  return *eh != 0 && erasure_epoch(h) < *eh;
}

Result<bool> Store::Impl::enforce_erasures(LmdbTxn& txn, const ProjectId& p) const {
  auto counted = counted_erasures(*this, txn, p);
  if (!counted) return counted.error();
  bool changed = false;
  for (const auto& e : *counted) {
    Key dk = doc_key(p, e.collection, e.doc_id);
    auto known = erasure_hlc(txn, dk);
    if (!known) return known.error();
    if (*known >= e.hlc) continue;  // applied already
    Bytes hv;
    ByteWriter(hv).u64(e.hlc);
    FS_TRY(txn.put(t().meta, erasure_key(dk), hv));
    auto rec = doc(txn, dk);
    if (!rec) return rec.error();
    if (!*rec) continue;  // nothing held yet: versions that arrive are checked then
    const Location winner = (*rec)->heads.front().at;
    auto held = doc_versions(txn, dk, **rec);
    if (!held) return held.error();
    bool covered_any = false;
    for (const auto& h : *held) {
      auto lr = held_log(txn, p, h.at);
      if (!lr) return lr.error();
      if (lr->excluded || lr->elided) continue;
      auto hdr = decode_header(lr->header);
      if (!hdr) return make_error(Errc::data_loss, "corrupt version header");
      if (erasure_epoch(*hdr) >= e.hlc) continue;  // written after its writer learnt of it
      lr->excluded = true;
      lr->body.reset();
      Bytes enc = lr->encode(bodies, p);
      FS_TRY(txn.put(t().logs, log_key(p, h.at.author, h.at.seq), enc));
      covered_any = true;
    }
    if (!covered_any) continue;
    changed = true;
    FS_TRY(rebuild_doc(txn, p, dk));
    auto after = doc(txn, dk);
    if (!after) return after.error();
    if (!*after) {
      // The document is gone: it appears once more in the changes feed (its last winner;
      // reading it now answers not_found), so apps and the mirror following the feed learn it.
      auto lseq = change_counter(txn, p);
      if (!lseq) return lseq.error();
      FS_TRY(txn.put(t().changes, change_key(p, *lseq + 1), encode_location(winner)));
      FS_TRY(put_change_counter(txn, p, *lseq + 1));
    }
  }
  return changed;
}

// Also the hub records keyed by project in meta: receipt progress ('A') and clean-up ('C').
Status Store::Impl::forget_erasures(LmdbTxn& txn, const ProjectId& p) const {
  for (std::uint8_t kind : {'X', 'A', 'C'}) {
    Key prefix;
    prefix.u8(kind).raw(p.view());
    FS_TRY(delete_prefix(txn, t().meta, prefix));
  }
  return {};
}

Result<Erasure> Store::erase_document(const ProjectId& project, std::string_view collection,
                                      std::string_view doc_id, std::string reason) {
  if (!valid_collection(collection) || collection.front() == '_')
    return make_error(Errc::invalid_argument,
                      "invalid collection name " + quote_input(collection) +
                          " (an app collection: " + std::string(kCollectionRule) + ")");
  if (!valid_doc_id(doc_id))
    return make_error(Errc::invalid_argument, "invalid document id " + quote_input(doc_id) + " (" +
                                                  std::string(kDocIdRule) + ")");
  if (!is_clean_text(reason, kMaxErasureReasonBytes))
    return make_error(Errc::invalid_argument, "an erasure reason is at most " +
                                                  std::to_string(kMaxErasureReasonBytes) +
                                                  " bytes of UTF-8 without control characters");
  Erasure out;
  {
    auto txn = impl_->write_txn();
    if (!txn) return txn.error();
    FS_TRY(impl_->project(*txn, project));
    FS_TRY(impl_->require_coordinator(*txn, project, "erase a document"));
    json::object body;
    body["collection"] = collection;
    body["id"] = doc_id;
    if (!reason.empty()) body["reason"] = reason;
    WriteRequest req;
    req.collection = std::string(kErasuresCollection);
    req.doc_id = erasure_doc_id(collection, doc_id);
    req.body = json::serialize(body);
    req.use_current = true;
    auto w = impl_->write_in_txn(*txn, project, {req}, /*system=*/true);
    if (!w) return w.error();
    auto changed = impl_->enforce_erasures(*txn, project);
    if (!changed) return changed.error();
    auto counted = counted_erasures(*impl_, *txn, project);
    if (!counted) return counted.error();
    auto it = std::find_if(counted->begin(), counted->end(), [&](const Erasure& e) {
      return e.collection == collection && e.doc_id == doc_id;
    });
    if (it == counted->end()) return make_error(Errc::internal, "the erasure does not count");
    out = *it;
    FS_TRY(txn->commit());
  }
  if (auto seq = last_change_seq(project)) impl_->notify(project, *seq);
  return out;
}

Result<std::vector<Erasure>> Store::erasures(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  return counted_erasures(*impl_, *txn, project);
}

}  // namespace fieldsync::storage
