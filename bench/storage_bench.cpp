// Storage throughput: fieldsync Store vs raw LMDB doing the same writes, in one run.
// Usage: storage_bench <observations.jsonl> [single_docs] [batch_size]
// The input is the shared field-observation workload (one JSON object per line).
#include <lmdb.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>
#include <vector>

#include "storage/store.hpp"

using namespace fieldsync;
using Clock = std::chrono::steady_clock;

// Allocations through operator new made by the calling thread (the store's own work on it;
// the blob worker's indexing runs on its thread and is not counted).
namespace {
thread_local std::uint64_t t_allocs = 0;
}  // namespace

void* operator new(std::size_t n) {
  ++t_allocs;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

struct Doc {
  std::string id, body;
};

std::vector<Doc> load(const char* path) {
  std::ifstream in(path);
  std::vector<Doc> docs;
  std::string line;
  while (std::getline(in, line)) {
    auto p = line.find("\"id\":\"");
    auto e = line.find('"', p + 6);
    docs.push_back({line.substr(p + 6, e - p - 6), line});
  }
  return docs;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

std::filesystem::path fresh_dir(const char* name) {
  auto d = std::filesystem::temp_directory_path() /
           ("fieldsync-bench-" + std::to_string(::getpid()) + "-" + name);
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

// The same documents written with nothing but LMDB: one table, doc id -> body.
double raw_lmdb(const std::vector<Doc>& docs, std::size_t n, std::size_t batch) {
  auto dir = fresh_dir("raw");
  MDB_env* env;
  mdb_env_create(&env);
  mdb_env_set_mapsize(env, 8ull << 30);
  mdb_env_open(env, dir.c_str(), 0, 0600);
  MDB_dbi dbi;
  MDB_txn* txn;
  mdb_txn_begin(env, nullptr, 0, &txn);
  mdb_dbi_open(txn, nullptr, 0, &dbi);
  mdb_txn_commit(txn);
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; i += batch) {
    mdb_txn_begin(env, nullptr, 0, &txn);
    for (std::size_t j = i; j < std::min(n, i + batch); ++j) {
      MDB_val k{docs[j].id.size(), const_cast<char*>(docs[j].id.data())};
      MDB_val v{docs[j].body.size(), const_cast<char*>(docs[j].body.data())};
      mdb_put(txn, dbi, &k, &v, 0);
    }
    mdb_txn_commit(txn);
  }
  double s = seconds_since(t0);
  mdb_env_close(env);
  std::filesystem::remove_all(dir);
  return s;
}

std::unique_ptr<storage::Store> open(const std::filesystem::path& dir) {
  storage::StoreOptions o;
  o.data_dir = dir;
  o.map_size_bytes = 8ull << 30;
  // FS_BENCH_BODY_LEVEL: storage.body_compression_level (default: the store's default).
  if (const char* l = std::getenv("FS_BENCH_BODY_LEVEL"))
    o.body_compression_level = static_cast<std::uint32_t>(std::strtoul(l, nullptr, 10));
  auto s = storage::Store::open(o);
  if (!s) {
    std::fprintf(stderr, "%s\n", s.error().message.c_str());
    std::exit(1);
  }
  return std::move(*s);
}

std::uint64_t write_allocs = 0;  // operator new calls inside write_batch (store_writes)

double store_writes(storage::Store& s, const ProjectId& p, const std::vector<Doc>& docs,
                    std::size_t n, std::size_t batch) {
  auto t0 = Clock::now();
  std::vector<storage::WriteRequest> reqs;
  for (std::size_t i = 0; i < n; i += batch) {
    reqs.clear();
    for (std::size_t j = i; j < std::min(n, i + batch); ++j) {
      storage::WriteRequest r;
      r.collection = "observations";
      r.doc_id = docs[j].id;
      r.body = docs[j].body;
      reqs.push_back(std::move(r));
    }
    std::uint64_t a0 = t_allocs;
    auto w = s.write_batch(p, reqs);
    write_allocs += t_allocs - a0;
    if (!w) {
      std::fprintf(stderr, "write: %s\n", w.error().message.c_str());
      std::exit(1);
    }
  }
  return seconds_since(t0);
}

void row(const char* what, std::size_t n, double secs) {
  std::printf("| %-44s | %8zu | %8.3f | %10.0f |\n", what, n, secs, n / secs);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: storage_bench <observations.jsonl> [single_docs] [batch_size]\n");
    return 2;
  }
  auto docs = load(argv[1]);
  std::size_t n = docs.size();
  std::size_t single = argc > 2 ? std::stoul(argv[2]) : 2000;
  std::size_t batch = argc > 3 ? std::stoul(argv[3]) : 1000;
  single = std::min(single, n);
  std::printf(
      "%zu documents, %zu bytes average, batches of %zu, durable commits (fsync)\n\n", n,
      [&] {
        std::size_t t = 0;
        for (auto& d : docs) t += d.body.size();
        return t / std::max<std::size_t>(n, 1);
      }(),
      batch);
  std::printf("| %-44s | %8s | %8s | %10s |\n", "operation", "items", "seconds", "items/s");
  std::printf("|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(10, '-').c_str(),
              std::string(10, '-').c_str(), std::string(12, '-').c_str());

  // The machine is shared: interleave the two and keep the best of three runs each.
  double raw_batched = 1e9, fs_batched = 1e9, raw_cpu = 1e9, fs_cpu = 1e9;
  auto dir_a = fresh_dir("a");
  std::unique_ptr<storage::Store> a;
  storage::ProjectInfo p;
  double write_allocs_per_doc = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double c0 = cpu_seconds();
    raw_batched = std::min(raw_batched, raw_lmdb(docs, n, batch));
    raw_cpu = std::min(raw_cpu, cpu_seconds() - c0);
    a.reset();
    std::filesystem::remove_all(dir_a);
    a = open(dir_a);
    p = a->create_project("bench").value();
    c0 = cpu_seconds();
    write_allocs = 0;
    fs_batched = std::min(fs_batched, store_writes(*a, p.id, docs, n, batch));
    fs_cpu = std::min(fs_cpu, cpu_seconds() - c0);
    write_allocs_per_doc = static_cast<double>(write_allocs) / static_cast<double>(n);
  }
  std::printf("(CPU seconds, best of 3: raw LMDB %.3f, fieldsync %.3f)\n", raw_cpu, fs_cpu);
  row("raw LMDB put, batched (best of 3)", n, raw_batched);
  row("fieldsync write_batch (best of 3)", n, fs_batched);

  double raw_single = raw_lmdb(docs, single, 1);
  row("raw LMDB put, one commit per doc", single, raw_single);
  auto dir_s = fresh_dir("s");
  {
    auto s = open(dir_s);
    auto ps = s->create_project("bench-single").value();
    double fs_single = store_writes(*s, ps.id, docs, single, 1);
    row("fieldsync write, one commit per doc", single, fs_single);
    std::printf("\nratio batched (fieldsync / raw LMDB docs/s): %.2f\n", raw_batched / fs_batched);
    std::printf("ratio single  (fieldsync / raw LMDB docs/s): %.2f\n\n", raw_single / fs_single);
  }

  // "Everything after this vector": read the whole log as a sync would, then verify
  // and apply it on an empty second store.
  auto dir_b = fresh_dir("b");
  auto b = open(dir_b);
  b->add_project(p, a->project_secret(p.id).value()).value();
  std::vector<storage::LogBatch> batches;
  auto t0 = Clock::now();
  std::uint64_t at = 0;
  std::uint64_t read_allocs = 0;
  while (true) {
    std::uint64_t a0 = t_allocs;
    auto lb = a->read_log(p.id, a->device_id(), at, 512, 1u << 20);
    read_allocs += t_allocs - a0;
    if (!lb || lb->entries.empty()) break;
    at = lb->entries.back().seq;
    batches.push_back(std::move(*lb));
  }
  row("read_log: entries after an empty vector", at, seconds_since(t0));
  t0 = Clock::now();
  std::uint64_t a0 = t_allocs;
  for (const auto& lb : batches) b->apply_log(p.id, lb).value();
  std::uint64_t apply_allocs = t_allocs - a0;
  row("apply_log: verify + apply on an empty store", at, seconds_since(t0));
  std::printf("operator new calls per document: write_batch %.1f, read_log %.1f, apply_log %.1f\n",
              write_allocs_per_doc, static_cast<double>(read_allocs) / static_cast<double>(at),
              static_cast<double>(apply_allocs) / static_cast<double>(at));
  t0 = Clock::now();
  auto vv = b->version_vector(p.id).value();
  auto none = a->read_log(p.id, a->device_id(), vv.at(a->device_id()), 512, 1u << 20).value();
  std::printf("no-op check (vector + empty read_log): %.3f ms, %zu entries\n",
              seconds_since(t0) * 1000, none.entries.size());

  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("peak RSS: %ld MB\n", ru.ru_maxrss / 1024);
  a.reset();
  b.reset();
  for (auto& d : {dir_a, dir_b, dir_s}) std::filesystem::remove_all(d);
  return 0;
}
