// The sync protocol's messages (docs/protocol.md): plain structs plus one encode/decode
// pair per message. Encoding produces a whole frame (u32 length, u8 type, payload);
// decoding takes the payload of one frame (see FrameDecoder) and never reads past it.
//
// Thread-safety: free functions on values; no shared state.
// Errors: decode_* return invalid_argument for malformed payloads and too_large when a
// declared count exceeds a limit. Nothing here throws or crashes on any input.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"
#include "storage/types.hpp"

namespace fieldsync::sync {

// Protocol versions this build speaks (HELLO negotiates the highest common one). A release
// speaks its own version and the one before it (docs/protocol.md "Versions"): version 2 sends
// PROJECTS proofs of 16 bytes, version 1 of 32.
inline constexpr std::uint16_t kProtocolMin = 1;
inline constexpr std::uint16_t kProtocolMax = 2;
// Bytes of one PROJECTS proof: the whole HMAC in version 1, its first 16 bytes from version 2.
inline constexpr std::uint8_t kProofBytesV1 = 32;
inline constexpr std::uint8_t kProofBytesV2 = 16;
constexpr std::uint8_t proof_bytes_of(std::uint16_t protocol) {
  return protocol >= 2 ? kProofBytesV2 : kProofBytesV1;
}
// HELLO starts with these bytes so a non-fieldsync peer is recognised at once.
inline constexpr std::uint8_t kHelloMagic[4] = {'F', 'S', 'Y', 'N'};
// Bytes before the payload: u32 length (of type + payload) and u8 type.
inline constexpr std::size_t kFrameHeaderBytes = 5;
// Frame types with this bit set may be ignored by a receiver that does not know them.
inline constexpr std::uint8_t kIgnorableTypeBit = 0x80;
inline constexpr std::size_t kMaxDeviceNameBytes = 64;
inline constexpr std::size_t kMaxErrorReasonBytes = 1024;
// A project name in JOINED (the same bound as storage's project names).
inline constexpr std::size_t kMaxProjectNameBytes = 200;
// PROJECTS is padded with random proofs to a multiple of this many (at least one bucket),
// so the frame does not tell how many projects the sender has.
inline constexpr std::size_t kProjectsBucket = 8;

enum class MsgType : std::uint8_t {
  hello = 0x01,
  projects = 0x02,
  vv = 0x03,
  batch = 0x04,
  ack = 0x05,
  done = 0x06,
  new_heads = 0x07,
  ping = 0x08,
  error = 0x09,
  // Ignorable (kIgnorableTypeBit): a peer that does not know them skips them.
  tips = 0x8a,    // log tips (seq + chain) after VV, to notice two histories of one device
  forked = 0x8b,  // "your copy of this device's log differs from mine"
  zbatch = 0x8c,  // a BATCH payload compressed with zstd (only after kFeatureZstdBatches)
  // Blobs (attachments), only between peers that both announce kFeatureBlobs.
  blob_get = 0x8d,    // "send me chunks [first, first+count) of this blob (and its hashes)"
  blob_head = 0x8e,   // a blob's chunk hashes, or "not held here"
  blob_chunk = 0x8f,  // one chunk of a blob
  blob_wants = 0x90,  // "of this project I still want n blobs, b bytes" (progress only)
  // Only between peers that both announce kFeatureSubscriptions, before the project's VV.
  subscription = 0x91,  // "of this project I want this; my logs are whole up to here"
  // Only to peers that announce kFeatureNotices.
  notice = 0x92,  // why the sender ends the session or holds a project back, machine-readable
};

std::string_view msg_type_name(std::uint8_t type);

// Feature bits announced in HELLO (unknown bits are ignored).
inline constexpr std::uint64_t kFeatureNone = 0;
// "Send me BATCH payloads as ZBATCH (zstd) if you like": a sender compresses only when both
// HELLOs carry it.
inline constexpr std::uint64_t kFeatureZstdBatches = 1u << 0;
// "I fetch and serve blobs" (BLOB_GET/BLOB_HEAD/BLOB_CHUNK): used only when both HELLOs
// carry it (a device does not announce it on a link that carries no blobs).
inline constexpr std::uint64_t kFeatureBlobs = 1u << 1;
// "I take part of a project" (SUBSCRIPTION, left-out BATCH entries): used only when both
// HELLOs carry it.
inline constexpr std::uint64_t kFeatureSubscriptions = 1u << 2;
// "I understand NOTICE (0x92)": a sender sends NOTICE only to a peer whose HELLO carries it.
inline constexpr std::uint64_t kFeatureNotices = 1u << 3;
// "My BATCH checkpoints carry run seals, send me yours": BATCH checkpoints are followed by
// their seal (or its absence) only when both HELLOs carry it.
inline constexpr std::uint64_t kFeatureSeals = 1u << 4;
// The most chunks one BLOB_GET may ask for (the receiver's window).
inline constexpr std::uint32_t kMaxBlobGetChunks = 16;

struct Hello {
  std::uint16_t min_version = kProtocolMin;
  std::uint16_t max_version = kProtocolMax;
  DeviceId device;
  std::string device_name;
  std::uint64_t features = kFeatureNone;
  std::uint32_t max_frame_bytes = 0;  // the largest frame the sender accepts
};

// One membership proof per project the sender belongs to (HMAC, see membership_proof()), of
// which the first `proof_bytes` are sent (kProofBytesV1 or kProofBytesV2; the rest of each
// Digest is zero when decoded). A receiver tells the size from the payload length.
struct Projects {
  std::vector<crypto::Digest> proofs;
  std::uint8_t proof_bytes = kProofBytesV1;
  // Whether `proof` (a whole HMAC) is one of those sent, in constant time per proof.
  bool holds(const crypto::Digest& proof) const;
};

struct VectorMsg {  // VV and NEW share this layout
  ProjectId project;
  storage::VersionVector heads;
};

// Sent right after VV: for each author of that VV, in the same order (ascending device id),
// the first 8 bytes of the chain value at the seq the VV gives (big-endian u64).
struct TipsMsg {
  ProjectId project;
  std::vector<std::uint64_t> chain_prefixes;
};
// The 8-byte prefix TIPS carries for a chain value.
std::uint64_t chain_prefix(const crypto::Digest& chain);

struct ForkedMsg {
  ProjectId project;
  DeviceId author;
  std::uint64_t seq = 0;  // a seq at or after which the two logs differ
};

// What the sender wants of a project, sent before its VV (docs/protocol.md "Subscriptions"):
// its subscription (canonical JSON; "{}" is everything) and, per author whose log holds
// entries it left out, the seq up to which that log is whole (storage::Store::whole_heads).
struct SubscriptionMsg {
  ProjectId project;
  std::string subscription = "{}";
  storage::VersionVector whole;
  // The most the sender gives the receiver of the project (its selection for this peer;
  // "{}": whatever the receiver wants).
  std::string gives = "{}";
};

struct Batch {
  ProjectId project;
  storage::LogBatch log;
};

struct Ack {
  ProjectId project;
  DeviceId author;
  std::uint64_t head = 0;  // receiver's head for the author after applying
};

struct Done {
  ProjectId project;
};

struct BlobGet {
  ProjectId project;
  crypto::Digest blob{};
  bool want_hashes = false;  // answer with BLOB_HEAD first
  std::uint32_t first = 0;   // first chunk asked for
  std::uint32_t count = 0;   // chunks asked for (0..kMaxBlobGetChunks)
};

struct BlobHead {
  ProjectId project;
  crypto::Digest blob{};
  bool held = false;  // false: not held by the sender (no hashes follow)
  // Unsolicited: the sender now holds a blob it said it did not hold; ask again (no hashes).
  bool now_held = false;
  std::vector<crypto::Digest> hashes;  // SHA-256 of each chunk (storage::kBlobChunkBytes)
};

// What the sender still wants of a project's blobs under its policy with the receiver (and on
// demand): the receiver shows it as its blobs to send. Sent when it changes.
struct BlobWants {
  ProjectId project;
  std::uint64_t blobs = 0;
  std::uint64_t bytes = 0;
};

struct BlobChunk {
  ProjectId project;
  crypto::Digest blob{};
  std::uint32_t index = 0;
  // At most storage::kBlobChunkBytes: a view into the decoded payload (valid while the frame
  // is handled), so a chunk is not copied on its way to the disk.
  ByteView data;
};

// NOTICE kinds (docs/protocol.md "NOTICE"). Numbers are fixed; a receiver ignores a kind it
// does not know.
enum class NoticeKind : std::uint8_t {
  closing = 1,            // the sender ends the session on purpose (it shuts down): no failure
  removed = 2,            // the receiver was removed from `project`: the sender refuses it
  awaiting_approval = 3,  // the sender holds `project` until its user approves the receiver
};

struct NoticeMsg {
  std::uint8_t kind = 0;  // a NoticeKind, or one of a newer version
  ProjectId project;      // zero when the kind names none
  std::string message;    // for people, at most kMaxErrorReasonBytes; never contains secrets
};

struct WireError {
  std::uint16_t code = 0;
  std::string reason;
};

// Limits a decoder enforces (from SessionOptions and the store's options).
struct DecodeLimits {
  std::uint32_t max_projects = 1024;
  std::uint32_t max_body_bytes = 16u << 20;
  // The largest BATCH payload a ZBATCH may declare (the frame limit less the type byte):
  // a compressed batch never expands past what an uncompressed frame could carry.
  std::uint32_t max_batch_payload = (4u << 20) - 1;
  // The most chunk hashes a BLOB_HEAD may carry (blob.max_blob_bytes / chunk size, rounded up).
  std::uint32_t max_blob_chunks = 1u << 16;
  // The most authors a SUBSCRIPTION may name.
  std::uint32_t max_authors = 1u << 16;
  // Not a limit: BATCH checkpoints carry seals (both HELLOs set kFeatureSeals).
  bool seals = false;
};

// --- encoding: each appends one complete frame to `out` ---
void encode_hello(Bytes& out, const Hello& m);
void encode_projects(Bytes& out, const Projects& m);
void encode_vector(Bytes& out, MsgType type, const VectorMsg& m);
// `seals`: each checkpoint is followed by its seal or a 0 (both HELLOs set kFeatureSeals).
void encode_batch(Bytes& out, const Batch& m, bool seals = false);
void encode_ack(Bytes& out, const Ack& m);
void encode_done(Bytes& out, const Done& m);
void encode_ping(Bytes& out);
void encode_tips(Bytes& out, const TipsMsg& m);
void encode_forked(Bytes& out, const ForkedMsg& m);
void encode_error(Bytes& out, const WireError& m);
void encode_notice(Bytes& out, const NoticeMsg& m);
void encode_blob_get(Bytes& out, const BlobGet& m);
void encode_blob_head(Bytes& out, const BlobHead& m);
void encode_blob_wants(Bytes& out, const BlobWants& m);
void encode_subscription(Bytes& out, const SubscriptionMsg& m);
void encode_blob_chunk(Bytes& out, const ProjectId& project, const crypto::Digest& blob,
                       std::uint32_t index, ByteView data);
// ZBATCH: `batch_payload` (a BATCH frame's payload) compressed at zstd `level` (1..19).
Status encode_zbatch(Bytes& out, ByteView batch_payload, int level);
// A frame with an arbitrary type and payload (tests, extensions).
void encode_frame(Bytes& out, std::uint8_t type, ByteView payload);

// --- decoding: payload of one frame ---
Result<Hello> decode_hello(ByteView payload);
Result<Projects> decode_projects(ByteView payload, const DecodeLimits& limits);
Result<VectorMsg> decode_vector(ByteView payload, const DecodeLimits& limits);
// Entry ids are recomputed as SHA-256 of the header bytes (ids are not sent).
Result<Batch> decode_batch(ByteView payload, const DecodeLimits& limits);
Result<Ack> decode_ack(ByteView payload);
Result<Done> decode_done(ByteView payload);
Result<WireError> decode_error(ByteView payload);
Result<NoticeMsg> decode_notice(ByteView payload);
Result<TipsMsg> decode_tips(ByteView payload, const DecodeLimits& limits);
Result<ForkedMsg> decode_forked(ByteView payload);
Result<BlobGet> decode_blob_get(ByteView payload);
// Refuses more hashes than fit the blob size limit (storage's max blob / chunk size).
Result<BlobHead> decode_blob_head(ByteView payload, const DecodeLimits& limits);
Result<BlobChunk> decode_blob_chunk(ByteView payload);
Result<BlobWants> decode_blob_wants(ByteView payload);
// The subscription must be canonical (storage::Subscription::parse_canonical) and within
// storage::kMaxSubscriptionBytes; at most limits.max_authors whole heads, ascending.
Result<SubscriptionMsg> decode_subscription(ByteView payload, const DecodeLimits& limits);
// ZBATCH: the BATCH payload it carries, into `out` (reused by the caller). Fails too_large
// when the declared size exceeds limits.max_batch_payload (nothing is allocated for it) and
// invalid_argument when the zstd frame is corrupt or does not produce exactly that size.
Status decode_zbatch(ByteView payload, const DecodeLimits& limits, Bytes& out);

// HMAC-SHA256(project_secret, "fieldsync-member" || channel_binding || device id).
crypto::Digest membership_proof(ByteView project_secret, ByteView channel_binding,
                                const DeviceId& device);

}  // namespace fieldsync::sync
