// A full disk: writes fail with resource_exhausted and nothing acknowledged is lost.
// Needs a small file system of its own (a 2 MB tmpfs), so root and mount(2). Where it cannot
// mount, the test does not pass: it exits 77, which ctest reports as skipped (SKIP_RETURN_CODE).
#include <sys/mount.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "store_fixture.hpp"

using namespace fieldsync;
using fieldsync::test::put;
using fieldsync::test::TempDir;

namespace {

constexpr int kSkip = 77;

// Whether a tmpfs can be mounted here (root, and mount(2) allowed in this container).
bool can_mount_tmpfs(std::string& why) {
  if (::geteuid() != 0) {
    why = "not root";
    return false;
  }
  TempDir dir;
  if (::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=1m") != 0) {
    why = std::string("mount tmpfs: ") + std::strerror(errno);
    return false;
  }
  ::umount2(dir.path().c_str(), MNT_DETACH);
  return true;
}

}  // namespace

TEST_CASE("a full disk gives resource_exhausted and loses nothing acknowledged",
          "[storage][disk]") {
  std::string why;
  if (!can_mount_tmpfs(why)) {
    std::printf("SKIP: the full-disk test needs a tmpfs of its own (%s)\n", why.c_str());
    std::fflush(stdout);
    std::exit(kSkip);  // before any check: ctest reports it skipped, never passed
  }
  TempDir dir;
  auto mnt = dir.path() / "small";
  std::filesystem::create_directories(mnt);
  // Mounting works here (checked above): failing now is a failure, not a skip.
  REQUIRE(::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=2m") == 0);
  std::vector<std::string> written;
  Error last;
  {
    storage::StoreOptions o;
    o.data_dir = mnt / "data";
    o.map_size_bytes = 64 << 20;  // far larger than the disk: the disk fills first
    auto s = storage::Store::open(o);
    REQUIRE(s.ok());
    auto p = (*s)->create_project("survey");
    REQUIRE(p.ok());
    // Random letters, so that compression at rest cannot shrink the bodies to nothing.
    std::mt19937 rng(3);
    const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 2000; ++i) {
      std::string pad;
      for (int k = 0; k < 3000; ++k) pad += b64[rng() % 64];
      std::string body = R"({"pad":")" + pad + "\"}";
      auto w = (*s)->write(p->id, put("obs", "d" + std::to_string(i), body));
      if (!w) {
        last = w.error();
        break;
      }
      written.push_back("d" + std::to_string(i));
    }
    REQUIRE_FALSE(written.empty());
    REQUIRE(written.size() < 2000);
    CHECK(last.code == Errc::resource_exhausted);
    CHECK(last.message.find("disk full") != std::string::npos);
    // Reads still work, and so does a write after space is freed.
    CHECK((*s)->get_document(p->id, "obs", written.back()).ok());
    auto projects = (*s)->list_projects();
    REQUIRE(projects.ok());
    CHECK(projects->size() == 1);
    // Every acknowledged write is there after reopening.
    auto pid = p->id;
    s->reset();
    auto again = storage::Store::open(o);
    REQUIRE(again.ok());
    for (const auto& id : written) CHECK((*again)->get_document(pid, "obs", id).ok());
  }
  ::umount2(mnt.c_str(), MNT_DETACH);
}
