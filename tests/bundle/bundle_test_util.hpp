// Test helpers for bundles: export to bytes, import from bytes in pieces, the chunk layout of a
// bundle file, and a builder of hand-made bundles (records of our choosing, sealed with the
// real key) to test what a well-behaved writer never produces.
#pragma once

#include <catch2/catch.hpp>

#include <random>

#include "../sync/sync_test_util.hpp"
#include "bundle/bundle.hpp"
#include "bundle/format.hpp"

namespace fieldsync::bundle::test {

using sync::test::Node;
using sync::test::shared_project;

inline Result<Bytes> export_bytes(storage::Store& store, const ProjectId& p, ExportOptions o = {},
                                  BundleWriter::Stats* stats = nullptr) {
  auto w = BundleWriter::create(store, p, std::move(o));
  if (!w) return w.error();
  Bytes out;
  for (;;) {
    auto piece = (*w)->next();
    if (!piece) return piece.error();
    if (piece->empty()) break;
    append(out, *piece);
  }
  REQUIRE((*w)->stats().bytes == out.size());
  if (stats) *stats = (*w)->stats();
  return out;
}

inline Bytes must_export(storage::Store& store, const ProjectId& p, ExportOptions o = {},
                         BundleWriter::Stats* stats = nullptr) {
  auto b = export_bytes(store, p, std::move(o), stats);
  INFO((b.ok() ? "" : b.error().message));
  REQUIRE(b.ok());
  return std::move(*b);
}

// Feeds `bytes` in pieces of 1..max_piece bytes (random), then finishes.
struct Imported {
  Result<ImportReport> result;
  ImportReport progress;
};
inline Imported import_bytes(storage::Store& store, ByteView bytes, std::size_t max_piece = 4096,
                             ImportOptions o = {}, unsigned seed = 1) {
  BundleReader r(store, std::move(o));
  std::mt19937 rng(seed);
  std::size_t i = 0;
  while (i < bytes.size()) {
    std::size_t n = std::min<std::size_t>(bytes.size() - i, 1 + rng() % max_piece);
    auto st = r.feed(bytes.subspan(i, n));
    if (!st) return {st.error(), r.progress()};
    i += n;
  }
  return {r.finish(), r.progress()};
}

inline ImportReport must_import(storage::Store& store, ByteView bytes,
                                std::size_t max_piece = 4096) {
  auto r = import_bytes(store, bytes, max_piece);
  INFO((r.result.ok() ? "" : r.result.error().message));
  REQUIRE(r.result.ok());
  return *r.result;
}

inline storage::VersionVector vv(storage::Store& s, const ProjectId& p) {
  auto v = s.version_vector(p);
  REQUIRE(v.ok());
  return *v;
}

inline std::uint64_t total(const storage::VersionVector& v) {
  std::uint64_t n = 0;
  for (const auto& [a, seq] : v) n += seq;
  return n;
}

// Where each chunk of a bundle file starts and ends (its length field included).
struct ChunkSpan {
  std::size_t begin = 0, end = 0;
  bool last = false;
};
inline std::vector<ChunkSpan> chunks_of(ByteView file) {
  std::vector<ChunkSpan> out;
  std::size_t at = kHeaderBytes;
  while (at + 4 <= file.size()) {
    std::uint32_t field = ByteReader(file.subspan(at, 4)).u32();
    ChunkSpan c{at, at + 4 + (field & ~kLastChunkBit), (field & kLastChunkBit) != 0};
    out.push_back(c);
    at = c.end;
  }
  REQUIRE(at == file.size());
  return out;
}

// A hand-made bundle for `project`: the records given, sealed with the project's real key in
// chunks of `chunk` bytes, the last chunk flagged.
struct Crafted {
  storage::BundleId salt{};
  Bytes header;
  crypto::AeadKey key{};
  crypto::Sha256 digest;
  Bytes plain;

  Crafted(storage::Store& owner, const ProjectId& project) {
    crypto::random_fill(salt);
    auto secret = owner.project_secret(project);
    REQUIRE(secret.ok());
    header = detail::encode_header(salt, detail::project_tag(*secret, salt));
    auto k = detail::chunk_key(*secret, salt);
    REQUIRE(k.ok());
    key = *k;
    digest.update(header);
  }
  void record(std::uint8_t type, ByteView payload, bool hashed = true) {
    std::size_t at = plain.size();
    detail::put_record_header(plain, type, static_cast<std::uint32_t>(payload.size()));
    append(plain, payload);
    if (hashed) digest.update(ByteView(plain).subspan(at));
  }
  void begin(const detail::Begin& b) {
    record(static_cast<std::uint8_t>(RecordType::begin), detail::encode_begin(b));
  }
  void batch(const ProjectId& p, storage::LogBatch log) {
    Bytes frame;
    sync::encode_batch(frame, sync::Batch{p, std::move(log)});
    record(static_cast<std::uint8_t>(RecordType::batch),
           ByteView(frame).subspan(sync::kFrameHeaderBytes));
  }
  void end(const crypto::SigningKey& signer, std::uint64_t entries, std::uint64_t batches) {
    detail::End e{entries, batches, {}};
    e.signature = signer.sign(detail::end_message(digest.finish(), entries, batches));
    record(static_cast<std::uint8_t>(RecordType::end), detail::encode_end(e), false);
  }
  Bytes seal(std::size_t chunk = 1024) const {
    Bytes out = header;
    std::size_t at = 0;
    std::uint64_t index = 0;
    do {
      std::size_t n = std::min(chunk, plain.size() - at);
      bool last = at + n == plain.size();
      std::size_t len_at = out.size();
      ByteWriter(out).u32(0);
      crypto::aes256gcm_seal(key, detail::chunk_nonce(index++, last), header,
                             ByteView(plain).subspan(at, n), out);
      std::uint32_t field =
          static_cast<std::uint32_t>(out.size() - len_at - 4) | (last ? kLastChunkBit : 0);
      Bytes f;
      ByteWriter(f).u32(field);
      std::copy(f.begin(), f.end(), out.begin() + static_cast<std::ptrdiff_t>(len_at));
      at += n;
    } while (at < plain.size());
    return out;
  }
};

}  // namespace fieldsync::bundle::test
