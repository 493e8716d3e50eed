#include "storage/records.hpp"

#include "storage/version_codec.hpp"

namespace fieldsync::storage {

// The largest header encode_header() can produce fits the read-back bound.
static_assert(1 + 16 + 2 + kMaxCollectionBytes + 2 + kMaxDocIdBytes + 32 + 8 + 4 + 1 + 2 +
                  32 * kMaxParents + 32 + 4 + 4 + kMaxExtensionBytes <=
              kMaxVersionHeaderBytes);

Bytes ProjectRecord::encode() const {
  Bytes out;
  ByteWriter w(out);
  w.u8(1);
  w.str16(info.name);
  w.blob(info.settings_json);
  w.u64(info.created_hlc);
  w.blob(secret);
  w.raw(info.creator.view());
  return out;
}

std::optional<ProjectRecord> ProjectRecord::decode(ByteView v) {
  ByteReader r(v);
  ProjectRecord rec;
  if (r.u8() != 1) return std::nullopt;
  rec.info.name = std::string(r.str16());
  rec.info.settings_json = std::string(as_chars(r.blob(kMaxProjectSettingsBytes)));
  rec.info.created_hlc = r.u64();
  ByteView s = r.blob(64);
  rec.secret.assign(s.begin(), s.end());
  rec.info.creator.bytes = r.fixed<32>();
  if (!r.ok()) return std::nullopt;
  return rec;
}

Bytes DocRecord::encode() const {
  Bytes out;
  out.reserve(11 + 81 * heads.size());
  ByteWriter w(out);
  w.u8(flags);
  w.u64(local_seq);
  w.u16(static_cast<std::uint16_t>(heads.size()));
  for (const auto& h : heads) {
    w.raw(h.id.view());
    w.u64(h.hlc);
    w.raw(h.at.author.view());
    w.u64(h.at.seq);
    w.u8(h.tombstone ? 1 : 0);
  }
  return out;
}

std::optional<DocRecord> DocRecord::decode(ByteView v) {
  ByteReader r(v);
  DocRecord rec;
  rec.flags = r.u8();
  rec.local_seq = r.u64();
  rec.heads.resize(r.u16());
  for (auto& h : rec.heads) {
    h.id.bytes = r.fixed<32>();
    h.hlc = r.u64();
    h.at.author.bytes = r.fixed<32>();
    h.at.seq = r.u64();
    h.tombstone = r.u8() & 1;
  }
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return rec;
}

std::vector<VersionId> DocRecord::head_ids() const {
  std::vector<VersionId> ids;
  ids.reserve(heads.size());
  for (const auto& h : heads) ids.push_back(h.id);
  return ids;
}

Bytes LogRecord::encode() const {
  Bytes out;
  out.reserve(80 + header.size() + (body ? body->size() : 0));
  ByteWriter w(out);
  w.raw(ByteView(chain));
  w.raw(id.view());
  w.u8(static_cast<std::uint8_t>((body ? 1 : 0) | (excluded ? 2 : 0)));
  w.blob(header);
  if (body) w.blob(*body);
  return out;
}

std::optional<LogRecord> LogRecord::decode(ByteView v) {
  ByteReader r(v);
  LogRecord x;
  x.chain = r.fixed<32>();
  x.id.bytes = r.fixed<32>();
  std::uint8_t flags = r.u8();
  bool has_body = flags & 1;
  x.excluded = flags & 2;
  x.header = r.blob(kMaxVersionHeaderBytes);
  if (has_body) x.body = r.blob(kMaxBodyBytesCeiling);
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return x;
}

Bytes HeadValue::encode() const {
  Bytes out;
  ByteWriter w(out);
  w.u64(seq);
  w.raw(ByteView(chain));
  return out;
}

std::optional<HeadValue> HeadValue::decode(ByteView v) {
  ByteReader r(v);
  HeadValue x;
  x.seq = r.u64();
  x.chain = r.fixed<32>();
  if (!r.ok()) return std::nullopt;
  return x;
}

Bytes CheckpointValue::encode() const {
  Bytes out;
  ByteWriter w(out);
  w.raw(ByteView(chain));
  w.raw(ByteView(signature));
  return out;
}

std::optional<CheckpointValue> CheckpointValue::decode(ByteView v) {
  ByteReader r(v);
  CheckpointValue x;
  x.chain = r.fixed<32>();
  x.signature = r.fixed<64>();
  if (!r.ok()) return std::nullopt;
  return x;
}

Bytes encode_location(const Location& at, bool local) {
  Bytes out;
  ByteWriter w(out);
  w.raw(at.author.view());
  w.u64(at.seq);
  w.u8(local ? 1 : 0);
  return out;
}

std::optional<std::pair<Location, bool>> decode_location(ByteView v) {
  ByteReader r(v);
  Location at;
  at.author.bytes = r.fixed<32>();
  at.seq = r.u64();
  bool local = r.u8() & 1;
  if (!r.ok()) return std::nullopt;
  return std::pair{at, local};
}

crypto::Digest chain_genesis(const ProjectId& p, const DeviceId& author) {
  return crypto::sha256({as_bytes("fieldsync/log/v1"), p.view(), author.view()});
}

crypto::Digest chain_next(const crypto::Digest& prev, std::uint64_t seq, const VersionId& id) {
  Bytes s;
  ByteWriter(s).u64(seq);
  return crypto::sha256({ByteView(prev), ByteView(s), id.view()});
}

Bytes checkpoint_message(const ProjectId& p, const DeviceId& author, std::uint64_t seq,
                         const crypto::Digest& chain) {
  Bytes m;
  ByteWriter w(m);
  w.raw("fieldsync/checkpoint/v1");
  w.raw(p.view());
  w.raw(author.view());
  w.u64(seq);
  w.raw(ByteView(chain));
  return m;
}

}  // namespace fieldsync::storage
