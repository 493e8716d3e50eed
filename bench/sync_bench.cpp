// sync_bench: S2-S4 of the field-observation workload (/work/shared/workload/README.md)
// between two devices in one process, each with its own Store, SyncService, io_context
// and thread, over real TCP + TLS 1.3 on 127.0.0.1.
//
//   observations.py 100000 > obs.jsonl
//   observations.py 101000 | tail -n 1000 > new.jsonl          # 1% new
//   observations.py 100000 --update-fraction 0.01 > upd.jsonl   # 1% updated
//   sync_bench obs.jsonl upd.jsonl new.jsonl [workdir]
//
// S1 (write N) here is a direct batched Store write, not the API (see bench/api*).
// Prints one line per scenario: time, docs/s, wire bytes (TCP payload both directions,
// from TCP_INFO) per doc, protocol bytes, and the process's peak RSS (both devices).
#include <sys/resource.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <thread>

#include <spdlog/spdlog.h>

#include "peers/peer_manager.hpp"
#include "storage/store.hpp"
#include "transports/tcp_tls/tcp_tls.hpp"

using namespace fieldsync;
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

// The "id" member of an observation line.
std::string id_of(const std::string& line) {
  auto k = line.find("\"id\":\"");
  if (k == std::string::npos) return {};
  auto e = line.find('"', k + 6);
  return line.substr(k + 6, e - k - 6);
}

// Overrides for experiments: FS_BENCH_BATCH_ENTRIES, FS_BENCH_BATCH_BYTES, FS_BENCH_WINDOW,
// FS_BENCH_DURABLE=0.
std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

config::SyncOptions bench_options() {
  config::SyncOptions o;
  o.listen_address = "127.0.0.1";
  o.listen_port = 0;
  o.batch_entries = static_cast<std::uint32_t>(env_or("FS_BENCH_BATCH_ENTRIES", o.batch_entries));
  o.batch_bytes = env_or("FS_BENCH_BATCH_BYTES", o.batch_bytes);
  o.window_batches = static_cast<std::uint32_t>(env_or("FS_BENCH_WINDOW", o.window_batches));
  return o;
}

long peak_rss_kb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// A peer manager with the TCP + TLS transport, as the daemon builds it.
std::unique_ptr<peers::PeerManager> make_manager(asio::io_context& io, storage::Store& store,
                                                 const std::string& name,
                                                 transports::TcpTls** tcp) {
  auto m = std::make_unique<peers::PeerManager>(io, store, bench_options(), name);
  auto t = transports::TcpTls::create(io, store.signing_key(),
                                      transports::tcp_tls_options(bench_options()));
  if (!t.ok()) throw std::runtime_error(t.error().message);
  *tcp = t->get();
  m->add_transport(std::move(*t));
  return m;
}

struct Device {
  asio::io_context io;
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<peers::PeerManager> svc;
  transports::TcpTls* tcp = nullptr;  // owned by svc
  std::thread thread;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);

  Device(const std::filesystem::path& dir, const std::string& name) {
    storage::StoreOptions so;
    so.data_dir = dir;
    so.durable = env_or("FS_BENCH_DURABLE", 1) != 0;
    auto s = storage::Store::open(so);
    if (!s.ok()) throw std::runtime_error(s.error().message);
    store = std::move(*s);
    svc = make_manager(io, *store, name, &tcp);
    store->set_change_listener(
        [this](const ProjectId& p, std::uint64_t) { svc->notify_change(p); });
    thread = std::thread([this] { io.run(); });
    call([&] {
      if (!svc->start().ok()) throw std::runtime_error("start failed");
      return 0;
    });
  }
  ~Device() {
    call([&] {
      svc->stop();
      return 0;
    });
    work.reset();
    io.stop();
    thread.join();
    store->set_change_listener(nullptr);
  }
  template <class F>
  auto call(F f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    asio::post(io, [&task] { task(); });
    return fut.get();
  }
  DeviceId id() const { return store->device_id(); }
};

void write_all(storage::Store& s, const ProjectId& p, const std::vector<std::string>& lines,
               bool update) {
  std::vector<storage::WriteRequest> batch;
  for (const auto& line : lines) {
    storage::WriteRequest r;
    r.collection = "observations";
    r.doc_id = id_of(line);
    r.body = line;
    r.use_current = update;
    r.must_not_exist = !update;
    batch.push_back(std::move(r));
    if (batch.size() == 1000) {
      auto w = s.write_batch(p, batch);
      if (!w.ok()) throw std::runtime_error(w.error().message);
      batch.clear();
    }
  }
  if (!batch.empty() && !s.write_batch(p, batch).ok()) throw std::runtime_error("write failed");
}

// Waits until b holds a's vector and b's session with a says in sync.
void wait_converged(Device& a, Device& b, const ProjectId& p) {
  auto target = *a.store->version_vector(p);
  for (;;) {
    auto have = *b.store->version_vector(p);
    if (have == target) {
      bool in_sync = b.call([&] {
        auto s = b.svc->peer(a.id());
        return s.ok() && s->state == peers::PeerState::in_sync;
      });
      if (in_sync) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

struct Wire {
  std::uint64_t wire = 0, proto = 0;
};
Wire wire_of(Device& b, const DeviceId& a) {
  return b.call([&] {
    auto s = b.svc->peer(a);
    Wire w;
    if (!s.ok()) return w;
    w.wire = s->wire_bytes_sent + s->wire_bytes_received;
    if (s->session) w.proto = s->session->bytes_sent + s->session->bytes_received;
    return w;
  });
}

void report(const char* name, std::size_t docs, double secs, Wire w) {
  std::printf(
      "%-22s docs=%-7zu time=%8.3f s  docs/s=%9.0f  wire=%10llu B (%7.1f B/doc)  protocol=%10llu B "
      " peak_rss=%ld MB\n",
      name, docs, secs, docs / std::max(secs, 1e-9), static_cast<unsigned long long>(w.wire),
      docs ? double(w.wire) / double(docs) : 0.0, static_cast<unsigned long long>(w.proto),
      peak_rss_kb() / 1024);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: sync_bench OBS.jsonl UPDATES.jsonl NEW.jsonl [workdir]\n");
    return 2;
  }
  auto obs = read_lines(argv[1]), upd = read_lines(argv[2]), fresh = read_lines(argv[3]);
  std::filesystem::path dir =
      argc > 4 ? argv[4] : std::filesystem::temp_directory_path() / "fieldsync-sync-bench";
  std::filesystem::remove_all(dir);
  spdlog::set_level(spdlog::level::warn);
  {
    Device a(dir / "a", "bench-a");
    auto b = std::make_unique<Device>(dir / "b", "bench-b");
    auto proj = a.store->create_project("bench");
    auto secret = a.store->project_secret(proj->id);
    (void)b->store->add_project(*proj, *secret);
    ProjectId p = proj->id;

    auto t0 = Clock::now();
    write_all(*a.store, p, obs, false);
    report("S1 write (store)", obs.size(), std::chrono::duration<double>(Clock::now() - t0).count(),
           {});

    // S2: the empty peer dials and receives everything.
    std::string addr = "127.0.0.1:" + std::to_string(a.tcp->port());
    t0 = Clock::now();
    b->call([&] { return b->svc->add_peer(addr, a.id()).ok(); });
    wait_converged(a, *b, p);
    report("S2 initial sync", obs.size(), std::chrono::duration<double>(Clock::now() - t0).count(),
           wire_of(*b, a.id()));

    // S3: 1% updated + 1% new on a, pushed live over the open session.
    Wire before = wire_of(*b, a.id());
    t0 = Clock::now();
    write_all(*a.store, p, upd, true);
    write_all(*a.store, p, fresh, false);
    wait_converged(a, *b, p);
    Wire after = wire_of(*b, a.id());
    report("S3 incremental (live)", upd.size() + fresh.size(),
           std::chrono::duration<double>(Clock::now() - t0).count(),
           {after.wire - before.wire, after.proto - before.proto});

    // S4: b restarts its sync service; one full session with nothing to send.
    b->call([&] {
      b->svc->stop();
      b->svc = make_manager(b->io, *b->store, "bench-b", &b->tcp);
      (void)b->svc->start();
      return b->svc->add_peer(addr, a.id()).ok();
    });
    t0 = Clock::now();
    wait_converged(a, *b, p);
    double s4 = std::chrono::duration<double>(Clock::now() - t0).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the last ACK/DONE be acked
    report("S4 no-op sync", 0, s4, wire_of(*b, a.id()));
  }
  std::filesystem::remove_all(dir);
  return 0;
}
