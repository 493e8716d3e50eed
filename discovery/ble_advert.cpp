#include "discovery/ble_advert.hpp"

#include <algorithm>
#include <charconv>

#include "crypto/crypto.hpp"
#include "discovery/discovery_tag.hpp"

namespace fieldsync::discovery {

namespace {

constexpr std::string_view kTagLabel = "fieldsync-ble";
constexpr std::string_view kIdLabel = "fieldsync-ble-id";
constexpr std::string_view kDigestLabel = "fieldsync-ble-vv";
constexpr std::string_view kHintLabel = "fieldsync-ble-ip";

void put_u64(Bytes& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

crypto::Digest keyed(std::string_view label, ByteView secret, ByteView nonce, std::int64_t bucket,
                     ByteView extra = {}) {
  Bytes msg;
  append(msg, as_bytes(label));
  append(msg, nonce);
  put_u64(msg, static_cast<std::uint64_t>(bucket));
  append(msg, extra);
  return crypto::hmac_sha256(secret, ByteView(msg.data(), msg.size()));
}

std::array<std::uint8_t, BleAdvert::kHintBytes> hint_bytes(const BleAdvert::Hint& h) {
  return {h.ipv4[0],
          h.ipv4[1],
          h.ipv4[2],
          h.ipv4[3],
          static_cast<std::uint8_t>(h.port >> 8),
          static_cast<std::uint8_t>(h.port)};
}

// The hint XOR its pad for `secret` (both ways).
std::array<std::uint8_t, BleAdvert::kHintBytes> seal_hint(
    const std::array<std::uint8_t, BleAdvert::kHintBytes>& in, ByteView secret, ByteView nonce,
    std::int64_t bucket) {
  auto pad = keyed(kHintLabel, secret, nonce, bucket);
  std::array<std::uint8_t, BleAdvert::kHintBytes> out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = in[i] ^ pad[i];
  return out;
}

std::optional<BleAdvert::Hint> hint_of(const std::array<std::uint8_t, BleAdvert::kHintBytes>& b) {
  BleAdvert::Hint h;
  std::copy_n(b.begin(), 4, h.ipv4.begin());
  h.port = static_cast<std::uint16_t>(b[4] << 8 | b[5]);
  // A wrong key gives noise: refuse what no device would listen on.
  if (h.port == 0 || h.ipv4[0] == 0 || h.ipv4[0] >= 224) return std::nullopt;
  return h;
}

BleAdvert::Digest digest_of(ByteView secret, ByteView nonce, std::int64_t bucket,
                            const BleAdvert::Holdings& holdings) {
  auto d = keyed(kDigestLabel, secret, nonce, bucket, ByteView(holdings.data(), holdings.size()));
  BleAdvert::Digest out{};
  std::copy_n(d.begin(), out.size(), out.begin());
  return out;
}

}  // namespace

std::string BleAdvert::Hint::uri() const {
  return "tcp://" + std::to_string(ipv4[0]) + "." + std::to_string(ipv4[1]) + "." +
         std::to_string(ipv4[2]) + "." + std::to_string(ipv4[3]) + ":" + std::to_string(port);
}

std::optional<BleAdvert::Hint> BleAdvert::Hint::from_uri(const std::string& uri) {
  constexpr std::string_view kScheme = "tcp://";
  std::string_view s(uri);
  if (s.substr(0, kScheme.size()) != kScheme) return std::nullopt;
  s.remove_prefix(kScheme.size());
  Hint h;
  for (std::size_t i = 0; i < 5; ++i) {
    unsigned v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end == s.data()) return std::nullopt;
    s.remove_prefix(static_cast<std::size_t>(end - s.data()));
    if (i < 4) {
      if (v > 255 || s.empty() || s.front() != (i < 3 ? '.' : ':')) return std::nullopt;
      h.ipv4[i] = static_cast<std::uint8_t>(v);
      s.remove_prefix(1);
    } else {
      if (v == 0 || v > 65535 || !s.empty()) return std::nullopt;
      h.port = static_cast<std::uint16_t>(v);
    }
  }
  return h;
}

BleAdvert::Holdings BleAdvert::holdings_of(const storage::VersionVector& vv) {
  Bytes msg;
  msg.reserve(vv.size() * (DeviceId::size + 8));
  for (const auto& [author, seq] : vv) {
    append(msg, author.view());
    put_u64(msg, seq);
  }
  auto d = crypto::sha256(ByteView(msg.data(), msg.size()));
  Holdings h{};
  std::copy_n(d.begin(), h.size(), h.begin());
  return h;
}

Bytes BleAdvert::encode() const {
  std::size_t n = std::min(entries.size(), capacity(hint.has_value()));
  auto version = static_cast<std::uint8_t>(kFormat << 4 | (hint ? kHintFlag : 0) |
                                           std::min(sync_protocol, kMaxSyncProtocol));
  Bytes out{kMagic, version};
  append(out, ByteView(nonce.data(), nonce.size()));
  if (hint) append(out, ByteView(hint->data(), hint->size()));
  for (std::size_t i = 0; i < n; ++i) {
    append(out, ByteView(entries[i].tag.data(), entries[i].tag.size()));
    append(out, ByteView(entries[i].digest.data(), entries[i].digest.size()));
  }
  return out;
}

Result<BleAdvert> BleAdvert::parse(ByteView p) {
  if (p.size() < kHeaderBytes || p[0] != kMagic)
    return make_error(Errc::invalid_argument, "not a fieldsync advertisement");
  if (p[1] >> 4 != kFormat)
    return make_error(Errc::unsupported,
                      "advertisement format " + std::to_string(p[1] >> 4) + " is not supported");
  BleAdvert a;
  bool with_hint = (p[1] & kHintFlag) != 0;
  a.sync_protocol = p[1] & kMaxSyncProtocol;
  std::size_t at = kHeaderBytes + (with_hint ? kHintBytes : 0);
  if (p.size() > kMaxPayloadBytes || p.size() < at || (p.size() - at) % kEntryBytes != 0)
    return make_error(Errc::invalid_argument, "malformed fieldsync advertisement");
  std::copy_n(p.begin() + 2, kNonceBytes, a.nonce.begin());
  if (with_hint) {
    a.hint.emplace();
    std::copy_n(p.begin() + kHeaderBytes, kHintBytes, a.hint->begin());
  }
  for (; at < p.size(); at += kEntryBytes) {
    Entry e;
    auto from = p.begin() + static_cast<std::ptrdiff_t>(at);
    std::copy_n(from, kTagBytes, e.tag.begin());
    std::copy_n(from + kTagBytes, kDigestBytes, e.digest.begin());
    a.entries.push_back(e);
  }
  return a;
}

BleAdvert::Tag BleAdvert::tag(ByteView secret, ByteView nonce, std::int64_t bucket) {
  auto d = keyed(kTagLabel, secret, nonce, bucket);
  Tag t{};
  std::copy_n(d.begin(), kTagBytes, t.begin());
  return t;
}

BleAdvert BleAdvert::make(std::uint16_t sync_protocol, const std::vector<Project>& projects,
                          std::optional<Hint> hint, std::int64_t bucket) {
  BleAdvert a;
  a.sync_protocol = static_cast<std::uint8_t>(std::min<std::uint16_t>(sync_protocol, 255));
  crypto::random_fill(std::span<std::uint8_t>(a.nonce.data(), a.nonce.size()));
  ByteView nonce(a.nonce.data(), a.nonce.size());
  if (hint && !projects.empty())
    a.hint = seal_hint(hint_bytes(*hint), projects.front().secret, nonce, bucket);
  for (std::size_t i = 0; i < projects.size() && i < capacity(a.hint.has_value()); ++i)
    a.entries.push_back(Entry{tag(projects[i].secret, nonce, bucket),
                              digest_of(projects[i].secret, nonce, bucket, projects[i].holdings)});
  return a;
}

Bytes BleAdvert::identity(const BleAdvert& advert, const DeviceId& device,
                          const std::vector<Project>& projects, std::optional<Hint> hint,
                          std::int64_t bucket) {
  Bytes out = advert.encode();
  ByteView nonce(advert.nonce.data(), advert.nonce.size());
  std::size_t n = std::min(advert.entries.size(), projects.size());
  for (std::size_t i = 0; i < n; ++i) {
    auto mask = keyed(kIdLabel, projects[i].secret, nonce, bucket);
    auto id = device.view();
    for (std::size_t j = 0; j < DeviceId::size; ++j) out.push_back(id[j] ^ mask[j]);
  }
  if (advert.hint && hint)
    for (std::size_t i = 0; i < n; ++i) {
      auto sealed = seal_hint(hint_bytes(*hint), projects[i].secret, nonce, bucket);
      append(out, ByteView(sealed.data(), sealed.size()));
    }
  return out;
}

std::optional<BleAdvert::Match> BleAdvert::match(ByteView secret, std::int64_t unix_seconds) const {
  std::int64_t now = DiscoveryTag::bucket_of(unix_seconds);
  ByteView n(nonce.data(), nonce.size());
  for (std::int64_t b = now - 1; b <= now + 1; ++b) {
    auto want = tag(secret, n, b);
    for (std::size_t i = 0; i < entries.size(); ++i)
      if (crypto::constant_time_equal(ByteView(want.data(), want.size()),
                                      ByteView(entries[i].tag.data(), entries[i].tag.size())))
        return Match{i, b};
  }
  return std::nullopt;
}

bool BleAdvert::holds_same(const Match& m, ByteView secret, const Holdings& holdings) const {
  if (m.index >= entries.size()) return false;
  return digest_of(secret, ByteView(nonce.data(), nonce.size()), m.bucket, holdings) ==
         entries[m.index].digest;
}

std::optional<BleAdvert::Hint> BleAdvert::open_hint(const Match& m, ByteView secret) const {
  if (!hint || m.index != 0) return std::nullopt;
  return hint_of(seal_hint(*hint, secret, ByteView(nonce.data(), nonce.size()), m.bucket));
}

Result<BleAdvert::Identity> BleAdvert::open_identity(ByteView identity, ByteView secret,
                                                     std::int64_t unix_seconds) {
  if (identity.size() < kHeaderBytes)
    return make_error(Errc::invalid_argument, "identity value too short");
  // The advertisement part: header, hint, entries; then a 32-byte id block per entry, then a
  // hint block per entry when the hint is there.
  if (identity[0] != kMagic || identity[1] >> 4 != kFormat) {
    auto adv = parse(identity.first(kHeaderBytes));
    if (!adv) return adv.error();
  }
  bool with_hint = (identity[1] & kHintFlag) != 0;
  std::size_t fixed = kHeaderBytes + (with_hint ? kHintBytes : 0);
  std::size_t per_entry = kEntryBytes + DeviceId::size + (with_hint ? kHintBytes : 0);
  if (identity.size() < fixed || (identity.size() - fixed) % per_entry != 0)
    return make_error(Errc::invalid_argument, "malformed identity value");
  std::size_t n = (identity.size() - fixed) / per_entry;
  std::size_t adv_len = fixed + n * kEntryBytes;
  auto adv = parse(identity.first(adv_len));
  if (!adv) return adv.error();
  auto m = adv->match(secret, unix_seconds);
  if (!m) return make_error(Errc::not_found, "no tag of this project in the identity value");
  ByteView nonce(adv->nonce.data(), adv->nonce.size());
  auto mask = keyed(kIdLabel, secret, nonce, m->bucket);
  ByteView block = identity.subspan(adv_len + m->index * DeviceId::size, DeviceId::size);
  Identity out;
  for (std::size_t j = 0; j < DeviceId::size; ++j) out.device.bytes[j] = block[j] ^ mask[j];
  if (with_hint) {
    std::array<std::uint8_t, kHintBytes> sealed{};
    auto at = adv_len + n * DeviceId::size + m->index * kHintBytes;
    std::copy_n(identity.begin() + static_cast<std::ptrdiff_t>(at), kHintBytes, sealed.begin());
    out.hint = hint_of(seal_hint(sealed, secret, nonce, m->bucket));
  }
  return out;
}

}  // namespace fieldsync::discovery
