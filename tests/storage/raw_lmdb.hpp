// Raw access to a store's LMDB tables while the store is closed (storage tests that write what
// an older daemon left, or damage, and read what the store wrote).
#pragma once

#include <catch2/catch.hpp>

#include <filesystem>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "storage/lmdb_env.hpp"

namespace fieldsync::test {

// Raw puts into the store's LMDB tables while the store is closed (an older daemon's records,
// or damage): table chosen by the caller.
struct Raw {
  using Tables = storage::Tables;
  using LmdbEnv = storage::LmdbEnv;
  using LmdbTxn = storage::LmdbTxn;
  std::unique_ptr<LmdbEnv> env;
  // The database of a data directory, or the environment directory `sub` of `dir`.
  explicit Raw(const std::filesystem::path& dir, std::string_view sub = "db") {
    auto e = LmdbEnv::open(dir / sub, 1ull << 30, false);
    REQUIRE(e.ok());
    env = std::move(*e);
  }
  const Tables& t() const { return env->tables(); }
  void put(MDB_dbi dbi, ByteView key, ByteView value) {
    auto txn = LmdbTxn::begin(*env, true);
    REQUIRE(txn.ok());
    REQUIRE(txn->put(dbi, key, value).ok());
    REQUIRE(txn->commit().ok());
  }
  std::optional<Bytes> get(MDB_dbi dbi, ByteView key) {
    auto txn = LmdbTxn::begin(*env, false);
    REQUIRE(txn.ok());
    auto v = txn->get(dbi, key);
    REQUIRE(v.ok());
    if (!*v) return std::nullopt;
    return Bytes((*v)->begin(), (*v)->end());
  }
  void del(MDB_dbi dbi, ByteView key) {
    auto txn = LmdbTxn::begin(*env, true);
    REQUIRE(txn.ok());
    REQUIRE(txn->del(dbi, key).ok());
    REQUIRE(txn->commit().ok());
  }
  // Every (key, value) of the table whose key starts with `prefix`, in key order.
  std::vector<std::pair<Bytes, Bytes>> scan(MDB_dbi dbi, ByteView prefix) {
    auto txn = LmdbTxn::begin(*env, false);
    REQUIRE(txn.ok());
    std::vector<std::pair<Bytes, Bytes>> out;
    storage::LmdbCursor c(*txn, dbi);
    for (bool ok = c.seek(prefix); ok && storage::has_prefix(c.key(), prefix); ok = c.next())
      out.emplace_back(Bytes(c.key().begin(), c.key().end()),
                       Bytes(c.value().begin(), c.value().end()));
    return out;
  }
  // The id of the last committed write transaction.
  std::uint64_t last_txn() const {
    MDB_envinfo info{};
    REQUIRE(mdb_env_info(env->raw(), &info) == 0);
    return info.me_last_txnid;
  }
};

}  // namespace fieldsync::test
