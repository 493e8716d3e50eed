// Keys and values of the LMDB tables (docs/storage.md "Tables"). Private to storage/.
// All integers are big-endian so that keys sort in numeric order.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"
#include "crypto/crypto.hpp"
#include "storage/body_codec.hpp"
#include "storage/types.hpp"

namespace fieldsync::storage {

// 2: typed peer records (format 1 kept the sync layer's JSON; converted when opened).
inline constexpr std::uint32_t kStorageFormat = 4;
// Read-back bounds of the record decoders; writers check the same constants.
inline constexpr std::size_t kMaxDocHeads = 0xffff;              // DocRecord: u16 head count
inline constexpr std::size_t kMaxVersionHeaderBytes = 1u << 20;  // LogRecord header blob
inline constexpr std::size_t kMaxPeerNameBytes = 256;            // PeerRecord name (clean UTF-8)
inline constexpr std::size_t kMaxPeerAddresses = 16;             // PeerRecord address URIs
inline constexpr std::size_t kMaxPeerAddressBytes = 1024;        // one address URI
inline constexpr std::size_t kMaxPeerHoldsAuthors = 1u << 16;    // authors in a peer_holds vector
using DocTag = std::array<std::uint8_t, 16>;  // first 16 bytes of SHA-256(doc key)

// A u64 value of the meta table (big-endian), written and read back.
inline Bytes u64_bytes(std::uint64_t x) {
  Bytes b;
  ByteWriter(b).u64(x);
  return b;
}
inline std::uint64_t read_u64(ByteView v) { return ByteReader(v).u64(); }

struct Key {
  // Held inline up to kInlineBytes (every key of the fixed layouts and most document keys):
  // a key is built for nearly every table access, without an allocation.
  static constexpr std::size_t kInlineBytes = 96;
  boost::container::small_vector<std::uint8_t, kInlineBytes> b;
  Key& raw(ByteView v) {
    b.insert(b.end(), v.begin(), v.end());
    return *this;
  }
  Key& u64(std::uint64_t v) { return be(v, 8); }
  Key& u32(std::uint32_t v) { return be(v, 4); }
  Key& u8(std::uint8_t v) {
    b.push_back(v);
    return *this;
  }
  operator ByteView() const { return {b.data(), b.size()}; }  // NOLINT implicit
  Bytes bytes() const { return Bytes(b.begin(), b.end()); }

 private:
  Key& be(std::uint64_t v, int n) {  // big-endian, as ByteWriter
    for (int i = n - 1; i >= 0; --i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    return *this;
  }
};

inline Key doc_key(const ProjectId& p, std::string_view coll, std::string_view id) {
  Key k;
  k.raw(p.view()).u8(static_cast<std::uint8_t>(coll.size())).raw(as_bytes(coll)).raw(as_bytes(id));
  return k;
}
// What a document key (doc_key) names; nullopt when it is too short for its own collection
// length (a corrupt key).
struct DocKeyParts {
  std::string_view collection;
  std::string_view id;
};
inline std::optional<DocKeyParts> split_doc_key(ByteView dk) {
  if (dk.size() <= ProjectId::size) return std::nullopt;
  const std::size_t clen = dk[ProjectId::size];
  if (dk.size() < ProjectId::size + 1 + clen) return std::nullopt;
  std::string_view rest = as_chars(dk.subspan(ProjectId::size + 1));
  return DocKeyParts{rest.substr(0, clen), rest.substr(clen)};
}
inline Key collection_prefix(const ProjectId& p, std::string_view coll) {
  Key k;
  k.raw(p.view()).u8(static_cast<std::uint8_t>(coll.size())).raw(as_bytes(coll));
  return k;
}
// Per-document keys (history, superseded) start with doc key + 0x00: doc ids never
// contain 0x00, so one document's prefix never matches another's.
inline Key doc_sub_prefix(ByteView doc_key) {
  Key k;
  k.raw(doc_key).u8(0);
  return k;
}
inline Key docver_key(ByteView doc_key, std::uint64_t hlc, const VersionId& v) {
  Key k = doc_sub_prefix(doc_key);
  k.u64(hlc).raw(v.view());
  return k;
}
inline Key superseded_key(ByteView doc_key, const VersionId& v) {
  Key k = doc_sub_prefix(doc_key);
  k.raw(v.view());
  return k;
}
inline Key author_key(const ProjectId& p, const DeviceId& a) {
  Key k;
  k.raw(p.view()).raw(a.view());
  return k;
}
inline Key log_key(const ProjectId& p, const DeviceId& a, std::uint64_t seq) {
  Key k = author_key(p, a);
  k.u64(seq);
  return k;
}
inline Key change_key(const ProjectId& p, std::uint64_t seq) {
  Key k;
  k.raw(p.view()).u64(seq);
  return k;
}
inline Key counter_key(const ProjectId& p) {
  Key k;
  k.u8('L').raw(p.view());
  return k;
}

// peer_holds table: project first, like every per-project table (leaving removes it).
inline Key peer_holds_key(const ProjectId& p, const DeviceId& peer) {
  Key k;
  k.raw(p.view()).raw(peer.view());
  return k;
}

// meta key of how far the project's changes feed was indexed for blob references.
inline Key blob_cursor_key(const ProjectId& p) {
  Key k;
  k.u8('b').raw(p.view());
  return k;
}

// meta: the project's blob policy on this device (docs/storage.md "Blob policy").
inline Key blob_policy_key(const ProjectId& p) {
  Key k;
  k.u8('p').raw(p.view());
  return k;
}

// meta: a blob of the project asked for on demand, until when (docs/storage.md "Blob
// policy"): 'D' + project + blob id (32) -> u8 1, u64 until (unix ms).
inline Key blob_demand_prefix(const ProjectId& p) {
  Key k;
  k.u8('D').raw(p.view());
  return k;
}
inline Key blob_demand_key(const ProjectId& p, ByteView blob) {
  Key k = blob_demand_prefix(p);
  k.raw(blob);
  return k;
}

// meta: the blobs a peer said it holds of the project (a bundle it wrote lists them,
// docs/storage.md "What a peer holds"): 'H' + project + peer -> u8 1, u64 recorded ms, n x
// blob id (32), ascending.
inline Key peer_blobs_prefix(const ProjectId& p) {
  Key k;
  k.u8('H').raw(p.view());
  return k;
}
inline Key peer_blobs_key(const ProjectId& p, const DeviceId& peer) {
  Key k = peer_blobs_prefix(p);
  k.raw(peer.view());
  return k;
}

inline Key prefix_of(const ProjectId& p) {
  Key k;
  k.raw(p.view());
  return k;
}

struct ProjectRecord {
  ProjectInfo info;
  Bytes secret;
  Bytes encode() const;
  static std::optional<ProjectRecord> decode(ByteView v);
};

// Where a version lives: its position in its author's log.
struct Location {
  DeviceId author;
  std::uint64_t seq = 0;
};

// A head of a document with what ranking needs, so reads need no extra lookups.
struct HeadRef {
  VersionId id;
  std::uint64_t hlc = 0;
  Location at;
  bool tombstone = false;
};

// Deterministic winner: highest hlc, then highest version id. Every device that holds
// the same heads picks the same winner.
inline bool head_ranks_before(const HeadRef& a, const HeadRef& b) {
  return a.hlc != b.hlc ? a.hlc > b.hlc : a.id > b.id;
}

struct DocRecord {
  static constexpr std::uint8_t kDeleted = 1, kPurged = 2;
  std::uint8_t flags = 0;
  std::uint64_t local_seq = 0;
  std::vector<HeadRef> heads;  // ranked: winner first
  Bytes encode() const;
  static std::optional<DocRecord> decode(ByteView v);
  std::vector<VersionId> head_ids() const;
};

// logs table value: the chain up to this entry, the version id, its header and body.
// Keeping them together makes a log read one sequential scan of one table. The body is stored
// as the BodyCodec packs it (flag 8: compressed); decode() gives it back as it was written.
struct LogRecord {
  crypto::Digest chain{};
  VersionId id;
  ByteView header;
  // Views into the LMDB page or the caller's buffers; for a body stored compressed, into
  // `plain`, which decode() fills (shared: a copy of the record views the same bytes).
  std::optional<ByteView> body;
  bool excluded = false;  // authored after its author's removal: kept for the chain, not in any DAG
  // Not held here by choice (a subscription left it out): no body, in no DAG; the header is
  // empty when it arrived that way, kept when the subscription narrowed after it arrived.
  bool elided = false;
  // Received proven (docs/storage.md "Proven runs"): held without its neighbours, so without
  // the chain (`chain` is all zero); `path` proves it in the sealed run its checkpoint ends.
  // With `elided`: left out after it arrived (header and path kept, no body).
  bool proven = false;
  std::vector<crypto::Digest> path{};
  std::shared_ptr<const Bytes> plain = nullptr;
  // A body in its stored form, compressed with dictionary `packed_dict` (0: none): set by
  // decode_stored() for a body stored compressed (`body` is then unset until the caller
  // unpacks it with BodyCodec::unpack), or by a writer that packed it ahead (Store::prepare_log).
  // With `body` unset, encode() writes this frame as it is: a record leaves its body behind only
  // with both reset.
  std::optional<ByteView> packed = std::nullopt;
  std::uint16_t packed_dict = 0;
  // Packs the body with `codec` for project `p` (stored as it is if compressing fails).
  Bytes encode(const BodyCodec& codec, const ProjectId& p) const;
  // nullopt when the record is malformed or its body does not decompress.
  static std::optional<LogRecord> decode(ByteView v, const BodyCodec& codec);
  // The record as stored, a compressed body left packed: for readers of the header, chain or
  // flags (nothing is decompressed), or that unpack it into their own buffer. nullopt when
  // malformed.
  static std::optional<LogRecord> decode_stored(ByteView v);
  // The size of the body as written (a packed one's, as its frame declares).
  std::size_t body_size() const;
};

struct HeadValue {  // heads table: an author's highest contiguous seq held
  std::uint64_t seq = 0;
  crypto::Digest chain{};
  Bytes encode() const;
  static std::optional<HeadValue> decode(ByteView v);
};

struct CheckpointValue {
  crypto::Digest chain{};
  crypto::Signature signature{};
  static constexpr std::uint8_t kSealVersion = 1;
  std::optional<RunSeal> seal;  // stored after the signature; daemons before seals ignore it
  Bytes encode() const;
  static std::optional<CheckpointValue> decode(ByteView v);
};

// peers table value (docs/storage.md "Peers"). check() is the write-side check and runs
// again on every decode, so a record that was accepted always reads back.
struct PeerValue {
  static constexpr std::uint8_t kVersion = 1;
  static Status check(const PeerRecord& r);
  static Bytes encode(const PeerRecord& r);
  // data_loss naming what is wrong: malformed, unknown version, or out of limits.
  static Result<PeerRecord> decode(ByteView key, ByteView v);
  // A record of storage format 1 (JSON of the sync layer: address "host:port", name,
  // approved); nullopt when it is not a JSON object.
  static std::optional<PeerRecord> from_format1(ByteView key, std::string_view json);
};

// peer_holds table value: what a peer is known to hold of a project (authors ascending,
// every seq >= 1, at most kMaxPeerHoldsAuthors).
struct PeerHoldsValue {
  static constexpr std::uint8_t kVersion = 1;
  static Bytes encode(const VersionVector& held);
  static std::optional<VersionVector> decode(ByteView v);
};

// A transport address URI: lowercase scheme (a-z, then a-z 0-9 + - .), "://", then 1 or more
// bytes of clean UTF-8 without spaces; at most kMaxPeerAddressBytes in all.
bool valid_address_uri(std::string_view uri);
// "tcp://host:port" for a format-1 "host:port" address (an IPv6 host bracketed, also when it
// was written without brackets: "tcp://[::1]:7891"); nullopt when it is not host:port with a
// port 1..65535 or the URI would not be valid.
std::optional<std::string> tcp_address_uri(std::string_view host_port);

// docver and changes values: a Location (+ for changes, whether it was written here).
Key encode_location(const Location& at, bool local = false);
std::optional<std::pair<Location, bool>> decode_location(ByteView v);

// The hash chain of a per-device log (docs/storage.md "Log chain").
crypto::Digest chain_genesis(const ProjectId& p, const DeviceId& author);
crypto::Digest chain_next(const crypto::Digest& prev, std::uint64_t seq, const VersionId& id);
Bytes checkpoint_message(const ProjectId& p, const DeviceId& author, std::uint64_t seq,
                         const crypto::Digest& chain);

// Sealed runs (docs/storage.md "Sealed runs"): the Merkle tree over a run's version ids in seq
// order, shaped as RFC 9162's (a left subtree of the largest power of two below the size),
// with the ids as leaves and SHA-256(0x01 || left || right) as inner nodes. The shape follows
// from the run's length alone, which the seal signs (from, seq), so a path cannot pass an
// inner node off as a leaf.
crypto::Digest run_root(std::span<const VersionId> ids);
// The audit path of ids[index], leaf to root.
std::vector<crypto::Digest> run_path(std::span<const VersionId> ids, std::size_t index);
// The audit paths of ids[i] for each i of `indices` (ascending), hashing each node once.
std::vector<std::vector<crypto::Digest>> run_paths(std::span<const VersionId> ids,
                                                   std::span<const std::size_t> indices);
// Whether `id` at `index` of a run of `size` ids hashes up `path` to `root`.
bool run_path_ok(const VersionId& id, std::uint64_t index, std::uint64_t size,
                 std::span<const crypto::Digest> path, const crypto::Digest& root);
Bytes seal_message(const ProjectId& p, const DeviceId& author, std::uint64_t seq,
                   const crypto::Digest& chain, std::uint64_t from, const crypto::Digest& root);

}  // namespace fieldsync::storage
