#include "bundle/format.hpp"

#include <chrono>

#include "common/clock.hpp"
#include "common/encoding.hpp"
#include "common/text.hpp"

namespace fieldsync::bundle::detail {
namespace {

constexpr std::string_view kTagLabel = "fieldsync-bundle-tag";
constexpr std::string_view kKeyInfo = "fieldsync/bundle/v1/chunk-key";
constexpr std::string_view kEndLabel = "fieldsync/bundle/end/v1";
constexpr std::size_t kVectorEntryBytes = DeviceId::size + 8;

Error malformed(std::string_view what) {
  return make_error(Errc::invalid_argument, "malformed " + std::string(what) + " record");
}

void put_vector(ByteWriter& w, const storage::VersionVector& vv) {
  w.u32(static_cast<std::uint32_t>(vv.size()));
  for (const auto& [a, seq] : vv) {
    w.raw(a.view());
    w.u64(seq);
  }
}

// Authors strictly ascending (as written), so a vector has one entry per author.
bool get_vector(ByteReader& r, storage::VersionVector& out) {
  std::uint32_t n = r.u32();
  if (!r.ok() || std::size_t{n} * kVectorEntryBytes > r.remaining()) return false;
  std::optional<DeviceId> prev;
  for (std::uint32_t i = 0; i < n; ++i) {
    DeviceId a;
    a.bytes = r.fixed<DeviceId::size>();
    std::uint64_t seq = r.u64();
    if (!r.ok() || (prev && !(*prev < a))) return false;
    out.emplace_hint(out.end(), a, seq);
    prev = a;
  }
  return true;
}

}  // namespace

Tag project_tag(ByteView project_secret, const storage::BundleId& salt) {
  auto k_tag = crypto::hmac_sha256(project_secret, as_bytes(kTagLabel));
  auto mac = crypto::hmac_sha256(ByteView(k_tag), ByteView(salt));
  Tag t{};
  std::copy_n(mac.begin(), t.size(), t.begin());
  return t;
}

Result<crypto::AeadKey> chunk_key(ByteView project_secret, const storage::BundleId& salt) {
  crypto::AeadKey key{};
  FS_TRY(crypto::hkdf_sha256(project_secret, ByteView(salt), as_bytes(kKeyInfo), key));
  return key;
}

crypto::AeadNonce chunk_nonce(std::uint64_t index, bool last) {
  crypto::AeadNonce n{};
  for (int i = 0; i < 8; ++i)
    n[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(index >> (56 - 8 * i));
  n[8] = last ? 1 : 0;
  return n;
}

Bytes encode_header(const storage::BundleId& salt, const Tag& tag) {
  Bytes out;
  out.reserve(kHeaderBytes);
  ByteWriter w(out);
  w.raw(ByteView(kMagic));
  w.u8(kFormatVersion);
  for (int i = 0; i < 7; ++i) w.u8(0);
  w.raw(ByteView(salt));
  w.raw(ByteView(tag));
  return out;
}

Bytes encode_begin(const Begin& b) {
  Bytes out;
  ByteWriter w(out);
  w.u8(b.version);
  w.raw(b.project.view());
  w.raw(b.producer.view());
  w.str16(sanitize_text(b.producer_name, kMaxProducerNameBytes));
  w.u64(static_cast<std::uint64_t>(b.created_ms));
  put_vector(w, b.holds);
  put_vector(w, b.since);
  return out;
}

Result<Begin> decode_begin(ByteView payload) {
  ByteReader r(payload);
  Begin b;
  b.version = r.u8();
  b.project.bytes = r.fixed<ProjectId::size>();
  b.producer.bytes = r.fixed<DeviceId::size>();
  std::string_view name = r.str16();
  if (!r.ok() || name.size() > kMaxProducerNameBytes) return malformed("BEGIN");
  b.producer_name = sanitize_text(name, kMaxProducerNameBytes);
  b.created_ms = static_cast<std::int64_t>(r.u64());
  if (!get_vector(r, b.holds) || !get_vector(r, b.since) || !r.at_end()) return malformed("BEGIN");
  return b;
}

Bytes encode_end(const End& e) {
  Bytes out;
  ByteWriter w(out);
  w.u64(e.entries);
  w.u64(e.batches);
  w.raw(ByteView(e.signature));
  return out;
}

Result<End> decode_end(ByteView payload) {
  ByteReader r(payload);
  End e;
  e.entries = r.u64();
  e.batches = r.u64();
  e.signature = r.fixed<64>();
  if (!r.ok() || !r.at_end()) return malformed("END");
  return e;
}

Bytes end_message(const crypto::Digest& digest, std::uint64_t entries, std::uint64_t batches) {
  Bytes m;
  ByteWriter w(m);
  w.raw(kEndLabel);
  w.raw(ByteView(digest));
  w.u64(entries);
  w.u64(batches);
  return m;
}

Bytes encode_blob(const BlobHead& b) {
  Bytes out;
  ByteWriter w(out);
  w.raw(ByteView(b.id));
  w.u64(b.size);
  w.u32(b.chunks);
  return out;
}

Bytes encode_seals(std::span<const storage::Checkpoint> checkpoints) {
  Bytes out;
  ByteWriter w(out);
  for (const auto& c : checkpoints) {
    if (!c.seal) continue;
    w.u64(c.seq);
    w.u64(c.seal->from);
    w.raw(ByteView(c.seal->root));
    w.raw(ByteView(c.seal->signature));
  }
  return out;
}

Result<std::vector<std::pair<std::uint64_t, storage::RunSeal>>> decode_seals(ByteView payload) {
  if (payload.empty() || payload.size() % kSealBytes != 0) return malformed("SEALS");
  std::vector<std::pair<std::uint64_t, storage::RunSeal>> out;
  ByteReader r(payload);
  while (!r.at_end()) {
    std::uint64_t seq = r.u64();
    storage::RunSeal s;
    s.from = r.u64();
    s.root = r.fixed<32>();
    s.signature = r.fixed<64>();
    if (!r.ok() || (!out.empty() && seq <= out.back().first)) return malformed("SEALS");
    out.emplace_back(seq, s);
  }
  return out;
}

Result<std::vector<storage::BlobId>> decode_blobs_held(ByteView payload) {
  if (payload.size() % 32 != 0) return malformed("BLOBS_HELD");
  std::vector<storage::BlobId> out(payload.size() / 32);
  for (std::size_t i = 0; i < out.size(); ++i)
    std::copy_n(payload.begin() + static_cast<std::ptrdiff_t>(i * 32), 32, out[i].begin());
  return out;
}

Result<BlobHead> decode_blob(ByteView payload) {
  ByteReader r(payload);
  BlobHead b;
  b.id = r.fixed<32>();
  b.size = r.u64();
  b.chunks = r.u32();
  if (!r.ok() || !r.at_end() ||
      std::uint64_t{b.chunks} !=
          b.size / storage::kBlobChunkBytes + (b.size % storage::kBlobChunkBytes ? 1 : 0))
    return malformed("BLOB");
  return b;
}

Bytes encode_blob_hashes(const storage::BlobId& id, std::uint32_t first,
                         std::span<const crypto::Digest> hashes) {
  Bytes out;
  out.reserve(kBlobHashesHeaderBytes + hashes.size() * 32);
  ByteWriter w(out);
  w.raw(ByteView(id));
  w.u32(first);
  for (const auto& h : hashes) w.raw(ByteView(h));
  return out;
}

Result<BlobHashes> decode_blob_hashes(ByteView payload) {
  ByteReader r(payload);
  BlobHashes b;
  b.id = r.fixed<32>();
  b.first = r.u32();
  if (!r.ok() || r.remaining() == 0 || r.remaining() % 32 != 0) return malformed("BLOB_HASHES");
  b.hashes.reserve(r.remaining() / 32);
  while (r.remaining() > 0) b.hashes.push_back(r.fixed<32>());
  if (!r.ok()) return malformed("BLOB_HASHES");
  return b;
}

Bytes encode_blob_data(const storage::BlobId& id, std::uint32_t chunk, std::uint32_t offset,
                       ByteView bytes) {
  Bytes out;
  out.reserve(kBlobDataHeaderBytes + bytes.size());
  ByteWriter w(out);
  w.raw(ByteView(id));
  w.u32(chunk);
  w.u32(offset);
  w.raw(bytes);
  return out;
}

Result<BlobData> decode_blob_data(ByteView payload) {
  if (payload.size() <= kBlobDataHeaderBytes) return malformed("BLOB_DATA");
  ByteReader r(payload.first(kBlobDataHeaderBytes));
  BlobData b;
  b.id = r.fixed<32>();
  b.chunk = r.u32();
  b.offset = r.u32();
  if (!r.ok()) return malformed("BLOB_DATA");
  b.bytes = payload.subspan(kBlobDataHeaderBytes);
  return b;
}

void put_record_header(Bytes& out, std::uint8_t type, std::uint32_t length) {
  ByteWriter w(out);
  w.u8(type);
  w.u32(length);
}

}  // namespace fieldsync::bundle::detail

namespace fieldsync::bundle {

std::string_view blob_selection_name(BlobSelection s) {
  switch (s) {
    case BlobSelection::all: return "all";
    case BlobSelection::variants: return "variants";
    case BlobSelection::none: return "none";
  }
  return "all";
}

std::optional<BlobSelection> parse_blob_selection(std::string_view name) {
  if (name == "all") return BlobSelection::all;
  if (name == "variants") return BlobSelection::variants;
  if (name == "none") return BlobSelection::none;
  return std::nullopt;
}

Result<std::string> file_name(const storage::Store& store, const ProjectId& project) {
  auto secret = store.project_secret(project);
  if (!secret) return secret.error();
  auto k =
      crypto::hmac_sha256(ByteView(*secret), as_bytes(std::string_view("fieldsync-bundle-file")));
  auto mac = crypto::hmac_sha256(ByteView(k), store.device_id().view());
  return "fieldsync-" + to_base32(ByteView(mac.data(), 16)).substr(0, 26) + ".bundle";
}

}  // namespace fieldsync::bundle
