#include <catch2/catch.hpp>
#include <random>

#include "crypto/crypto.hpp"
#include "sync/invite_code.hpp"
#include "sync/messages.hpp"

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
  for (char ch : text)
    CHECK(((ch >= 'A' && ch <= 'Z') || (ch >= '2' && ch <= '7') || ch == 'F' || ch == ':' ||
           ch == '1'));
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
  CHECK(InviteCode::decode("hello").error().message.find("not a fieldsync invite code") !=
        std::string::npos);
  CHECK(InviteCode::decode("FS2:AAAA").error().code == Errc::unsupported);
  CHECK(InviteCode::decode("FS1:").error().code == Errc::invalid_argument);
  CHECK(InviteCode::decode(text.substr(0, text.size() - 7)).error().code == Errc::invalid_argument);
  // Bounded random input never crashes and never decodes.
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s = "FS1:";
    for (std::size_t n = rng() % 300; n > 0; --n)
      s.push_back("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[rng() % 32]);
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

#include "../storage/temp_dir.hpp"
#include "storage/store.hpp"
#include "sync/join.hpp"

namespace {

std::unique_ptr<storage::Store> open_at(const std::filesystem::path& dir) {
  storage::StoreOptions o;
  o.data_dir = dir;
  o.map_size_bytes = 1ull << 28;
  o.durable = false;
  return std::move(storage::Store::open(o).value());
}

}  // namespace

TEST_CASE("joining with an invite: proof, single use, expiry, project transfer", "[invite][join]") {
  fieldsync::test::TempDir da, db, dc;
  auto a = open_at(da.path());
  auto b = open_at(db.path());
  auto c = open_at(dc.path());
  auto p = a->create_project("clinic visits").value();
  auto inv = a->create_invite(p.id, storage::Role::member, 5000).value();
  InviteCode code;
  code.inviter = a->device_id();
  code.project = p.id;
  code.invite_id = inv.id;
  code.secret = inv.secret;
  code.expires_ms = inv.expires_ms;
  Bytes binding(32, 9);

  // A JOIN recorded on one connection is useless on another.
  Join j = make_join(code, binding, b->device_id());
  Bytes other(32, 8);
  CHECK(answer_join(*a, j, other, b->device_id(), 1000).error().code == Errc::permission_denied);
  // And useless for another device.
  CHECK(answer_join(*a, j, binding, c->device_id(), 1000).error().code == Errc::permission_denied);

  // Wire round trip, then the real answer.
  Bytes frame;
  encode_join(frame, j);
  auto dj = decode_join(ByteView(frame).subspan(kFrameHeaderBytes));
  REQUIRE(dj.ok());
  auto joined = answer_join(*a, *dj, binding, b->device_id(), 1000);
  REQUIRE(joined.ok());
  Bytes reply;
  encode_joined(reply, *joined);
  auto dr = decode_joined(ByteView(reply).subspan(kFrameHeaderBytes));
  REQUIRE(dr.ok());
  auto added = accept_joined(*b, code, *dr);
  REQUIRE(added.ok());
  CHECK(added->name == "clinic visits");
  CHECK(b->project_secret(p.id).value() == a->project_secret(p.id).value());
  CHECK(b->get_project(p.id)->creator == a->device_id());
  CHECK(a->member(p.id, b->device_id()).value()->role == storage::Role::member);

  // Single use.
  Join jc = make_join(code, binding, c->device_id());
  auto reuse = answer_join(*a, jc, binding, c->device_id(), 1000);
  REQUIRE_FALSE(reuse.ok());
  CHECK(reuse.error().message == "invite already used");
  // Expired.
  auto late = a->create_invite(p.id, storage::Role::member, 2000).value();
  code.invite_id = late.id;
  code.secret = late.secret;
  auto expired =
      answer_join(*a, make_join(code, binding, c->device_id()), binding, c->device_id(), 2001);
  REQUIRE_FALSE(expired.ok());
  CHECK(expired.error().message == "invite expired");
  // Malformed frames.
  CHECK_FALSE(decode_join(ByteView(reply).subspan(kFrameHeaderBytes)).ok());
  CHECK_FALSE(decode_joined(ByteView(frame).subspan(kFrameHeaderBytes)).ok());
}
