// Store: the dictionaries bodies at rest are compressed with (docs/storage.md "Bodies at rest").
//
// meta 'Z' + u16 number -> a zstd dictionary; 'z' + project -> u16 number of the project's
// current one. Numbers are store-wide and never reused while a record may name them: a
// dictionary goes only with its project (leave_project).
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
    bodies.set_current(p, static_cast<std::uint16_t>(c.value()[0] << 8 | c.value()[1]));
  }
  return {};
}

Result<bool> Store::Impl::train_dictionary_step() {
  auto due = bodies.take_due();
  if (!due) return false;
  const ProjectId p = *due;
  // A sample of the project's bodies, in log order (whatever they were stored as).
  std::vector<Bytes> sample;
  std::vector<ByteView> views;
  {
    auto txn = read_txn();
    if (!txn) return txn.error();
    Key prefix = prefix_of(p);
    std::size_t bytes = 0;
    LmdbCursor c(*txn, t().logs);
    for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix); ok = c.next()) {
      auto lr = LogRecord::decode(c.value(), bodies);
      if (!lr || !lr->body || lr->body->size() < kMinCompressedBody) continue;
      sample.emplace_back(lr->body->begin(), lr->body->end());
      bytes += lr->body->size();
      if (sample.size() >= kDictionarySampleBodies || bytes >= kDictionarySampleBytes) break;
    }
  }
  for (const auto& s : sample) views.emplace_back(s);
  auto dict = zstd_train_dictionary(views, bodies.dictionary_bytes());
  if (!dict) {
    bodies.retry_later(p);  // too little to learn from yet: after as many bodies again
    return true;
  }
  auto txn = write_txn();
  if (!txn) return txn.error();
  auto project_rec = txn->get(t().projects, p.view());
  if (!project_rec) return project_rec.error();
  if (!*project_rec) return true;  // left meanwhile
  // The next number: one above the highest in use.
  std::uint16_t number = 1;
  {
    Key zd;
    zd.u8('Z');
    LmdbCursor c(*txn, t().meta);
    for (bool ok = c.seek(zd); ok && has_prefix(c.key(), zd); ok = c.next())
      if (c.key().size() == 3) number = static_cast<std::uint16_t>(number_of(c.key()) + 1);
  }
  if (number == 0) return true;  // 65535 in use: the project goes on without one
  FS_TRY(bodies.add_dictionary(number, *dict));
  Bytes num{static_cast<std::uint8_t>(number >> 8), static_cast<std::uint8_t>(number)};
  FS_TRY(txn->put(t().meta, dict_key(number), *dict));
  FS_TRY(txn->put(t().meta, current_key(p), num));
  FS_TRY(txn->commit());
  bodies.set_current(p, number);  // only now: no record names it before it is stored
  return true;
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
