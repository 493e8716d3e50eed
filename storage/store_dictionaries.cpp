// Store: the dictionaries bodies at rest are compressed with (docs/storage.md "Bodies at rest").
//
// meta 'Z' + u16 number -> a zstd dictionary; 'z' + project -> u16 number of the project's
// current one. Numbers are store-wide; a dictionary goes only with its project (leave_project).
// Every write transaction that packs a body with a dictionary finds it stored in its own view
// (put_log), so a committed record never names a dictionary that is not committed.
#include <string>

#include "storage/store_impl.hpp"

namespace fieldsync::storage {

namespace {

Key dict_key(std::uint16_t number) {
  Key k;
  k.u8('Z').u8(static_cast<std::uint8_t>(number >> 8)).u8(static_cast<std::uint8_t>(number));
  return k;
}

Key current_key(const ProjectId& p) {
  Key k;
  k.u8('z').raw(p.view());
  return k;
}

std::uint16_t number_of(ByteView dict_key_bytes) {
  return static_cast<std::uint16_t>(dict_key_bytes[1] << 8 | dict_key_bytes[2]);
}

}  // namespace

Status Store::Impl::load_body_dictionaries() {
  auto txn = read_txn();
  if (!txn) return txn.error();
  Key zd;
  zd.u8('Z');
  LmdbCursor c(*txn, t().meta);
  for (bool ok = c.seek(zd); ok && has_prefix(c.key(), zd); ok = c.next()) {
    if (c.key().size() != 3) continue;
    FS_TRY(bodies.add_dictionary(number_of(c.key()), c.value()));
  }
  Key zc;
  zc.u8('z');
  for (bool ok = c.seek(zc); ok && has_prefix(c.key(), zc); ok = c.next()) {
    if (c.key().size() != 1 + ProjectId{}.bytes.size() || c.value().size() != 2) continue;
    ProjectId p;
    std::copy(c.key().begin() + 1, c.key().end(), p.bytes.begin());
    auto number = static_cast<std::uint16_t>(c.value()[0] << 8 | c.value()[1]);
    // One whose record is gone (damage) is not used again: the project trains another.
    if (bodies.dictionary(number)) bodies.set_current(p, number);
  }
  return {};
}

namespace {

// A sample of the project's bodies as `txn` sees them (its own writes included), in log order.
Result<std::vector<Bytes>> body_sample(const Store::Impl& im, const LmdbTxn& txn,
                                       const ProjectId& p) {
  std::vector<Bytes> sample;
  Key prefix = prefix_of(p);
  std::size_t bytes = 0;
  LmdbCursor c(txn, im.t().logs);
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto lr = LogRecord::decode(c.value(), im.bodies);
    if (!lr || !lr->body || lr->body->size() < kMinCompressedBody) continue;
    sample.emplace_back(lr->body->begin(), lr->body->end());
    bytes += lr->body->size();
    if (sample.size() >= kDictionarySampleBodies || bytes >= kDictionarySampleBytes) break;
  }
  return sample;
}

Status store_dictionary(const Store::Impl& im, LmdbTxn& txn, const ProjectId& p,
                        std::uint16_t number, ByteView dict) {
  Bytes num{static_cast<std::uint8_t>(number >> 8), static_cast<std::uint8_t>(number)};
  FS_TRY(txn.put(im.t().meta, dict_key(number), dict));
  return txn.put(im.t().meta, current_key(p), num);
}

// Trains the project's dictionary on a sample as `txn` sees it, stores it in `txn` and makes it
// current. Too little to learn from, or every number in use: counted again later.
Status train_dictionary(Store::Impl& im, LmdbTxn& txn, const ProjectId& p) {
  auto sample = body_sample(im, txn, p);
  if (!sample) return sample.error();
  std::vector<ByteView> views(sample->begin(), sample->end());
  auto dict = zstd_train_dictionary(views, im.bodies.dictionary_bytes());
  std::uint16_t number = 1;  // one above the highest stored
  Key zd;
  zd.u8('Z');
  LmdbCursor c(txn, im.t().meta);
  for (bool ok = c.seek(zd); ok && has_prefix(c.key(), zd); ok = c.next())
    if (c.key().size() == 3) number = static_cast<std::uint16_t>(number_of(c.key()) + 1);
  if (!dict || number == 0) {
    im.bodies.retry_later(p);
    return {};
  }
  FS_TRY(im.bodies.add_dictionary(number, *dict));
  FS_TRY(store_dictionary(im, txn, p, number, *dict));
  im.bodies.set_current(p, number);
  return {};
}

}  // namespace

Status Store::Impl::put_log(LmdbTxn& txn, const ProjectId& p, ByteView key, const LogRecord& lr) {
  // The dictionary the record will name: the one it was packed with ahead, else the project's.
  std::optional<std::uint16_t> n;
  if (!lr.body && lr.packed && lr.packed_dict != 0)
    n = lr.packed_dict;
  else if (lr.body && bodies.level() > 0)
    n = bodies.current(p);
  if (n) {
    // Trained in a transaction that was rolled back (a failed write or group): stored again
    // here, with the records that name it.
    auto stored = txn.get(t().meta, dict_key(*n));
    if (!stored) return stored.error();
    if (!*stored) {
      auto dict = bodies.dictionary(*n);
      if (!dict) return make_error(Errc::internal, "a body packed with an unknown dictionary");
      if (bodies.current(p) == n)
        FS_TRY(store_dictionary(*this, txn, p, *n, dict->bytes()));
      else
        FS_TRY(txn.put(t().meta, dict_key(*n), dict->bytes()));
    }
  } else if (lr.body && bodies.level() > 0 && bodies.due(p)) {
    FS_TRY(train_dictionary(*this, txn, p));
  }
  return txn.put(t().logs, key, lr.encode(bodies, p));
}

Status Store::Impl::forget_body_dictionary(LmdbTxn& txn, const ProjectId& p) {
  auto cur = txn.get(t().meta, current_key(p));
  if (!cur) return cur.error();
  if (*cur && (*cur)->size() == 2) {
    auto n = static_cast<std::uint16_t>((**cur)[0] << 8 | (**cur)[1]);
    FS_TRY(txn.del(t().meta, dict_key(n)));
  }
  return txn.del(t().meta, current_key(p));
}

std::optional<std::uint16_t> Store::body_dictionary(const ProjectId& project) const {
  return impl_->bodies.current(project);
}

}  // namespace fieldsync::storage
