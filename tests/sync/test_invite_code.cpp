#include <catch2/catch.hpp>
#include <random>

#include "crypto/crypto.hpp"
#include "sync/invite_code.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;

static InviteCode sample() {
  InviteCode c;
  c.inviter = crypto::SigningKey::generate().value().device_id();
  crypto::random_fill(c.project.bytes);
  c.project_name = "Flood response — district 4";
  crypto::random_fill(c.invite_id);
  crypto::random_fill(c.secret);
  c.expires_ms = 1795000000000;
  c.addresses = {"192.168.1.20:7891", "127.0.0.1:7891"};
  return c;
}

TEST_CASE("invite codes round trip and are QR alphanumeric", "[invite]") {
  auto c = sample();
  auto text = c.encode();
  CHECK(text.rfind("FS1:", 0) == 0);
  for (char ch : text) CHECK(((ch >= 'A' && ch <= 'Z') || (ch >= '2' && ch <= '7') || ch == 'F' || ch == ':' || ch == '1'));
  auto d = InviteCode::decode(text);
  REQUIRE(d.ok());
  CHECK(d->inviter == c.inviter);
  CHECK(d->project == c.project);
  CHECK(d->project_name == c.project_name);
  CHECK(d->invite_id == c.invite_id);
  CHECK(d->secret == c.secret);
  CHECK(d->expires_ms == c.expires_ms);
  CHECK(d->addresses == c.addresses);
  // Pasted with line breaks, dashes and in lower case still works.
  std::string messy;
  for (std::size_t i = 0; i < text.size(); ++i) {
    messy.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(text[i]))));
    if (i % 20 == 19) messy += "-\n ";
  }
  CHECK(InviteCode::decode(messy).ok());
}

TEST_CASE("damaged invite codes give clear errors", "[invite]") {
  auto text = sample().encode();
  auto typo = text;
  typo[20] = typo[20] == 'A' ? 'B' : 'A';
  auto r = InviteCode::decode(typo);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::invalid_argument);
  CHECK(r.error().message.find("checksum") != std::string::npos);
  CHECK(InviteCode::decode("hello").error().message.find("not a fieldsync invite code") != std::string::npos);
  CHECK(InviteCode::decode("FS2:AAAA").error().code == Errc::unsupported);
  CHECK(InviteCode::decode("FS1:").error().code == Errc::invalid_argument);
  CHECK(InviteCode::decode(text.substr(0, text.size() - 7)).error().code == Errc::invalid_argument);
  // Bounded random input never crashes and never decodes.
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s = "FS1:";
    for (std::size_t n = rng() % 300; n > 0; --n) s.push_back("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[rng() % 32]);
    CHECK_FALSE(InviteCode::decode(s).ok());
  }
}

TEST_CASE("join proofs and verification codes", "[invite]") {
  auto a = crypto::SigningKey::generate().value().device_id();
  auto b = crypto::SigningKey::generate().value().device_id();
  auto m = crypto::SigningKey::generate().value().device_id();
  auto code = verification_code(a, b);
  CHECK(code.size() == 35);
  CHECK(code == verification_code(b, a));  // both sides see the same digits
  CHECK(code != verification_code(a, m));  // a different key gives different digits
  auto c = sample();
  Bytes binding1(32, 1), binding2(32, 2);
  auto p1 = join_proof(c.secret, c.invite_id, binding1, a);
  CHECK(p1 == join_proof(c.secret, c.invite_id, binding1, a));
  CHECK(p1 != join_proof(c.secret, c.invite_id, binding2, a));  // bound to the connection
  CHECK(p1 != join_proof(c.secret, c.invite_id, binding1, b));  // and to the joiner
}
