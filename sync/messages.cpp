#include "sync/messages.hpp"

#include "common/compress.hpp"
#include "common/text.hpp"
#include "crypto/crypto.hpp"
#include "storage/subscription.hpp"

namespace fieldsync::sync {

namespace {

constexpr std::uint8_t kFlagHasBody = 0x01;
constexpr std::uint8_t kFlagLeftOut = 0x02;  // no header (empty), no body: the id follows
// With kFeatureSeals only: after the body, u8 n and n path hashes (storage::LogEntry::proven).
constexpr std::uint8_t kFlagProven = 0x04;
// Smallest encodings, used to reject absurd counts before allocating for them.
constexpr std::size_t kMinEntryBytes = 8 + 4 + 1;
constexpr std::size_t kCheckpointBytes = 8 + 32 + 64;
constexpr std::size_t kVectorItemBytes = 32 + 8;

// Writes the frame header with a placeholder length, returns the offset to patch.
std::size_t begin_frame(Bytes& out, MsgType type) {
  std::size_t at = out.size();
  ByteWriter w(out);
  w.u32(0);
  w.u8(static_cast<std::uint8_t>(type));
  return at;
}

void end_frame(Bytes& out, std::size_t at) {
  auto len = static_cast<std::uint32_t>(out.size() - at - 4);
  out[at] = static_cast<std::uint8_t>(len >> 24);
  out[at + 1] = static_cast<std::uint8_t>(len >> 16);
  out[at + 2] = static_cast<std::uint8_t>(len >> 8);
  out[at + 3] = static_cast<std::uint8_t>(len);
}

Error malformed(std::string_view what) {
  return make_error(Errc::invalid_argument, "malformed " + std::string(what) + " frame");
}

template <class Id>
Id read_id(ByteReader& r) {
  Id id;
  id.bytes = r.fixed<Id::size>();
  return id;
}

}  // namespace

std::string_view msg_type_name(std::uint8_t type) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::hello: return "HELLO";
    case MsgType::projects: return "PROJECTS";
    case MsgType::vv: return "VV";
    case MsgType::batch: return "BATCH";
    case MsgType::ack: return "ACK";
    case MsgType::done: return "DONE";
    case MsgType::new_heads: return "NEW";
    case MsgType::ping: return "PING";
    case MsgType::error: return "ERROR";
    case MsgType::tips: return "TIPS";
    case MsgType::forked: return "FORKED";
    case MsgType::blob_get: return "BLOB_GET";
    case MsgType::blob_head: return "BLOB_HEAD";
    case MsgType::blob_chunk: return "BLOB_CHUNK";
    case MsgType::blob_wants: return "BLOB_WANTS";
    case MsgType::subscription: return "SUBSCRIPTION";
    case MsgType::zbatch: return "ZBATCH";
    case MsgType::notice: return "NOTICE";
  }
  return "UNKNOWN";
}

void encode_frame(Bytes& out, std::uint8_t type, ByteView payload) {
  ByteWriter w(out);
  w.u32(static_cast<std::uint32_t>(payload.size() + 1));
  w.u8(type);
  w.raw(payload);
}

void encode_hello(Bytes& out, const Hello& m) {
  auto at = begin_frame(out, MsgType::hello);
  ByteWriter w(out);
  w.raw(ByteView(kHelloMagic, 4));
  w.u16(m.min_version);
  w.u16(m.max_version);
  w.raw(m.device.view());
  w.str16(sanitize_text(m.device_name, kMaxDeviceNameBytes));
  w.u64(m.features);
  w.u32(m.max_frame_bytes);
  end_frame(out, at);
}

Result<Hello> decode_hello(ByteView payload) {
  ByteReader r(payload);
  auto magic = r.fixed<4>();
  if (!r.ok() || std::memcmp(magic.data(), kHelloMagic, 4) != 0)
    return make_error(Errc::unsupported, "not a fieldsync peer (bad HELLO magic)");
  Hello m;
  m.min_version = r.u16();
  m.max_version = r.u16();
  m.device = read_id<DeviceId>(r);
  auto name = r.str16();
  m.features = r.u64();
  m.max_frame_bytes = r.u32();
  // Later versions may append fields to HELLO: trailing bytes are allowed.
  if (!r.ok()) return malformed("HELLO");
  if (name.size() > kMaxDeviceNameBytes) return make_error(Errc::too_large, "device name too long");
  // Shown to the user (API, syncctl, logs): invalid UTF-8 and control characters become U+FFFD.
  m.device_name = sanitize_text(name, kMaxDeviceNameBytes);
  if (m.min_version > m.max_version) return malformed("HELLO (version range)");
  return m;
}

bool Projects::holds(const crypto::Digest& proof) const {
  ByteView want(proof.data(), proof_bytes);
  bool found = false;
  for (const auto& p : proofs)
    found = crypto::constant_time_equal(ByteView(p.data(), proof_bytes), want) || found;
  return found;
}

void encode_projects(Bytes& out, const Projects& m) {
  auto at = begin_frame(out, MsgType::projects);
  ByteWriter w(out);
  w.u32(static_cast<std::uint32_t>(m.proofs.size()));
  for (const auto& p : m.proofs) w.raw(ByteView(p.data(), m.proof_bytes));
  end_frame(out, at);
}

Result<Projects> decode_projects(ByteView payload, const DecodeLimits& limits) {
  ByteReader r(payload);
  std::uint32_t n = r.u32();
  if (!r.ok()) return malformed("PROJECTS");
  if (n > limits.max_projects) return make_error(Errc::too_large, "too many projects in PROJECTS");
  Projects m;
  // 32-byte proofs (version 1) or 16-byte ones (version 2): told by the length.
  if (r.remaining() == std::size_t{n} * kProofBytesV1)
    m.proof_bytes = kProofBytesV1;
  else if (r.remaining() == std::size_t{n} * kProofBytesV2)
    m.proof_bytes = kProofBytesV2;
  else
    return malformed("PROJECTS");
  m.proofs.resize(n);
  for (auto& p : m.proofs) {
    auto b = r.raw(m.proof_bytes);
    std::copy(b.begin(), b.end(), p.begin());
  }
  return m;
}

void encode_vector(Bytes& out, MsgType type, const VectorMsg& m) {
  auto at = begin_frame(out, type);
  ByteWriter w(out);
  w.raw(m.project.view());
  w.u32(static_cast<std::uint32_t>(m.heads.size()));
  for (const auto& [author, seq] : m.heads) {
    w.raw(author.view());
    w.u64(seq);
  }
  end_frame(out, at);
}

Result<VectorMsg> decode_vector(ByteView payload, const DecodeLimits&) {
  ByteReader r(payload);
  VectorMsg m;
  m.project = read_id<ProjectId>(r);
  std::uint32_t n = r.u32();
  if (!r.ok() || r.remaining() != std::size_t{n} * kVectorItemBytes) return malformed("vector");
  for (std::uint32_t i = 0; i < n; ++i) {
    auto author = read_id<DeviceId>(r);
    std::uint64_t seq = r.u64();
    auto [it, fresh] = m.heads.emplace(author, seq);
    if (!fresh) return malformed("vector (duplicate author)");
  }
  return m;
}

std::uint64_t chain_prefix(const crypto::Digest& chain) {
  ByteReader r(ByteView(chain.data(), 8));
  return r.u64();
}

void encode_tips(Bytes& out, const TipsMsg& m) {
  auto at = begin_frame(out, MsgType::tips);
  ByteWriter w(out);
  w.raw(m.project.view());
  w.u32(static_cast<std::uint32_t>(m.chain_prefixes.size()));
  for (auto p : m.chain_prefixes) w.u64(p);
  end_frame(out, at);
}

Result<TipsMsg> decode_tips(ByteView payload, const DecodeLimits&) {
  ByteReader r(payload);
  TipsMsg m;
  m.project = read_id<ProjectId>(r);
  std::uint32_t n = r.u32();
  if (!r.ok() || r.remaining() != std::size_t{n} * 8) return malformed("TIPS");
  m.chain_prefixes.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) m.chain_prefixes.push_back(r.u64());
  return m;
}

void encode_forked(Bytes& out, const ForkedMsg& m) {
  auto at = begin_frame(out, MsgType::forked);
  ByteWriter w(out);
  w.raw(m.project.view());
  w.raw(m.author.view());
  w.u64(m.seq);
  end_frame(out, at);
}

Result<ForkedMsg> decode_forked(ByteView payload) {
  ByteReader r(payload);
  ForkedMsg m;
  m.project = read_id<ProjectId>(r);
  m.author = read_id<DeviceId>(r);
  m.seq = r.u64();
  if (!r.ok() || r.remaining() != 0) return malformed("FORKED");
  return m;
}

void encode_blob_get(Bytes& out, const BlobGet& m) {
  auto at = begin_frame(out, MsgType::blob_get);
  ByteWriter w(out);
  w.raw(m.project.view());
  w.raw(ByteView(m.blob));
  w.u8(m.want_hashes ? 1 : 0);
  w.u32(m.first);
  w.u32(m.count);
  end_frame(out, at);
}

Result<BlobGet> decode_blob_get(ByteView payload) {
  ByteReader r(payload);
  BlobGet m;
  m.project = read_id<ProjectId>(r);
  m.blob = r.fixed<32>();
  std::uint8_t flags = r.u8();
  m.first = r.u32();
  m.count = r.u32();
  if (!r.ok() || r.remaining() != 0 || flags > 1) return malformed("BLOB_GET");
  if (m.count > kMaxBlobGetChunks)
    return make_error(Errc::too_large, "BLOB_GET asks for " + std::to_string(m.count) +
                                           " chunks; the most is " +
                                           std::to_string(kMaxBlobGetChunks));
  m.want_hashes = flags & 1;
  return m;
}

void encode_blob_head(Bytes& out, const BlobHead& m) {
  auto at = begin_frame(out, MsgType::blob_head);
  ByteWriter w(out);
  w.raw(m.project.view());
  w.raw(ByteView(m.blob));
  w.u8(m.now_held ? 2 : m.held ? 0 : 1);
  w.u32(static_cast<std::uint32_t>(m.held && !m.now_held ? m.hashes.size() : 0));
  if (m.held)
    for (const auto& h : m.hashes) w.raw(ByteView(h));
  end_frame(out, at);
}

Result<BlobHead> decode_blob_head(ByteView payload, const DecodeLimits& limits) {
  ByteReader r(payload);
  BlobHead m;
  m.project = read_id<ProjectId>(r);
  m.blob = r.fixed<32>();
  std::uint8_t status = r.u8();
  std::uint32_t n = r.u32();
  if (!r.ok() || status > 2 || (status != 0 && n != 0)) return malformed("BLOB_HEAD");
  if (n > limits.max_blob_chunks)
    return make_error(Errc::too_large, "BLOB_HEAD carries " + std::to_string(n) +
                                           " chunk hashes; the most is " +
                                           std::to_string(limits.max_blob_chunks));
  if (r.remaining() != std::size_t{n} * 32) return malformed("BLOB_HEAD");
  m.held = status == 0;
  m.now_held = status == 2;
  m.hashes.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) m.hashes.push_back(r.fixed<32>());
  return m;
}

void encode_blob_wants(Bytes& out, const BlobWants& m) {
  auto at = begin_frame(out, MsgType::blob_wants);
  ByteWriter w(out);
  w.raw(m.project.view());
  w.u64(m.blobs);
  w.u64(m.bytes);
  end_frame(out, at);
}

Result<BlobWants> decode_blob_wants(ByteView payload) {
  ByteReader r(payload);
  BlobWants m;
  m.project = read_id<ProjectId>(r);
  m.blobs = r.u64();
  m.bytes = r.u64();
  if (!r.ok() || r.remaining() != 0) return malformed("BLOB_WANTS");
  return m;
}

void encode_subscription(Bytes& out, const SubscriptionMsg& m) {
  auto at = begin_frame(out, MsgType::subscription);
  ByteWriter w(out);
  w.raw(m.project.view());
  w.blob(std::string_view(m.subscription));
  w.u32(static_cast<std::uint32_t>(m.whole.size()));
  for (const auto& [a, seq] : m.whole) {
    w.raw(a.view());
    w.u64(seq);
  }
  w.blob(std::string_view(m.gives));
  end_frame(out, at);
}

Result<SubscriptionMsg> decode_subscription(ByteView payload, const DecodeLimits& limits) {
  ByteReader r(payload);
  SubscriptionMsg m;
  m.project = read_id<ProjectId>(r);
  ByteView text = r.blob(storage::kMaxSubscriptionBytes);
  std::uint32_t n = r.u32();
  if (!r.ok()) return malformed("SUBSCRIPTION");
  if (n > limits.max_authors)
    return make_error(Errc::too_large, "SUBSCRIPTION names more authors than allowed");
  if (r.remaining() < std::size_t{n} * 40) return malformed("SUBSCRIPTION (authors)");
  auto sub = storage::Subscription::parse_canonical(as_chars(text));
  if (!sub) return make_error(Errc::invalid_argument, "SUBSCRIPTION: " + sub.error().message);
  m.subscription = sub->canonical();
  std::optional<DeviceId> prev;
  for (std::uint32_t i = 0; i < n; ++i) {
    auto a = read_id<DeviceId>(r);
    std::uint64_t seq = r.u64();
    if (prev && !(*prev < a)) return malformed("SUBSCRIPTION (authors not ascending)");
    prev = a;
    m.whole[a] = seq;
  }
  ByteView gives = r.blob(storage::kMaxSubscriptionBytes);
  if (!r.ok() || r.remaining() != 0) return malformed("SUBSCRIPTION (gives)");
  auto g = storage::Subscription::parse_canonical(as_chars(gives));
  if (!g) return make_error(Errc::invalid_argument, "SUBSCRIPTION gives: " + g.error().message);
  m.gives = g->canonical();
  return m;
}

void encode_blob_chunk(Bytes& out, const ProjectId& project, const crypto::Digest& blob,
                       std::uint32_t index, ByteView data) {
  auto at = begin_frame(out, MsgType::blob_chunk);
  ByteWriter w(out);
  w.raw(project.view());
  w.raw(ByteView(blob));
  w.u32(index);
  w.raw(data);
  end_frame(out, at);
}

Result<BlobChunk> decode_blob_chunk(ByteView payload) {
  ByteReader r(payload);
  BlobChunk m;
  m.project = read_id<ProjectId>(r);
  m.blob = r.fixed<32>();
  m.index = r.u32();
  if (!r.ok() || r.remaining() > storage::kBlobChunkBytes) return malformed("BLOB_CHUNK");
  m.data = r.raw(r.remaining());
  return m;
}

void encode_batch(Bytes& out, const Batch& m, bool seals) {
  auto at = begin_frame(out, MsgType::batch);
  ByteWriter w(out);
  w.raw(m.project.view());
  w.raw(m.log.author.view());
  w.u32(static_cast<std::uint32_t>(m.log.entries.size()));
  for (const auto& e : m.log.entries) {
    w.u64(e.seq);
    if (e.elided) {
      w.blob(ByteView{});
      w.u8(kFlagLeftOut);
      w.raw(e.id.view());
      continue;
    }
    w.blob(ByteView(e.header));
    w.u8(static_cast<std::uint8_t>((e.body ? kFlagHasBody : 0) |
                                   (seals && e.proven ? kFlagProven : 0)));
    if (e.body) w.blob(std::string_view(*e.body));
    if (!seals || !e.proven) continue;
    w.u8(static_cast<std::uint8_t>(e.path.size()));
    for (const auto& d : e.path) w.raw(ByteView(d));
  }
  w.u32(static_cast<std::uint32_t>(m.log.checkpoints.size()));
  for (const auto& c : m.log.checkpoints) {
    w.u64(c.seq);
    w.raw(ByteView(c.chain.data(), c.chain.size()));
    w.raw(ByteView(c.signature.data(), c.signature.size()));
    if (!seals) continue;
    w.u8(c.seal ? 1 : 0);
    if (!c.seal) continue;
    w.u64(c.seal->from);
    w.raw(ByteView(c.seal->root));
    w.raw(ByteView(c.seal->signature));
  }
  end_frame(out, at);
}

Result<Batch> decode_batch(ByteView payload, const DecodeLimits& limits) {
  ByteReader r(payload);
  Batch m;
  m.project = read_id<ProjectId>(r);
  m.log.author = read_id<DeviceId>(r);
  std::uint32_t n = r.u32();
  if (!r.ok() || std::size_t{n} * kMinEntryBytes > r.remaining()) return malformed("BATCH");
  m.log.entries.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    storage::LogEntry e;
    e.seq = r.u64();
    ByteView header = r.blob(r.remaining());
    std::uint8_t flags = r.u8();
    if (!r.ok()) return malformed("BATCH (entry)");
    if (flags == kFlagLeftOut) {
      if (!header.empty()) return malformed("BATCH (left-out entry with a header)");
      e.elided = true;
      e.id.bytes = r.fixed<32>();
      if (!r.ok()) return malformed("BATCH (left-out entry)");
      m.log.entries.push_back(std::move(e));
      continue;
    }
    const std::uint8_t allowed = kFlagHasBody | (limits.seals ? kFlagProven : 0);
    if ((flags & ~allowed) != 0) return malformed("BATCH (entry)");
    e.header.assign(header.begin(), header.end());
    auto digest = crypto::sha256(header);
    std::copy(digest.begin(), digest.end(), e.id.bytes.begin());
    if (flags & kFlagHasBody) {
      std::uint32_t len = r.u32();
      if (len > limits.max_body_bytes)
        return make_error(Errc::too_large, "body too large in BATCH");
      ByteView body = r.raw(len);
      if (!r.ok()) return malformed("BATCH (body)");
      e.body = std::string(as_chars(body));
    }
    if (flags & kFlagProven) {
      std::uint8_t np = r.u8();
      if (!r.ok() || np > storage::kMaxRunPath) return malformed("BATCH (proven entry path)");
      e.proven = true;
      e.path.resize(np);
      for (auto& d : e.path) d = r.fixed<32>();
      if (!r.ok()) return malformed("BATCH (proven entry path)");
    }
    m.log.entries.push_back(std::move(e));
  }
  std::uint32_t c = r.u32();
  if (!r.ok() || (!limits.seals && r.remaining() != std::size_t{c} * kCheckpointBytes) ||
      (limits.seals && r.remaining() < std::size_t{c} * (kCheckpointBytes + 1)))
    return malformed("BATCH (checkpoints)");
  m.log.checkpoints.reserve(c);
  for (std::uint32_t i = 0; i < c; ++i) {
    storage::Checkpoint cp;
    cp.seq = r.u64();
    cp.chain = r.fixed<32>();
    cp.signature = r.fixed<64>();
    if (limits.seals) {
      std::uint8_t sealed = r.u8();
      if (sealed > 1) return malformed("BATCH (seal flag)");
      if (sealed) {
        storage::RunSeal s;
        s.from = r.u64();
        s.root = r.fixed<32>();
        s.signature = r.fixed<64>();
        cp.seal = s;
      }
    }
    m.log.checkpoints.push_back(cp);
  }
  if (!r.ok() || r.remaining() != 0) return malformed("BATCH (checkpoints)");
  return m;
}

Status encode_zbatch(Bytes& out, ByteView batch_payload, int level) {
  std::size_t before = out.size();
  auto at = begin_frame(out, MsgType::zbatch);
  ByteWriter(out).u32(static_cast<std::uint32_t>(batch_payload.size()));
  if (auto st = zstd_compress(batch_payload, level, out); !st) {
    out.resize(before);
    return st;
  }
  end_frame(out, at);
  return {};
}

Status decode_zbatch(ByteView payload, const DecodeLimits& limits, Bytes& out) {
  ByteReader r(payload);
  std::uint32_t size = r.u32();
  if (!r.ok()) return malformed("ZBATCH");
  if (size > limits.max_batch_payload)
    return make_error(Errc::too_large, "ZBATCH declares " + std::to_string(size) +
                                           " bytes, over the frame limit (" +
                                           std::to_string(limits.max_batch_payload) + ")");
  if (auto st = zstd_decompress(payload.subspan(4), size, out); !st)
    return make_error(Errc::invalid_argument, "malformed ZBATCH frame: " + st.error().message);
  return {};
}

void encode_ack(Bytes& out, const Ack& m) {
  auto at = begin_frame(out, MsgType::ack);
  ByteWriter w(out);
  w.raw(m.project.view());
  w.raw(m.author.view());
  w.u64(m.head);
  end_frame(out, at);
}

Result<Ack> decode_ack(ByteView payload) {
  ByteReader r(payload);
  Ack m;
  m.project = read_id<ProjectId>(r);
  m.author = read_id<DeviceId>(r);
  m.head = r.u64();
  if (!r.ok() || !r.at_end()) return malformed("ACK");
  return m;
}

void encode_done(Bytes& out, const Done& m) {
  auto at = begin_frame(out, MsgType::done);
  ByteWriter(out).raw(m.project.view());
  end_frame(out, at);
}

Result<Done> decode_done(ByteView payload) {
  ByteReader r(payload);
  Done m;
  m.project = read_id<ProjectId>(r);
  if (!r.ok() || !r.at_end()) return malformed("DONE");
  return m;
}

void encode_ping(Bytes& out) {
  auto at = begin_frame(out, MsgType::ping);
  end_frame(out, at);
}

void encode_error(Bytes& out, const WireError& m) {
  auto at = begin_frame(out, MsgType::error);
  ByteWriter w(out);
  w.u16(m.code);
  w.str16(sanitize_text(m.reason, kMaxErrorReasonBytes));
  end_frame(out, at);
}

Result<WireError> decode_error(ByteView payload) {
  ByteReader r(payload);
  WireError m;
  m.code = r.u16();
  auto reason = r.str16();
  if (!r.ok()) return malformed("ERROR");
  m.reason = sanitize_text(reason, kMaxErrorReasonBytes);
  return m;
}

void encode_notice(Bytes& out, const NoticeMsg& m) {
  auto at = begin_frame(out, MsgType::notice);
  ByteWriter w(out);
  w.u8(m.kind);
  w.raw(m.project.view());
  w.str16(sanitize_text(m.message, kMaxErrorReasonBytes));
  end_frame(out, at);
}

Result<NoticeMsg> decode_notice(ByteView payload) {
  ByteReader r(payload);
  NoticeMsg m;
  m.kind = r.u8();
  m.project = read_id<ProjectId>(r);
  auto message = r.str16();
  if (!r.ok()) return malformed("NOTICE");  // trailing bytes: fields of a later version
  m.message = sanitize_text(message, kMaxErrorReasonBytes);
  return m;
}

crypto::Digest membership_proof(ByteView project_secret, ByteView channel_binding,
                                const DeviceId& device) {
  static constexpr std::string_view kLabel = "fieldsync-member";
  Bytes msg;
  msg.reserve(kLabel.size() + channel_binding.size() + DeviceId::size);
  ByteWriter w(msg);
  w.raw(kLabel);
  w.raw(channel_binding);
  w.raw(device.view());
  return crypto::hmac_sha256(project_secret, msg);
}

}  // namespace fieldsync::sync
