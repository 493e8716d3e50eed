// kill -9 a writer mid-write many times; after each kill the store must reopen with
// every acknowledged write present and every log verifying from genesis.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <random>

#include "store_fixture.hpp"

using namespace fieldsync;
using fieldsync::test::copy_logs;
using fieldsync::test::TempDir;

// The writer binary comes from ctest (FIELDSYNC_CRASH_WRITER).
static const std::string g_writer = [] {
  const char* w = std::getenv("FIELDSYNC_CRASH_WRITER");
  return std::string(w ? w : "");
}();

TEST_CASE("kill -9 mid-write keeps every acknowledged write") {
  REQUIRE_FALSE(g_writer.empty());
  TempDir dir;
  ProjectId pid;
  {
    auto s = test::open_store(dir.path());
    pid = s->create_project("crash").value().id;
  }
  std::mt19937 rng(42);
  std::vector<std::pair<std::string, std::string>> acked;  // doc id, version id
  for (int round = 0; round < 12; ++round) {
    int out[2];
    REQUIRE(::pipe(out) == 0);
    pid_t child = ::fork();
    if (child == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      std::string seed = std::to_string(round);
      ::execl(g_writer.c_str(), g_writer.c_str(), dir.path().c_str(), pid.str().c_str(),
              seed.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(out[1]);
    FILE* f = ::fdopen(out[0], "r");
    const int kill_after = 1 + static_cast<int>(rng() % 200);
    char line[256];
    int n = 0;
    while (n < kill_after && std::fgets(line, sizeof line, f)) {
      char doc[128], ver[80];
      if (std::sscanf(line, "ACK %127s %79s", doc, ver) == 2) {
        acked.emplace_back(doc, ver);
        ++n;
      }
    }
    ::kill(child, SIGKILL);  // lands while the writer is inside its next batch
    // Lines the writer acknowledged before dying count too.
    while (std::fgets(line, sizeof line, f)) {
      char doc[128], ver[80];
      if (std::sscanf(line, "ACK %127s %79s", doc, ver) == 2) acked.emplace_back(doc, ver);
    }
    std::fclose(f);
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(n == kill_after);

    auto s = test::open_store(dir.path());
    for (const auto& [doc, ver] : acked) {
      auto v = s->get_version(pid, "obs", doc, VersionId::parse(ver).value());
      INFO(doc << " " << ver);
      REQUIRE(v.ok());
      CHECK(v->header.doc_id == doc);
    }
    // Every log verifies from genesis (hashes, chain, signatures) in a fresh store.
    TempDir fresh;
    auto check = test::open_store(fresh.path());
    REQUIRE(check->add_project(s->get_project(pid).value(), s->project_secret(pid).value()).ok());
    copy_logs(*s, *check, pid, 97);
    CHECK(check->version_vector(pid).value() == s->version_vector(pid).value());
    auto last = s->last_change_seq(pid).value();
    auto changes = s->changes_since(pid, 0, 1000000).value();
    CHECK(changes.size() == last);
    CHECK(check->last_change_seq(pid).value() == last);
  }
  CHECK(acked.size() > 12);
}
