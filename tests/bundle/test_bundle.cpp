// Bundles between real stores: round trips, bundles for devices, convergence both ways, and
// every kind of damage (truncation, flipped bytes, oversized lengths, replays, wrong projects,
// removed producers, newer formats, forged END).
#include <algorithm>

#include "bundle_test_util.hpp"

using namespace fieldsync;
using namespace fieldsync::bundle;
using namespace fieldsync::bundle::test;

namespace {

bool contains(ByteView hay, ByteView needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

bool mentions(const Error& e, std::string_view words) {
  return e.message.find(words) != std::string::npos;
}

// Small chunks and batches, so a few hundred entries make many of each.
ExportOptions small(std::vector<DeviceId> for_devices = {}) {
  ExportOptions o;
  o.chunk_bytes = kMinChunkBytes;
  o.batch_entries = 40;
  o.device_name = "field laptop";
  o.for_devices = std::move(for_devices);
  return o;
}

// A: a project with 300 documents (3 batches of writes) shared with B (which holds nothing).
struct Pair {
  Node a{16}, b{16};
  ProjectId p = shared_project(a, b);
  Pair() {
    a.write_docs(p, 0, 100);
    a.write_docs(p, 100, 100);
    a.write_docs(p, 200, 100);
  }
  // BEGIN of a bundle that A makes of everything it holds.
  void begin_as_a(Crafted& c) const {
    detail::Begin b;
    b.project = p;
    b.producer = a.store->device_id();
    b.holds = vv(*a.store, p);
    c.begin(b);
  }
};

}  // namespace

TEST_CASE("bundle: round trip from one store into another, in any split") {
  Pair t;
  BundleWriter::Stats stats;
  Bytes file = must_export(*t.a.store, t.p, small(), &stats);
  CHECK(stats.entries == total(vv(*t.a.store, t.p)));
  CHECK(stats.batches >= 8);
  CHECK(chunks_of(file).size() > 20);
  // Nothing in the file names the project or the device in clear.
  CHECK_FALSE(contains(file, t.p.view()));
  CHECK_FALSE(contains(file, t.a.store->device_id().view()));
  CHECK_FALSE(contains(file, as_bytes("field laptop")));
  CHECK_FALSE(contains(file, as_bytes("\"tag\":\"v\"")));

  for (std::size_t piece : {std::size_t{1}, std::size_t{7}, std::size_t{100000}}) {
    Node b{16};
    auto secret = t.a.store->project_secret(t.p);
    auto info = t.a.store->get_project(t.p);
    REQUIRE(b.store->add_project(*info, *secret).ok());
    ImportReport r = must_import(*b.store, file, piece);
    CHECK(r.complete);
    CHECK(r.project == t.p);
    CHECK(r.producer == t.a.store->device_id());
    CHECK(r.producer_name == "field laptop");
    CHECK(r.created_ms > 0);
    CHECK(r.entries == stats.entries);
    CHECK(r.applied == stats.entries);
    CHECK(r.duplicates == 0);
    CHECK(r.batches == stats.batches);
    CHECK(vv(*b.store, t.p) == vv(*t.a.store, t.p));
    CHECK(sync::test::doc(b, t.p, "d123").body == sync::test::doc(t.a, t.p, "d123").body);
    // The producer's vector is recorded: a bundle carried back leaves it out.
    auto held = b.store->peer_holds(t.a.store->device_id(), t.p);
    REQUIRE(held.ok());
    CHECK(*held == vv(*t.a.store, t.p));
  }
}

TEST_CASE("bundle: made for devices, it holds only what they lack") {
  Pair t;
  DeviceId a_id = t.a.store->device_id(), b_id = t.b.store->device_id();
  // A -> B: everything (A knows nothing of B yet, so for_devices = {B} is everything too).
  BundleWriter::Stats full;
  Bytes first = must_export(*t.a.store, t.p, small({b_id}), &full);
  CHECK(full.entries == total(vv(*t.a.store, t.p)));
  must_import(*t.b.store, first);

  // B writes 10 more and sends a bundle for A: only those 10 (B knows what A holds).
  t.b.write_docs(t.p, 1000, 10, "b");
  BundleWriter::Stats back;
  Bytes second = must_export(*t.b.store, t.p, small({a_id}), &back);
  CHECK(back.entries == 10);
  CHECK(second.size() * 10 < first.size());
  ImportReport r = must_import(*t.a.store, second);
  CHECK(r.applied == 10);
  CHECK(vv(*t.a.store, t.p) == vv(*t.b.store, t.p));

  // A -> B again: B's bundle told A what B holds, so nothing is left to carry.
  BundleWriter::Stats again;
  Bytes third = must_export(*t.a.store, t.p, small({b_id}), &again);
  CHECK(again.entries == 0);
  CHECK(third.size() < 600);
  ImportReport r3 = must_import(*t.b.store, third);
  CHECK(r3.complete);
  CHECK(r3.entries == 0);

  // Without for_devices the export is everything again.
  BundleWriter::Stats everything;
  must_export(*t.a.store, t.p, small(), &everything);
  CHECK(everything.entries == total(vv(*t.a.store, t.p)));

  // For two devices: per author the minimum of what they hold; an unknown device holds
  // nothing, so everything goes.
  Node stranger;
  BundleWriter::Stats both;
  must_export(*t.a.store, t.p, small({b_id, stranger.store->device_id()}), &both);
  CHECK(both.entries == total(vv(*t.a.store, t.p)));
}

TEST_CASE("bundle: made for others, it is refused where the entries it leaves out are lacking") {
  Pair t;
  const DeviceId a_id = t.a.store->device_id(), b_id = t.b.store->device_id();
  auto secret = t.a.store->project_secret(t.p);
  auto info = t.a.store->get_project(t.p);
  must_import(*t.b.store, must_export(*t.a.store, t.p, small()));
  t.b.write_docs(t.p, 500, 5, "b");

  // B's bundle for A leaves out A's log (A wrote it) and carries B's whole log. Leaving out a
  // log the bundle has nothing of is no gap: C, holding nothing, takes B's entries from it.
  Bytes first_for_a = must_export(*t.b.store, t.p, small({a_id}));
  Node c;
  REQUIRE(c.store->add_project(*info, *secret).ok());
  ImportReport rc = must_import(*c.store, first_for_a);
  CHECK(rc.applied == 5);
  CHECK(vv(*c.store, t.p).at(b_id) == 5);

  must_import(*t.a.store, first_for_a);
  must_import(*t.b.store, must_export(*t.a.store, t.p, small({b_id})));  // B learns A holds B:5
  // B's next bundle for A leaves out A's log and B's first 5 entries.
  t.b.write_docs(t.p, 600, 5, "b2");
  BundleWriter::Stats stats;
  Bytes for_a = must_export(*t.b.store, t.p, small({a_id}), &stats);
  CHECK(stats.entries == 5);
  CHECK(*t.a.store->peer_holds(b_id, t.p) == vv(*t.a.store, t.p));

  // D holds nothing of B: B's entries 6..10 cannot be applied there. Nothing is.
  Node d;
  REQUIRE(d.store->add_project(*info, *secret).ok());
  auto r = import_bytes(*d.store, for_a);
  REQUIRE_FALSE(r.result.ok());
  CHECK(r.result.error().code == Errc::failed_precondition);
  CHECK(mentions(r.result.error(), "starts after seq 5 of " + b_id.short_str()));
  CHECK(mentions(r.result.error(), "export one for this device"));
  CHECK(total(vv(*d.store, t.p)) == 0);
  CHECK(r.progress.applied == 0);
  // C holds B's first 5: the same bundle applies there.
  CHECK(must_import(*c.store, for_a).applied == 5);
  CHECK(vv(*c.store, t.p).at(b_id) == 10);
}

TEST_CASE("bundle: concurrent edits carried both ways converge") {
  Pair t;
  must_import(*t.b.store, must_export(*t.a.store, t.p, small()));
  // Both edit the same documents, and some of their own, without meeting.
  t.a.write_docs(t.p, 0, 30, "from-a");
  t.a.write_docs(t.p, 400, 5, "a-only");
  t.b.write_docs(t.p, 10, 30, "from-b");
  t.b.write_docs(t.p, 500, 5, "b-only");
  Bytes a_to_b = must_export(*t.a.store, t.p, small({t.b.store->device_id()}));
  Bytes b_to_a = must_export(*t.b.store, t.p, small({t.a.store->device_id()}));
  must_import(*t.b.store, a_to_b);
  must_import(*t.a.store, b_to_a);
  CHECK(vv(*t.a.store, t.p) == vv(*t.b.store, t.p));
  for (int i : {0, 15, 25, 35, 401, 502}) {
    auto da = sync::test::doc(t.a, t.p, "d" + std::to_string(i));
    auto db = sync::test::doc(t.b, t.p, "d" + std::to_string(i));
    CHECK(da.heads == db.heads);
    CHECK(da.winner == db.winner);
    CHECK(da.body == db.body);
  }
  CHECK(sync::test::doc(t.a, t.p, "d15").in_conflict());  // edited on both sides
  CHECK(sync::test::doc(t.b, t.p, "d502").body->find("b-only") != std::string::npos);
}

TEST_CASE("bundle: truncated anywhere, it applies only whole verified chunks and says so") {
  Pair t;
  Bytes file = must_export(*t.a.store, t.p, small());
  auto chunks = chunks_of(file);
  auto secret = t.a.store->project_secret(t.p);
  auto info = t.a.store->get_project(t.p);
  auto fresh = [&] {
    auto n = std::make_unique<Node>(16);
    REQUIRE(n->store->add_project(*info, *secret).ok());
    return n;
  };
  // What a reader applies from the first k whole chunks (k = 0 .. all but the last).
  std::vector<std::uint64_t> applied_after(chunks.size(), 0);
  for (std::size_t k = 1; k < chunks.size(); ++k) {
    auto n = fresh();
    auto r = import_bytes(*n->store, ByteView(file).first(chunks[k - 1].end));
    CHECK(r.result.error().code == Errc::data_loss);
    applied_after[k] = r.progress.applied;
    CHECK(total(vv(*n->store, t.p)) == r.progress.applied);
    CHECK(applied_after[k] >= applied_after[k - 1]);
  }
  CHECK(applied_after.back() > 0);

  std::mt19937 rng(42);
  for (int i = 0; i < 25; ++i) {
    std::size_t cut = 1 + rng() % (file.size() - 1);
    INFO("cut after " << cut << " of " << file.size() << " bytes");
    auto n = fresh();
    auto r = import_bytes(*n->store, ByteView(file).first(cut), 1 + rng() % 3000);
    REQUIRE_FALSE(r.result.ok());
    CHECK(r.result.error().code == Errc::data_loss);
    CHECK(mentions(r.result.error(), "truncated after " + std::to_string(cut) + " bytes"));
    CHECK(mentions(r.result.error(), std::to_string(r.progress.applied) + " entr"));
    CHECK_FALSE(r.progress.complete);
    // Exactly what the whole chunks before the cut hold.
    std::size_t whole = 0;
    while (whole < chunks.size() && chunks[whole].end <= cut) ++whole;
    CHECK(r.progress.applied == applied_after[std::min(whole, chunks.size() - 1)]);
    CHECK(total(vv(*n->store, t.p)) == r.progress.applied);
    CHECK(n->store->peer_holds(t.a.store->device_id(), t.p)->empty());
    // The whole file afterwards completes (the rest is applied, the start counted as held).
    ImportReport full = must_import(*n->store, file);
    CHECK(full.duplicates == r.progress.applied);
    CHECK(vv(*n->store, t.p) == vv(*t.a.store, t.p));
  }
}

TEST_CASE("bundle: a flipped byte is found where it is, and nothing after it is applied") {
  Pair t;
  Bytes file = must_export(*t.a.store, t.p, small());
  auto chunks = chunks_of(file);
  auto secret = t.a.store->project_secret(t.p);
  auto info = t.a.store->get_project(t.p);
  auto try_with = [&](std::size_t at, std::uint8_t mask) {
    Node n{16};
    REQUIRE(n.store->add_project(*info, *secret).ok());
    Bytes bad = file;
    bad[at] ^= mask;
    auto r = import_bytes(*n.store, bad);
    REQUIRE_FALSE(r.result.ok());
    CHECK(total(vv(*n.store, t.p)) == r.progress.applied);
    CHECK_FALSE(r.progress.complete);
    return std::make_pair(r.result.error(), r.progress.applied);
  };

  SECTION("header") {
    auto [magic, m0] = try_with(0, 0x20);
    CHECK(magic.code == Errc::invalid_argument);
    CHECK(mentions(magic, "not a fieldsync bundle"));
    auto [reserved, r0] = try_with(10, 0x01);  // covered as the chunks' associated data
    CHECK(reserved.code == Errc::verification_failed);
    CHECK(mentions(reserved, "chunk 0 (byte offset 48)"));
    CHECK(r0 == 0);
    auto [salt, s0] = try_with(20, 0x01);  // the tag no longer matches the project
    CHECK(salt.code == Errc::not_found);
    auto [tag, t0] = try_with(40, 0x80);
    CHECK(tag.code == Errc::not_found);
    CHECK(mentions(tag, "no project on this device matches"));
  }
  SECTION("inside a chunk: authentication fails at that chunk") {
    for (std::size_t k : {std::size_t{0}, chunks.size() / 2, chunks.size() - 1}) {
      auto [e, applied] = try_with(chunks[k].begin + 4 + (chunks[k].end - chunks[k].begin) / 2, 4);
      CHECK(e.code == Errc::verification_failed);
      CHECK(mentions(e, "authentication failed at chunk " + std::to_string(k) + " (byte offset " +
                            std::to_string(chunks[k].begin) + ")"));
      // Exactly what the chunks before it hold.
      Node ref{16};
      REQUIRE(ref.store->add_project(*info, *secret).ok());
      CHECK(applied ==
            import_bytes(*ref.store, ByteView(file).first(chunks[k].begin)).progress.applied);
      if (k == 0) CHECK(applied == 0);
    }
  }
  SECTION("in a length field") {
    std::size_t k = chunks.size() / 2;
    auto [shorter, a1] = try_with(chunks[k].begin + 3, 0x01);  // 1 byte more or less
    CHECK((shorter.code == Errc::verification_failed || shorter.code == Errc::data_loss));
    auto [flag, a2] = try_with(chunks[k].begin, 0x80);  // claims to be the last chunk
    CHECK(flag.code == Errc::verification_failed);
    CHECK(mentions(flag, "chunk " + std::to_string(k)));
    auto [huge, a3] = try_with(chunks[k].begin, 0x40);  // ~1 GiB: refused before buffering
    CHECK(huge.code == Errc::too_large);
    auto [last_flag, a4] = try_with(chunks.back().begin, 0x80);  // last chunk not marked last
    CHECK(last_flag.code == Errc::verification_failed);
  }
}

TEST_CASE("bundle: chunks reordered, repeated or left out fail authentication") {
  Pair t;
  Bytes file = must_export(*t.a.store, t.p, small());
  auto c = chunks_of(file);
  REQUIRE(c.size() > 4);
  auto piece = [&](std::size_t k) {
    return Bytes(file.begin() + static_cast<std::ptrdiff_t>(c[k].begin),
                 file.begin() + static_cast<std::ptrdiff_t>(c[k].end));
  };
  auto build = [&](std::vector<std::size_t> order) {
    Bytes out(file.begin(), file.begin() + kHeaderBytes);
    for (auto k : order) append(out, piece(k));
    return out;
  };
  std::vector<std::size_t> all(c.size());
  for (std::size_t k = 0; k < c.size(); ++k) all[k] = k;
  auto swapped = all;
  std::swap(swapped[1], swapped[2]);
  auto repeated = all;
  repeated.insert(repeated.begin() + 2, 1);
  auto dropped = all;
  dropped.erase(dropped.begin() + 2);
  // The first position where the chunk is not the one expected there.
  for (const auto& [order, at] :
       {std::pair{swapped, 1}, std::pair{repeated, 2}, std::pair{dropped, 2}}) {
    Node n{16};
    REQUIRE(
        n.store->add_project(*t.a.store->get_project(t.p), *t.a.store->project_secret(t.p)).ok());
    auto r = import_bytes(*n.store, build(order));
    REQUIRE_FALSE(r.result.ok());
    CHECK(r.result.error().code == Errc::verification_failed);
    CHECK(mentions(r.result.error(), "chunk " + std::to_string(at) + " "));
  }
  // And bytes after the last chunk are refused (the bundle itself was applied).
  Node n{16};
  REQUIRE(n.store->add_project(*t.a.store->get_project(t.p), *t.a.store->project_secret(t.p)).ok());
  Bytes longer = file;
  longer.push_back(0);
  auto r = import_bytes(*n.store, longer);
  CHECK(r.result.error().code == Errc::invalid_argument);
  CHECK(mentions(r.result.error(), "after the end of the bundle"));
}

TEST_CASE("bundle: a device without the project finds no match and nothing changes") {
  Pair t;
  Bytes file = must_export(*t.a.store, t.p, small());
  Node other;
  auto own = other.store->create_project("another");
  REQUIRE(own.ok());
  auto r = import_bytes(*other.store, file);
  REQUIRE_FALSE(r.result.ok());
  CHECK(r.result.error().code == Errc::not_found);
  CHECK(mentions(r.result.error(), "no project on this device matches this bundle"));
  CHECK(r.progress.applied == 0);
  auto projects = other.store->list_projects();
  REQUIRE(projects->size() == 1);
  // Not a bundle at all.
  auto junk = import_bytes(*other.store, as_bytes("{\"hello\": \"world\"} and more text here..."));
  CHECK(junk.result.error().code == Errc::invalid_argument);
  CHECK(import_bytes(*other.store, ByteView{}).result.error().code == Errc::invalid_argument);
}

TEST_CASE("bundle: the same bundle twice is refused and changes nothing") {
  Pair t;
  Bytes file = must_export(*t.a.store, t.p, small());
  must_import(*t.b.store, file);
  auto before = vv(*t.b.store, t.p);
  auto changes = t.b.store->last_change_seq(t.p);
  auto r = import_bytes(*t.b.store, file);
  REQUIRE_FALSE(r.result.ok());
  CHECK(r.result.error().code == Errc::already_exists);
  CHECK(r.result.error().message == "this bundle was already imported");
  CHECK(r.progress.entries == 0);
  CHECK(vv(*t.b.store, t.p) == before);
  CHECK(*t.b.store->last_change_seq(t.p) == *changes);
  // Another export of the same data is another bundle: it imports, all duplicates.
  ImportReport again = must_import(*t.b.store, must_export(*t.a.store, t.p, small()));
  CHECK(again.applied == 0);
  CHECK(again.duplicates == total(before));
  // A device importing its own bundle: all duplicates, and no "peer" record of itself.
  ImportReport own = must_import(*t.a.store, must_export(*t.a.store, t.p, small()));
  CHECK(own.complete);
  CHECK(own.applied == 0);
}

TEST_CASE("bundle: data after END or after the last chunk is refused and not remembered") {
  Pair t;
  auto v = vv(*t.a.store, t.p);
  const DeviceId a_id = t.a.store->device_id();
  // A's log as a hand-made bundle whose END is good, then `tail` in its last chunk after END.
  auto crafted = [&](ByteView tail, storage::BundleId* salt) {
    Crafted c(*t.a.store, t.p);
    detail::Begin b;
    b.project = t.p;
    b.producer = a_id;
    b.holds = v;
    c.begin(b);
    std::uint64_t after = 0, entries = 0, batches = 0;
    while (after < v.at(a_id)) {
      auto log = t.a.store->read_log(t.p, a_id, after, 100, 1u << 20);
      REQUIRE(log.ok());
      after = log->entries.back().seq;
      entries += log->entries.size();
      ++batches;
      c.batch(t.p, std::move(*log));
    }
    c.end(t.a.store->signing_key(), entries, batches);
    append(c.plain, tail);
    *salt = c.salt;
    return c.seal(1u << 20);  // one chunk: END and the tail in the last one
  };
  const Bytes extension = {0x80, 0, 0, 0, 1, 'x'};  // a whole (ignorable) record
  const Bytes partial = {0x80, 0, 0};               // part of a record header
  Bytes file = must_export(*t.a.store, t.p, small());
  Bytes longer = file;
  longer.push_back(0);  // a byte after the last chunk
  storage::BundleId file_salt{};
  std::copy_n(file.begin() + 16, file_salt.size(), file_salt.begin());

  struct Case {
    const char* name;
    Bytes bytes;
    storage::BundleId salt;
    const char* says;
  };
  std::vector<Case> cases;
  storage::BundleId s1{}, s2{};
  Bytes f1 = crafted(extension, &s1), f2 = crafted(partial, &s2);
  cases.push_back({"a record after END", f1, s1, "data after the END record in chunk 0"});
  cases.push_back({"part of a record after END", f2, s2, "data after the END record in chunk 0"});
  cases.push_back(
      {"a byte after the last chunk", longer, file_salt, "after the end of the bundle"});
  for (const auto& c : cases) {
    SECTION(c.name) {
      for (std::size_t piece : {std::size_t{1} << 30, std::size_t{100}}) {
        Node n{16};
        REQUIRE(n.store->add_project(*t.a.store->get_project(t.p), *t.a.store->project_secret(t.p))
                    .ok());
        auto r = import_bytes(*n.store, c.bytes, piece);
        REQUIRE_FALSE(r.result.ok());
        CHECK(r.result.error().code == Errc::invalid_argument);
        CHECK(mentions(r.result.error(), c.says));
        CHECK_FALSE(r.progress.complete);
        // The entries verified by their author stay; nothing is recorded of the bundle or of
        // its producer, so a good copy of the same file still imports (all duplicates).
        CHECK(vv(*n.store, t.p) == v);
        CHECK_FALSE(*n.store->bundle_imported(t.p, c.salt));
        CHECK(n.store->peer_holds(a_id, t.p)->empty());
        ImportReport good = must_import(*n.store, file);
        CHECK(good.duplicates == total(v));
        CHECK(*n.store->bundle_imported(t.p, file_salt));
        CHECK(*n.store->peer_holds(a_id, t.p) == v);
      }
    }
  }
}

TEST_CASE("bundle: from a removed device it is refused before anything is applied") {
  Node a, b;
  ProjectId p = shared_project(a, b);
  REQUIRE(a.store->set_member(p, b.store->device_id(), storage::Role::member).ok());
  must_import(*b.store, must_export(*a.store, p, small()));
  REQUIRE(a.store->set_member(p, b.store->device_id(), storage::Role::removed).ok());
  b.write_docs(p, 0, 20, "late");
  Bytes file = must_export(*b.store, p, small());
  auto before = vv(*a.store, p);
  auto r = import_bytes(*a.store, file);
  REQUIRE_FALSE(r.result.ok());
  CHECK(r.result.error().code == Errc::permission_denied);
  CHECK(mentions(r.result.error(), "bundle from a removed device"));
  CHECK(r.progress.applied == 0);
  CHECK(vv(*a.store, p) == before);
}

TEST_CASE("bundle: a removed author's later writes, relayed in a bundle, stay out of documents") {
  Node a, b, c;
  ProjectId p = shared_project(a, b);
  REQUIRE(c.store->add_project(*a.store->get_project(p), *a.store->project_secret(p)).ok());
  REQUIRE(a.store->set_member(p, b.store->device_id(), storage::Role::member).ok());
  REQUIRE(a.store->set_member(p, c.store->device_id(), storage::Role::member).ok());
  Bytes start = must_export(*a.store, p, small());
  must_import(*b.store, start);
  must_import(*c.store, start);
  REQUIRE(a.store->set_member(p, b.store->device_id(), storage::Role::removed).ok());
  // B does not know yet; its late write reaches A through C, whose bundle A accepts.
  b.write_docs(p, 0, 1, "late");
  must_import(*c.store, must_export(*b.store, p, small()));
  ImportReport r = must_import(*a.store, must_export(*c.store, p, small()));
  CHECK(r.complete);
  CHECK(vv(*a.store, p).at(b.store->device_id()) == vv(*b.store, p).at(b.store->device_id()));
  CHECK(a.store->get_document(p, "obs", "d0").error().code == Errc::not_found);
  CHECK(c.store->get_document(p, "obs", "d0").ok());  // C has not heard of the removal
}

TEST_CASE("bundle: oversized chunk lengths and records are refused before buffering") {
  Pair t;
  Bytes file = must_export(*t.a.store, t.p, small());
  auto c = chunks_of(file);
  Bytes bad = file;
  std::uint32_t field = kMaxChunkBytes + crypto::kAeadTagBytes + 1;
  for (int i = 0; i < 4; ++i)
    bad[c[1].begin + static_cast<std::size_t>(i)] =
        static_cast<std::uint8_t>(field >> (24 - 8 * i));
  auto r = import_bytes(*t.b.store, ByteView(bad).first(c[1].begin + 4));  // not one byte more
  REQUIRE_FALSE(r.result.ok());
  CHECK(r.result.error().code == Errc::too_large);
  CHECK(mentions(r.result.error(), "chunk 1 (byte offset " + std::to_string(c[1].begin) + ")"));

  // A record over the importer's limit: too_large, and what came before stays applied.
  Node n{16};
  REQUIRE(n.store->add_project(*t.a.store->get_project(t.p), *t.a.store->project_secret(t.p)).ok());
  ImportOptions tight;
  tight.max_record_bytes = 2000;  // a batch of 40 entries is larger
  auto big = import_bytes(*n.store, file, 4096, tight);
  REQUIRE_FALSE(big.result.ok());
  CHECK(big.result.error().code == Errc::too_large);
  CHECK(mentions(big.result.error(), "bundle.max_record_bytes"));
  // The writer keeps to the same bound: a run that does not fit even alone is too_large.
  ExportOptions o = small();
  o.max_record_bytes = 500;
  auto w = export_bytes(*t.a.store, t.p, o);
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == Errc::too_large);
  // Smaller batches than asked for when a batch would not fit: the bundle still completes.
  o.max_record_bytes = 4000;
  o.batch_entries = 2048;
  Node m{16};
  REQUIRE(m.store->add_project(*t.a.store->get_project(t.p), *t.a.store->project_secret(t.p)).ok());
  ImportOptions four_k;
  four_k.max_record_bytes = 4000;
  auto ok = import_bytes(*m.store, must_export(*t.a.store, t.p, o), 4096, four_k);
  REQUIRE(ok.result.ok());
  CHECK(vv(*m.store, t.p) == vv(*t.a.store, t.p));
}

TEST_CASE("bundle: a newer format is unsupported, and says so before anything else") {
  Pair t;
  Bytes file = must_export(*t.a.store, t.p, small());
  Bytes newer = file;
  newer[8] = kFormatVersion + 1;
  auto r = import_bytes(*t.b.store, ByteView(newer).first(9));
  REQUIRE_FALSE(r.result.ok());
  CHECK(r.result.error().code == Errc::unsupported);
  CHECK(mentions(r.result.error(), "newer"));
  // An unknown record type: skipped when ignorable, unsupported otherwise.
  auto craft = [&](std::uint8_t type) {
    Crafted c(*t.a.store, t.p);
    detail::Begin b;
    b.project = t.p;
    b.producer = t.a.store->device_id();
    b.holds = vv(*t.a.store, t.p);
    c.begin(b);
    c.record(type, as_bytes("from a later version"));
    c.end(t.a.store->signing_key(), 0, 0);
    return c.seal();
  };
  auto skipped = import_bytes(*t.b.store, craft(0x90));
  CHECK(skipped.result.ok());
  auto refused = import_bytes(*t.b.store, craft(0x10));
  REQUIRE_FALSE(refused.result.ok());
  CHECK(refused.result.error().code == Errc::unsupported);
}

TEST_CASE(
    "bundle: a bad END signature keeps verified entries but records nothing of the producer") {
  Pair t;
  Node forger;
  auto v = vv(*t.a.store, t.p);
  Crafted c(*t.a.store, t.p);
  detail::Begin b;
  b.project = t.p;
  b.producer = t.a.store->device_id();  // claims to be A
  b.holds = v;
  c.begin(b);
  std::uint64_t entries = 0, batches = 0;
  for (const auto& [author, head] : v) {
    std::uint64_t after = 0;
    while (after < head) {
      auto log = t.a.store->read_log(t.p, author, after, 100, 1u << 20);
      REQUIRE(log.ok());
      after = log->entries.back().seq;
      entries += log->entries.size();
      ++batches;
      c.batch(t.p, std::move(*log));
    }
  }
  c.end(forger.store->signing_key(), entries, batches);  // not A's key
  Bytes file = c.seal(4096);
  auto r = import_bytes(*t.b.store, file);
  REQUIRE_FALSE(r.result.ok());
  CHECK(r.result.error().code == Errc::verification_failed);
  CHECK(mentions(r.result.error(), "bad signature on the bundle's END record"));
  CHECK(r.progress.applied == entries);  // each verified by its author's signatures
  CHECK(vv(*t.b.store, t.p) == v);
  CHECK_FALSE(r.progress.complete);
  CHECK(t.b.store->peer_holds(t.a.store->device_id(), t.p)->empty());
  // Not remembered as imported either: A's real bundle still imports (all duplicates).
  ImportReport real = must_import(*t.b.store, must_export(*t.a.store, t.p, small()));
  CHECK(real.duplicates == entries);
  CHECK(*t.b.store->peer_holds(t.a.store->device_id(), t.p) == v);
}

TEST_CASE("bundle: a forged batch inside a well-sealed bundle is refused by the store") {
  Pair t;
  const DeviceId a_id = t.a.store->device_id();
  auto log = t.a.store->read_log(t.p, a_id, 0, 40, 1u << 20);
  REQUIRE(log.ok());
  REQUIRE(log->entries.size() > 3);
  log->entries[2].body = std::string("{\"n\":666}");  // not what A signed
  Crafted c(*t.a.store, t.p);
  t.begin_as_a(c);
  c.batch(t.p, std::move(*log));
  c.end(t.a.store->signing_key(), 0, 1);
  auto r = import_bytes(*t.b.store, c.seal());
  REQUIRE_FALSE(r.result.ok());
  CHECK(r.result.error().code == Errc::verification_failed);
  CHECK(mentions(r.result.error(), "rejected"));
  CHECK(total(vv(*t.b.store, t.p)) == 0);
}

TEST_CASE(
    "bundle: batches apply in file order while the next is read: a forged one fails before a "
    "malformed record after it, the good one before it stays") {
  Pair t;
  const DeviceId a_id = t.a.store->device_id();
  auto good = t.a.store->read_log(t.p, a_id, 0, 3, 1u << 20);
  REQUIRE(good.ok());
  REQUIRE(!good->entries.empty());
  const std::uint64_t kept = good->entries.back().seq;
  auto forged = t.a.store->read_log(t.p, a_id, kept, 40, 1u << 20);
  REQUIRE(forged.ok());
  REQUIRE(forged->entries.size() > 1);
  forged->entries[1].body = std::string("{\"n\":666}");  // not what A signed
  Crafted c(*t.a.store, t.p);
  t.begin_as_a(c);
  c.batch(t.p, std::move(*good));
  c.batch(t.p, std::move(*forged));
  const std::uint8_t junk[] = {1, 2, 3};
  c.record(static_cast<std::uint8_t>(RecordType::batch), ByteView(junk, sizeof junk));
  c.end(t.a.store->signing_key(), 0, 3);
  auto r = import_bytes(*t.b.store, c.seal());
  REQUIRE_FALSE(r.result.ok());
  CHECK(r.result.error().code == Errc::verification_failed);
  CHECK(mentions(r.result.error(), "rejected"));
  CHECK(mentions(r.result.error(), "seq " + std::to_string(kept + 1)));
  CHECK(total(vv(*t.b.store, t.p)) == kept);
}

TEST_CASE("bundle: imported bundles are remembered per project, up to the limit") {
  Node n;
  n.store.reset();
  storage::StoreOptions o;
  o.data_dir = n.dir.path / "small";
  o.durable = false;
  o.map_size_bytes = 1ull << 28;
  o.max_imported_bundles = 3;
  auto s = storage::Store::open(o);
  REQUIRE(s.ok());
  auto& store = **s;
  auto p = store.create_project("p");
  auto q = store.create_project("q");
  std::vector<storage::BundleId> ids(5);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i].fill(static_cast<std::uint8_t>(i + 1));
    REQUIRE(store.note_bundle_imported(p->id, ids[i], 1000 + static_cast<std::int64_t>(i)).ok());
    REQUIRE(store.note_bundle_imported(p->id, ids[i], 5000).ok());  // again: no change
  }
  CHECK_FALSE(*store.bundle_imported(p->id, ids[0]));
  CHECK_FALSE(*store.bundle_imported(p->id, ids[1]));
  CHECK(*store.bundle_imported(p->id, ids[2]));
  CHECK(*store.bundle_imported(p->id, ids[4]));
  CHECK_FALSE(*store.bundle_imported(q->id, ids[4]));  // per project
  CHECK(store.bundle_imported(ProjectId{}, ids[4]).error().code == Errc::not_found);
  REQUIRE(store.leave_project(p->id).ok());
  auto info = *p;
  REQUIRE(store.add_project(info, Bytes(32, 9)).ok());
  CHECK_FALSE(*store.bundle_imported(p->id, ids[4]));  // forgotten with the project
}

TEST_CASE("bundle: run seals travel in SEALS records before their BATCH, and are checked") {
  Pair t;
  const DeviceId a_id = t.a.store->device_id();
  auto sealed = [&](storage::Store& s) {
    auto log = s.read_log(t.p, a_id, 0, 1000, 1u << 30);
    REQUIRE(log.ok());
    REQUIRE(log->checkpoints.size() > 3);
    std::uint64_t from = 0;
    for (const auto& c : log->checkpoints) {
      if (!c.seal || c.seal->from != from) return false;
      from = c.seq;
    }
    return true;
  };
  REQUIRE(sealed(*t.a.store));
  must_import(*t.b.store, must_export(*t.a.store, t.p, small()));
  CHECK(vv(*t.b.store, t.p) == vv(*t.a.store, t.p));
  CHECK(sealed(*t.b.store));

  auto log = t.a.store->read_log(t.p, a_id, 0, 40, 1u << 20);
  REQUIRE(log.ok());
  const std::uint64_t end = log->checkpoints.back().seq;
  const auto seals_type = static_cast<std::uint8_t>(RecordType::seals);
  struct Case {
    const char* what;
    Errc code;
    std::string says;
    std::function<void(Crafted&)> body;
  };
  std::vector<Case> cases{
      {"followed by END", Errc::invalid_argument, "not followed by a BATCH",
       [&](Crafted& c) { c.record(seals_type, detail::encode_seals(log->checkpoints)); }},
      {"followed by another SEALS", Errc::invalid_argument, "not followed by a BATCH",
       [&](Crafted& c) {
         c.record(seals_type, detail::encode_seals(log->checkpoints));
         c.record(seals_type, detail::encode_seals(log->checkpoints));
         c.batch(t.p, *log);
       }},
      {"for a checkpoint the batch does not carry", Errc::invalid_argument,
       "a checkpoint the next BATCH does not carry",
       [&](Crafted& c) {
         auto cps = log->checkpoints;
         cps.back().seq += 1;
         c.record(seals_type, detail::encode_seals(cps));
         c.batch(t.p, *log);
       }},
      {"not whole seals", Errc::invalid_argument, "malformed SEALS",
       [&](Crafted& c) {
         Bytes s = detail::encode_seals(log->checkpoints);
         s.pop_back();
         c.record(seals_type, s);
         c.batch(t.p, *log);
       }},
      {"a root that is not the author's", Errc::verification_failed,
       "seal at seq " + std::to_string(end),
       [&](Crafted& c) {
         auto cps = log->checkpoints;
         cps.back().seal->root[0] ^= 1;
         c.record(seals_type, detail::encode_seals(cps));
         c.batch(t.p, *log);
       }},
  };
  for (const auto& k : cases) {
    INFO(k.what);
    Node d{16};
    REQUIRE(
        d.store->add_project(*t.a.store->get_project(t.p), *t.a.store->project_secret(t.p)).ok());
    Crafted c(*t.a.store, t.p);
    t.begin_as_a(c);
    k.body(c);
    c.end(t.a.store->signing_key(), 0, 1);
    auto r = import_bytes(*d.store, c.seal());
    REQUIRE_FALSE(r.result.ok());
    CHECK(r.result.error().code == k.code);
    CHECK(mentions(r.result.error(), k.says));
    CHECK(total(vv(*d.store, t.p)) == 0);
  }
}
