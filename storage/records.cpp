#include "storage/records.hpp"

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <set>

#include "common/encoding.hpp"
#include "common/text.hpp"
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

namespace {
constexpr std::uint8_t kLogHasBody = 1;
constexpr std::uint8_t kLogExcluded = 2;
constexpr std::uint8_t kLogElided = 4;
constexpr std::uint8_t kLogCompressed = 8;  // with kLogHasBody: u16 dictionary, blob frame
constexpr std::uint8_t kLogProven = 16;     // no chain; after the body: u8 n, n x 32 path
}  // namespace

Bytes LogRecord::encode(const BodyCodec& codec, const ProjectId& p) const {
  std::optional<BodyCodec::Packed> packed_now;
  if (body) {
    auto pk = codec.pack(p, *body);
    if (pk && pk->compressed) packed_now = std::move(*pk);
  }
  // A frame packed ahead (or as stored) is written as it is.
  const bool compressed = packed_now || (!body && packed);
  const ByteView frame = packed_now ? ByteView(packed_now->frame) : packed.value_or(ByteView{});
  const std::uint16_t dict = packed_now ? packed_now->dict : packed_dict;
  Bytes out;
  out.reserve(80 + header.size() + (compressed ? frame.size() : body ? body->size() : 0));
  ByteWriter w(out);
  w.raw(ByteView(chain));
  w.raw(id.view());
  w.u8(static_cast<std::uint8_t>(((body || compressed) ? kLogHasBody : 0) |
                                 (excluded ? kLogExcluded : 0) | (elided ? kLogElided : 0) |
                                 (compressed ? kLogCompressed : 0) | (proven ? kLogProven : 0)));
  w.blob(header);
  if (compressed) {
    w.u16(dict);
    w.blob(frame);
  } else if (body) {
    w.blob(*body);
  }
  if (proven) {
    w.u8(static_cast<std::uint8_t>(path.size()));
    for (const auto& d : path) w.raw(ByteView(d));
  }
  return out;
}

std::optional<LogRecord> LogRecord::decode_stored(ByteView v) {
  ByteReader r(v);
  LogRecord x;
  x.chain = r.fixed<32>();
  x.id.bytes = r.fixed<32>();
  std::uint8_t flags = r.u8();
  bool has_body = flags & kLogHasBody;
  bool compressed = flags & kLogCompressed;
  x.excluded = flags & kLogExcluded;
  x.elided = flags & kLogElided;
  x.proven = flags & kLogProven;
  if ((flags & ~31) != 0 || (x.elided && has_body) || (compressed && !has_body))
    return std::nullopt;
  x.header = r.blob(kMaxVersionHeaderBytes);
  if (compressed) {
    x.packed_dict = r.u16();
    x.packed = r.blob(kMaxBodyBytesCeiling);
  } else if (has_body) {
    x.body = r.blob(kMaxBodyBytesCeiling);
  }
  if (x.proven) {
    std::uint8_t n = r.u8();
    if (n > kMaxRunPath) return std::nullopt;
    x.path.resize(n);
    for (auto& d : x.path) d = r.fixed<32>();
  }
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return x;
}

std::size_t LogRecord::body_size() const {
  if (body) return body->size();
  return packed ? zstd_frame_size(*packed).value_or(0) : 0;
}

std::optional<LogRecord> LogRecord::decode(ByteView v, const BodyCodec& codec) {
  auto x = decode_stored(v);
  if (!x || !x->packed) return x;
  auto plain = std::make_shared<Bytes>();
  if (!codec.unpack(x->packed_dict, *x->packed, kMaxBodyBytesCeiling, *plain)) return std::nullopt;
  x->body = ByteView(*plain);
  x->plain = std::move(plain);
  x->packed.reset();
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
  if (seal) {
    w.u8(kSealVersion);
    w.u64(seal->from);
    w.raw(ByteView(seal->root));
    w.raw(ByteView(seal->signature));
  }
  return out;
}

std::optional<CheckpointValue> CheckpointValue::decode(ByteView v) {
  ByteReader r(v);
  CheckpointValue x;
  x.chain = r.fixed<32>();
  x.signature = r.fixed<64>();
  if (!r.ok()) return std::nullopt;
  if (r.remaining() == 0) return x;
  if (r.u8() != kSealVersion) return std::nullopt;
  RunSeal s;
  s.from = r.u64();
  s.root = r.fixed<32>();
  s.signature = r.fixed<64>();
  if (!r.ok() || r.remaining() != 0) return std::nullopt;
  x.seal = s;
  return x;
}

bool valid_address_uri(std::string_view uri) {
  if (uri.empty() || uri.size() > kMaxPeerAddressBytes) return false;
  auto sep = uri.find("://");
  if (sep == std::string_view::npos || sep == 0) return false;
  for (std::size_t i = 0; i < sep; ++i) {
    char c = uri[i];
    bool letter = c >= 'a' && c <= 'z';
    bool other = (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
    if (!letter && (i == 0 || !other)) return false;
  }
  std::string_view rest = uri.substr(sep + 3);
  return !rest.empty() && rest.find(' ') == std::string_view::npos &&
         is_clean_text(rest, kMaxPeerAddressBytes);
}

std::optional<std::string> tcp_address_uri(std::string_view host_port) {
  auto colon = host_port.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= host_port.size())
    return std::nullopt;
  std::string_view host = host_port.substr(0, colon), port = host_port.substr(colon + 1);
  if (port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  unsigned long number = std::stoul(std::string(port));
  if (number == 0 || number > 65535) return std::nullopt;
  std::string uri = "tcp://";
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return std::nullopt;
    uri += host;
  } else if (host.find(':') != std::string_view::npos) {  // an IPv6 address left unbracketed
    uri += "[" + std::string(host) + "]";
  } else {
    if (host.find_first_of("[]") != std::string_view::npos) return std::nullopt;
    uri += host;
  }
  uri += ":" + std::string(port);
  if (!valid_address_uri(uri)) return std::nullopt;
  return uri;
}

Status PeerValue::check(const PeerRecord& r) {
  auto bad = [](std::string why) { return make_error(Errc::invalid_argument, std::move(why)); };
  if (r.device.is_zero()) return bad("peer device id is missing");
  if (!is_clean_text(r.name, kMaxPeerNameBytes))
    return bad("peer name must be at most " + std::to_string(kMaxPeerNameBytes) +
               " bytes of UTF-8 without control characters");
  if (r.addresses.size() > kMaxPeerAddresses)
    return bad("a peer has at most " + std::to_string(kMaxPeerAddresses) + " addresses, not " +
               std::to_string(r.addresses.size()));
  std::set<std::string_view> seen;
  for (const auto& a : r.addresses) {
    if (!valid_address_uri(a))
      return bad("peer address " + quote_input(a) + " is not a URI scheme://address of at most " +
                 std::to_string(kMaxPeerAddressBytes) + " bytes");
    if (!seen.insert(a).second) return bad("peer address " + quote_input(a) + " is listed twice");
  }
  if (r.added_ms < 0 || r.last_seen_ms < 0) return bad("peer times must not be negative");
  return {};
}

Bytes PeerValue::encode(const PeerRecord& r) {
  Bytes out;
  ByteWriter w(out);
  w.u8(kVersion);
  w.u8(r.approved ? 1 : 0);
  w.u64(static_cast<std::uint64_t>(r.added_ms));
  w.u64(static_cast<std::uint64_t>(r.last_seen_ms));
  w.str16(r.name);
  w.u8(static_cast<std::uint8_t>(r.addresses.size()));
  for (const auto& a : r.addresses) w.str16(a);
  return out;
}

Result<PeerRecord> PeerValue::decode(ByteView key, ByteView v) {
  auto corrupt = [&](const std::string& why) {
    return make_error(Errc::data_loss, "peer record " + to_hex(key) + ": " + why);
  };
  auto device = id_from_bytes<DeviceId>(key);
  if (!device) return corrupt("the key is not a device id");
  ByteReader r(v);
  PeerRecord rec;
  rec.device = *device;
  std::uint8_t version = r.u8();
  if (r.ok() && version != kVersion)
    return corrupt("unknown version " + std::to_string(version) + " (" + std::to_string(v.size()) +
                   " bytes)");
  std::uint8_t flags = r.u8();
  rec.approved = flags & 1;
  rec.added_ms = static_cast<std::int64_t>(r.u64());
  rec.last_seen_ms = static_cast<std::int64_t>(r.u64());
  rec.name = std::string(r.str16());
  std::uint8_t n = r.u8();
  if (r.ok() && n > kMaxPeerAddresses) return corrupt(std::to_string(n) + " addresses");
  for (std::uint8_t i = 0; i < n && r.ok(); ++i) rec.addresses.emplace_back(r.str16());
  if (!r.ok() || !r.at_end()) return corrupt("malformed (" + std::to_string(v.size()) + " bytes)");
  if (flags & ~1u) return corrupt("unknown flags " + std::to_string(flags));
  if (auto st = check(rec); !st) return corrupt(st.error().message);
  return rec;
}

std::optional<PeerRecord> PeerValue::from_format1(ByteView key, std::string_view json) {
  namespace bj = boost::json;
  auto device = id_from_bytes<DeviceId>(key);
  if (!device) return std::nullopt;
  boost::system::error_code ec;
  bj::value v = bj::parse(json, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.as_object();
  PeerRecord rec;
  rec.device = *device;
  if (auto* name = o.if_contains("name"); name && name->is_string())
    rec.name = sanitize_text(name->as_string(), kMaxPeerNameBytes);
  // "host:port"; daemons with address URIs (transports as plug-ins) wrote the URI.
  if (auto* address = o.if_contains("address"); address && address->is_string()) {
    std::string_view text = address->as_string();
    if (text.find("://") != std::string_view::npos) {
      if (valid_address_uri(text)) rec.addresses.emplace_back(text);
    } else if (auto uri = tcp_address_uri(text)) {
      rec.addresses.push_back(*uri);
    }
  }
  if (auto* approved = o.if_contains("approved"); approved && approved->is_bool())
    rec.approved = approved->as_bool();
  return rec;
}

Bytes PeerHoldsValue::encode(const VersionVector& held) {
  Bytes out;
  out.reserve(5 + 40 * held.size());
  ByteWriter w(out);
  w.u8(kVersion);
  w.u32(static_cast<std::uint32_t>(held.size()));
  for (const auto& [author, seq] : held) {
    w.raw(author.view());
    w.u64(seq);
  }
  return out;
}

std::optional<VersionVector> PeerHoldsValue::decode(ByteView v) {
  ByteReader r(v);
  if (r.u8() != kVersion) return std::nullopt;
  std::uint32_t n = r.u32();
  if (!r.ok() || n > kMaxPeerHoldsAuthors || r.remaining() != std::size_t{n} * 40)
    return std::nullopt;
  VersionVector out;
  for (std::uint32_t i = 0; i < n; ++i) {
    DeviceId author;
    author.bytes = r.fixed<32>();
    std::uint64_t seq = r.u64();
    // Ascending and unique (as encode() writes a map), no zero id, nothing recorded at seq 0.
    if (author.is_zero() || seq == 0 || (!out.empty() && !(out.rbegin()->first < author)))
      return std::nullopt;
    out.emplace_hint(out.end(), author, seq);
  }
  return out;
}

Key encode_location(const Location& at, bool local) {
  Key out;  // built inline, as a key is
  out.raw(at.author.view()).u64(at.seq).u8(local ? 1 : 0);
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
  std::array<std::uint8_t, 8> s{};  // u64 big-endian, as ByteWriter
  for (int i = 0; i < 8; ++i) s[i] = static_cast<std::uint8_t>(seq >> (56 - 8 * i));
  return crypto::sha256({ByteView(prev), ByteView(s), id.view()});
}

namespace {

// What an author signs of its log at `seq`, under `domain`.
Bytes log_message(std::string_view domain, const ProjectId& p, const DeviceId& author,
                  std::uint64_t seq, const crypto::Digest& chain) {
  Bytes m;
  ByteWriter w(m);
  w.raw(domain);
  w.raw(p.view());
  w.raw(author.view());
  w.u64(seq);
  w.raw(ByteView(chain));
  return m;
}

}  // namespace

Bytes checkpoint_message(const ProjectId& p, const DeviceId& author, std::uint64_t seq,
                         const crypto::Digest& chain) {
  return log_message("fieldsync/checkpoint/v1", p, author, seq, chain);
}

namespace {

crypto::Digest run_node(const crypto::Digest& l, const crypto::Digest& r) {
  static constexpr std::uint8_t kInner = 1;
  return crypto::sha256({ByteView(&kInner, 1), ByteView(l), ByteView(r)});
}

// The largest power of two below n (n >= 2).
std::size_t run_split(std::size_t n) {
  std::size_t k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

crypto::Digest root_of(std::span<const VersionId> ids) {
  if (ids.size() == 1) return ids[0].bytes;
  std::size_t k = run_split(ids.size());
  return run_node(root_of(ids.first(k)), root_of(ids.subspan(k)));
}

}  // namespace

crypto::Digest run_root(std::span<const VersionId> ids) {
  if (ids.empty()) return crypto::Digest{};
  return root_of(ids);
}

namespace {

// The root of ids[lo, lo + ids.size()); each wanted index inside gets the sibling hashes on its
// way up appended to its path (leaf first).
crypto::Digest paths_of(std::span<const VersionId> ids, std::size_t lo,
                        std::span<const std::size_t> wanted,
                        std::span<std::vector<crypto::Digest>> out) {
  if (wanted.empty()) return root_of(ids);
  if (ids.size() == 1) return ids[0].bytes;
  std::size_t k = run_split(ids.size());
  std::size_t nl = static_cast<std::size_t>(std::lower_bound(wanted.begin(), wanted.end(), lo + k) -
                                            wanted.begin());
  crypto::Digest l = paths_of(ids.first(k), lo, wanted.first(nl), out.first(nl));
  crypto::Digest r = paths_of(ids.subspan(k), lo + k, wanted.subspan(nl), out.subspan(nl));
  for (std::size_t i = 0; i < nl; ++i) out[i].push_back(r);
  for (std::size_t i = nl; i < wanted.size(); ++i) out[i].push_back(l);
  return run_node(l, r);
}

}  // namespace

std::vector<std::vector<crypto::Digest>> run_paths(std::span<const VersionId> ids,
                                                   std::span<const std::size_t> indices) {
  std::vector<std::vector<crypto::Digest>> out(indices.size());
  if (!ids.empty()) paths_of(ids, 0, indices, out);
  return out;
}

std::vector<crypto::Digest> run_path(std::span<const VersionId> ids, std::size_t index) {
  const std::size_t one[] = {index};
  return std::move(run_paths(ids, one).front());
}

bool run_path_ok(const VersionId& id, std::uint64_t index, std::uint64_t size,
                 std::span<const crypto::Digest> path, const crypto::Digest& root) {
  if (index >= size) return false;
  // Which side each level takes, root to leaf, from the shape of the tree alone.
  std::vector<bool> right;
  while (size > 1) {
    std::uint64_t k = run_split(size);
    right.push_back(index >= k);
    if (index >= k) {
      index -= k;
      size -= k;
    } else {
      size = k;
    }
  }
  if (right.size() != path.size()) return false;
  crypto::Digest h = id.bytes;
  for (std::size_t i = 0; i < path.size(); ++i)
    h = right[right.size() - 1 - i] ? run_node(path[i], h) : run_node(h, path[i]);
  return h == root;
}

Bytes seal_message(const ProjectId& p, const DeviceId& author, std::uint64_t seq,
                   const crypto::Digest& chain, std::uint64_t from, const crypto::Digest& root) {
  Bytes m = log_message("fieldsync/run/v1", p, author, seq, chain);
  ByteWriter w(m);
  w.u64(from);
  w.raw(ByteView(root));
  return m;
}

}  // namespace fieldsync::storage
