// The bundle format's pieces shared by the writer and the reader (docs/protocol.md
// "Bundles"): key derivation, nonces, the header and the BEGIN/END records. Private to bundle/.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "bundle/bundle.hpp"
#include "crypto/crypto.hpp"
#include "storage/blob_store.hpp"
#include "storage/types.hpp"

namespace fieldsync::bundle::detail {

using Tag = std::array<std::uint8_t, kTagBytes>;

// tag = HMAC-SHA256(HMAC-SHA256(secret, "fieldsync-bundle-tag"), salt)[0..16).
Tag project_tag(ByteView project_secret, const storage::BundleId& salt);
// key = HKDF-SHA256(ikm = secret, salt = salt, info = "fieldsync/bundle/v1/chunk-key").
Result<crypto::AeadKey> chunk_key(ByteView project_secret, const storage::BundleId& salt);
// u64 chunk index (big-endian), u8 1 for the last chunk else 0, three zero bytes.
crypto::AeadNonce chunk_nonce(std::uint64_t index, bool last);

// The 48-byte header: magic, version, 7 reserved zero bytes, salt, project tag.
Bytes encode_header(const storage::BundleId& salt, const Tag& tag);

struct Begin {
  std::uint8_t version = kFormatVersion;
  ProjectId project;
  DeviceId producer;
  std::string producer_name;
  std::int64_t created_ms = 0;
  storage::VersionVector holds;  // the producer's vector at export: the bundle covers it
  storage::VersionVector since;  // per author, the seq after which its entries start (> 0 only)
};
Bytes encode_begin(const Begin& b);
// invalid_argument when malformed; too_large when a vector is longer than the record allows.
Result<Begin> decode_begin(ByteView payload);

struct End {
  std::uint64_t entries = 0;
  std::uint64_t batches = 0;
  crypto::Signature signature{};
};
Bytes encode_end(const End& e);
Result<End> decode_end(ByteView payload);
// What END's signature covers: "fieldsync/bundle/end/v1" || digest || u64 entries ||
// u64 batches, where digest = SHA-256(header || every record before END).
Bytes end_message(const crypto::Digest& digest, std::uint64_t entries, std::uint64_t batches);

// BLOB: blob id (32), u64 size, u32 chunk count (= ceil(size / kBlobChunkBytes)).
// BLOB_HASHES: blob id (32), u32 index of the first hash, 1.. x SHA-256 (32) of the chunks.
// BLOB_DATA: blob id (32), u32 chunk index, u32 offset in the chunk, 1.. bytes of the chunk.
inline constexpr std::size_t kBlobRecordBytes = 44;
inline constexpr std::size_t kBlobHashesHeaderBytes = 36;
inline constexpr std::size_t kBlobDataHeaderBytes = 40;
// The smallest max_record_bytes a bundle with blobs is written with (room for a hash).
inline constexpr std::size_t kMinBlobRecordBytes = 256;

struct BlobHead {
  storage::BlobId id{};
  std::uint64_t size = 0;
  std::uint32_t chunks = 0;
};
Bytes encode_blob(const BlobHead& b);
// invalid_argument unless the chunk count is the size's.
Result<BlobHead> decode_blob(ByteView payload);

struct BlobHashes {
  storage::BlobId id{};
  std::uint32_t first = 0;
  std::vector<crypto::Digest> hashes;
};
Bytes encode_blob_hashes(const storage::BlobId& id, std::uint32_t first,
                         std::span<const crypto::Digest> hashes);
Result<BlobHashes> decode_blob_hashes(ByteView payload);

struct BlobData {
  storage::BlobId id{};
  std::uint32_t chunk = 0;
  std::uint32_t offset = 0;
  ByteView bytes;  // into the payload
};
Bytes encode_blob_data(const storage::BlobId& id, std::uint32_t chunk, std::uint32_t offset,
                       ByteView bytes);
Result<BlobData> decode_blob_data(ByteView payload);

// SEALS: 1.. seals of the next BATCH's checkpoints, each u64 seq, u64 from, root (32),
// signature (64), seqs ascending.
inline constexpr std::size_t kSealBytes = 8 + 8 + 32 + 64;
Bytes encode_seals(std::span<const storage::Checkpoint> checkpoints);  // the sealed ones
Result<std::vector<std::pair<std::uint64_t, storage::RunSeal>>> decode_seals(ByteView payload);

// BLOBS_HELD: 0.. blob ids (32), ascending (and above those of the records before it).
Result<std::vector<storage::BlobId>> decode_blobs_held(ByteView payload);

// Appends a record header (type, length).
void put_record_header(Bytes& out, std::uint8_t type, std::uint32_t length);

}  // namespace fieldsync::bundle::detail
