// TCP access policy: Host header (DNS rebinding) and bearer token; the token file.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <fstream>

#include "ipc/api_access.hpp"
#include "storage/temp_dir.hpp"

using namespace fieldsync;
using namespace fieldsync::ipc;

TEST_CASE("only loopback Host headers pass") {
  for (const char* ok : {"localhost", "localhost:7890", "LocalHost:1", "127.0.0.1", "127.0.0.1:80",
                         "[::1]", "[::1]:7890"})
    CHECK(is_loopback_host(ok));
  for (const char* bad :
       {"", "evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "127.0.0.2", "[::2]:1",
        "localhost:", "localhost:80x", "[::1]x", "localhost:80:80", "::1", "0.0.0.0"})
    CHECK_FALSE(is_loopback_host(bad));
}

TEST_CASE("check_tcp_access: Host first, then the bearer token") {
  const std::string token(64, 'a');
  ApiRequest r;
  auto code = [&] {
    auto st = check_tcp_access(r, token);
    return st ? Errc::ok : st.error().code;
  };
  CHECK(code() == Errc::permission_denied);  // no Host at all
  r.headers["host"] = "evil.example";
  r.headers["authorization"] = "Bearer " + token;
  CHECK(code() == Errc::permission_denied);
  r.headers["host"] = "localhost:1234";
  CHECK(code() == Errc::ok);
  r.headers["authorization"] = "bearer " + token;  // scheme is case-insensitive
  CHECK(code() == Errc::ok);
  r.headers["authorization"] = "Bearer " + std::string(64, 'b');
  CHECK(code() == Errc::unauthenticated);
  r.headers["authorization"] = "Bearer " + token.substr(1);
  CHECK(code() == Errc::unauthenticated);
  r.headers["authorization"] = "Basic " + token;
  CHECK(code() == Errc::unauthenticated);
  r.headers.erase("authorization");
  CHECK(code() == Errc::unauthenticated);
}

TEST_CASE("the token file is created once, 0600, and refused when corrupt") {
  test::TempDir dir;
  auto path = dir.path() / "api.token";
  auto t1 = load_or_create_token(path);
  REQUIRE(t1);
  CHECK(t1->size() == 64);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto t2 = load_or_create_token(path);
  REQUIRE(t2);
  CHECK(*t2 == *t1);
  { std::ofstream(path) << "short\n"; }
  auto bad = load_or_create_token(path);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Errc::data_loss);
}
