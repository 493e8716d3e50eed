// Destinations and delivery receipts (docs/storage.md "Destinations and receipts").
#include <catch2/catch.hpp>

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
  REQUIRE(f.a->set_destination(f.p, f.c->device_id(), "office", true).ok());
  f.spread();
  auto sub = Subscription::parse(
      R"({"collections": ["visits"], "where": {"eq": {"path": "n", "value": 2}}})");
  REQUIRE(sub.ok());
  REQUIRE(f.c->set_subscription(f.p, *sub).ok());
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
