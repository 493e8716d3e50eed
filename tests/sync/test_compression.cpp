// Compressed batches (ZBATCH, HELLO feature bit 0): negotiation, sizes, and what a receiver
// does with compressed frames that are corrupt or too large.
#include "sync_test_util.hpp"

#include "common/compress.hpp"
#include "config/config.hpp"
#include "config/config_loader.hpp"
#include "sync/frame_decoder.hpp"
#include "sync/messages.hpp"
#include "sync/session_options.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;
using namespace fieldsync::sync::test;

namespace {

// n field observations of ~500 bytes of JSON each, like the benchmark's.
void write_observations(Node& n, const ProjectId& p, int count) {
  std::vector<storage::WriteRequest> reqs;
  for (int i = 0; i < count; ++i) {
    storage::WriteRequest r;
    r.collection = "obs";
    r.doc_id = "d" + std::to_string(i);
    r.body = "{\"site\":\"plot-" + std::to_string(i % 37) +
             "\",\"observer\":\"ana\",\"lat\":" + std::to_string(46.0 + i * 0.0001) +
             ",\"lon\":" + std::to_string(7.0 + i * 0.0002) +
             ",\"species\":\"Abies alba\",\"count\":" + std::to_string(i % 13) + ",\"notes\":\"" +
             std::string(300, 'a' + i % 26) + "\",\"tags\":[\"survey\"]}";
    r.use_current = true;
    reqs.push_back(std::move(r));
  }
  REQUIRE(n.store->write_batch(p, reqs).ok());
}

storage::VersionVector vv(Node& n, const ProjectId& p) {
  auto v = n.store->version_vector(p);
  REQUIRE(v.ok());
  return *v;
}

SessionOptions level(std::uint32_t l) {
  SessionOptions o;
  o.compression_level = l;
  o.batch_entries = 100;
  return o;
}

// Syncs a's 400 documents to b with these levels; returns the bytes a sent.
std::uint64_t sync_bytes(std::uint32_t level_a, std::uint32_t level_b) {
  Node a, b;
  ProjectId p = shared_project(a, b);
  write_observations(a, p, 400);
  Session sa(*a.store, params("a", level(level_a)));
  Session sb(*b.store, params("b", level(level_b)));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.chunk = 1 << 20;
  pipe.run();
  CHECK(sa.in_sync());
  CHECK(sb.in_sync());
  CHECK(vv(a, p) == vv(b, p));
  CHECK(sb.progress().projects.at(0).applied == 400);
  // Progress counts what crossed the wire, the same on both ends.
  CHECK(sa.progress().bytes_sent == sb.progress().bytes_received);
  return sa.progress().bytes_sent;
}

std::vector<std::pair<std::uint8_t, Bytes>> frames_of(const Bytes& bytes) {
  FrameDecoder d(64u << 20);
  d.feed(bytes);
  std::vector<std::pair<std::uint8_t, Bytes>> out;
  for (;;) {
    auto f = d.next();
    REQUIRE(f.ok());
    if (!*f) break;
    out.emplace_back((*f)->type, Bytes((*f)->payload.begin(), (*f)->payload.end()));
  }
  return out;
}

// The payload of a BATCH frame carrying `log`.
Bytes batch_payload(const ProjectId& p, const storage::LogBatch& log) {
  Bytes frame;
  encode_batch(frame, Batch{p, log});
  return Bytes(frame.begin() + kFrameHeaderBytes, frame.end());
}

// A ZBATCH frame with any `size` field and zstd bytes.
Bytes zbatch_frame(std::uint32_t size, ByteView zstd) {
  Bytes payload;
  ByteWriter w(payload);
  w.u32(size);
  w.raw(zstd);
  Bytes frame;
  encode_frame(frame, static_cast<std::uint8_t>(MsgType::zbatch), payload);
  return frame;
}

}  // namespace

TEST_CASE("compressed batches: both sides offer them and the initial sync is smaller", "[sync]") {
  std::uint64_t plain = sync_bytes(0, 0);
  std::uint64_t compressed = sync_bytes(3, 3);
  INFO("plain " << plain << " bytes, compressed " << compressed);
  CHECK(compressed * 2 < plain);
  // Only one side offering them: the batches go uncompressed (and still converge).
  CHECK(sync_bytes(3, 0) == plain);
  CHECK(sync_bytes(0, 3) == plain);
}

TEST_CASE("a peer that does not set the feature bit gets plain batches", "[sync]") {
  Node a(10), b(10);
  ProjectId p = shared_project(a, b);
  write_observations(a, p, 120);
  Session sa(*a.store, params("a", level(3)));
  sa.start();
  // Our HELLO offers compressed batches.
  auto hello = frames_of(sa.take_output(1 << 20));
  REQUIRE(hello.size() == 1);
  auto h = decode_hello(hello[0].second);
  REQUIRE(h.ok());
  CHECK((h->features & kFeatureZstdBatches) != 0);

  std::uint64_t features = GENERATE(kFeatureNone, kFeatureZstdBatches, 0xfffffffffffffffeull);
  handshake(sa, b, p, features);
  std::map<std::uint8_t, int> types;
  for (auto& [t, payload] : frames_of(sa.take_output(64u << 20))) ++types[t];
  bool compressed = (features & kFeatureZstdBatches) != 0;
  INFO("features " << features);
  int plain = types[static_cast<std::uint8_t>(MsgType::batch)];
  int zstd = types[static_cast<std::uint8_t>(MsgType::zbatch)];
  CHECK(plain + zstd == 2);  // 100 + 20 entries
  CHECK(zstd == (compressed ? 2 : 0));
}

TEST_CASE("compression level 0 offers nothing and refuses ZBATCH", "[sync]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  write_observations(a, p, 20);
  Session sb(*b.store, params("b", level(0)));
  sb.start();
  auto hello = frames_of(sb.take_output(1 << 20));
  REQUIRE(hello.size() == 1);
  CHECK((decode_hello(hello[0].second)->features & kFeatureZstdBatches) == 0);
  handshake(sb, a, p, kFeatureZstdBatches);
  auto log = a.store->read_log(p, a.store->device_id(), 0, 100, 1 << 20);
  REQUIRE(log.ok());
  Bytes in;
  REQUIRE(encode_zbatch(in, batch_payload(p, *log), 3).ok());
  sb.receive(in);
  CHECK(sb.state() == SessionState::failed);
  CHECK(sb.error()->code == Errc::failed_precondition);
  CHECK(vv(b, p)[a.store->device_id()] == 0);
}

TEST_CASE("a bad ZBATCH fails the session with a clear error and applies nothing of it", "[sync]") {
  Node a(10), b(10);
  ProjectId p = shared_project(a, b);
  write_observations(a, p, 30);
  SessionOptions o = level(3);
  o.max_frame_bytes = 64u << 10;
  Session sb(*b.store, params("b", o));
  sb.start();
  handshake(sb, a, p, kFeatureZstdBatches);
  auto good = a.store->read_log(p, a.store->device_id(), 0, 10, 1 << 20);
  REQUIRE(good.ok());
  Bytes in;
  REQUIRE(encode_zbatch(in, batch_payload(p, *good), 3).ok());
  REQUIRE(frames_of(in).at(0).first == static_cast<std::uint8_t>(MsgType::zbatch));
  sb.receive(in);
  REQUIRE(sb.state() == SessionState::active);
  REQUIRE(vv(b, p)[a.store->device_id()] == 10);

  auto next = a.store->read_log(p, a.store->device_id(), 10, 10, 1 << 20);
  REQUIRE(next.ok());
  Bytes plain = batch_payload(p, *next);
  Bytes z;
  REQUIRE(zstd_compress(plain, 3, z).ok());
  Errc expect = Errc::invalid_argument;
  std::string words;
  SECTION("corrupt zstd data") {
    z[z.size() / 2] ^= 0x55;
    z[z.size() / 2 + 1] ^= 0x55;
    in = zbatch_frame(static_cast<std::uint32_t>(plain.size()), z);
    words = "malformed ZBATCH";
  }
  SECTION("cut short") {
    z.resize(z.size() - 3);
    in = zbatch_frame(static_cast<std::uint32_t>(plain.size()), z);
    words = "malformed ZBATCH";
  }
  SECTION("size field over the frame limit: refused before decompressing") {
    in = zbatch_frame(64u << 10, z);
    expect = Errc::too_large;
    words = "over the frame limit";
  }
  SECTION("a zip bomb: 64 MiB of zeros claimed as a small batch") {
    Bytes zeros(64u << 20, 0);
    Bytes bomb;
    REQUIRE(zstd_compress(zeros, 1, bomb).ok());
    Bytes().swap(zeros);
    REQUIRE(bomb.size() < 64u << 10);  // it fits in one frame
    in = zbatch_frame(static_cast<std::uint32_t>(plain.size()), bomb);
    words = "declares 67108864 bytes";
  }
  SECTION("declared size smaller than the content") {
    in = zbatch_frame(static_cast<std::uint32_t>(plain.size() - 1), z);
    words = "expected";
  }
  SECTION("bytes after the zstd frame") {
    z.push_back(0);
    in = zbatch_frame(static_cast<std::uint32_t>(plain.size()), z);
    words = "after the zstd frame";
  }
  SECTION("decompresses to a malformed BATCH") {
    Bytes junk(plain.size(), 0xee);
    Bytes zj;
    REQUIRE(zstd_compress(junk, 3, zj).ok());
    in = zbatch_frame(static_cast<std::uint32_t>(junk.size()), zj);
    words = "malformed BATCH";
  }
  SECTION("decompresses to a tampered BATCH") {
    (*next->entries[3].body)[2] ^= 1;
    in.clear();
    REQUIRE(encode_zbatch(in, batch_payload(p, *next), 3).ok());
    expect = Errc::verification_failed;
  }
  sb.receive(in);
  CHECK(sb.state() == SessionState::failed);
  CHECK(sb.error()->code == expect);
  INFO(sb.error()->message);
  CHECK(sb.error()->message.find(words) != std::string::npos);
  CHECK(vv(b, p)[a.store->device_id()] == 10);  // the good batch stays, nothing of the bad one
  CHECK_FALSE(b.store->get_document(p, "obs", "d13").ok());
}

TEST_CASE("zstd codec round trip and limits", "[sync]") {
  Bytes in(100000);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::uint8_t>(i % 251 / 7);
  Bytes z;
  REQUIRE(zstd_compress(in, 3, z).ok());
  CHECK(z.size() < in.size() / 4);
  Bytes out;
  REQUIRE(zstd_decompress(z, in.size(), out).ok());
  CHECK(out == in);
  CHECK_FALSE(zstd_decompress(z, in.size() - 1, out).ok());
  CHECK_FALSE(zstd_decompress(z, in.size() + 1, out).ok());
  CHECK_FALSE(zstd_decompress(Bytes{}, 0, out).ok());
  CHECK_FALSE(zstd_decompress(Bytes{1, 2, 3, 4, 5, 6, 7, 8}, 8, out).ok());
  // decode_zbatch checks the declared size against the limit before anything else.
  DecodeLimits lim;
  lim.max_batch_payload = 1000;
  Bytes payload;
  ByteWriter(payload).u32(1001);
  CHECK(decode_zbatch(payload, lim, out).error().code == Errc::too_large);
}

TEST_CASE("sync.compression_level: 0..19, default 3", "[sync][options]") {
  CHECK(config::SyncOptions{}.compression_level == 3);
  CHECK(SessionOptions{}.compression_level == 3);
  config::Config c;
  CHECK(config::apply_setting(c, "sync.compression_level", "0").ok());
  CHECK(c.sync.compression_level == 0);
  CHECK(session_options(c.sync).compression_level == 0);
  CHECK(config::apply_setting(c, "sync.compression_level", "19").ok());
  CHECK(c.sync.compression_level == 19);
  CHECK_FALSE(config::apply_setting(c, "sync.compression_level", "20").ok());
  CHECK_FALSE(config::apply_setting(c, "sync.compression_level", "-1").ok());
}
