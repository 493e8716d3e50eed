#include "storage/version_codec.hpp"

#include <algorithm>

namespace fieldsync::storage {

Bytes encode_header(const VersionHeader& h) {
  Bytes out;
  out.reserve(128 + h.collection.size() + h.doc_id.size() + 32 * h.parents.size());
  ByteWriter w(out);
  w.u8(kVersionFormat);
  w.raw(h.project.view());
  w.str16(h.collection);
  w.str16(h.doc_id);
  w.raw(h.author.view());
  w.u64(h.hlc);
  w.u32(h.schema);
  w.u8(static_cast<std::uint8_t>(h.kind));
  w.u16(static_cast<std::uint16_t>(h.parents.size()));
  for (const auto& p : h.parents) w.raw(p.view());
  w.raw(ByteView(h.body_hash));
  w.u32(h.body_size);
  w.blob(h.extensions);
  return out;
}

Result<VersionHeader> decode_header(ByteView bytes) {
  ByteReader r(bytes);
  VersionHeader h;
  std::uint8_t format = r.u8();
  if (r.ok() && format != kVersionFormat)
    return make_error(Errc::unsupported,
                      "version format " + std::to_string(format) + " is newer than this daemon");
  h.project.bytes = r.fixed<16>();
  h.collection = std::string(r.str16());
  h.doc_id = std::string(r.str16());
  h.author.bytes = r.fixed<32>();
  h.hlc = r.u64();
  h.schema = r.u32();
  std::uint8_t kind = r.u8();
  std::uint16_t n = r.u16();
  if (n > kMaxParents) return make_error(Errc::invalid_argument, "version has too many parents");
  h.parents.resize(n);
  for (auto& p : h.parents) p.bytes = r.fixed<32>();
  h.body_hash = r.fixed<32>();
  h.body_size = r.u32();
  ByteView ext = r.blob(kMaxExtensionBytes);
  if (!r.ok() || !r.at_end()) return make_error(Errc::invalid_argument, "malformed version header");
  if (kind != static_cast<std::uint8_t>(VersionKind::put) &&
      kind != static_cast<std::uint8_t>(VersionKind::tombstone))
    return make_error(Errc::invalid_argument, "unknown version kind");
  h.kind = static_cast<VersionKind>(kind);
  h.extensions.assign(ext.begin(), ext.end());
  if (!valid_collection(h.collection) || !valid_doc_id(h.doc_id))
    return make_error(Errc::invalid_argument, "version has an invalid collection or document id");
  if (!std::is_sorted(h.parents.begin(), h.parents.end()) ||
      std::adjacent_find(h.parents.begin(), h.parents.end()) != h.parents.end())
    return make_error(Errc::invalid_argument, "version parents are not sorted and unique");
  return h;
}

VersionId version_id_of(ByteView encoded_header) {
  VersionId id;
  id.bytes = crypto::sha256(encoded_header);
  return id;
}

bool valid_collection(std::string_view c) {
  if (c.empty() || c.size() > kMaxCollectionBytes) return false;
  return std::all_of(c.begin(), c.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '.';
  });
}

bool valid_doc_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxDocIdBytes) return false;
  return std::all_of(id.begin(), id.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '.' || ch == ':' || ch == '@' || ch == '~' || ch == '+';
  });
}

namespace {
bool dot_name(std::string_view s) { return s == "." || s == ".."; }
}  // namespace

bool valid_new_collection(std::string_view c) { return valid_collection(c) && !dot_name(c); }
bool valid_new_doc_id(std::string_view id) { return valid_doc_id(id) && !dot_name(id); }

}  // namespace fieldsync::storage

namespace fieldsync::storage {

namespace {

struct ExtRecord {
  std::uint8_t type;
  ByteView value;
};

// The extension records, or nullopt when they do not read as records.
std::optional<std::vector<ExtRecord>> ext_records(ByteView ext) {
  std::vector<ExtRecord> out;
  ByteReader r(ext);
  while (r.ok() && !r.at_end()) {
    std::uint8_t type = r.u8();
    std::uint16_t n = r.u16();
    ByteView v = r.raw(n);
    if (!r.ok()) return std::nullopt;
    out.push_back(ExtRecord{type, v});
  }
  if (!r.ok()) return std::nullopt;
  return out;
}

}  // namespace

std::uint64_t erasure_epoch(const VersionHeader& h) {
  auto recs = ext_records(h.extensions);
  if (!recs) return 0;
  for (const auto& e : *recs) {
    if (e.type != kExtErasureEpoch) continue;
    if (e.value.size() != 8) return 0;
    return ByteReader(e.value).u64();
  }
  return 0;
}

void set_erasure_epoch(VersionHeader& h, std::uint64_t hlc) {
  auto recs = ext_records(h.extensions).value_or(std::vector<ExtRecord>{});
  Bytes value;
  if (hlc != 0) {
    ByteWriter(value).u64(hlc);
    recs.erase(std::remove_if(recs.begin(), recs.end(),
                              [](const ExtRecord& e) { return e.type == kExtErasureEpoch; }),
               recs.end());
    recs.push_back(ExtRecord{kExtErasureEpoch, value});
  } else {
    recs.erase(std::remove_if(recs.begin(), recs.end(),
                              [](const ExtRecord& e) { return e.type == kExtErasureEpoch; }),
               recs.end());
  }
  std::stable_sort(recs.begin(), recs.end(),
                   [](const ExtRecord& a, const ExtRecord& b) { return a.type < b.type; });
  Bytes out;
  ByteWriter w(out);
  for (const auto& e : recs) {
    w.u8(e.type);
    w.u16(static_cast<std::uint16_t>(e.value.size()));
    w.raw(e.value);
  }
  h.extensions = std::move(out);
}

}  // namespace fieldsync::storage
