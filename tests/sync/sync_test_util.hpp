// Test helpers for sync: temp stores and an in-memory pipe joining two Sessions.
#pragma once

#include <catch2/catch.hpp>

#include <unistd.h>
#include <atomic>
#include <deque>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>

#include "storage/store.hpp"
#include "sync/messages.hpp"
#include "sync/session.hpp"

namespace fieldsync::sync::test {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static std::atomic<int> n{0};
    path = std::filesystem::temp_directory_path() /
           ("fs-sync-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// A store in a temp dir that records which projects changed (as the service would post).
struct Node {
  TempDir dir;
  std::unique_ptr<storage::Store> store;
  // Written by the change listener, which runs on whichever thread commits (the blob worker
  // too): read it only through take_changed().
  std::mutex changed_mu;
  std::set<ProjectId> changed;
  std::set<ProjectId> take_changed() {
    std::lock_guard lock(changed_mu);
    return std::exchange(changed, {});
  }

  explicit Node(std::uint32_t checkpoint_interval = 256) {
    storage::StoreOptions o;
    o.data_dir = dir.path / "data";
    o.durable = false;
    o.map_size_bytes = 1ull << 30;
    o.checkpoint_interval = checkpoint_interval;
    auto s = storage::Store::open(o);
    REQUIRE(s.ok());
    store = std::move(*s);
    store->set_change_listener([this](const ProjectId& p, std::uint64_t) {
      std::lock_guard lock(changed_mu);
      changed.insert(p);
    });
  }

  // Writes n docs "c/d<start+i>" in one batch.
  void write_docs(const ProjectId& p, int start, int n, const std::string& tag = "v") {
    std::vector<storage::WriteRequest> reqs;
    for (int i = 0; i < n; ++i) {
      storage::WriteRequest r;
      r.collection = "obs";
      r.doc_id = "d" + std::to_string(start + i);
      r.body = "{\"n\":" + std::to_string(start + i) + ",\"tag\":\"" + tag + "\"}";
      r.use_current = true;
      reqs.push_back(std::move(r));
    }
    auto w = store->write_batch(p, reqs);
    REQUIRE(w.ok());
  }
};

inline ProjectId shared_project(Node& a, Node& b) {
  auto p = a.store->create_project("survey");
  REQUIRE(p.ok());
  auto secret = a.store->project_secret(p->id);
  REQUIRE(secret.ok());
  REQUIRE(b.store->add_project(*p, *secret).ok());
  return p->id;
}

inline SessionParams params(std::string name, SessionOptions o = {}) {
  SessionParams p;
  p.options = o;
  p.device_name = std::move(name);
  p.channel_binding = Bytes(32, 0x42);
  return p;
}

// Joins two sessions like a reliable byte stream. `cut_after` total bytes (both ways)
// breaks the pipe: bytes past it are dropped and both sessions see transport_closed.
struct Pipe {
  Session& a;
  Session& b;
  Node* na = nullptr;
  Node* nb = nullptr;
  std::size_t cut_after = SIZE_MAX;
  std::size_t moved = 0;
  bool broken = false;
  std::size_t chunk = 1000;  // output taken per step
  std::mt19937 rng{7};

  // Delivers `bytes` to `to` in random pieces (exercises frame reassembly).
  void deliver(Session& to, const Bytes& bytes) {
    std::size_t i = 0;
    while (i < bytes.size()) {
      if (moved >= cut_after) {
        broken = true;
        a.transport_closed("cut");
        b.transport_closed("cut");
        return;
      }
      std::size_t n = std::min<std::size_t>({bytes.size() - i, 1 + rng() % 700, cut_after - moved});
      to.receive(ByteView(bytes).subspan(i, n));
      i += n;
      moved += n;
    }
  }

  void post_changes(Node* n, Session& s) {
    if (!n) return;
    for (const auto& p : n->take_changed()) s.notify_local_change(p);
  }

  // Runs until both sides are quiet (or the pipe breaks). Returns the step count.
  int run(int max_steps = 100000) {
    int steps = 0;
    for (; steps < max_steps && !broken; ++steps) {
      post_changes(na, a);
      post_changes(nb, b);
      Bytes x = a.take_output(chunk);
      Bytes y = b.take_output(chunk);
      if (x.empty() && y.empty()) break;
      deliver(b, x);
      if (broken) break;
      deliver(a, y);
    }
    return steps;
  }
};

// Plays device `from` against session `s` up to the log exchange, with these features.
// One session of `a` with `b` to its end: the bytes it moved both ways, and the protocol
// version both sides agreed on (checked to be the same).
struct SessionRun {
  std::size_t moved = 0;
  std::uint16_t protocol = 0;
};
inline SessionRun run_session(Node& a, SessionParams pa, Node& b, SessionParams pb) {
  Session sa(*a.store, std::move(pa)), sb(*b.store, std::move(pb));
  sa.start();
  sb.start();
  Pipe pipe{sa, sb};
  pipe.run();
  REQUIRE(sa.progress().protocol == sb.progress().protocol);
  return {pipe.moved, sa.progress().protocol};
}

inline void handshake(Session& s, Node& from, const ProjectId& p, std::uint64_t features) {
  Bytes in;
  Hello h;
  h.device = from.store->device_id();
  h.device_name = "fake";
  h.features = features;
  h.max_frame_bytes = 4u << 20;
  encode_hello(in, h);
  auto secret = from.store->project_secret(p);
  REQUIRE(secret.ok());
  encode_projects(in,
                  Projects{{membership_proof(*secret, Bytes(32, 0x42), from.store->device_id())}});
  encode_vector(in, MsgType::vv, VectorMsg{p, {}});
  s.receive(in);
  REQUIRE(s.state() == SessionState::active);
}

inline storage::DocumentState doc(Node& n, const ProjectId& p, const std::string& id) {
  auto d = n.store->get_document(p, "obs", id);
  REQUIRE(d.ok());
  return *d;
}

}  // namespace fieldsync::sync::test
