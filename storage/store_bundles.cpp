// Bundles imported into a project (docs/storage.md "Imported bundles"): a bounded list per
// project, so importing the same bundle file twice is refused.
#include <algorithm>

#include "storage/store_impl.hpp"

namespace fieldsync::storage {
namespace {

// meta key: 'B', project (16), bundle id (16). Value: u64 order (1, 2, ... per project),
// u64 imported at (unix ms).
Key bundles_prefix(const ProjectId& p) {
  Key k;
  k.u8('B').raw(p.view());
  return k;
}

Key bundle_key(const ProjectId& p, const BundleId& id) {
  Key k = bundles_prefix(p);
  k.raw(ByteView(id));
  return k;
}

constexpr std::size_t kBundleValueBytes = 16;

}  // namespace

Result<bool> Store::bundle_imported(const ProjectId& project, const BundleId& id) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto v = txn->get(impl_->t().meta, bundle_key(project, id));
  if (!v) return v.error();
  return v->has_value();
}

Status Store::note_bundle_imported(const ProjectId& project, const BundleId& id,
                                   std::int64_t at_ms) {
  auto txn = impl_->write_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  const Key prefix = bundles_prefix(project);
  const Key key = bundle_key(project, id);
  // The project's list: at most max_imported_bundles (+ 1) short records, read in one pass.
  std::vector<std::pair<std::uint64_t, Bytes>> held;  // order, key
  std::uint64_t next = 1;
  {
    LmdbCursor c(*txn, impl_->t().meta);
    for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
      if (std::equal(c.key().begin(), c.key().end(), key.b.begin(), key.b.end())) return {};
      ByteReader r(c.value());
      std::uint64_t order = r.u64();
      if (!r.ok() || c.value().size() != kBundleValueBytes) order = 0;  // damaged: goes first
      next = std::max(next, order + 1);
      held.emplace_back(order, Bytes(c.key().begin(), c.key().end()));
    }
  }
  Bytes value;
  ByteWriter w(value);
  w.u64(next);
  w.u64(static_cast<std::uint64_t>(at_ms));
  FS_TRY(txn->put(impl_->t().meta, key, value));
  // Forget the oldest beyond the limit (more than one only after the limit was lowered).
  std::size_t limit = std::max<std::uint32_t>(impl_->opts.max_imported_bundles, 1);
  if (held.size() + 1 > limit) {
    std::sort(held.begin(), held.end());
    for (std::size_t i = 0; i < held.size() + 1 - limit; ++i)
      FS_TRY(txn->del(impl_->t().meta, held[i].second));
  }
  return txn->commit();
}

Status Store::Impl::forget_bundles(LmdbTxn& txn, const ProjectId& p) const {
  return delete_prefix(txn, t().meta, bundles_prefix(p));
}

}  // namespace fieldsync::storage
