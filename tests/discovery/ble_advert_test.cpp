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

std::vector<BleAdvert::Project> projects_of(const std::vector<Bytes>& secrets) {
  std::vector<BleAdvert::Project> out;
  for (const auto& s : secrets) out.push_back(BleAdvert::Project{s, {}});
  return out;
}

TEST_CASE("ble advert: fits legacy advertising and round-trips, with and without a hint") {
  std::vector<Bytes> secrets;
  for (int i = 0; i < 6; ++i) secrets.push_back(crypto::random_bytes(32));
  auto hint = BleAdvert::Hint::from_uri("tcp://192.168.4.20:7891");
  REQUIRE(hint);
  for (bool with_hint : {false, true}) {
    auto a = BleAdvert::make(3, projects_of(secrets), with_hint ? hint : std::nullopt,
                             DiscoveryTag::bucket_of(kNow));
    CHECK(a.entries.size() == (with_hint ? 2u : 3u));  // of the 6
    Bytes enc = a.encode();
    CHECK(enc.size() == BleAdvert::kMaxPayloadBytes);
    // flags (3) + manufacturer AD header (4) + payload <= 31
    CHECK(3 + 4 + enc.size() <= 31);
    CHECK(enc[0] == 0xF5);
    CHECK(enc[1] == (with_hint ? 0x2B : 0x23));  // format 2, hint flag, sync protocol 3
    auto back = BleAdvert::parse(enc);
    REQUIRE(back.ok());
    CHECK(back->encode() == enc);
    CHECK(back->sync_protocol == 3);
    CHECK(back->hint.has_value() == with_hint);
    Bytes odd = enc;
    odd.pop_back();
    CHECK(BleAdvert::parse(odd).error().code == Errc::invalid_argument);
    Bytes longer = enc;
    longer.push_back(0);
    CHECK(!BleAdvert::parse(longer).ok());
  }
  CHECK(BleAdvert::parse(Bytes{0x00, 0x21, 1, 0, 0, 0}).error().code == Errc::invalid_argument);
  // Format 1 (up to 4 bare tags) and any later format are another format.
  CHECK(BleAdvert::parse(Bytes{0xF5, 1, 1, 0, 0, 0, 0}).error().code == Errc::unsupported);
  CHECK(BleAdvert::parse(Bytes{0xF5, 0x31, 0, 0, 0, 0}).error().code == Errc::unsupported);
  // No entry at all is a device with nothing visible: well formed, matches nothing.
  auto empty = BleAdvert::parse(Bytes{0xF5, 0x22, 1, 2, 3, 4});
  REQUIRE(empty.ok());
  CHECK(empty->entries.empty());
  CHECK(!empty->match(secrets[0], kNow));
  // A sync protocol above 7 is sent as 7 (the version byte has three bits for it).
  auto big = BleAdvert::make(40, projects_of({secrets[0]}), std::nullopt, 1);
  CHECK(BleAdvert::parse(big.encode())->sync_protocol == 7);
}

TEST_CASE("ble advert: hint addresses") {
  auto h = BleAdvert::Hint::from_uri("tcp://10.0.0.7:7891");
  REQUIRE(h);
  CHECK(h->uri() == "tcp://10.0.0.7:7891");
  CHECK(h->port == 7891);
  for (const char* bad : {"tcp://[::1]:7891", "ble://hci0/C0:FF:EE:00:00:01", "tcp://10.0.0.7",
                          "tcp://10.0.0.256:1", "tcp://10.0.0.7:0", "tcp://10.0.0.7:70000",
                          "tcp://10.0.0:7891", "tcp://10.0.0.7:7891x", "tcp://host:7891"})
    CHECK_FALSE(BleAdvert::Hint::from_uri(bad));
}

TEST_CASE(
    "ble advert: members match, read the device id and the TCP address, outsiders "
    "learn nothing") {
  Bytes s1 = crypto::random_bytes(32), s2 = crypto::random_bytes(32),
        other = crypto::random_bytes(32);
  DeviceId dev = some_device(40);
  std::int64_t bucket = DiscoveryTag::bucket_of(kNow);
  auto hint = BleAdvert::Hint::from_uri("tcp://10.1.2.3:40000");
  auto projects = projects_of({s1, s2});
  auto a = BleAdvert::make(1, projects, hint, bucket);
  Bytes id = BleAdvert::identity(a, dev, projects, hint, bucket);

  auto m = a.match(s2, kNow);
  REQUIRE(m);
  CHECK(m->index == 1);
  CHECK(!a.match(other, kNow));
  // Clock skew of up to one period either way still matches.
  CHECK(a.match(s1, kNow + DiscoveryTag::kPeriodSeconds));
  CHECK(!a.match(s1, kNow + 3 * DiscoveryTag::kPeriodSeconds));

  // The advertisement's hint is for the first project's members; the identity's for each.
  auto m1 = a.match(s1, kNow);
  REQUIRE(m1);
  CHECK(a.open_hint(*m1, s1) == hint);
  CHECK(!a.open_hint(*m, s2));
  CHECK(a.open_hint(*m1, other) != hint);

  for (const Bytes* s : {&s1, &s2}) {
    auto got = BleAdvert::open_identity(id, *s, kNow);
    REQUIRE(got.ok());
    CHECK(got->device == dev);
    CHECK(got->hint == hint);
  }
  CHECK(BleAdvert::open_identity(id, other, kNow).error().code == Errc::not_found);
  CHECK(!contains(id, dev.view().first(8)));
  CHECK(!contains(a.encode(), dev.view().first(4)));
  // Neither the address nor the port is on the air in the clear.
  Bytes addr{10, 1, 2, 3};
  Bytes port{0x9C, 0x40};
  CHECK(!contains(a.encode(), addr));
  CHECK(!contains(id, addr));
  CHECK(!contains(a.encode(), port));
  Bytes cut = id;
  cut.resize(cut.size() - 1);
  CHECK(BleAdvert::open_identity(cut, s1, kNow).error().code == Errc::invalid_argument);

  // Without a hint the identity carries none.
  auto b = BleAdvert::make(1, projects, std::nullopt, bucket);
  auto no_hint = BleAdvert::open_identity(
      BleAdvert::identity(b, dev, projects, std::nullopt, bucket), s2, kNow);
  REQUIRE(no_hint.ok());
  CHECK(no_hint->device == dev);
  CHECK(!no_hint->hint);
}

TEST_CASE("ble advert: the digest tells a member whether the device holds what it holds") {
  Bytes s = crypto::random_bytes(32);
  std::int64_t bucket = DiscoveryTag::bucket_of(kNow);
  storage::VersionVector vv{{some_device(1), 10}, {some_device(2), 3}};
  auto mine = BleAdvert::holdings_of(vv);
  auto a = BleAdvert::make(1, {BleAdvert::Project{s, mine}}, std::nullopt, bucket);
  auto m = a.match(s, kNow);
  REQUIRE(m);
  CHECK(a.holds_same(*m, s, mine));
  storage::VersionVector ahead = vv;
  ahead[some_device(2)] = 4;
  CHECK_FALSE(a.holds_same(*m, s, BleAdvert::holdings_of(ahead)));
  storage::VersionVector more = vv;
  more[some_device(3)] = 1;
  CHECK_FALSE(a.holds_same(*m, s, BleAdvert::holdings_of(more)));
  CHECK(BleAdvert::holdings_of(vv) == mine);  // stable
  // Two advertisements of the same holdings carry unrelated digests (new nonces).
  auto b = BleAdvert::make(1, {BleAdvert::Project{s, mine}}, std::nullopt, bucket);
  CHECK(a.nonce != b.nonce);
  CHECK(b.holds_same(*b.match(s, kNow), s, mine));
}

TEST_CASE("ble advert: tags of two members, and of one member an hour apart, are unrelated") {
  Bytes s = crypto::random_bytes(32);
  std::int64_t bucket = DiscoveryTag::bucket_of(kNow);
  auto a = BleAdvert::make(1, projects_of({s}), std::nullopt, bucket);
  auto b = BleAdvert::make(1, projects_of({s}), std::nullopt, bucket);
  auto later = BleAdvert::make(1, projects_of({s}), std::nullopt, bucket + 1);
  CHECK(a.nonce != b.nonce);
  CHECK(a.entries[0].tag != b.entries[0].tag);
  CHECK(a.entries[0].tag != later.entries[0].tag);
  // Each still matches for a member.
  CHECK(a.match(s, kNow));
  CHECK(b.match(s, kNow));
  CHECK(later.match(s, kNow + DiscoveryTag::kPeriodSeconds));
}
