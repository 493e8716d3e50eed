// BleAdvert (discovery/ble_advert.hpp): the Bluetooth LE advertisement and identity value.
#include <catch2/catch.hpp>

#include <algorithm>

#include "crypto/crypto.hpp"
#include "discovery/ble_advert.hpp"
#include "discovery/discovery_tag.hpp"

using namespace fieldsync;
using discovery::BleAdvert;
using discovery::DiscoveryTag;

namespace {

DeviceId some_device(std::uint8_t seed) {
  DeviceId d;
  for (std::size_t i = 0; i < DeviceId::size; ++i) d.bytes[i] = static_cast<std::uint8_t>(seed + i);
  return d;
}

bool contains(ByteView hay, ByteView needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

constexpr std::int64_t kNow = 1764000000;  // some unix second

}  // namespace

TEST_CASE("ble advert: fits legacy advertising and round-trips") {
  std::vector<Bytes> secrets;
  for (int i = 0; i < 6; ++i) secrets.push_back(crypto::random_bytes(32));
  auto a = BleAdvert::make(3, secrets, DiscoveryTag::bucket_of(kNow));
  CHECK(a.tags.size() == BleAdvert::kMaxTags);  // 4 of the 6
  Bytes enc = a.encode();
  CHECK(enc.size() == BleAdvert::kHeaderBytes + 4 * BleAdvert::kTagBytes);
  CHECK(enc.size() <= BleAdvert::kMaxPayloadBytes);
  // flags (3) + manufacturer AD header (4) + payload <= 31
  CHECK(3 + 4 + enc.size() <= 31);
  auto back = BleAdvert::parse(enc);
  REQUIRE(back.ok());
  CHECK(back->encode() == enc);
  CHECK(back->sync_protocol == 3);
  CHECK(BleAdvert::parse(Bytes{0x00, 1, 1, 0, 0, 0, 0}).error().code == Errc::invalid_argument);
  CHECK(BleAdvert::parse(Bytes{0xF5, 2, 1, 0, 0, 0, 0}).error().code == Errc::unsupported);
  Bytes odd = enc;
  odd.pop_back();
  CHECK(!BleAdvert::parse(odd).ok());
}

TEST_CASE("ble advert: members match and read the device id, outsiders learn nothing") {
  Bytes s1 = crypto::random_bytes(32), s2 = crypto::random_bytes(32),
        other = crypto::random_bytes(32);
  DeviceId dev = some_device(40);
  std::int64_t bucket = DiscoveryTag::bucket_of(kNow);
  auto a = BleAdvert::make(1, {s1, s2}, bucket);
  Bytes id = BleAdvert::identity(a, dev, {s1, s2}, bucket);

  auto m = a.match(s2, kNow);
  REQUIRE(m);
  CHECK(m->index == 1);
  CHECK(!a.match(other, kNow));
  // Clock skew of up to one period either way still matches.
  CHECK(a.match(s1, kNow + DiscoveryTag::kPeriodSeconds));
  CHECK(!a.match(s1, kNow + 3 * DiscoveryTag::kPeriodSeconds));

  auto got = BleAdvert::open_identity(id, s2, kNow);
  REQUIRE(got.ok());
  CHECK(*got == dev);
  CHECK(BleAdvert::open_identity(id, other, kNow).error().code == Errc::not_found);
  CHECK(!contains(id, dev.view().first(8)));
  CHECK(!contains(a.encode(), dev.view().first(4)));
  Bytes cut = id;
  cut.resize(cut.size() - 1);
  CHECK(BleAdvert::open_identity(cut, s1, kNow).error().code == Errc::invalid_argument);
}

TEST_CASE("ble advert: tags of two members, and of one member an hour apart, are unrelated") {
  Bytes s = crypto::random_bytes(32);
  std::int64_t bucket = DiscoveryTag::bucket_of(kNow);
  auto a = BleAdvert::make(1, {s}, bucket);
  auto b = BleAdvert::make(1, {s}, bucket);
  auto later = BleAdvert::make(1, {s}, bucket + 1);
  CHECK(a.nonce != b.nonce);
  CHECK(a.tags[0] != b.tags[0]);
  CHECK(a.tags[0] != later.tags[0]);
  // Each still matches for a member.
  CHECK(a.match(s, kNow));
  CHECK(b.match(s, kNow));
  CHECK(later.match(s, kNow + DiscoveryTag::kPeriodSeconds));
}
