// One identity, one history (docs/storage.md): renewal at open, successors in membership,
// two histories of one device refused by third parties and re-published by the key holder.
#include <filesystem>

#include "storage/store.hpp"
#include "store_fixture.hpp"
#include "support/backup_dir.hpp"

using namespace fieldsync;
using namespace fieldsync::test;
namespace fs = std::filesystem;

namespace {

void copy_dir(const fs::path& from, const fs::path& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive);
  fs::remove(to / "db" / "lock.mdb");
}

std::string body_of(storage::Store& s, const ProjectId& p, const std::string& id) {
  auto d = s.get_document(p, "obs", id);
  return d.ok() && d->body ? *d->body : std::string();
}

}  // namespace

TEST_CASE("a restored backup renews its identity before it writes", "[storage][identity]") {
  TempDir t;
  auto a = open_store(t.path() / "a");
  auto b = open_store(t.path() / "b");
  auto p = shared_project(*a, *b);
  REQUIRE(a->write(p, put("obs", "x", R"({"v":1})")).ok());
  DeviceId old = a->device_id();
  auto files = write_backup_dir(*a, t.path() / "backup");
  CHECK(files.count("RESTORED") == 1);
  CHECK(files.at("device.key") > 0);
  CHECK(files.at("db/data.mdb") > 0);
  // Writes go on while a backup is read: the copy is the state when it began.
  {
    auto reader = a->open_backup();
    REQUIRE(reader.ok());
    std::string db;
    for (auto f = (*reader)->next_file(); f.ok() && *f; f = (*reader)->next_file()) {
      for (auto piece = (*reader)->read(4096); piece.ok() && !piece->empty();
           piece = (*reader)->read(4096))
        if (**f == "db/data.mdb" && db.empty()) {
          // A write commits while the copy is read (its read transaction blocks no writer).
          REQUIRE(a->write(p, put("obs", "during", R"({"v":2})")).ok());
          db = "seen";
        }
    }
    CHECK(db == "seen");
    CHECK((*reader)->db_bytes() > 0);
  }
  // A reader dropped half-way stops its copy (and the store stays usable).
  {
    auto reader = a->open_backup();
    REQUIRE(reader.ok());
    for (auto f = (*reader)->next_file(); f.ok() && *f && **f != "db/data.mdb";
         f = (*reader)->next_file()) {
    }
    CHECK((*reader)->read(10).ok());
  }
  REQUIRE(a->write(p, put("obs", "y", R"({"v":3})")).ok());

  auto r = open_store(t.path() / "backup");
  CHECK(r->device_id() != old);
  REQUIRE(r->retired_ids().size() == 1);
  CHECK(r->retired_ids()[0] == old);
  auto change = r->last_identity_change();
  REQUIRE(change.has_value());
  CHECK(change->previous == old);
  CHECK(change->reason == "restored from a backup");
  CHECK(!fs::exists(t.path() / "backup" / "RESTORED"));
  // The successor holds its predecessor's role (the creator's: coordinator).
  auto m = r->member(p, r->device_id());
  REQUIRE(m.ok());
  REQUIRE(m->has_value());
  CHECK((*m)->role == storage::Role::coordinator);
  CHECK((*m)->successor_of == old);
  // It can act as a coordinator, and reopening does not renew again.
  CHECK(r->set_member(p, b->device_id(), storage::Role::member).ok());
  DeviceId renewed = r->device_id();
  r.reset();
  r = open_store(t.path() / "backup");
  CHECK(r->device_id() == renewed);

  // Peers accept the successor's log, including its membership record.
  copy_logs(*r, *b, p);
  auto mb = b->member(p, renewed);
  REQUIRE(mb.ok());
  REQUIRE(mb->has_value());
  CHECK((*mb)->role == storage::Role::coordinator);
}

TEST_CASE("each renewal adds a link signed by the old key, kept across reopening",
          "[storage][identity]") {
  TempDir t;
  auto a = open_store(t.path() / "a");
  CHECK(a->renewal_links().empty());
  const DeviceId d0 = a->device_id();
  (void)write_backup_dir(*a, t.path() / "b1");
  a.reset();
  auto r1 = open_store(t.path() / "b1");
  const DeviceId d1 = r1->device_id();
  REQUIRE(r1->renewal_links().size() == 1);
  CHECK(r1->renewal_links()[0].from == d0);
  CHECK(r1->renewal_links()[0].to == d1);
  CHECK(crypto::renewal_chain_proves(r1->renewal_links(), d0, d1));
  // Restored again: the chain grows, and leads from the first identity to the newest.
  (void)write_backup_dir(*r1, t.path() / "b2");
  r1.reset();
  auto r2 = open_store(t.path() / "b2");
  const DeviceId d2 = r2->device_id();
  REQUIRE(r2->renewal_links().size() == 2);
  CHECK(crypto::renewal_chain_proves(r2->renewal_links(), d0, d2));
  CHECK(crypto::renewal_chain_proves(r2->renewal_links(), d1, d2));
  auto links = r2->renewal_links();
  r2.reset();
  r2 = open_store(t.path() / "b2");
  CHECK(r2->device_id() == d2);
  CHECK(r2->renewal_links() == links);
}

TEST_CASE("a forged succession record gives no role", "[storage][identity]") {
  TempDir t;
  auto a = open_store(t.path() / "a");
  auto b = open_store(t.path() / "b");
  auto p = shared_project(*a, *b);
  // b claims to succeed a (the coordinator) with a signature by its own key.
  storage::WriteRequest req =
      put("_members", b->device_id().str(),
          R"({"device":")" + b->device_id().str() + R"(","role":"coordinator","successor_of":")" +
              a->device_id().str() + R"(","succession":")" + std::string(128, 'a') + R"("})");
  CHECK(b->write(p, req).error().code == Errc::invalid_argument);  // apps cannot write _members
  auto m = a->member(p, b->device_id());
  REQUIRE(m.ok());
  CHECK(!m->has_value());
}

TEST_CASE("two histories under one key: others keep theirs, the key holder re-publishes both",
          "[storage][identity]") {
  TempDir t;
  auto a = open_store(t.path() / "a");
  auto b = open_store(t.path() / "b");
  auto c = open_store(t.path() / "c");
  auto p = shared_project(*a, *b);
  REQUIRE(c->add_project(*a->get_project(p), *a->project_secret(p)).ok());
  for (int i = 0; i < 3; ++i) REQUIRE(a->write(p, put("obs", "e" + std::to_string(i), "{}")).ok());
  copy_logs(*a, *b, p);
  copy_logs(*a, *c, p);

  // A plain copy of a's directory, then a writes on (side 1, reaches b).
  a.reset();
  copy_dir(t.path() / "a", t.path() / "a-copy");
  a = open_store(t.path() / "a");
  REQUIRE(a->write(p, put("obs", "side1", R"({"s":1})")).ok());
  copy_logs(*a, *b, p);
  DeviceId id = a->device_id();
  a.reset();

  // The copy comes back and writes something else at the same seq (side 2, reaches c).
  auto a2 = open_store(t.path() / "a-copy");
  CHECK(a2->device_id() == id);
  REQUIRE(a2->write(p, put("obs", "side2", R"({"s":2})")).ok());
  copy_logs(*a2, *c, p);

  // b and c hold two histories of `id`: each keeps its own and records the fork.
  auto head = c->version_vector(p)->at(id);
  auto side2 = c->read_log(p, id, 0, 100, 1 << 20);
  REQUIRE(side2.ok());
  auto rb = b->apply_log(p, *side2);
  REQUIRE(rb.ok());
  REQUIRE(rb->diverged_at.has_value());
  CHECK(rb->applied == 0);
  CHECK(body_of(*b, p, "side2").empty());
  CHECK(body_of(*b, p, "side1") == R"({"s":1})");
  auto fb = b->forks(p);
  REQUIRE(fb.ok());
  REQUIRE(fb->size() == 1);
  CHECK((*fb)[0].author == id);
  CHECK(!(*fb)[0].resolved);
  // Tampering is still tampering: an entry changed after seq 1 (shared) breaks the chain.
  auto bad = *side2;
  bad.entries.back().body = R"({"s":3})";
  CHECK(b->apply_log(p, bad).error().code == Errc::verification_failed);

  // The copy learns its log exists elsewhere: evidence of a conflict, then a renewal.
  auto side1 = b->read_log(p, id, 0, 100, 1 << 20);
  REQUIRE(side1.ok());
  {
    // Not without its own key's signature: the same entries with the checkpoints dropped or
    // forged are a forgery (anyone with the project secret could send them), refused without
    // a renewal.
    auto vv_before = *a2->version_vector(p);
    auto unsigned_log = *side1;
    unsigned_log.checkpoints.clear();
    auto r = a2->apply_log(p, unsigned_log);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::verification_failed);
    auto forged = *side1;
    REQUIRE_FALSE(forged.checkpoints.empty());
    for (auto& cp : forged.checkpoints) cp.signature[0] ^= 1;
    CHECK(a2->apply_log(p, forged).error().code == Errc::verification_failed);
    CHECK_FALSE(a2->identity_renewal_pending());
    CHECK(*a2->version_vector(p) == vv_before);
  }
  auto own = a2->apply_log(p, *side1);
  REQUIRE(own.ok());
  CHECK(own->identity_conflict);
  a2->report_identity_conflict("test");
  CHECK(a2->write(p, put("obs", "blocked", "{}")).error().code == Errc::unavailable);
  a2.reset();
  a2 = open_store(t.path() / "a-copy");
  CHECK(a2->device_id() != id);
  CHECK(a2->holds_retired_key(id));
  // Suspect: it asks for the whole log of its old identity.
  CHECK(a2->version_tips(p)->at(id).seq == 0);

  // b sends the whole log of `id` (side 1): a2 verifies it and re-publishes both sides.
  auto rr = a2->apply_log(p, *side1);
  REQUIRE(rr.ok());
  CHECK(rr->republished);
  CHECK(rr->relogged == 2);  // its own side2 and b's side1
  CHECK(body_of(*a2, p, "side1") == R"({"s":1})");
  CHECK(body_of(*a2, p, "side2") == R"({"s":2})");
  CHECK(a2->version_vector(p)->at(id) == head);  // the old log itself is unchanged

  // The successor's log carries both sides to b and c, with their original version ids.
  DeviceId successor = a2->device_id();
  copy_logs(*a2, *b, p);
  copy_logs(*a2, *c, p);
  for (auto* s : {b.get(), c.get()}) {
    CHECK(body_of(*s, p, "side1") == R"({"s":1})");
    CHECK(body_of(*s, p, "side2") == R"({"s":2})");
    auto d = s->get_document(p, "obs", "side2");
    REQUIRE(d.ok());
    CHECK(d->heads.size() == 1);
  }
  fb = b->forks(p);
  REQUIRE(fb.ok());
  REQUIRE(fb->size() == 1);
  CHECK((*fb)[0].resolved);
  CHECK((*fb)[0].successor == successor);
  // Same re-publication twice changes nothing.
  auto again = a2->apply_log(p, *side1);
  REQUIRE(again.ok());
  CHECK(again->relogged == 0);
}

TEST_CASE("a device.key that does not belong to the store is refused", "[storage][identity]") {
  TempDir t;
  { open_store(t.path() / "a"); }
  { open_store(t.path() / "b"); }
  fs::copy_file(t.path() / "b" / "device.key", t.path() / "a" / "device.key",
                fs::copy_options::overwrite_existing);
  storage::StoreOptions o;
  o.data_dir = t.path() / "a";
  o.map_size_bytes = 1ull << 30;
  o.durable = false;
  auto s = storage::Store::open(o);
  REQUIRE(!s.ok());
  CHECK(s.error().code == Errc::failed_precondition);
  CHECK(s.error().message.find("put back the matching device.key") != std::string::npos);
}
