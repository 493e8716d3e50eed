// Record limits: what a writer accepts always reads back, and one unreadable record never
// takes down the listings of a device.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include "storage/lmdb_env.hpp"
#include "storage/records.hpp"
#include "store_fixture.hpp"

using namespace fieldsync;
using namespace fieldsync::storage;
using fieldsync::test::open_store;
using fieldsync::test::TempDir;

namespace {

std::string settings_of_size(std::size_t n) {
  std::string s = R"({"pad":")";
  s += std::string(n - s.size() - 2, 'x');
  return s + "\"}";
}

// Writes a project record straight into the projects table, as an older daemon that had no
// write-side limit did.
void put_raw_project(const std::filesystem::path& data_dir, const ProjectId& id,
                     const ProjectRecord& rec) {
  auto env = LmdbEnv::open(data_dir / "db", 1ull << 30, false);
  REQUIRE(env.ok());
  auto txn = LmdbTxn::begin(**env, true);
  REQUIRE(txn.ok());
  REQUIRE(txn->put((*env)->tables().projects, id.view(), rec.encode()).ok());
  REQUIRE(txn->commit().ok());
}

}  // namespace

TEST_CASE("project settings over the read-back limit are refused when written") {
  TempDir dir;
  auto s = open_store(dir.path());
  auto ok = s->create_project("at limit", settings_of_size(kMaxProjectSettingsBytes));
  REQUIRE(ok.ok());
  auto back = s->get_project(ok->id);
  REQUIRE(back.ok());  // what was accepted reads back
  CHECK(back->settings_json.size() == kMaxProjectSettingsBytes);

  auto big = settings_of_size(kMaxProjectSettingsBytes + 1);
  auto created = s->create_project("too big", big);
  REQUIRE_FALSE(created.ok());
  CHECK(created.error().code == Errc::too_large);
  auto patched = s->update_project(ok->id, std::nullopt, big);
  REQUIRE_FALSE(patched.ok());
  CHECK(patched.error().code == Errc::too_large);
  auto list = s->list_projects();
  REQUIRE(list.ok());
  CHECK(list->size() == 1);
}

TEST_CASE("an unreadable project record is skipped and reported, and can be left") {
  TempDir dir;
  ProjectId good, bad;
  {
    auto s = open_store(dir.path());
    good = s->create_project("good").value().id;
    auto other = s->create_project("bad").value();
    bad = other.id;
  }
  {
    ProjectRecord rec;
    rec.info.name = "bad";
    rec.info.settings_json = settings_of_size(kMaxProjectSettingsBytes + 10);
    rec.secret.assign(32, 1);
    rec.info.creator.bytes[0] = 1;
    put_raw_project(dir.path(), bad, rec);
  }
  auto s = open_store(dir.path());
  std::vector<ProjectProblem> problems;
  auto list = s->list_projects(&problems);
  REQUIRE(list.ok());
  REQUIRE(list->size() == 1);
  CHECK(list->front().id == good);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].id == bad.str());
  CHECK_FALSE(problems[0].error.empty());
  CHECK(s->get_project(good).ok());
  CHECK(s->get_project(bad).error().code == Errc::data_loss);
  REQUIRE(s->leave_project(bad).ok());
  problems.clear();
  CHECK(s->list_projects(&problems)->size() == 1);
  CHECK(problems.empty());
}

TEST_CASE("the data directory and the db directory are created 0700 under umask 000") {
  TempDir dir;
  mode_t old = ::umask(0);
  auto data = dir.path() / "a" / "b" / "data";
  { auto s = open_store(data); }
  ::umask(old);
  for (const auto& p : {dir.path() / "a", dir.path() / "a" / "b", data, data / "db"}) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    INFO(p.string());
    CHECK((st.st_mode & 07777) == 0700);
  }
  for (const auto& p : {data / "device.key", data / "db" / "data.mdb"}) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    INFO(p.string());
    CHECK((st.st_mode & 07777) == 0600);
  }
}
