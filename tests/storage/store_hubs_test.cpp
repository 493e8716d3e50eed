// Destinations and delivery receipts (docs/storage.md "Destinations and receipts").
#include <catch2/catch.hpp>
#include <chrono>

#include "crypto/crypto.hpp"
#include "storage/blob_ref.hpp"

#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::copy_logs;
using fieldsync::test::open_store;
using fieldsync::test::put;
using fieldsync::test::TempDir;

namespace {

// A: the coordinator (creator) and a phone; B: a laptop; C: the office hub.
struct Field {
  TempDir da, db, dc;
  std::unique_ptr<Store> a = open_store(da.path());
  std::unique_ptr<Store> b = open_store(db.path());
  std::unique_ptr<Store> c = open_store(dc.path());
  ProjectId p;
  Field() {
    auto info = a->create_project("clinic visits");
    REQUIRE(info.ok());
    p = info->id;
    auto secret = a->project_secret(p).value();
    REQUIRE(b->add_project(*info, secret).ok());
    REQUIRE(c->add_project(*info, secret).ok());
  }
  void write(Store& s, int n, int from = 0) {
    for (int i = from; i < from + n; ++i)
      REQUIRE(s.write(p, put("visits", "v" + std::to_string(i), R"({"n":1})")).ok());
  }
  // Everyone gets everything: a -> b -> c and back.
  void spread() {
    copy_logs(*a, *b, p);
    copy_logs(*b, *c, p);
    copy_logs(*c, *b, p);
    copy_logs(*b, *a, p);
  }
};

}  // namespace

TEST_CASE("only a device that is a coordinator now names destinations", "[storage][destinations]") {
  Field f;
  auto denied = f.b->set_destination(f.p, f.c->device_id(), "office", true);
  REQUIRE_FALSE(denied.ok());
  CHECK(denied.error().code == Errc::permission_denied);
  REQUIRE(f.a->set_member(f.p, f.b->device_id(), Role::coordinator).ok());
  copy_logs(*f.a, *f.b, f.p);
  REQUIRE(f.b->set_destination(f.p, f.c->device_id(), "office", true).ok());
  copy_logs(*f.b, *f.a, f.p);
  auto d = f.a->destinations(f.p).value();
  REQUIRE(d.size() == 1);
  CHECK(d[0].device == f.c->device_id());
  CHECK(d[0].name == "office");
  CHECK(d[0].named_by == f.b->device_id());
  // B loses its role: its record no longer counts.
  REQUIRE(f.a->set_member(f.p, f.b->device_id(), Role::member).ok());
  CHECK(f.a->destinations(f.p).value().empty());
  // Un-naming what is not named.
  CHECK(f.a->set_destination(f.p, f.b->device_id(), {}, false).error().code == Errc::not_found);
  CHECK(f.a->set_destination(f.p, f.c->device_id(), std::string(129, 'x'), true).error().code ==
        Errc::invalid_argument);
}

TEST_CASE("a destination's receipts tell a device what of its writes arrived",
          "[storage][destinations]") {
  Field f;
  f.write(*f.a, 10);
  auto before = f.a->delivery(f.p).value();
  CHECK(before.delivered == 0);
  CHECK(before.written > 0);
  CHECK(before.oldest_undelivered_ms > 0);
  // Not a destination yet: no receipt.
  f.spread();
  CHECK_FALSE(f.c->write_receipt(f.p, 1000).value());

  REQUIRE(f.a->set_destination(f.p, f.c->device_id(), "office", true).ok());
  f.spread();
  CHECK(f.c->write_receipt(f.p, 2000).value());
  CHECK_FALSE(f.c->write_receipt(f.p, 3000).value());  // nothing new: nothing written
  CHECK(f.a->delivery(f.p).value().delivered == 0);    // the receipt has not come back yet
  f.spread();                                          // through the laptop
  auto d = f.a->delivery(f.p).value();
  CHECK(d.delivered == d.written);
  CHECK(d.oldest_undelivered_ms == 0);
  REQUIRE(d.receipts.size() == 1);
  CHECK(d.receipts[0].hub == f.c->device_id());
  CHECK(d.receipts[0].at_ms == 2000);

  // New writes: undelivered until the hub has them and says so.
  f.write(*f.a, 3, 100);
  d = f.a->delivery(f.p).value();
  CHECK(d.written - d.delivered == 3);
  f.spread();
  CHECK(f.c->write_receipt(f.p, 4000).value());
  f.spread();
  CHECK(f.a->delivery(f.p).value().delivered == f.a->delivery(f.p).value().written);
  // The laptop's own writes count for the laptop.
  f.write(*f.b, 2);
  CHECK(f.b->delivery(f.p).value().written - f.b->delivery(f.p).value().delivered == 2);

  // Un-named: its receipts no longer count.
  REQUIRE(f.a->set_destination(f.p, f.c->device_id(), {}, false).ok());
  CHECK(f.a->delivery(f.p).value().delivered == 0);
  CHECK(f.a->receipts(f.p).value().empty());
}

TEST_CASE("a destination with a subscription writes no receipt", "[storage][destinations]") {
  Field f;
  f.write(*f.a, 5);
  auto sub = Subscription::parse(
      R"({"collections": ["visits"], "where": {"eq": {"path": "n", "value": 2}}})");
  REQUIRE(sub.ok());
  // Subscribed before it was named (a destination refuses a subscription afterwards).
  REQUIRE(f.c->set_subscription(f.p, *sub).ok());
  REQUIRE(f.a->set_destination(f.p, f.c->device_id(), "office", true).ok());
  f.spread();
  // A subscribed device that is no destination just has nothing to state (no error to log).
  REQUIRE(f.b->set_subscription(f.p, *sub).ok());
  auto none = f.b->write_receipt(f.p, 1000);
  REQUIRE(none.ok());
  CHECK_FALSE(*none);
  auto r = f.c->write_receipt(f.p, 1000);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == Errc::failed_precondition);
  REQUIRE(f.c->set_subscription(f.p, Subscription()).ok());
  CHECK(f.c->write_receipt(f.p, 1000).value());
}

TEST_CASE("clean-up removes what a destination confirmed and keeps everything else",
          "[storage][destinations][cleanup]") {
  Field f;
  f.write(*f.a, 10);
  const std::int64_t later = 4102444800000;  // 2100: every write is old enough
  // No destination, no receipt: nothing leaves.
  auto none = f.a->clean_up(f.p, 0, later).value();
  CHECK(none.documents_removed == 0);
  REQUIRE(f.a->set_destination(f.p, f.c->device_id(), "office", true).ok());
  f.spread();
  // A destination never cleans itself, nor holds only part of the project.
  CHECK(f.c->clean_up(f.p, 0, later).error().code == Errc::failed_precondition);
  auto part = Subscription::parse(R"({"collections": ["visits"]})");
  REQUIRE(part.ok());
  CHECK(f.c->set_subscription(f.p, *part).error().code == Errc::failed_precondition);
  // A version whose attachment the hub does not hold is not confirmed, nor anything after it.
  BlobInfo missing;
  missing.id = crypto::sha256(as_bytes(std::string_view("a photo the hub never got")));
  missing.root = missing.id;
  missing.size = 10;
  missing.media_type = "image/jpeg";
  REQUIRE(f.a->write(f.p, put("visits", "photo", R"({"p":)" + blob_ref_json(missing) + "}")).ok());
  f.write(*f.a, 1, 50);
  f.spread();
  REQUIRE(f.c->write_receipt(f.p, 1000).value());
  f.spread();
  auto d = f.a->delivery(f.p).value();
  CHECK(d.written - d.delivered == 2);  // the photo's visit and the one after it
  auto freed_before = f.a->clean_up(f.p, 0, later).value();
  CHECK(freed_before.documents_removed == 10);
  CHECK(freed_before.documents_kept == 2);
  CHECK(freed_before.bytes_freed >= 10 * 7);
  CHECK(f.a->cleaned(f.p).value());
  // A cleaned device takes no subscription; a subscribed one does not clean up.
  auto narrow = Subscription::parse(R"({"collections": ["visits"]})");
  REQUIRE(narrow.ok());
  CHECK(f.a->set_subscription(f.p, *narrow).error().code == Errc::failed_precondition);
  REQUIRE(f.b->set_subscription(f.p, *narrow).ok());
  CHECK(f.b->clean_up(f.p, 0, later).error().code == Errc::failed_precondition);
  REQUIRE(f.b->set_subscription(f.p, Subscription()).ok());
  auto after = f.a->delivery(f.p).value();
  CHECK(after.cleaned_documents == 10);
  CHECK(after.cleaned_bytes == freed_before.bytes_freed);
  CHECK(after.cleaned_at_ms == later);
  CHECK(f.a->get_document(f.p, "visits", "v0").error().code == Errc::not_found);
  CHECK(f.a->get_document(f.p, "visits", "photo").ok());
  CHECK(f.a->get_document(f.p, "visits", "v50").ok());
  // The version vector is unchanged: nothing is fetched again, nothing comes back.
  auto vv = f.a->version_vector(f.p).value();
  f.spread();
  CHECK(f.a->version_vector(f.p).value() == vv);
  CHECK(f.a->get_document(f.p, "visits", "v3").error().code == Errc::not_found);
  // Too new: a minimum age keeps recent documents.
  f.write(*f.b, 2, 200);
  f.spread();
  REQUIRE(f.c->write_receipt(f.p, 2000).value());
  f.spread();
  auto young = f.a->clean_up(f.p, 3600 * 1000,
                             std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count())
                   .value();
  CHECK(young.documents_removed == 0);
  CHECK(young.documents_too_new == 2);
  // A device that never met anyone gets the cleaned documents from the hub, and the phone's
  // later writes from the phone.
  TempDir dd;
  auto d4 = open_store(dd.path());
  auto secret = f.a->project_secret(f.p).value();
  REQUIRE(d4->add_project(f.a->get_project(f.p).value(), secret).ok());
  copy_logs(*f.c, *d4, f.p);
  f.write(*f.a, 1, 300);
  copy_logs(*f.a, *d4, f.p);
  CHECK(d4->get_document(f.p, "visits", "v0").ok());
  CHECK(d4->get_document(f.p, "visits", "v300").ok());
  CHECK(d4->version_vector(f.p).value().at(f.a->device_id()) ==
        f.a->version_vector(f.p).value().at(f.a->device_id()));
  // The phone's log as given to a full peer ends before the first cleaned entry.
  auto from_start = f.a->read_log(f.p, f.a->device_id(), 0, 1000, 1u << 30).value();
  CHECK(from_start.entries.empty());
}
