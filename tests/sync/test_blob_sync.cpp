// Blobs over a session (BLOB_GET/BLOB_HEAD/BLOB_CHUNK, HELLO feature bit 1): a blob that a
// synced document refers to follows the documents, verified chunk by chunk; a tampered chunk is
// refused; a cut transfer resumes without re-sending what arrived; a session without the
// feature carries no blob frames.
#include <future>

#include "common/clock.hpp"
#include "storage/blob_ref.hpp"
#include "sync/frame_decoder.hpp"
#include "sync/messages.hpp"
#include "sync_test_util.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;
using namespace fieldsync::sync::test;

namespace {

Bytes pattern(std::size_t n, std::uint8_t seed = 1) {
  Bytes b(n);
  std::uint32_t x = seed * 2654435761u + 12345;
  for (auto& c : b) {
    x = x * 1103515245u + 12345;
    c = static_cast<std::uint8_t>(x >> 24);
  }
  return b;
}

void flush(storage::Store& s) {
  std::promise<void> done;
  s.blobs().post([&] { done.set_value(); });
  done.get_future().get();
}

storage::BlobInfo upload(storage::Store& s, const ProjectId& p, const Bytes& data) {
  auto up = s.blobs().begin_upload(p);
  REQUIRE(up.ok());
  (*up)->write(data, nullptr);
  std::promise<Result<storage::BlobInfo>> done;
  (*up)->finish("image/jpeg", [&](Result<storage::BlobInfo> r) { done.set_value(std::move(r)); });
  auto r = done.get_future().get();
  REQUIRE(r.ok());
  return *r;
}

void write_ref(Node& n, const ProjectId& p, const std::string& id, const storage::BlobInfo& info) {
  storage::WriteRequest r;
  r.collection = "obs";
  r.doc_id = id;
  r.body = R"({"site":"river","photo":)" + storage::blob_ref_json(info) + "}";
  r.use_current = true;
  REQUIRE(n.store->write(p, r).ok());
}

bool holds(storage::Store& s, const ProjectId& p, const storage::BlobInfo& info,
           const Bytes& data) {
  flush(s);
  auto r = s.blobs().open(p, info.id);
  if (!r.ok()) return false;
  Bytes out;
  for (;;) {
    auto b = (*r)->read(out.size(), 1u << 20);
    REQUIRE(b.ok());
    if (b->empty()) break;
    out.insert(out.end(), b->begin(), b->end());
  }
  return out == data;
}

// Runs two sessions like Pipe::run, passing a's output through `edit` (frames whole).
void run_edited(Session& sa, Session& sb, const std::function<void(std::uint8_t, Bytes&)>& edit) {
  for (int steps = 0; steps < 100000; ++steps) {
    Bytes x = sa.take_output(1u << 20);
    Bytes y = sb.take_output(1u << 20);
    if (x.empty() && y.empty()) return;
    FrameDecoder d(64u << 20);
    d.feed(x);
    Bytes edited;
    for (;;) {
      auto f = d.next();
      REQUIRE(f.ok());
      if (!*f) break;
      Bytes payload((*f)->payload.begin(), (*f)->payload.end());
      edit((*f)->type, payload);
      encode_frame(edited, (*f)->type, payload);
    }
    sb.receive(edited);
    sa.receive(y);
  }
}

std::uint64_t blob_bytes_received(const Session& s) {
  return s.progress().projects.at(0).blob_bytes_received;
}

}  // namespace

TEST_CASE("a blob a synced document refers to follows the document", "[sync][blobs]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  Bytes data = pattern(5 * storage::kBlobChunkBytes + 1234);
  auto info = upload(*a.store, p, data);
  write_ref(a, p, "r1", info);
  a.write_docs(p, 0, 20);
  Session sa(*a.store, params("a"));
  Session sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.chunk = 1u << 20;
  pipe.run();
  CHECK(sb.in_sync());
  CHECK(holds(*b.store, p, info, data));
  CHECK(sb.progress().projects.at(0).blobs_received == 1);
  CHECK(blob_bytes_received(sb) == data.size());
  CHECK(sa.progress().projects.at(0).blob_bytes_sent == data.size());
  auto wanted = b.store->blobs().wanted(p, std::nullopt, 10);
  REQUIRE(wanted.ok());
  CHECK(wanted->empty());
}

TEST_CASE("a tampered chunk is refused, the blob is fetched again, resuming", "[sync][blobs]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  Bytes data = pattern(6 * storage::kBlobChunkBytes);
  auto info = upload(*a.store, p, data);
  write_ref(a, p, "r1", info);
  {
    Session sa(*a.store, params("a"));
    Session sb(*b.store, params("b"));
    sa.start();
    sb.start();
    int chunks = 0;
    run_edited(sa, sb, [&](std::uint8_t type, Bytes& payload) {
      if (type == static_cast<std::uint8_t>(MsgType::blob_chunk) && ++chunks == 3)
        payload.back() ^= 0x01;  // the third chunk, one bit
    });
    CHECK(sb.in_sync());
    CHECK(!sb.finished());  // a bad chunk ends the transfer, not the session
    CHECK(!holds(*b.store, p, info, data));
  }
  // Another session (the same peer or another) fetches the rest; the good chunks stay.
  Session sa(*a.store, params("a"));
  Session sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.chunk = 1u << 20;
  pipe.run();
  CHECK(holds(*b.store, p, info, data));
  CHECK(blob_bytes_received(sb) < data.size());
  CHECK(blob_bytes_received(sb) >= 4 * storage::kBlobChunkBytes);
}

TEST_CASE("a transfer cut half-way resumes from the chunks that arrived", "[sync][blobs]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  Bytes data = pattern(8 * storage::kBlobChunkBytes + 99);
  auto info = upload(*a.store, p, data);
  write_ref(a, p, "r1", info);
  {
    Session sa(*a.store, params("a"));
    Session sb(*b.store, params("b"));
    sa.start();
    sb.start();
    Pipe pipe{sa, sb, &a, &b};
    pipe.chunk = 1u << 20;
    pipe.cut_after = data.size() / 2 + 20000;  // documents are tiny: the cut is in the blob
    pipe.run();
    REQUIRE(pipe.broken);
    CHECK(!holds(*b.store, p, info, data));
  }
  Session sa(*a.store, params("a"));
  Session sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.chunk = 1u << 20;
  pipe.run();
  CHECK(holds(*b.store, p, info, data));
  CHECK(blob_bytes_received(sb) < data.size() * 3 / 4);
}

TEST_CASE("without the blobs feature on one side no blob frame crosses", "[sync][blobs]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  Bytes data = pattern(300000);
  auto info = upload(*a.store, p, data);
  write_ref(a, p, "r1", info);
  SessionOptions slow;
  slow.exchange_blobs = false;  // e.g. a Bluetooth link
  Session sa(*a.store, params("a"));
  Session sb(*b.store, params("b", slow));
  sa.start();
  sb.start();
  int blob_frames = 0;
  run_edited(sa, sb, [&](std::uint8_t type, Bytes&) {
    if (type >= static_cast<std::uint8_t>(MsgType::blob_get)) ++blob_frames;
  });
  CHECK(sb.in_sync());
  CHECK(blob_frames == 0);
  CHECK(!holds(*b.store, p, info, data));
  auto wanted = b.store->blobs().wanted(p, std::nullopt, 10);
  REQUIRE(wanted.ok());
  CHECK(wanted->size() == 1);  // still wanted: a fast link will bring it
}

TEST_CASE("BLOB messages: encoding round trip and hostile payloads", "[sync][blobs]") {
  ProjectId p{};
  crypto::Digest id{};
  id[0] = 7;
  Bytes f;
  encode_blob_get(f, BlobGet{p, id, true, 3, kMaxBlobGetChunks});
  FrameDecoder d(1u << 20);
  d.feed(f);
  auto fr = d.next();
  REQUIRE((fr.ok() && *fr));
  auto g = decode_blob_get((*fr)->payload);
  REQUIRE(g.ok());
  CHECK((g->want_hashes && g->first == 3 && g->count == kMaxBlobGetChunks && g->blob == id));
  Bytes too_many((*fr)->payload.begin(), (*fr)->payload.end());
  too_many.back() = kMaxBlobGetChunks + 1;
  CHECK(decode_blob_get(too_many).error().code == Errc::too_large);
  DecodeLimits limits;
  limits.max_blob_chunks = 2;
  Bytes h;
  encode_blob_head(h, BlobHead{p, id, true, false, {id, id, id}});
  FrameDecoder dh(1u << 20);
  dh.feed(h);
  auto hf = dh.next();
  REQUIRE((hf.ok() && *hf));
  CHECK(decode_blob_head((*hf)->payload, limits).error().code == Errc::too_large);
  limits.max_blob_chunks = 3;
  auto head = decode_blob_head((*hf)->payload, limits);
  REQUIRE(head.ok());
  CHECK(head->hashes.size() == 3);
  Bytes oversized(16 + 32 + 4 + storage::kBlobChunkBytes + 1);
  CHECK(!decode_blob_chunk(oversized).ok());
}

TEST_CASE("a relay that gets a blob later tells the device that asked it", "[sync][blobs]") {
  Node a, b, c;
  ProjectId p = shared_project(a, b);
  {
    auto info = a.store->get_project(p);
    auto secret = a.store->project_secret(p);
    REQUIRE((info.ok() && secret.ok()));
    REQUIRE(c.store->add_project(*info, *secret).ok());
  }
  Bytes data = pattern(3 * storage::kBlobChunkBytes + 5);
  auto info = upload(*a.store, p, data);
  write_ref(a, p, "r1", info);
  // b gets the document from a over a link without blobs.
  SessionOptions no_blobs;
  no_blobs.exchange_blobs = false;
  {
    Session sa(*a.store, params("a"));
    Session sb(*b.store, params("b", no_blobs));
    sa.start();
    sb.start();
    Pipe pipe{sa, sb, &a, &b};
    pipe.run();
    REQUIRE(sb.in_sync());
  }
  // c asks b, which does not hold the photo yet.
  Session sbc(*b.store, params("b"));
  Session scb(*c.store, params("c"));
  sbc.start();
  scb.start();
  Pipe bc{sbc, scb, &b, &c};
  bc.chunk = 1u << 20;
  bc.run();
  REQUIRE(scb.in_sync());
  CHECK(!holds(*c.store, p, info, data));
  // b fetches it from a over a fast link; the live session with c is told and c asks again.
  {
    Session sa(*a.store, params("a"));
    Session sb(*b.store, params("b"));
    sa.start();
    sb.start();
    Pipe pipe{sa, sb, &a, &b};
    pipe.chunk = 1u << 20;
    pipe.run();
  }
  REQUIRE(holds(*b.store, p, info, data));
  sbc.notify_local_change(p);  // what the daemon does when the store reports the blob held
  bc.run();
  CHECK(holds(*c.store, p, info, data));
  CHECK(scb.progress().projects.at(0).blobs_received == 1);
}

TEST_CASE("blob messages outside the rules end the session", "[sync][blobs]") {
  Node a, fake;
  ProjectId p = shared_project(a, fake);
  auto info = upload(*a.store, p, pattern(300000));
  // A session of a, after the handshake with a peer announcing `features`, given `in`: how
  // it failed.
  auto refused_with = [&](std::uint64_t features, const Bytes& in) {
    Session s(*a.store, params("a"));
    s.start();
    handshake(s, fake, p, features);
    s.receive(in);
    REQUIRE(s.state() == SessionState::failed);
    return s.progress().error->code;
  };
  Bytes in;
  SECTION("a chunk not asked for") {
    encode_blob_chunk(in, p, info.id, 0, ByteView(pattern(10)));
    CHECK(refused_with(kFeatureBlobs, in) == Errc::invalid_argument);
  }
  SECTION("a BLOB_HEAD not asked for") {
    encode_blob_head(in, BlobHead{p, info.id, true, false, {}});
    CHECK(refused_with(kFeatureBlobs, in) == Errc::invalid_argument);
  }
  SECTION("more than four requests outstanding") {
    for (int i = 0; i < 5; ++i) encode_blob_get(in, BlobGet{p, info.id, false, 0, 1});
    CHECK(refused_with(kFeatureBlobs, in) == Errc::resource_exhausted);
  }
  SECTION("a project that is not common") {
    ProjectId other{};
    other.bytes[0] = 9;
    encode_blob_get(in, BlobGet{other, info.id, false, 0, 1});
    CHECK(refused_with(kFeatureBlobs, in) == Errc::permission_denied);
  }
  SECTION("a BLOB_GET from a peer that did not announce blobs") {
    encode_blob_get(in, BlobGet{p, info.id, false, 0, 1});
    CHECK(refused_with(kFeatureNone, in) == Errc::failed_precondition);
  }
}

namespace {

// A photo of `a` with its preview and thumbnail recorded in `_variants`, referred to by a
// document: the three blobs and their bytes.
struct Photo {
  storage::BlobInfo original, preview, thumbnail;
  Bytes original_bytes, preview_bytes, thumbnail_bytes;
};
Photo photo(Node& a, const ProjectId& p, const std::string& doc, std::uint8_t seed) {
  Photo ph;
  ph.original_bytes = pattern(3 * storage::kBlobChunkBytes + 77, seed);
  ph.preview_bytes = pattern(storage::kBlobChunkBytes / 2, seed + 1);
  ph.thumbnail_bytes = pattern(9000, seed + 2);
  ph.original = upload(*a.store, p, ph.original_bytes);
  ph.preview = upload(*a.store, p, ph.preview_bytes);
  ph.thumbnail = upload(*a.store, p, ph.thumbnail_bytes);
  REQUIRE(a.store->set_blob_variants(p, ph.original, ph.preview, ph.thumbnail, "fieldsync").ok());
  write_ref(a, p, doc, ph.original);
  return ph;
}

void set_level(Node& n, const ProjectId& p, storage::BlobPolicy level) {
  storage::ProjectBlobPolicy pol;
  pol.policy = level;
  REQUIRE(n.store->blobs().set_policy(p, pol).ok());
}

}  // namespace

TEST_CASE("blob policy: a phone fetches thumbnails and previews, and a peer may have its own level",
          "[sync][blobs]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  Photo one = photo(a, p, "site1", 10);
  Photo two = photo(a, p, "site2", 20);
  set_level(b, p, storage::BlobPolicy::phone);
  {
    Session sa(*a.store, params("a"));
    Session sb(*b.store, params("b"));
    sa.start();
    sb.start();
    Pipe pipe{sa, sb, &a, &b};
    pipe.chunk = 1u << 20;
    pipe.run();
    REQUIRE(sb.in_sync());
    for (const Photo* ph : {&one, &two}) {
      CHECK(holds(*b.store, p, ph->thumbnail, ph->thumbnail_bytes));
      CHECK(holds(*b.store, p, ph->preview, ph->preview_bytes));
      CHECK(!holds(*b.store, p, ph->original, ph->original_bytes));
    }
    // Both sides see what is left: b still lacks the two originals, which it does not fetch
    // by itself; a is told (BLOB_WANTS) what b wants under its policy: nothing. (The last
    // blob is recorded on b's worker after the session is idle: the store's notice of it is
    // what makes the session count again.)
    pipe.run();
    auto pb = sb.progress().projects.at(0);
    CHECK(pb.blob_policy == "phone");
    CHECK(pb.blobs_to_receive == 0);
    CHECK(sa.progress().projects.at(0).blobs_to_send == 0);
    CHECK(sb.progress().projects.at(0).blobs_received == 4);
  }
  // With this peer b keeps everything (a per-peer level), so the originals come too.
  storage::ProjectBlobPolicy pol;
  pol.policy = storage::BlobPolicy::phone;
  pol.peers[a.store->device_id()] = storage::BlobPolicy::archive;
  REQUIRE(b.store->blobs().set_policy(p, pol).ok());
  auto back = b.store->blobs().policy(p);
  REQUIRE(back.ok());
  CHECK(back->peers.size() == 1);
  CHECK(b.store->blobs().policy_with(p, a.store->device_id()) == storage::BlobPolicy::archive);
  Session sa(*a.store, params("a"));
  Session sb(*b.store, params("b"));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.chunk = 1u << 20;
  pipe.run();
  CHECK(holds(*b.store, p, one.original, one.original_bytes));
  CHECK(holds(*b.store, p, two.original, two.original_bytes));
}

TEST_CASE("a link capped at thumbnails carries thumbnails only, whatever the policy",
          "[sync][blobs]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  Photo one = photo(a, p, "site1", 30);
  SessionOptions slow;
  slow.blob_link_policy = storage::BlobPolicy::thumbnails;
  Session sa(*a.store, params("a", slow));
  Session sb(*b.store, params("b", slow));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb, &a, &b};
  pipe.chunk = 1u << 20;
  pipe.run();
  REQUIRE(sb.in_sync());
  CHECK(holds(*b.store, p, one.thumbnail, one.thumbnail_bytes));
  CHECK(!holds(*b.store, p, one.preview, one.preview_bytes));
  CHECK(!holds(*b.store, p, one.original, one.original_bytes));
  CHECK(sb.progress().projects.at(0).blob_policy == "thumbnails");
}

TEST_CASE("an original asked for on demand comes from a peer two hops away", "[sync][blobs]") {
  Node a, b, c;
  ProjectId p = shared_project(a, b);
  {
    auto info = a.store->get_project(p);
    auto secret = a.store->project_secret(p);
    REQUIRE((info.ok() && secret.ok()));
    REQUIRE(c.store->add_project(*info, *secret).ok());
  }
  Photo one = photo(a, p, "site1", 40);
  set_level(b, p, storage::BlobPolicy::phone);
  set_level(c, p, storage::BlobPolicy::phone);
  // a - b - c, both links live; c never meets a.
  Session sab(*a.store, params("a"));
  Session sba(*b.store, params("b"));
  Session sbc(*b.store, params("b"));
  Session scb(*c.store, params("c"));
  for (Session* s : {&sab, &sba, &sbc, &scb}) s->start();
  Pipe ab{sab, sba};
  Pipe bc{sbc, scb};
  ab.chunk = bc.chunk = 1u << 20;
  auto run_all = [&] {
    for (int i = 0; i < 4; ++i) {
      for (Session* s : {&sab, &sba, &sbc, &scb}) s->notify_local_change(p);
      ab.run();
      bc.run();
      flush(*b.store);
      flush(*c.store);
    }
  };
  run_all();
  REQUIRE(scb.in_sync());
  CHECK(holds(*c.store, p, one.preview, one.preview_bytes));
  CHECK(!holds(*b.store, p, one.original, one.original_bytes));
  CHECK(!holds(*c.store, p, one.original, one.original_bytes));
  // An app on c asks for the original: c asks b, which lacks it and asks a in turn.
  auto d = c.store->blobs().demand(p, one.original.id);
  REQUIRE(d.ok());
  CHECK((!d->held && d->size == one.original.size && d->until_ms > 0));
  CHECK(c.store->blobs().demanded(p) == std::vector<storage::BlobId>{one.original.id});
  run_all();
  CHECK(holds(*c.store, p, one.original, one.original_bytes));
  CHECK(holds(*b.store, p, one.original, one.original_bytes));  // b relayed it
  CHECK(c.store->blobs().demanded(p).empty());                  // held: the demand ended
  auto again = c.store->blobs().demand(p, one.original.id);
  REQUIRE(again.ok());
  CHECK((again->held && again->received_bytes == one.original.size));

  // Past blob.keep_fetched_ms, b and c let the original go (beyond their `phone` level; a
  // keeps its own upload). Asked for again, it comes again over the same sessions.
  const std::int64_t later = unix_ms() + 2 * 24 * 3600 * 1000ll;
  for (Node* n : {&b, &c}) {
    auto g = n->store->blobs().gc(later);
    REQUIRE(g.ok());
    CHECK(g->released == 1);
  }
  CHECK(a.store->blobs().gc(later)->released == 0);
  CHECK(!holds(*b.store, p, one.original, one.original_bytes));
  CHECK(!holds(*c.store, p, one.original, one.original_bytes));
  CHECK(holds(*c.store, p, one.preview, one.preview_bytes));
  REQUIRE(c.store->blobs().demand(p, one.original.id).ok());
  run_all();
  CHECK(holds(*c.store, p, one.original, one.original_bytes));
  CHECK(holds(*b.store, p, one.original, one.original_bytes));
}

TEST_CASE("blob policy records: bad levels refused, left with the project", "[sync][blobs]") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  storage::ProjectBlobPolicy pol;
  pol.policy = storage::BlobPolicy::none;
  CHECK(a.store->blobs().set_policy(p, pol).error().code == Errc::invalid_argument);
  pol.policy.reset();
  for (std::size_t i = 0; i <= storage::kMaxBlobPolicyPeers; ++i) {
    DeviceId d;
    d.bytes[0] = static_cast<std::uint8_t>(i >> 8);
    d.bytes[1] = static_cast<std::uint8_t>(i);
    pol.peers[d] = storage::BlobPolicy::none;
  }
  CHECK(a.store->blobs().set_policy(p, pol).error().code == Errc::invalid_argument);
  pol.peers.erase(pol.peers.begin());
  REQUIRE(a.store->blobs().set_policy(p, pol).ok());
  auto back = a.store->blobs().policy(p);
  REQUIRE(back.ok());
  CHECK((!back->policy && back->peers == pol.peers));
  CHECK(a.store->blobs().policy_with(p, pol.peers.begin()->first) == storage::BlobPolicy::none);
  CHECK(a.store->blobs().policy_with(p, DeviceId{}) == storage::BlobPolicy::archive);
  REQUIRE(a.store->leave_project(p).ok());
  CHECK(a.store->blobs().policy(p).error().code == Errc::not_found);
  CHECK(a.store->blobs().policy_with(p, DeviceId{}) == storage::BlobPolicy::archive);
}

TEST_CASE("BLOB_WANTS: round trip and malformed payloads", "[sync][blobs]") {
  ProjectId p{};
  p.bytes[3] = 9;
  Bytes f;
  encode_blob_wants(f, BlobWants{p, 12, 3456789});
  FrameDecoder d(1u << 20);
  d.feed(f);
  auto fr = d.next();
  REQUIRE((fr.ok() && *fr));
  auto w = decode_blob_wants((*fr)->payload);
  REQUIRE(w.ok());
  CHECK((w->project == p && w->blobs == 12 && w->bytes == 3456789));
  Bytes longer((*fr)->payload.begin(), (*fr)->payload.end());
  longer.push_back(0);
  CHECK(!decode_blob_wants(longer).ok());
  CHECK(!decode_blob_wants(ByteView(longer).first(20)).ok());
}
