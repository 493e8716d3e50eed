// DiscoveryTag and TxtRecord: the bytes fieldsync puts on the local network.
#include <catch2/catch.hpp>

#include "common/encoding.hpp"
#include "crypto/crypto.hpp"
#include "discovery/discovery_tag.hpp"
#include "discovery/project_discovery.hpp"
#include "discovery/txt_record.hpp"

using namespace fieldsync;
using namespace fieldsync::discovery;

namespace {

DeviceId device(std::uint8_t fill) {
  DeviceId d;
  d.bytes.fill(fill);
  return d;
}

Bytes secret(std::uint8_t fill) { return Bytes(32, fill); }

}  // namespace

TEST_CASE("tag: the documented HMAC construction, truncated and base32", "[discovery]") {
  Bytes msg;
  std::string label = "fieldsync-discovery";
  msg.insert(msg.end(), label.begin(), label.end());
  auto dev = device(7);
  msg.insert(msg.end(), dev.bytes.begin(), dev.bytes.end());
  std::int64_t bucket = 493000;  // 0x785c8 as u64 big-endian
  for (int shift = 56; shift >= 0; shift -= 8)
    msg.push_back(std::uint8_t(std::uint64_t(bucket) >> shift));
  auto s = secret(1);
  auto mac = crypto::hmac_sha256(s, msg);
  std::string want = to_base32(ByteView(mac.data(), 8));

  std::string tag = DiscoveryTag::compute(s, dev, bucket);
  CHECK(tag == want);
  CHECK(tag.size() == DiscoveryTag::kTagChars);
  CHECK(DiscoveryTag::well_formed(tag));
}

TEST_CASE("tag: depends on secret, device and bucket", "[discovery]") {
  auto t = DiscoveryTag::compute(secret(1), device(1), 100);
  CHECK(t == DiscoveryTag::compute(secret(1), device(1), 100));
  CHECK(t != DiscoveryTag::compute(secret(2), device(1), 100));
  CHECK(t != DiscoveryTag::compute(secret(1), device(2), 100));
  CHECK(t != DiscoveryTag::compute(secret(1), device(1), 101));
}

TEST_CASE("tag: buckets are hours, neighbours match, two hours off does not", "[discovery]") {
  CHECK(DiscoveryTag::bucket_of(0) == 0);
  CHECK(DiscoveryTag::bucket_of(3599) == 0);
  CHECK(DiscoveryTag::bucket_of(3600) == 1);
  CHECK(DiscoveryTag::bucket_of(-1) == -1);

  std::int64_t now = 1'800'000'000;  // some second in 2027
  std::int64_t b = DiscoveryTag::bucket_of(now);
  auto s = secret(9);
  auto d = device(3);
  CHECK(DiscoveryTag::matches(s, d, {DiscoveryTag::compute(s, d, b)}, now));
  CHECK(DiscoveryTag::matches(s, d, {DiscoveryTag::compute(s, d, b - 1)}, now));
  CHECK(DiscoveryTag::matches(s, d, {DiscoveryTag::compute(s, d, b + 1)}, now));
  CHECK_FALSE(DiscoveryTag::matches(s, d, {DiscoveryTag::compute(s, d, b + 2)}, now));
  CHECK_FALSE(DiscoveryTag::matches(s, d, {DiscoveryTag::compute(s, d, b - 2)}, now));
  // Another device's tag for the same project does not make this device a member.
  CHECK_FALSE(DiscoveryTag::matches(s, d, {DiscoveryTag::compute(s, device(4), b)}, now));
  // Among unrelated tags.
  CHECK(DiscoveryTag::matches(s, d, {"aaaaaaaaaaaaa", DiscoveryTag::compute(s, d, b), "x"}, now));
  CHECK_FALSE(DiscoveryTag::matches(s, d, {}, now));
}

TEST_CASE("tag: well_formed", "[discovery]") {
  CHECK(DiscoveryTag::well_formed("abcdefgh23456"));
  CHECK_FALSE(DiscoveryTag::well_formed("abcdefgh2345"));    // short
  CHECK_FALSE(DiscoveryTag::well_formed("abcdefgh234567"));  // long
  CHECK_FALSE(DiscoveryTag::well_formed("ABCDEFGH23456"));   // we emit lower case only
  CHECK_FALSE(DiscoveryTag::well_formed("abcdefgh23410"));   // 0/1 not in base32
}

TEST_CASE("txt: round trip, and no project id or name can appear", "[discovery]") {
  TxtRecord r;
  r.sync_protocol = 1;
  r.device = device(5);
  for (int i = 0; i < 3; ++i) r.tags.push_back(DiscoveryTag::compute(secret(i), r.device, 10));
  auto strings = r.encode();
  REQUIRE(strings.size() == 4);
  CHECK(strings[0] == "v=1");
  CHECK(strings[1] == "sp=1");
  CHECK(strings[2] == "id=" + r.device.str());
  CHECK(strings[3] == "t0=" + r.tags[0] + "," + r.tags[1] + "," + r.tags[2]);
  for (const auto& s : strings) CHECK(s.size() <= 255);

  auto back = TxtRecord::parse(strings);
  REQUIRE(back.ok());
  CHECK(back->device == r.device);
  CHECK(back->sync_protocol == 1);
  CHECK(back->tags == r.tags);
}

TEST_CASE("txt: many tags are split over strings of at most 255 bytes", "[discovery]") {
  TxtRecord r;
  r.device = device(6);
  for (int i = 0; i < 40; ++i) r.tags.push_back(DiscoveryTag::compute(secret(i), r.device, 1));
  auto strings = r.encode();
  REQUIRE(strings.size() == 3 + 3);  // 18 + 18 + 4
  for (const auto& s : strings) CHECK(s.size() <= 255);
  CHECK(strings[3].rfind("t0=", 0) == 0);
  CHECK(strings[5].rfind("t2=", 0) == 0);
  auto back = TxtRecord::parse(strings);
  REQUIRE(back.ok());
  CHECK(back->tags == r.tags);

  TxtRecord none;
  none.device = device(6);
  auto parsed = TxtRecord::parse(none.encode());
  REQUIRE(parsed.ok());
  CHECK(parsed->tags.empty());
}

TEST_CASE("txt: parse refuses bad records with clear errors and ignores unknown keys",
          "[discovery]") {
  std::string id = "id=" + device(1).str();
  auto err = [](std::vector<std::string> s) {
    auto r = TxtRecord::parse(s);
    return r.ok() ? std::string("ok") : r.error().message;
  };
  CHECK(err({"v=1", id}) == "ok");
  CHECK(err({"V=1", "ID=" + device(1).str(), "future=whatever", "flag"}) == "ok");
  CHECK(err({id}) == "TXT record: no version (v=)");
  CHECK(err({"v=x", id}) == "TXT record: bad version 'x'");
  CHECK(err({"v=2", id}) == "TXT record: format version 2 is not supported");
  CHECK(TxtRecord::parse({"v=2", id}).error().code == Errc::failed_precondition);
  CHECK(err({"v=1"}) == "TXT record: no device id (id=)");
  CHECK(err({"v=1", "id=abc"}) == "TXT record: bad device id");
  CHECK(err({"v=1", id, "t0=abc"}) == "TXT record: malformed tag");
  CHECK(err({"v=1", id, "t0=abcdefgh23456,,abcdefgh23456"}) == "TXT record: malformed tag");
  CHECK(err({"v=1", id, "sp=70000"}) == "TXT record: bad sync protocol version");
  // Only the first occurrence of a key counts (RFC 6763 6.4).
  auto r = TxtRecord::parse({"v=1", id, "id=" + device(2).str()});
  REQUIRE(r.ok());
  CHECK(r->device == device(1));
  // A gap in t<n> ends the tag list.
  r = TxtRecord::parse({"v=1", id, "t0=abcdefgh23456", "t2=bbcdefgh23456"});
  REQUIRE(r.ok());
  CHECK(r->tags.size() == 1);
  // Bounded: no more than kMaxTags tags are accepted.
  std::vector<std::string> big = {"v=1", id};
  for (int i = 0; i < 20; ++i) {
    std::string s = "t" + std::to_string(i) + "=";
    for (int j = 0; j < 18; ++j) s += (j ? "," : "") + std::string("abcdefgh23456");
    big.push_back(s);
  }
  CHECK(err(big) == "TXT record: more than 256 tags");
}

TEST_CASE("project settings: discovery visibility and policy", "[discovery]") {
  auto p = ProjectDiscovery::parse("{}");
  REQUIRE(p.ok());
  CHECK(p->visible);
  CHECK(p->policy == SelectionPolicy::manual);
  p = ProjectDiscovery::parse(R"({"other":1,"discovery":{"visible":false,"policy":"auto"}})");
  REQUIRE(p.ok());
  CHECK_FALSE(p->visible);
  CHECK(p->policy == SelectionPolicy::automatic);
  CHECK(policy_name(p->policy) == "auto");
  CHECK(ProjectDiscovery::parse(R"({"discovery":null})").ok());
  CHECK(ProjectDiscovery::parse(R"({"discovery":{"visible":"no"}})").error().message ==
        "settings.discovery.visible must be true or false");
  CHECK(ProjectDiscovery::parse(R"({"discovery":{"policy":"always"}})").error().message ==
        "settings.discovery.policy must be \"manual\" or \"auto\"");
  CHECK_FALSE(ProjectDiscovery::parse(R"({"discovery":[]})").ok());
  CHECK_FALSE(ProjectDiscovery::parse("not json").ok());
}

TEST_CASE("txt: bounded random and mutated records never crash the parser", "[discovery]") {
  // Seeded, so a failure reproduces; the parser must answer ok or a clean error every time.
  std::uint64_t seed = 0x9e3779b97f4a7c15ull;
  auto next = [&] {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
  };
  TxtRecord good;
  good.device = device(2);
  for (int i = 0; i < 20; ++i)
    good.tags.push_back(DiscoveryTag::compute(secret(i), good.device, 5));
  const auto base = good.encode();
  int ok = 0, refused = 0;
  for (int round = 0; round < 3000; ++round) {
    std::vector<std::string> in;
    if (round % 2) {
      in = base;
      for (int m = 0, n = int(next() % 6) + 1; m < n; ++m) {
        auto& s = in[next() % in.size()];
        switch (next() % 4) {
          case 0:
            if (!s.empty()) s[next() % s.size()] = char(next());
            break;
          case 1: s.insert(s.begin() + long(next() % (s.size() + 1)), char(next())); break;
          case 2:
            if (!s.empty()) s.erase(s.begin() + long(next() % s.size()));
            break;
          case 3: in.push_back(s.substr(0, next() % (s.size() + 1))); break;
        }
      }
    } else {
      for (int k = 0, n = int(next() % 8); k < n; ++k) {
        std::string s;
        for (int j = 0, len = int(next() % 80); j < len; ++j)
          s += char(next() % 4 ? 'a' + next() % 26 : next());
        in.push_back(s);
      }
    }
    auto r = TxtRecord::parse(in);
    if (r.ok()) {
      ++ok;
      for (const auto& t : r->tags) CHECK(DiscoveryTag::well_formed(t));
    } else {
      ++refused;
      CHECK(!r.error().message.empty());
    }
  }
  CHECK(ok > 0);
  CHECK(refused > 0);
}
