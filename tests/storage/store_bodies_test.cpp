// Bodies at rest (docs/storage.md "Bodies at rest"): compressed with zstd, with a dictionary
// trained per project after its first kDictionaryTrainingBodies; read back byte for byte; a
// store reads every form it ever wrote; damage reads as data_loss.
#include <catch2/catch.hpp>

#include <random>
#include <thread>

#include "common/bytes.hpp"
#include "raw_lmdb.hpp"
#include "storage/records.hpp"
#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::copy_logs;
using fieldsync::test::open_store;
using fieldsync::test::put;
using fieldsync::test::Raw;
using fieldsync::test::shared_project;
using fieldsync::test::TempDir;

namespace {

const Bytes kFormat = {'f', 'o', 'r', 'm', 'a', 't'};

// A field observation like the ones apps record: the same keys, varied values.
std::string observation(int i) {
  static const char* words[] = {"track",    "north", "gate", "water",  "trail",  "photo", "adult",
                                "juvenile", "fence", "dry",  "season", "sample", "clear"};
  std::mt19937 rng(static_cast<unsigned>(i));
  std::string notes;
  for (int w = 0; w < 25; ++w) notes += std::string(words[rng() % 13]) + " ";
  return R"({"type":"observation","lat":)" + std::to_string(-4.0 + (rng() % 100000) / 1e5) +
         R"(,"lon":)" + std::to_string(-60.0 - (rng() % 100000) / 1e5) +
         R"(,"created_at":"2026-01-01T00:00:)" + std::to_string(10 + i % 50) +
         R"(Z","device":"device-a","tags":{"category":"deforestation","count":)" +
         std::to_string(rng() % 50) + R"(,"notes":")" + notes + R"("},"attachments":[]})";
}

struct StoredForm {
  bool has_body = false;
  bool compressed = false;
  std::uint16_t dict = 0;
  std::size_t stored_bytes = 0;  // the body's bytes in the record (frame or plain)
};

// How the project's log records hold their bodies (layout: docs/storage.md "Tables", logs).
std::vector<StoredForm> stored_forms(Raw& raw, const ProjectId& p) {
  std::vector<StoredForm> out;
  for (const auto& [k, v] : raw.scan(raw.t().logs, p.view())) {
    ByteReader r(v);
    r.fixed<32>();
    r.fixed<32>();
    std::uint8_t flags = r.u8();
    (void)r.blob(kMaxVersionHeaderBytes);
    StoredForm f;
    f.has_body = flags & 1;
    f.compressed = flags & 8;
    if (f.compressed) f.dict = r.u16();
    if (f.has_body) f.stored_bytes = r.blob(kMaxBodyBytesCeiling).size();
    REQUIRE(r.ok());
    out.push_back(f);
  }
  return out;
}

// `to` takes part in `from`'s project `p` too (with its secret, as after an invite).
void share_with(Store& from, Store& to, const ProjectId& p) {
  auto secret = from.project_secret(p);
  REQUIRE(secret.ok());
  REQUIRE(to.add_project(*from.get_project(p), *secret).ok());
}

// A new project of `s` with observations o0..o<n-1>.
ProjectId survey_with(Store& s, int n) {
  auto proj = s.create_project("survey");
  REQUIRE(proj.ok());
  for (int i = 0; i < n; ++i)
    REQUIRE(s.write(proj->id, put("obs", "o" + std::to_string(i), observation(i))).ok());
  return proj->id;
}

// The meta key of body dictionary `number` (docs/storage.md "Tables").
Bytes dictionary_key(std::uint16_t number) {
  return Bytes{'Z', static_cast<std::uint8_t>(number >> 8), static_cast<std::uint8_t>(number)};
}

void check_bodies(Store& s, const ProjectId& p, int from, int to) {
  for (int i = from; i < to; ++i) {
    auto d = s.get_document(p, "obs", "o" + std::to_string(i));
    REQUIRE(d.ok());
    REQUIRE(d->body);
    CHECK(*d->body == observation(i));
  }
}

}  // namespace

TEST_CASE("bodies at rest: compressed, a dictionary after the first 1024, read back exactly",
          "[storage][bodies]") {
  TempDir d;
  ProjectId p;
  std::uint16_t dict = 0;
  {
    auto s = open_store(d.path());
    p = survey_with(*s, 1000);
    CHECK(!s->body_dictionary(p));
    for (int i = 1000; i < 1100; ++i)
      REQUIRE(s->write(p, put("obs", "o" + std::to_string(i), observation(i))).ok());
    REQUIRE(s->body_dictionary(p));  // trained by the write that packed body 1025
    dict = *s->body_dictionary(p);
    CHECK(dict >= 1);
    for (int i = 1100; i < 1600; ++i)
      REQUIRE(s->write(p, put("obs", "o" + std::to_string(i), observation(i))).ok());
    check_bodies(*s, p, 0, 1600);
  }
  std::size_t plain_bytes = 0;
  for (int i = 1100; i < 1600; ++i) plain_bytes += observation(i).size();
  {
    Raw raw(d.path());
    auto forms = stored_forms(raw, p);
    std::size_t without = 0, with = 0, with_bytes = 0;
    for (const auto& f : forms) {
      if (!f.has_body) continue;  // the project's own records (membership)
      CHECK(f.compressed);
      if (f.dict == 0) ++without;
      if (f.dict == dict) {
        ++with;
        with_bytes += f.stored_bytes;
      }
    }
    CHECK(without == kDictionaryTrainingBodies);
    CHECK(with + without >= 1600);  // every body after those used the dictionary
    // The dictionary pays: well under half of what the bodies are.
    CHECK(with_bytes * 2 < plain_bytes * with / 500);
  }
  // Reopened: the dictionary is loaded again; bodies read back, and a peer that takes the
  // logs verifies every body against its hash (apply_log) and reads the same.
  auto s = open_store(d.path());
  CHECK(s->body_dictionary(p) == dict);
  check_bodies(*s, p, 0, 1600);
  TempDir d2;
  auto peer = open_store(d2.path());
  share_with(*s, *peer, p);
  CHECK(copy_logs(*s, *peer, p) >= 1600);
  check_bodies(*peer, p, 0, 1600);
}

TEST_CASE("bodies at rest: small or incompressible bodies, and level 0, are stored as they are",
          "[storage][bodies]") {
  TempDir d;
  ProjectId p;
  std::string noise;
  {
    std::mt19937 rng(7);
    const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 40; ++i) noise += b64[rng() % 64];  // too short for a table to pay
  }
  {
    StoreOptions o;
    o.body_compression_level = 0;
    auto s = open_store(d.path(), o);
    p = survey_with(*s, 1);
  }
  {
    auto s = open_store(d.path());  // level 3 now
    REQUIRE(s->write(p, put("obs", "o1", observation(1))).ok());
    REQUIRE(s->write(p, put("obs", "tiny", "{}")).ok());
    REQUIRE(s->write(p, put("obs", "noise", R"({"n":")" + noise + "\"}")).ok());
  }
  {
    Raw raw(d.path());
    std::vector<StoredForm> bodies;
    for (const auto& f : stored_forms(raw, p))
      if (f.has_body && f.stored_bytes != 0) bodies.push_back(f);
    REQUIRE(bodies.size() >= 4);
    auto last4 = std::vector<StoredForm>(bodies.end() - 4, bodies.end());
    CHECK(!last4[0].compressed);  // written at level 0
    CHECK(last4[1].compressed);
    CHECK(last4[1].stored_bytes < observation(1).size());
    CHECK(!last4[2].compressed);  // too small to pay for a frame
    CHECK(!last4[3].compressed);  // compressing did not make it smaller
  }
  auto s = open_store(d.path());
  check_bodies(*s, p, 0, 2);
  CHECK(*s->get_document(p, "obs", "tiny")->body == "{}");
  CHECK(*s->get_document(p, "obs", "noise")->body == R"({"n":")" + noise + "\"}");
}

TEST_CASE("bodies at rest: a missing dictionary or a damaged frame reads as data_loss",
          "[storage][bodies]") {
  TempDir d;
  ProjectId p;
  std::uint16_t dict = 0;
  {
    auto s = open_store(d.path());
    p = survey_with(*s, 1100);
    REQUIRE(s->body_dictionary(p));  // trained by the write that packed body 1025
    dict = *s->body_dictionary(p);
    REQUIRE(s->write(p, put("obs", "late", observation(5000))).ok());
  }
  Bytes damaged_key;
  {
    Raw raw(d.path());
    // Damage one early record's frame (a byte in its middle); take the dictionary away.
    auto logs = raw.scan(raw.t().logs, p.view());
    for (auto& [k, v] : logs) {
      ByteReader r(v);
      r.fixed<32>();
      r.fixed<32>();
      std::uint8_t flags = r.u8();
      (void)r.blob(kMaxVersionHeaderBytes);
      if (!(flags & 8) || r.u16() != 0) continue;
      v[v.size() - 20] ^= 0x5a;
      raw.put(raw.t().logs, k, v);
      damaged_key = k;
      break;
    }
    REQUIRE(!damaged_key.empty());
    REQUIRE(raw.get(raw.t().meta, dictionary_key(dict)));
    raw.del(raw.t().meta, dictionary_key(dict));
  }
  auto s = open_store(d.path());
  auto late = s->get_document(p, "obs", "late");
  REQUIRE(!late.ok());
  CHECK(late.error().code == Errc::data_loss);
  // The damaged one fails the same way (or, if the flip left a valid frame, reads as a body
  // that is not the one written: never silently as the original); the ones compressed with the
  // lost dictionary fail.
  int damaged = 0;
  for (int i = 0; i < 1100; ++i) {
    auto doc = s->get_document(p, "obs", "o" + std::to_string(i));
    if (i >= static_cast<int>(kDictionaryTrainingBodies)) {
      CHECK(!doc.ok());
      CHECK((doc.ok() || doc.error().code == Errc::data_loss));
    } else if (!doc.ok()) {
      CHECK(doc.error().code == Errc::data_loss);
      ++damaged;
    } else if (doc->body && *doc->body != observation(i)) {
      ++damaged;
    }
  }
  CHECK(damaged == 1);
  CHECK(!s->body_dictionary(p));
  // New writes go on without the lost dictionary.
  REQUIRE(s->write(p, put("obs", "after", observation(6000))).ok());
  CHECK(*s->get_document(p, "obs", "after")->body == observation(6000));
}

TEST_CASE("format 2 and 3 stores open as format 4 after a copy of them", "[storage][bodies]") {
  for (std::uint64_t was : {2, 3}) {
    INFO("format " << was);
    TempDir d;
    ProjectId p;
    {
      StoreOptions o;
      o.body_compression_level = 0;  // what a format-2 daemon wrote: bodies as they are
      auto s = open_store(d.path(), o);
      p = survey_with(*s, 1);
    }
    {
      Raw raw(d.path());
      raw.put(raw.t().meta, kFormat, u64_bytes(was));
    }
    auto s = open_store(d.path());
    REQUIRE(s->converted());
    CHECK(s->converted()->from_format == was);
    CHECK(s->converted()->to_format == 4);
    const std::string backup = "format-" + std::to_string(was);
    CHECK(std::filesystem::exists(d.path() / "upgrade-backup" / backup / "data.mdb"));
    check_bodies(*s, p, 0, 1);
    s.reset();
    Raw raw(d.path());
    CHECK(raw.get(raw.t().meta, kFormat) == u64_bytes(4));
    Raw old(d.path() / "upgrade-backup", backup);
    CHECK(old.get(old.t().meta, kFormat) == u64_bytes(was));
  }
}

TEST_CASE("bodies at rest: a dictionary trained in a write that failed is stored with the next",
          "[storage][bodies]") {
  TempDir d;
  ProjectId p;
  std::uint16_t dict = 0;
  {
    auto s = open_store(d.path());
    p = survey_with(*s, 1000);
    CHECK(!s->body_dictionary(p));
    // A batch that trains the dictionary on its way, then fails as a whole (its last write is
    // not a JSON object): nothing of it is kept, the dictionary's record neither.
    std::vector<WriteRequest> batch;
    for (int i = 1000; i < 1100; ++i)
      batch.push_back(put("obs", "o" + std::to_string(i), observation(i)));
    batch.push_back(put("obs", "bad", "[1]"));
    REQUIRE(!s->write_batch(p, batch).ok());
    REQUIRE(s->body_dictionary(p));
    dict = *s->body_dictionary(p);
    REQUIRE(s->write(p, put("obs", "after", observation(7000))).ok());
  }
  {
    Raw raw(d.path());
    CHECK(raw.get(raw.t().meta, dictionary_key(dict)));
    auto forms = stored_forms(raw, p);
    REQUIRE(!forms.empty());
    CHECK(forms.back().dict == dict);  // "after"
  }
  auto s = open_store(d.path());
  CHECK(s->body_dictionary(p) == dict);
  check_bodies(*s, p, 0, 1000);
  CHECK(*s->get_document(p, "obs", "after")->body == observation(7000));
  CHECK(!s->get_document(p, "obs", "o1050").ok());
}

TEST_CASE("bodies at rest: leaving a project deletes its dictionary", "[storage][bodies]") {
  TempDir d;
  ProjectId p, kept;
  std::uint16_t dict = 0, kept_dict = 0;
  {
    auto s = open_store(d.path());
    p = survey_with(*s, 1100);
    kept = survey_with(*s, 1100);
    REQUIRE(s->body_dictionary(p));
    REQUIRE(s->body_dictionary(kept));
    dict = *s->body_dictionary(p);
    kept_dict = *s->body_dictionary(kept);
    CHECK(dict != kept_dict);
    REQUIRE(s->leave_project(p).ok());
    CHECK(!s->body_dictionary(p));
    check_bodies(*s, kept, 0, 1100);
  }
  {
    Raw raw(d.path());
    CHECK(!raw.get(raw.t().meta, dictionary_key(dict)));
    CHECK(raw.get(raw.t().meta, dictionary_key(kept_dict)));
  }
  auto s = open_store(d.path());
  CHECK(s->body_dictionary(kept) == kept_dict);
  check_bodies(*s, kept, 0, 1100);
}

TEST_CASE("bodies at rest: a batch prepared ahead is stored byte for byte as one that is not",
          "[storage][bodies]") {
  TempDir da, db, dc;
  auto a = open_store(da.path());
  ProjectId p = survey_with(*a, 1600);
  auto plain = open_store(db.path());
  auto ahead = open_store(dc.path());
  share_with(*a, *plain, p);
  share_with(*a, *ahead, p);
  copy_logs(*a, *plain, p, 300);
  copy_logs(*a, *ahead, p, 300, /*prepared=*/true);
  REQUIRE(ahead->body_dictionary(p));  // later batches were packed ahead with it
  check_bodies(*ahead, p, 0, 1600);
  plain.reset();
  ahead.reset();
  Raw rb(db.path()), rc(dc.path());
  auto logs_b = rb.scan(rb.t().logs, p.view());
  auto logs_c = rc.scan(rc.t().logs, p.view());
  CHECK(logs_b.size() >= 1600);
  CHECK(logs_b == logs_c);
  std::size_t with_dict = 0;
  for (const auto& f : stored_forms(rc, p)) with_dict += f.dict != 0;
  CHECK(with_dict >= 1600 - kDictionaryTrainingBodies);
}

TEST_CASE("bodies at rest: a prepared batch fails as an unprepared one, and only for itself",
          "[storage][bodies]") {
  TempDir da, db;
  auto a = open_store(da.path());
  auto b = open_store(db.path());
  ProjectId p = shared_project(*a, *b);
  for (int i = 0; i < 20; ++i)
    REQUIRE(a->write(p, put("obs", "o" + std::to_string(i), observation(i))).ok());
  auto batch = a->read_log(p, a->device_id(), 0, 100, 1u << 30);
  REQUIRE(batch.ok());
  auto tampered = *batch;
  tampered.entries[5].body->back() = ' ';
  auto unprepared = b->apply_log(p, tampered);
  REQUIRE(!unprepared.ok());
  auto prepared = b->prepare_log(p, tampered);
  auto r = b->apply_log(p, tampered, ApplyOptions{}, prepared);
  REQUIRE(!r.ok());
  CHECK(r.error().code == Errc::verification_failed);
  CHECK(r.error().message == unprepared.error().message);
  CHECK(r.error().message.find("body does not match its hash") != std::string::npos);
  // Prepared for another batch: refused, nothing applied.
  auto wrong = b->apply_log(p, *batch, ApplyOptions{}, prepared);
  REQUIRE(!wrong.ok());
  CHECK(wrong.error().code == Errc::invalid_argument);
  CHECK(!b->get_document(p, "obs", "o0").ok());
  auto good = b->prepare_log(p, *batch);
  auto ok = b->apply_log(p, *batch, ApplyOptions{}, good);
  REQUIRE(ok.ok());
  CHECK(ok->applied == 20);
  check_bodies(*b, p, 0, 20);
}

TEST_CASE(
    "bodies at rest: a batch packed ahead with a dictionary trained in a failed write "
    "stores that dictionary",
    "[storage][bodies]") {
  TempDir da, db;
  ProjectId p;
  std::uint16_t dict = 0;
  {
    auto a = open_store(da.path());
    auto b = open_store(db.path());
    p = shared_project(*a, *b);
    for (int i = 0; i < 1000; ++i)
      REQUIRE(b->write(p, put("obs", "o" + std::to_string(i), observation(i))).ok());
    std::vector<WriteRequest> failing;
    for (int i = 1000; i < 1100; ++i)
      failing.push_back(put("obs", "o" + std::to_string(i), observation(i)));
    failing.push_back(put("obs", "bad", "[1]"));
    REQUIRE(!b->write_batch(p, failing).ok());
    REQUIRE(b->body_dictionary(p));  // in memory only: its record went with the write
    dict = *b->body_dictionary(p);
    for (int i = 5000; i < 5010; ++i)
      REQUIRE(a->write(p, put("obs", "o" + std::to_string(i), observation(i))).ok());
    copy_logs(*a, *b, p, 1000, /*prepared=*/true);
  }
  {
    Raw raw(db.path());
    CHECK(raw.get(raw.t().meta, dictionary_key(dict)));
    std::size_t packed_with_it = 0;
    for (const auto& f : stored_forms(raw, p)) packed_with_it += f.dict == dict;
    CHECK(packed_with_it == 10);  // a's ten, packed ahead
  }
  auto b = open_store(db.path());
  CHECK(b->body_dictionary(p) == dict);
  check_bodies(*b, p, 5000, 5010);
}

TEST_CASE("bodies at rest: batches prepared on one thread while earlier ones apply on another",
          "[storage][bodies]") {
  TempDir da, db;
  auto a = open_store(da.path());
  ProjectId p = survey_with(*a, 3000);
  auto b = open_store(db.path());
  share_with(*a, *b, p);
  // Read every batch first, then prepare batch n+1 while batch n applies (training the
  // dictionary on the way), as a session's reader thread and the writer do.
  std::vector<LogBatch> batches;
  for (std::uint64_t at = 0; at < 3001;) {
    auto r = a->read_log(p, a->device_id(), at, 256, 1u << 30);
    REQUIRE(r.ok());
    if (r->entries.empty()) break;
    at = r->entries.back().seq;
    batches.push_back(std::move(*r));
  }
  std::vector<PreparedLog> prepared(batches.size());
  prepared[0] = b->prepare_log(p, batches[0]);
  for (std::size_t i = 0; i < batches.size(); ++i) {
    std::thread next;
    if (i + 1 < batches.size())
      next = std::thread([&, i] { prepared[i + 1] = b->prepare_log(p, batches[i + 1]); });
    auto r = b->apply_log(p, batches[i], ApplyOptions{}, prepared[i]);
    if (next.joinable()) next.join();
    INFO(i << ": " << (r.ok() ? std::string() : r.error().message));
    REQUIRE(r.ok());
  }
  CHECK(b->body_dictionary(p));
  check_bodies(*b, p, 0, 3000);
}
