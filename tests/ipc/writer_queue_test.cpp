// The writer thread: writes queued while a group commits are committed together (one commit),
// a failing write fails alone, an `alone` job commits by itself, and a group is written whole
// or not at all.
#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "ipc/route_support.hpp"
#include "ipc/writer_queue.hpp"
#include "storage/store.hpp"
#include "storage/temp_dir.hpp"

using namespace fieldsync;
using namespace fieldsync::ipc;

namespace {

struct Replies {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> statuses;
  // A job whose work() renders an answer, given back by done() (the commit's error if the
  // group's commit failed).
  WriterQueue::Job job(std::size_t at, std::function<ApiResponse()> work, bool alone = false) {
    auto slot = std::make_shared<ApiResponse>();
    return {[slot, work] { *slot = work(); },
            [this, at, slot](const Status& committed) {
              std::lock_guard lock(mu);
              if (statuses.size() <= at) statuses.resize(at + 1, 0);
              statuses[at] = committed ? slot->status : fail(committed.error()).status;
              cv.notify_all();
            },
            alone};
  }
  void wait_for(std::size_t n) {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(30), [&] {
      return statuses.size() >= n &&
             std::all_of(statuses.begin(), statuses.end(), [](int s) { return s != 0; });
    }));
  }
};

storage::WriteRequest put(std::string coll, std::string id) {
  storage::WriteRequest w;
  w.collection = std::move(coll);
  w.doc_id = std::move(id);
  w.body = "{\"n\":1}";
  return w;
}

}  // namespace

TEST_CASE("writes queued while a group commits are committed together", "[ipc][writer]") {
  test::TempDir dir;
  storage::StoreOptions so;
  so.data_dir = dir.path();
  auto s = storage::Store::open(so);
  REQUIRE(s);
  auto& store = **s;
  auto p = store.create_project("survey");
  REQUIRE(p);
  std::size_t notified = 0;
  store.set_change_listener([&](const ProjectId&, std::uint64_t) { ++notified; });
  const auto commits_before = store.commit_latency().count;

  WriterQueue writer(store, 64);
  Replies replies;
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool open = false, entered = false;
  // The first write holds its group open until the others are queued behind it.
  writer.post(replies.job(
      0,
      [&] {
        {
          std::unique_lock lock(gate_mu);
          entered = true;
          gate_cv.notify_all();
          gate_cv.wait(lock, [&] { return open; });
        }
        auto r = store.write(p->id, put("obs", "first"));
        return r ? json_response(200, "{}") : fail(r.error());
      },
      false));
  {
    std::unique_lock lock(gate_mu);
    REQUIRE(gate_cv.wait_for(lock, std::chrono::seconds(30), [&] { return entered; }));
  }
  for (int i = 1; i <= 5; ++i) {
    writer.post(replies.job(
        static_cast<std::size_t>(i),
        [&, i] {
          // Bad, the third: a collection name refused; the others go on.
          auto r = store.write(p->id, put(i == 3 ? "bad name" : "obs", "d" + std::to_string(i)));
          return r ? json_response(200, "{}") : fail(r.error());
        },
        false));
  }
  // An update of a document written earlier in the same group builds on it (nested
  // transactions see the group's earlier writes).
  writer.post(replies.job(
      6,
      [&] {
        auto r = store.write(p->id, put("obs", "d1"));
        return r ? json_response(200, "{}") : fail(r.error());
      },
      false));
  // Reads its own transaction: by itself, after the others.
  writer.post(replies.job(
      7,
      [&] {
        auto d = store.get_document(p->id, "obs", "d5");
        return d ? json_response(200, "{}") : fail(d.error());
      },
      true));
  {
    std::lock_guard lock(gate_mu);
    open = true;
  }
  gate_cv.notify_all();
  replies.wait_for(8);
  CHECK(replies.statuses == std::vector<int>{200, 200, 200, 400, 200, 200, 200, 200});
  // The first group, the five writes and the update, the alone job: three commits.
  CHECK(store.commit_latency().count - commits_before == 3);
  auto d1 = store.history(p->id, "obs", "d1", 10);
  REQUIRE(d1);
  CHECK(d1->size() == 2);
  auto doc = store.get_document(p->id, "obs", "d1");
  REQUIRE(doc);
  CHECK(doc->heads.size() == 1);  // the update's parent is the first write: no conflict
  CHECK(notified == 6);           // every successful write was told, after its group's commit
  CHECK_FALSE(store.get_document(p->id, "bad name", "d3"));
}

TEST_CASE("a group that fills the map keeps all its writes committed, or none of them",
          "[ipc][writer]") {
  test::TempDir dir;
  storage::StoreOptions so;
  so.data_dir = dir.path();
  so.durable = false;
  so.map_size_bytes = 1 << 20;    // fills up within the group
  so.body_compression_level = 0;  // the padded bodies below would compress to almost nothing
  auto s = storage::Store::open(so);
  REQUIRE(s);
  auto& store = **s;
  auto p = store.create_project("survey");
  REQUIRE(p);
  std::vector<storage::WriteResult> kept;
  Status committed = store.write_group([&] {
    for (int i = 0; i < 400; ++i) {
      storage::WriteRequest w = put("obs", "d" + std::to_string(i));
      w.body = "{\"pad\":\"" + std::string(4000, 'x') + "\"}";
      if (auto r = store.write(p->id, w)) kept.push_back(*r);
    }
  });
  // Either a write inside was refused for space, or the commit was: what the group kept is
  // all there or none of it is.
  auto list = store.list_documents(p->id, [] {
    storage::ListQuery q;
    q.collection = "obs";
    q.limit = 1000;
    return q;
  }());
  REQUIRE(list);
  if (committed) {
    CHECK(list->docs.size() == kept.size());
  } else {
    CHECK(list->docs.empty());
  }
  CHECK(kept.size() < 400);
}
