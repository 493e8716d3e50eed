// Wire format tests: round trips, exact layouts, and a bounded random-input fuzz.
#include <catch2/catch.hpp>

#include <random>

#include "sync/frame_decoder.hpp"
#include "sync/messages.hpp"
#include "sync/wire_error.hpp"
#include "sync_test_util.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;

namespace {

Frame one_frame(const Bytes& bytes, FrameDecoder& d) {
  d.feed(bytes);
  auto f = d.next();
  REQUIRE(f.ok());
  REQUIRE(f->has_value());
  return **f;
}

// Runs every decoder over `payload`; none may crash or read out of bounds.
void decode_all(ByteView payload) {
  DecodeLimits lim;
  (void)decode_hello(payload);
  (void)decode_projects(payload, lim);
  (void)decode_vector(payload, lim);
  (void)decode_batch(payload, lim);
  (void)decode_ack(payload);
  (void)decode_done(payload);
  (void)decode_error(payload);
  (void)decode_notice(payload);
}

}  // namespace

TEST_CASE("frames round-trip and have the documented layout", "[sync][wire]") {
  Bytes out;
  encode_ping(out);
  CHECK(out == Bytes{0, 0, 0, 1, 0x08});

  out.clear();
  Hello h;
  h.device.bytes[0] = 7;
  h.device_name = "tablet-3";
  h.max_frame_bytes = 1234;
  encode_hello(out, h);
  FrameDecoder d(1 << 20);
  Frame f = one_frame(out, d);
  CHECK(f.type == 0x01);
  auto h2 = decode_hello(f.payload);
  REQUIRE(h2.ok());
  CHECK(h2->device == h.device);
  CHECK(h2->device_name == "tablet-3");
  CHECK(h2->max_frame_bytes == 1234);
  CHECK(h2->min_version == kProtocolMin);

  out.clear();
  VectorMsg v;
  v.project.bytes[3] = 1;
  DeviceId a1, a2;
  a1.bytes[0] = 1;
  a2.bytes[0] = 2;
  v.heads = {{a1, 5}, {a2, 1ull << 40}};
  encode_vector(out, MsgType::vv, v);
  CHECK(out.size() == 5 + 16 + 4 + 2 * 40);
  f = one_frame(out, d);
  auto v2 = decode_vector(f.payload, {});
  REQUIRE(v2.ok());
  CHECK(v2->heads == v.heads);

  out.clear();
  Batch b;
  b.project = v.project;
  b.log.author = a1;
  b.log.entries.push_back({1, {}, Bytes{1, 2, 3}, std::string("{}")});
  b.log.entries.push_back({2, {}, Bytes{4, 5}, std::nullopt});
  b.log.checkpoints.push_back({2, {}, {}, std::nullopt});
  encode_batch(out, b);
  f = one_frame(out, d);
  auto b2 = decode_batch(f.payload, {});
  REQUIRE(b2.ok());
  REQUIRE(b2->log.entries.size() == 2);
  CHECK(b2->log.entries[0].body == std::string("{}"));
  CHECK_FALSE(b2->log.entries[1].body.has_value());
  CHECK(b2->log.entries[1].header == Bytes{4, 5});
  auto digest = crypto::sha256(ByteView(Bytes{4, 5}));
  CHECK(std::equal(digest.begin(), digest.end(), b2->log.entries[1].id.bytes.begin()));
  CHECK(b2->log.checkpoints.size() == 1);

  // Seals travel only when both sides announced them (DecodeLimits::seals): each checkpoint is
  // followed by 0, or 1 and its seal.
  storage::RunSeal seal{1, {}, {}};
  seal.root[0] = 9;
  seal.signature[63] = 8;
  b.log.checkpoints.push_back({3, {}, {}, seal});
  b.log.entries.push_back({3, {}, Bytes{6}, std::nullopt});
  DecodeLimits sealed;
  sealed.seals = true;
  out.clear();
  encode_batch(out, b, true);
  f = one_frame(out, d);
  auto b3 = decode_batch(f.payload, sealed);
  REQUIRE(b3.ok());
  REQUIRE(b3->log.checkpoints.size() == 2);
  CHECK_FALSE(b3->log.checkpoints[0].seal.has_value());
  REQUIRE(b3->log.checkpoints[1].seal.has_value());
  CHECK(*b3->log.checkpoints[1].seal == seal);
  CHECK_FALSE(decode_batch(f.payload, {}).ok());  // a peer that did not announce them
  Bytes bad(f.payload.begin(), f.payload.end());
  bad[bad.size() - 1 - 64 - 32 - 8 - 1 - 104] = 2;  // the first checkpoint's flag
  CHECK(decode_batch(bad, sealed).error().message.find("seal flag") != std::string::npos);
  bad.pop_back();
  CHECK_FALSE(decode_batch(bad, sealed).ok());
  out.clear();
  encode_batch(out, b);  // without: the seals are not sent
  f = one_frame(out, d);
  auto b4 = decode_batch(f.payload, {});
  REQUIRE(b4.ok());
  CHECK_FALSE(b4->log.checkpoints[1].seal.has_value());

  // Proven entries (flag bit 2) travel with their path, and only with seals.
  Batch pb;
  pb.project = v.project;
  pb.log.author = a1;
  storage::LogEntry pe{7, {}, Bytes{7, 7}, std::string("{}")};
  pe.proven = true;
  pe.path.resize(3);
  pe.path[2][31] = 5;
  pb.log.entries.push_back(pe);
  pb.log.checkpoints.push_back({9, {}, {}, seal});
  out.clear();
  encode_batch(out, pb, true);
  f = one_frame(out, d);
  auto pb2 = decode_batch(f.payload, sealed);
  REQUIRE(pb2.ok());
  REQUIRE(pb2->log.entries.size() == 1);
  CHECK(pb2->log.entries[0].proven);
  CHECK(pb2->log.entries[0].path == pe.path);
  CHECK(pb2->log.entries[0].body == std::string("{}"));
  CHECK(pb2->log.last_seq() == 9);
  CHECK(decode_batch(f.payload, {}).error().message.find("BATCH (entry)") != std::string::npos);
  Bytes deep(f.payload.begin(), f.payload.end());
  deep[16 + 32 + 4 + 8 + 4 + 2 + 1 + 4 + 2] = storage::kMaxRunPath + 1;  // the path's length
  CHECK(decode_batch(deep, sealed).error().message.find("path") != std::string::npos);
  pb.log.entries.clear();  // a proven run with nothing wanted: its checkpoint alone
  out.clear();
  encode_batch(out, pb, true);
  f = one_frame(out, d);
  auto pb3 = decode_batch(f.payload, sealed);
  REQUIRE(pb3.ok());
  CHECK(pb3->log.entries.empty());
  CHECK(pb3->log.last_seq() == 9);

  out.clear();
  encode_error(out, WireError{to_wire_code(Errc::too_large), "big"});
  f = one_frame(out, d);
  auto e = decode_error(f.payload);
  REQUIRE(e.ok());
  CHECK(from_wire_code(e->code) == Errc::too_large);
  CHECK(e->reason == "big");

  out.clear();
  ProjectId pid;
  pid.bytes[0] = 7;
  encode_notice(out, NoticeMsg{static_cast<std::uint8_t>(NoticeKind::removed), pid, "gone"});
  // u32 length, type 0x92, kind, 16-byte project, str16 message.
  CHECK(out.size() == 4 + 1 + 1 + 16 + 2 + 4);
  CHECK(out[4] == 0x92);
  CHECK(out[5] == 2);
  f = one_frame(out, d);
  auto n = decode_notice(f.payload);
  REQUIRE(n.ok());
  CHECK(n->kind == 2);
  CHECK(n->project == pid);
  CHECK(n->message == "gone");
  // Trailing bytes (fields of a later version) are skipped; a short payload is malformed.
  Bytes longer(f.payload.begin(), f.payload.end());
  longer.push_back(0xff);
  CHECK(decode_notice(longer).ok());
  CHECK_FALSE(decode_notice(ByteView(f.payload.data(), 10)).ok());
}

TEST_CASE("wire error codes map both ways", "[sync][wire]") {
  for (int c = 0; c <= static_cast<int>(Errc::internal); ++c) {
    auto code = static_cast<Errc>(c);
    CHECK(from_wire_code(to_wire_code(code)) == code);
  }
  CHECK(from_wire_code(60000) == Errc::internal);
}

TEST_CASE("the frame decoder reassembles frames split anywhere", "[sync][wire]") {
  Bytes stream;
  for (int i = 0; i < 50; ++i) encode_error(stream, WireError{1, std::string(i, 'x')});
  std::mt19937 rng(3);
  FrameDecoder d(1 << 20);
  int frames = 0;
  for (std::size_t i = 0; i < stream.size();) {
    std::size_t n = std::min<std::size_t>(stream.size() - i, 1 + rng() % 40);
    d.feed(ByteView(stream).subspan(i, n));
    i += n;
    for (;;) {
      auto f = d.next();
      REQUIRE(f.ok());
      if (!*f) break;
      auto e = decode_error((*f)->payload);
      REQUIRE(e.ok());
      CHECK(e->reason.size() == static_cast<std::size_t>(frames));
      ++frames;
    }
  }
  CHECK(frames == 50);
  CHECK(d.buffered() == 0);
}

TEST_CASE("decoders survive random and mutated input", "[sync][wire][fuzz]") {
  std::mt19937 rng(12345);
  // Valid frames to mutate.
  std::vector<Bytes> seeds;
  {
    Bytes b;
    Hello h;
    h.device_name = "x";
    encode_hello(b, h);
    seeds.push_back(b);
    b.clear();
    Batch bt;
    bt.log.entries.push_back({1, {}, Bytes(40, 1), std::string(30, 'a')});
    bt.log.checkpoints.push_back({1, {}, {}, std::nullopt});
    encode_batch(b, bt);
    seeds.push_back(b);
    b.clear();
    VectorMsg v;
    v.heads[DeviceId{}] = 3;
    encode_vector(b, MsgType::vv, v);
    seeds.push_back(b);
    b.clear();
    encode_projects(b, Projects{{crypto::Digest{}, crypto::Digest{}}});
    seeds.push_back(b);
  }
  for (int iter = 0; iter < 20000; ++iter) {
    Bytes input;
    if (iter % 2 == 0) {
      input.resize(rng() % 200);
      for (auto& c : input) c = static_cast<std::uint8_t>(rng());
    } else {
      input = seeds[rng() % seeds.size()];
      int flips = 1 + rng() % 4;
      for (int i = 0; i < flips; ++i)
        input[rng() % input.size()] = static_cast<std::uint8_t>(rng());
      if (rng() % 4 == 0) input.resize(rng() % input.size());
    }
    decode_all(input);
    FrameDecoder d(4096);
    d.feed(input);
    for (int i = 0; i < 100; ++i) {
      auto f = d.next();
      if (!f.ok() || !*f) break;
      decode_all((*f)->payload);
    }
  }
  SUCCEED("no crash");
}

TEST_CASE("a session survives random bytes at every stage", "[sync][fuzz]") {
  using namespace fieldsync::sync::test;
  Node a, b;
  ProjectId p = shared_project(a, b);
  a.write_docs(p, 0, 20);
  std::mt19937 rng(99);
  for (int iter = 0; iter < 60; ++iter) {
    Session sa(*a.store, params("a")), sb(*b.store, params("b"));
    sa.start();
    sb.start();
    int corrupt_at = static_cast<int>(rng() % 6);
    for (int step = 0; step < 8 && !sb.finished(); ++step) {
      Bytes x = sa.take_output(4096);
      if (step == corrupt_at && !x.empty()) {
        for (int i = 0; i < 3; ++i) x[rng() % x.size()] = static_cast<std::uint8_t>(rng());
      }
      sb.receive(x);
      sa.receive(sb.take_output(4096));
    }
    // Whatever happened, b's store holds a valid prefix of a's log.
    auto vb = b.store->version_vector(p);
    REQUIRE(vb.ok());
    auto head = (*vb)[a.store->device_id()];
    CHECK((head == 0 || head == 20));
  }
}

TEST_CASE("PROJECTS: 32-byte proofs (protocol 1) and 16-byte ones (2), told by the length",
          "[sync][wire][versions]") {
  crypto::Digest x{}, y{};
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<std::uint8_t>(i + 1);
    y[i] = static_cast<std::uint8_t>(0xF0 - i);
  }
  for (std::uint8_t size : {kProofBytesV1, kProofBytesV2}) {
    Bytes f;
    encode_projects(f, Projects{{x, y}, size});
    CHECK(f.size() == kFrameHeaderBytes + 4 + 2u * size);
    auto m = decode_projects(ByteView(f).subspan(kFrameHeaderBytes), DecodeLimits{});
    REQUIRE(m.ok());
    CHECK(m->proof_bytes == size);
    REQUIRE(m->proofs.size() == 2);
    // A whole HMAC is found by its first `size` bytes; one differing there is not.
    CHECK(m->holds(x));
    CHECK(m->holds(y));
    crypto::Digest other = x;
    other[size - 1] ^= 1;
    CHECK_FALSE(m->holds(other));
    other = x;
    other[31] ^= 1;  // beyond what a 16-byte proof carries
    CHECK(m->holds(other) == (size == kProofBytesV2));
  }
  // Any other length is malformed (24 bytes per proof, one byte short, one too many).
  for (std::size_t payload : {4u + 2 * 24, 4u + 2 * 16 - 1, 4u + 2 * 32 + 1}) {
    Bytes b;
    ByteWriter(b).u32(2);
    b.resize(payload, 7);
    auto m = decode_projects(b, DecodeLimits{});
    REQUIRE(!m.ok());
    CHECK(m.error().code == Errc::invalid_argument);
  }
}
