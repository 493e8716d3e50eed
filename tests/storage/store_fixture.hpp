// Helpers for storage tests: open stores in temp dirs and copy logs between them.
#pragma once

#include <catch2/catch.hpp>

#include "storage/store.hpp"
#include "temp_dir.hpp"

namespace fieldsync::test {

inline std::unique_ptr<storage::Store> open_store(const std::filesystem::path& dir,
                                                  storage::StoreOptions o = {}) {
  o.data_dir = dir;
  o.map_size_bytes = 1ull << 30;
  o.durable = false;
  auto s = storage::Store::open(o);
  REQUIRE(s.ok());
  return std::move(*s);
}

inline storage::WriteRequest put(std::string coll, std::string id, std::string body) {
  storage::WriteRequest r;
  r.collection = std::move(coll);
  r.doc_id = std::move(id);
  r.body = std::move(body);
  return r;
}

// One-way sync of every author's log from `from` to `to` (what the sync engine does); with
// `prepared`, each batch is prepared ahead (Store::prepare_log) as sync sessions do.
inline std::uint32_t copy_logs(storage::Store& from, storage::Store& to, const ProjectId& p,
                               std::uint32_t batch = 1000, bool prepared = false) {
  std::uint32_t applied = 0;
  auto theirs = to.version_vector(p);
  REQUIRE(theirs.ok());
  auto mine = from.version_vector(p);
  REQUIRE(mine.ok());
  for (const auto& [author, head] : *mine) {
    std::uint64_t at = theirs->count(author) ? theirs->at(author) : 0;
    while (at < head) {
      auto b = from.read_log(p, author, at, batch, 1u << 30);
      REQUIRE(b.ok());
      REQUIRE(!b->entries.empty());
      auto r = prepared ? to.apply_log(p, *b, storage::ApplyOptions{}, to.prepare_log(p, *b))
                        : to.apply_log(p, *b);
      INFO((r.ok() ? std::string() : r.error().message));
      REQUIRE(r.ok());
      applied += r->applied;
      at = b->entries.back().seq;
    }
  }
  return applied;
}

// Makes `s` a member of project `p` as `holder` holds it (its info and secret).
inline void add_to(storage::Store& s, storage::Store& holder, const ProjectId& p) {
  auto list = holder.list_projects();
  REQUIRE(list.ok());
  for (const auto& info : *list)
    if (info.id == p) REQUIRE(s.add_project(info, holder.project_secret(p).value()).ok());
}

inline ProjectId shared_project(storage::Store& a, storage::Store& b) {
  auto p = a.create_project("field survey");
  REQUIRE(p.ok());
  auto secret = a.project_secret(p->id);
  REQUIRE(secret.ok());
  REQUIRE(b.add_project(*p, *secret).ok());
  return p->id;
}

}  // namespace fieldsync::test
