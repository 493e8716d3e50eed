#include "discovery/ble_advert.hpp"

#include <algorithm>

#include "crypto/crypto.hpp"
#include "discovery/discovery_tag.hpp"

namespace fieldsync::discovery {

namespace {

constexpr std::string_view kTagLabel = "fieldsync-ble";
constexpr std::string_view kIdLabel = "fieldsync-ble-id";

crypto::Digest keyed(std::string_view label, ByteView secret, ByteView nonce, std::int64_t bucket) {
  Bytes msg;
  append(msg, as_bytes(label));
  append(msg, nonce);
  auto b = static_cast<std::uint64_t>(bucket);
  for (int shift = 56; shift >= 0; shift -= 8) msg.push_back(static_cast<std::uint8_t>(b >> shift));
  return crypto::hmac_sha256(secret, ByteView(msg.data(), msg.size()));
}

}  // namespace

Bytes BleAdvert::encode() const {
  Bytes out{kMagic, kFormat, sync_protocol};
  append(out, ByteView(nonce.data(), nonce.size()));
  for (std::size_t i = 0; i < tags.size() && i < kMaxTags; ++i)
    append(out, ByteView(tags[i].data(), tags[i].size()));
  return out;
}

Result<BleAdvert> BleAdvert::parse(ByteView p) {
  if (p.size() < kHeaderBytes || p[0] != kMagic)
    return make_error(Errc::invalid_argument, "not a fieldsync advertisement");
  if (p[1] != kFormat)
    return make_error(Errc::unsupported,
                      "advertisement format " + std::to_string(p[1]) + " is not supported");
  if (p.size() > kMaxPayloadBytes || (p.size() - kHeaderBytes) % kTagBytes != 0)
    return make_error(Errc::invalid_argument, "malformed fieldsync advertisement");
  BleAdvert a;
  a.sync_protocol = p[2];
  std::copy_n(p.begin() + 3, kNonceBytes, a.nonce.begin());
  for (std::size_t at = kHeaderBytes; at < p.size(); at += kTagBytes) {
    std::array<std::uint8_t, kTagBytes> t{};
    std::copy_n(p.begin() + static_cast<std::ptrdiff_t>(at), kTagBytes, t.begin());
    a.tags.push_back(t);
  }
  return a;
}

std::array<std::uint8_t, BleAdvert::kTagBytes> BleAdvert::tag(ByteView secret, ByteView nonce,
                                                              std::int64_t bucket) {
  auto d = keyed(kTagLabel, secret, nonce, bucket);
  std::array<std::uint8_t, kTagBytes> t{};
  std::copy_n(d.begin(), kTagBytes, t.begin());
  return t;
}

BleAdvert BleAdvert::make(std::uint16_t sync_protocol, const std::vector<Bytes>& secrets,
                          std::int64_t bucket) {
  BleAdvert a;
  a.sync_protocol = static_cast<std::uint8_t>(std::min<std::uint16_t>(sync_protocol, 255));
  crypto::random_fill(std::span<std::uint8_t>(a.nonce.data(), a.nonce.size()));
  for (std::size_t i = 0; i < secrets.size() && i < kMaxTags; ++i)
    a.tags.push_back(tag(secrets[i], ByteView(a.nonce.data(), a.nonce.size()), bucket));
  return a;
}

Bytes BleAdvert::identity(const BleAdvert& advert, const DeviceId& device,
                          const std::vector<Bytes>& secrets, std::int64_t bucket) {
  Bytes out = advert.encode();
  ByteView nonce(advert.nonce.data(), advert.nonce.size());
  for (std::size_t i = 0; i < advert.tags.size() && i < secrets.size(); ++i) {
    auto mask = keyed(kIdLabel, secrets[i], nonce, bucket);
    auto id = device.view();
    for (std::size_t j = 0; j < DeviceId::size; ++j) out.push_back(id[j] ^ mask[j]);
  }
  return out;
}

std::optional<BleAdvert::Match> BleAdvert::match(ByteView secret, std::int64_t unix_seconds) const {
  std::int64_t now = DiscoveryTag::bucket_of(unix_seconds);
  ByteView n(nonce.data(), nonce.size());
  for (std::int64_t b = now - 1; b <= now + 1; ++b) {
    auto want = tag(secret, n, b);
    for (std::size_t i = 0; i < tags.size(); ++i)
      if (crypto::constant_time_equal(ByteView(want.data(), want.size()),
                                      ByteView(tags[i].data(), tags[i].size())))
        return Match{i, b};
  }
  return std::nullopt;
}

Result<DeviceId> BleAdvert::open_identity(ByteView identity, ByteView secret,
                                          std::int64_t unix_seconds) {
  if (identity.size() < kHeaderBytes)
    return make_error(Errc::invalid_argument, "identity value too short");
  // The advertisement part: header + tags; then one 32-byte block per tag.
  std::size_t tags = 0;
  if (identity.size() > kHeaderBytes) {
    std::size_t rest = identity.size() - kHeaderBytes;
    if (rest % (kTagBytes + DeviceId::size) != 0)
      return make_error(Errc::invalid_argument, "malformed identity value");
    tags = rest / (kTagBytes + DeviceId::size);
  }
  std::size_t adv_len = kHeaderBytes + tags * kTagBytes;
  auto adv = parse(identity.first(adv_len));
  if (!adv) return adv.error();
  auto m = adv->match(secret, unix_seconds);
  if (!m) return make_error(Errc::not_found, "no tag of this project in the identity value");
  auto mask = keyed(kIdLabel, secret, ByteView(adv->nonce.data(), adv->nonce.size()), m->bucket);
  ByteView block = identity.subspan(adv_len + m->index * DeviceId::size, DeviceId::size);
  DeviceId id;
  for (std::size_t j = 0; j < DeviceId::size; ++j) id.bytes[j] = block[j] ^ mask[j];
  return id;
}

}  // namespace fieldsync::discovery
