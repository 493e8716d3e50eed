// crypto/: known-answer tests of HKDF-SHA256 and AES-256-GCM, and what their failures look
// like (the bundle format in bundle/ relies on both); renewal links (crypto/renewal.hpp).
#include <catch2/catch.hpp>

#include <string>

#include "crypto/crypto.hpp"
#include "crypto/renewal.hpp"

using namespace fieldsync;
using namespace fieldsync::crypto;

namespace {

Bytes hex(std::string_view s) {
  Bytes b;
  for (std::size_t i = 0; i + 1 < s.size(); i += 2)
    b.push_back(static_cast<std::uint8_t>(std::stoi(std::string(s.substr(i, 2)), nullptr, 16)));
  return b;
}

std::string to_hex(ByteView b) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (auto c : b) {
    s.push_back(digits[c >> 4]);
    s.push_back(digits[c & 15]);
  }
  return s;
}

template <class A>
A array_of(std::string_view s) {
  A a{};
  Bytes b = hex(s);
  REQUIRE(b.size() == a.size());
  std::copy(b.begin(), b.end(), a.begin());
  return a;
}

}  // namespace

TEST_CASE("HKDF-SHA256 matches RFC 5869 test case 1") {
  Bytes ikm(22, 0x0b);
  Bytes salt = hex("000102030405060708090a0b0c");
  Bytes info = hex("f0f1f2f3f4f5f6f7f8f9");
  Bytes okm(42);
  REQUIRE(hkdf_sha256(ikm, salt, info, okm).ok());
  CHECK(to_hex(okm) ==
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

TEST_CASE("HKDF-SHA256: other inputs give other keys, bad lengths are refused") {
  Bytes secret(32, 7);
  Bytes a(32), b(32), c(32), d(32);
  REQUIRE(hkdf_sha256(secret, as_bytes("salt-1"), as_bytes("info"), a).ok());
  REQUIRE(hkdf_sha256(secret, as_bytes("salt-2"), as_bytes("info"), b).ok());
  REQUIRE(hkdf_sha256(secret, as_bytes("salt-1"), as_bytes("other"), c).ok());
  REQUIRE(hkdf_sha256(secret, {}, as_bytes("info"), d).ok());  // no salt is allowed
  CHECK(a != b);
  CHECK(a != c);
  CHECK(a != d);
  Bytes none;
  CHECK(hkdf_sha256(secret, {}, {}, none).error().code == Errc::invalid_argument);
  Bytes huge(255 * 32 + 1);
  CHECK(hkdf_sha256(secret, {}, {}, huge).error().code == Errc::invalid_argument);
}

TEST_CASE("AES-256-GCM matches the GCM specification's test cases 14 and 16") {
  Bytes out;
  aes256gcm_seal(AeadKey{}, AeadNonce{}, {}, Bytes(16, 0), out);
  CHECK(to_hex(out) == "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919");

  auto key = array_of<AeadKey>("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
  auto nonce = array_of<AeadNonce>("cafebabefacedbaddecaf888");
  Bytes plain = hex(
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449"
      "a6b525b16aedf5aa0de657ba637b39");
  Bytes aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
  Bytes sealed = {0xaa};  // appends after what is there
  aes256gcm_seal(key, nonce, aad, plain, sealed);
  CHECK(to_hex(ByteView(sealed).subspan(1)) ==
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b10"
        "56828838c5f61e6393ba7a0abcc9f66276fc6ece0f4e1768cddf8853bb2d551b");
  Bytes opened = {0xbb};
  REQUIRE(aes256gcm_open(key, nonce, aad, ByteView(sealed).subspan(1), opened).ok());
  CHECK(opened.size() == 1 + plain.size());
  CHECK(ByteView(opened).subspan(1).size() == plain.size());
  CHECK(std::equal(plain.begin(), plain.end(), opened.begin() + 1));
}

TEST_CASE("AES-256-GCM refuses any change and leaves the output untouched") {
  AeadKey key{};
  random_fill(key);
  AeadNonce nonce{};
  nonce[0] = 1;
  Bytes plain = random_bytes(1000);
  Bytes aad = random_bytes(48);
  Bytes sealed;
  aes256gcm_seal(key, nonce, aad, plain, sealed);
  REQUIRE(sealed.size() == plain.size() + kAeadTagBytes);

  auto refused = [&](const AeadKey& k, const AeadNonce& n, ByteView a, ByteView s) {
    Bytes out = {1, 2, 3};
    auto st = aes256gcm_open(k, n, a, s, out);
    CHECK(out == Bytes{1, 2, 3});
    return !st.ok() && st.error().code == Errc::verification_failed;
  };
  for (std::size_t i : {std::size_t{0}, std::size_t{500}, sealed.size() - 1}) {
    Bytes bad = sealed;
    bad[i] ^= 0x01;
    CHECK(refused(key, nonce, aad, bad));
  }
  AeadKey other_key = key;
  other_key[31] ^= 1;
  CHECK(refused(other_key, nonce, aad, sealed));
  AeadNonce other_nonce = nonce;
  other_nonce[11] ^= 1;
  CHECK(refused(key, other_nonce, aad, sealed));
  Bytes other_aad = aad;
  other_aad[0] ^= 1;
  CHECK(refused(key, nonce, other_aad, sealed));
  CHECK(refused(key, nonce, aad, ByteView(sealed).first(sealed.size() - 1)));
  CHECK(refused(key, nonce, aad, ByteView(sealed).first(5)));  // shorter than a tag

  Bytes empty_sealed;
  aes256gcm_seal(key, nonce, aad, {}, empty_sealed);
  CHECK(empty_sealed.size() == kAeadTagBytes);
  Bytes out;
  CHECK(aes256gcm_open(key, nonce, aad, empty_sealed, out).ok());
  CHECK(out.empty());
}

TEST_CASE("Sha256 fed in pieces equals the one-shot digest, and starts again after finish") {
  Bytes data = random_bytes(10000);
  Sha256 h;
  for (std::size_t i = 0; i < data.size(); i += 333)
    h.update(ByteView(data).subspan(i, std::min<std::size_t>(333, data.size() - i)));
  CHECK(h.finish() == sha256(data));
  CHECK(h.finish() == sha256(ByteView{}));
  h.update(as_bytes("abc"));
  Sha256 moved = std::move(h);
  CHECK(to_hex(moved.finish()) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("renewal links prove a chain of renewals and nothing else", "[renewal]") {
  auto k0 = SigningKey::generate(), k1 = SigningKey::generate(), k2 = SigningKey::generate();
  auto other = SigningKey::generate();
  REQUIRE((k0.ok() && k1.ok() && k2.ok() && other.ok()));
  const DeviceId d0 = k0->device_id(), d1 = k1->device_id(), d2 = k2->device_id();
  std::vector<RenewalLink> chain = {sign_renewal(*k0, d1), sign_renewal(*k1, d2)};

  // Encoding round trip; the layout is version, count, links.
  Bytes enc = encode_renewal_links(chain);
  REQUIRE(enc.size() == 2 + 2 * kRenewalLinkBytes);
  CHECK(enc[0] == 1);
  CHECK(enc[1] == 2);
  auto back = parse_renewal_links(enc);
  REQUIRE(back);
  CHECK(*back == chain);

  // Any step and the whole way; not backwards, not to itself, not from a stranger.
  CHECK(renewal_chain_proves(chain, d0, d1));
  CHECK(renewal_chain_proves(chain, d1, d2));
  CHECK(renewal_chain_proves(chain, d0, d2));
  CHECK_FALSE(renewal_chain_proves(chain, d2, d0));
  CHECK_FALSE(renewal_chain_proves(chain, d1, d1));
  CHECK_FALSE(renewal_chain_proves(chain, other->device_id(), d2));

  // A link signed by the wrong key, or altered, proves nothing.
  std::vector<RenewalLink> forged = {sign_renewal(*other, d2)};
  forged[0].from = d0;
  CHECK_FALSE(renewal_chain_proves(forged, d0, d2));
  auto altered = chain;
  altered[1].to = other->device_id();
  CHECK_FALSE(renewal_chain_proves(altered, d0, other->device_id()));
  CHECK(renewal_chain_proves(altered, d0, d1));  // the intact first step still holds
  // A gap in the chain stops the walk.
  std::vector<RenewalLink> gap = {chain[1]};
  CHECK_FALSE(renewal_chain_proves(gap, d0, d2));

  // Bad layouts are refused whole: version, count over the limit, short or trailing bytes.
  Bytes bad = enc;
  bad[0] = 2;
  CHECK_FALSE(parse_renewal_links(bad));
  bad = enc;
  bad.push_back(0);
  CHECK_FALSE(parse_renewal_links(bad));
  bad = enc;
  bad.pop_back();
  CHECK_FALSE(parse_renewal_links(bad));
  bad = Bytes{1, static_cast<std::uint8_t>(kMaxRenewalLinks + 1)};
  bad.resize(2 + (kMaxRenewalLinks + 1) * kRenewalLinkBytes);
  CHECK_FALSE(parse_renewal_links(bad));
  CHECK_FALSE(parse_renewal_links(Bytes{}));
  auto empty = parse_renewal_links(Bytes{1, 0});
  REQUIRE(empty);
  CHECK(empty->empty());

  // Encoding keeps the newest kMaxRenewalLinks.
  std::vector<RenewalLink> many;
  std::vector<SigningKey> keys;
  for (std::size_t i = 0; i <= kMaxRenewalLinks + 1; ++i) {
    auto k = SigningKey::generate();
    REQUIRE(k.ok());
    keys.push_back(std::move(*k));
  }
  for (std::size_t i = 0; i + 1 < keys.size(); ++i)
    many.push_back(sign_renewal(keys[i], keys[i + 1].device_id()));
  auto kept = parse_renewal_links(encode_renewal_links(many));
  REQUIRE(kept);
  REQUIRE(kept->size() == kMaxRenewalLinks);
  CHECK(kept->back() == many.back());
  CHECK(renewal_chain_proves(*kept, keys[1].device_id(), keys.back().device_id()));
  CHECK_FALSE(renewal_chain_proves(*kept, keys[0].device_id(), keys.back().device_id()));
}
