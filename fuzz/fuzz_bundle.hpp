// Shared by the bundle fuzz targets (bundle_file, bundle_records) and their seed generator
// (bundle_seeds.cpp): a fresh store per input, sealing a plaintext the way BundleWriter does,
// opening a bundle back to its plaintext, and an import with the checks that hold for any
// input.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "bundle/bundle.hpp"
#include "bundle/format.hpp"
#include "fuzz/fuzz_store.hpp"

namespace fieldsync::fuzz {

// The salt (bundle id) in the header bundle_records writes before every input: fixed, so the
// END signatures of the seed plaintexts (made over this header) verify.
inline constexpr storage::BundleId kRecordsSalt = {0x5e, 0xed, 0xb0, 0x0d, 0x1e, 0x5a, 0x17, 0x00,
                                                   0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};

// Stores holding only kFuzzProject, for one input at a time. An import of a bundle of the
// project may change what the store holds (entries, imported bundle ids, peers' vectors,
// forks), and an input must not depend on the ones before it; an import that matched no
// project only read the store. Opening a store is most of an input's time, so each is a copy
// of a template made once (no new key, no fsync per input), kept while imports match nothing.
class ScratchStores {
 public:
  explicit ScratchStores(const char* name) : dir_(make_temp_dir(name)) {
    open_fuzz_store(fuzz_store_options(dir_ / "template"));  // closed again at once
  }
  storage::Store& get() {
    if (!store_) {
      std::error_code ec;
      std::filesystem::remove_all(dir_ / "store", ec);
      std::filesystem::copy(dir_ / "template", dir_ / "store",
                            std::filesystem::copy_options::recursive, ec);
      FUZZ_CHECK(!ec);
      auto s = storage::Store::open(fuzz_store_options(dir_ / "store"));
      FUZZ_CHECK(s.ok());
      store_ = std::move(*s);
    }
    return *store_;
  }
  // After an import into get(): the next get() is a fresh copy if it may have changed it.
  void after(const bundle::ImportReport& report) {
    if (report.project != ProjectId{}) store_.reset();
  }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<storage::Store> store_;
};

// FNV-1a of an input: the bundle targets draw their splits and chunk sizes from it.
inline std::uint64_t hash_of(ByteView data) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (auto b : data) h = (h ^ b) * 0x100000001b3ull;
  return h;
}

// The bundle file of plaintext `plain` (records) for the project whose secret is `secret`: the
// header with `salt`, then chunks of `chunk_bytes` plaintext bytes each, the last one flagged
// (an empty plaintext: one empty last chunk), sealed as bundle/writer.cpp does.
inline Bytes seal_bundle(ByteView secret, const storage::BundleId& salt, ByteView plain,
                         std::size_t chunk_bytes) {
  Bytes out = bundle::detail::encode_header(salt, bundle::detail::project_tag(secret, salt));
  const Bytes header = out;
  auto key = bundle::detail::chunk_key(secret, salt);
  FUZZ_CHECK(key.ok());
  std::size_t at = 0;
  std::uint64_t index = 0;
  do {
    std::size_t n = std::min(chunk_bytes, plain.size() - at);
    bool last = at + n == plain.size();
    std::size_t len_at = out.size();
    ByteWriter(out).u32(0);
    crypto::aes256gcm_seal(*key, bundle::detail::chunk_nonce(index++, last), header,
                           plain.subspan(at, n), out);
    std::uint32_t field =
        static_cast<std::uint32_t>(out.size() - len_at - 4) | (last ? bundle::kLastChunkBit : 0);
    for (int i = 0; i < 4; ++i)
      out[len_at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(field >> (24 - 8 * i));
    at += n;
  } while (at < plain.size());
  return out;
}

// The plaintext of a well-formed bundle file of the project whose secret is `secret` (and its
// salt), or nullopt.
inline std::optional<Bytes> open_bundle(ByteView secret, ByteView file,
                                        storage::BundleId* salt = nullptr) {
  if (file.size() < bundle::kHeaderBytes) return std::nullopt;
  storage::BundleId s{};
  std::copy_n(file.begin() + 16, s.size(), s.begin());
  auto key = bundle::detail::chunk_key(secret, s);
  if (!key) return std::nullopt;
  ByteView header = file.first(bundle::kHeaderBytes);
  Bytes plain;
  std::size_t at = bundle::kHeaderBytes;
  for (std::uint64_t index = 0;; ++index) {
    if (file.size() - at < 4) return std::nullopt;
    std::uint32_t field = ByteReader(file.subspan(at, 4)).u32();
    std::size_t n = field & ~bundle::kLastChunkBit;
    bool last = (field & bundle::kLastChunkBit) != 0;
    at += 4;
    if (file.size() - at < n) return std::nullopt;
    if (!crypto::aes256gcm_open(*key, bundle::detail::chunk_nonce(index, last), header,
                                file.subspan(at, n), plain))
      return std::nullopt;
    at += n;
    if (last) break;
  }
  if (at != file.size()) return std::nullopt;
  if (salt) *salt = s;
  return plain;
}

// What BundleReader documents it returns (bundle/bundle.hpp).
inline bool documented_import_error(Errc c) {
  switch (c) {
    case Errc::invalid_argument:
    case Errc::unsupported:
    case Errc::not_found:
    case Errc::already_exists:
    case Errc::permission_denied:
    case Errc::failed_precondition:
    case Errc::verification_failed:
    case Errc::too_large:
    case Errc::data_loss:
    case Errc::unavailable: return true;
    default: return false;
  }
}

struct ImportOutcome {
  std::optional<Errc> error;    // nullopt: finish() returned the report
  bundle::ImportReport report;  // finish()'s report, else progress()
  bool fed_all = false;         // every piece was accepted by feed()
};

// Feeds `file` to a BundleReader over `store` in pieces of next_piece() bytes (at least 1),
// then finishes. Checks, for any input: only documented errors; an error sticks (the next
// feed and finish return it); finish succeeds exactly when the report says complete; the
// store remembers the bundle as imported exactly when finish succeeded.
inline ImportOutcome import_checked(storage::Store& store, ByteView file,
                                    const std::function<std::size_t()>& next_piece,
                                    bundle::ImportOptions options = {}) {
  bundle::BundleReader reader(store, std::move(options));
  ImportOutcome out;
  std::optional<Error> fed_error;
  for (std::size_t at = 0; at < file.size();) {
    std::size_t n = std::min(file.size() - at, std::max<std::size_t>(1, next_piece()));
    auto st = reader.feed(file.subspan(at, n));
    if (!st) {
      fed_error = st.error();
      break;
    }
    at += n;
  }
  out.fed_all = !fed_error;
  if (fed_error) {
    FUZZ_CHECK(documented_import_error(fed_error->code));
    FUZZ_CHECK(!fed_error->message.empty());
    auto again = reader.feed(file.first(std::min<std::size_t>(file.size(), 1)));
    FUZZ_CHECK(!again.ok() && again.error().code == fed_error->code);
  }
  auto done = reader.finish();
  if (done) {
    FUZZ_CHECK(!fed_error);
    FUZZ_CHECK(done->complete);
    FUZZ_CHECK(done->entries == reader.progress().entries);
    FUZZ_CHECK(done->applied == reader.progress().applied);
    out.report = *done;
  } else {
    FUZZ_CHECK(documented_import_error(done.error().code));
    if (fed_error) FUZZ_CHECK(done.error().code == fed_error->code);
    FUZZ_CHECK(!reader.progress().complete);
    out.error = done.error().code;
    out.report = reader.progress();
  }
  // Blobs: the counts add up, and every blob the project holds now reads back whole (each
  // chunk against its recorded hash) as the bytes its id names.
  const auto& rep = out.report;
  FUZZ_CHECK(rep.blobs_skipped == 0 || !rep.blob_problem.empty());
  FUZZ_CHECK(rep.blobs_imported == 0 || rep.project != ProjectId{});
  if (out.report.project != ProjectId{}) {
    auto held = store.blobs().list(out.report.project, std::nullopt, 1000);
    FUZZ_CHECK(held.ok());
    for (const auto& b : *held) {
      if (!b.held) continue;
      auto r = store.blobs().open(out.report.project, b.info.id);
      FUZZ_CHECK(r.ok());
      crypto::Sha256 whole;
      for (std::uint64_t at = 0; at < b.info.size;) {
        auto piece = (*r)->read(at, storage::kBlobChunkBytes);
        FUZZ_CHECK(piece.ok() && !piece->empty());
        whole.update(*piece);
        at += piece->size();
      }
      FUZZ_CHECK(whole.finish() == b.info.id);
    }
  }
  // Remembered as imported (a second import refused) exactly when this one succeeded.
  if (out.report.project != ProjectId{}) {
    storage::BundleId salt{};
    std::copy_n(file.begin() + 16, salt.size(), salt.begin());
    auto seen = store.bundle_imported(out.report.project, salt);
    FUZZ_CHECK(seen.ok());
    FUZZ_CHECK(*seen == (!out.error || *out.error == Errc::already_exists));
  }
  return out;
}

}  // namespace fieldsync::fuzz
