// Store: the `_variants` documents that record the preview and thumbnail of a blob
// (docs/storage.md "Variants of a blob").
#include "storage/blob_ref.hpp"
#include "storage/store_impl.hpp"

namespace fieldsync::storage {
namespace {

// The variants the winner of a `_variants` document names (nullopt: none, deleted, purged,
// or not of that form).
Result<std::optional<BlobVariants>> read_variants(const Store::Impl& im, const LmdbTxn& txn,
                                                  const ProjectId& p, const std::string& id) {
  FS_TRY(im.project(txn, p));
  auto rec = im.doc(txn, doc_key(p, kVariantsCollection, id));
  if (!rec) return rec.error();
  if (!*rec) return std::optional<BlobVariants>{};
  auto state = im.doc_state(txn, p, kVariantsCollection, id, **rec);
  if (!state) return state.error();
  if (state->deleted || !state->body) return std::optional<BlobVariants>{};
  auto v = parse_blob_variants(*state->body);
  if (v && digest_hex(v->of.id) != id) v.reset();  // names another blob: none of this one
  return v;
}

}  // namespace

Result<BlobVariants> Store::set_blob_variants(const ProjectId& project, const BlobInfo& original,
                                              std::optional<BlobInfo> preview,
                                              std::optional<BlobInfo> thumbnail,
                                              std::string_view made_by) {
  if (made_by != kMadeByFieldsync && made_by != kMadeByApp)
    return make_error(Errc::invalid_argument, "made_by must be \"fieldsync\" or \"app\"");
  if (!preview && !thumbnail)
    return make_error(Errc::invalid_argument, "no variant given (preview or thumbnail)");
  const std::string id = digest_hex(original.id);
  BlobVariants written;
  {
    auto txn = impl_->write_txn();
    if (!txn) return txn.error();
    auto existing = read_variants(*impl_, *txn, project, id);
    if (!existing) return existing.error();
    // An original the project no longer has (its document erased, or released by gc while
    // the variants were made) gets none: a thumbnail would outlive the photo it shows.
    auto gone = impl_->blob_gone(*txn, project, original.id);
    if (!gone) return gone.error();
    if (*gone)
      return make_error(Errc::not_found, "blob " + id +
                                             " is not in the project (never uploaded or referred "
                                             "to here, released, or its document erased)");
    if (made_by == kMadeByFieldsync) {
      if (*existing)
        return make_error(Errc::already_exists, "the variants of blob " + id +
                                                    " are already recorded (made by " +
                                                    (*existing)->made_by + ")");
      written = BlobVariants{original, std::move(preview), std::move(thumbnail),
                             std::string(kMadeByFieldsync)};
    } else {
      written = existing->value_or(BlobVariants{});
      written.of = original;
      if (preview) written.preview = std::move(preview);
      if (thumbnail) written.thumbnail = std::move(thumbnail);
      written.made_by = std::string(kMadeByApp);
    }
    WriteRequest req;
    req.collection = std::string(kVariantsCollection);
    req.doc_id = id;
    req.body = blob_variants_json(written);
    req.use_current = true;
    auto w = impl_->write_in_txn(*txn, project, {req}, /*system=*/true);
    if (!w) return w.error();
    FS_TRY(txn->commit());
  }
  auto seq = last_change_seq(project);
  if (seq) impl_->notify(project, *seq);
  return written;
}

Result<std::optional<BlobVariants>> Store::blob_variants(const ProjectId& project,
                                                         const BlobId& original) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  return read_variants(*impl_, *txn, project, digest_hex(original));
}

}  // namespace fieldsync::storage
