// TCP access policy: Host header (DNS rebinding) and bearer token; the token file.
#include <sys/stat.h>
#include <unistd.h>

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

TEST_CASE("api.token_group: the token is 0640 with the group, and private again without it") {
  test::TempDir dir;
  auto path = dir.path() / "api.token";
  const unsigned gid = ::getgid();  // a group this process may always give a file to
  auto t1 = load_or_create_token(path, gid);
  REQUIRE(t1);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  CHECK(st.st_gid == gid);
  auto t2 = load_or_create_token(path);
  REQUIRE(t2);
  CHECK(*t2 == *t1);
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(token_group_id("").value() == std::nullopt);
  auto none = token_group_id("no-such-group-fs");
  REQUIRE_FALSE(none);
  CHECK(none.error().message.find("api.token_group: no group named") != std::string::npos);
}

TEST_CASE("stream tickets: used once, until they expire, at most 64 live, changes feed only") {
  StreamTickets t;
  const std::int64_t now = 1'000'000;
  auto a = t.issue(now, 60000);
  auto b = t.issue(now, 60000);
  CHECK(a.size() == 64);
  CHECK(a != b);
  CHECK(t.redeem(a, now + 59999));
  CHECK_FALSE(t.redeem(a, now + 1));      // used
  CHECK_FALSE(t.redeem(b, now + 60000));  // expired (and gone)
  CHECK_FALSE(t.redeem(b, now));
  CHECK_FALSE(t.redeem("", now));
  // Issuing beyond the bound drops the oldest.
  auto first = t.issue(now, 60000);
  for (std::size_t i = 0; i < StreamTickets::kMaxOutstanding; ++i) (void)t.issue(now, 60000);
  CHECK_FALSE(t.redeem(first, now));

  // Through the access check: only GET .../changes?ticket= takes one, and it leaves the query.
  const std::string token(64, 'a');
  ApiRequest r;
  r.method = "GET";
  r.headers["host"] = "localhost";
  r.segments = {"v1", "projects", "0123", "changes"};
  auto c = t.issue(now, 60000);
  r.query.emplace("ticket", c);
  r.query.emplace("feed", "sse");
  REQUIRE(check_tcp_access(r, {token, &t}, now).ok());
  CHECK(r.query.count("ticket") == 0);
  CHECK(r.query.count("feed") == 1);
  r.query.emplace("ticket", c);
  CHECK(check_tcp_access(r, {token, &t}, now).error().code == Errc::unauthenticated);
  auto d = t.issue(now, 60000);
  ApiRequest other = r;
  other.query = {{"ticket", d}};
  other.segments = {"v1", "projects", "0123", "docs"};
  CHECK(check_tcp_access(other, {token, &t}, now).error().code == Errc::unauthenticated);
  other.segments = {"v1", "projects", "0123", "changes"};
  other.method = "POST";
  CHECK(check_tcp_access(other, {token, &t}, now).error().code == Errc::unauthenticated);
  other.method = "GET";
  other.headers["host"] = "evil.example";  // the Host check comes first
  CHECK(check_tcp_access(other, {token, &t}, now).error().code == Errc::permission_denied);
}

TEST_CASE("status page: its files are public, a session reads what the page shows, no more") {
  StreamTickets sessions;
  const std::int64_t now = 1'000'000;
  const std::string token(64, 'a');
  const std::string session = sessions.issue(now, kUiSessionMs);
  CHECK(sessions.holds(session, now + kUiSessionMs - 1));
  CHECK(sessions.holds(session, now));  // not used up by a check
  CHECK_FALSE(sessions.holds(session, now + kUiSessionMs));
  CHECK_FALSE(sessions.holds(std::string(64, 'b'), now));
  auto req = [](std::string method, std::vector<std::string> segments) {
    ApiRequest r;
    r.method = std::move(method);
    r.segments = std::move(segments);
    r.headers["host"] = "127.0.0.1:7890";
    return r;
  };
  auto code = [&](ApiRequest r, const std::string& bearer) {
    if (!bearer.empty()) r.headers["authorization"] = "Bearer " + bearer;
    auto st = check_tcp_access(r, {token, nullptr, &sessions}, now);
    return st.ok() ? Errc::ok : st.error().code;
  };
  for (auto r : {req("GET", {"ui"}), req("GET", {"ui", "app.js"}), req("GET", {"ui", "app.css"}),
                 req("POST", {"ui", "session"})}) {
    CHECK(is_ui_public(r));
    CHECK(code(r, "") == Errc::ok);
    r.headers["host"] = "evil.example";
    CHECK(code(r, "") == Errc::permission_denied);
  }
  CHECK(code(req("GET", {"ui", "other"}), "") == Errc::unauthenticated);
  CHECK(code(req("POST", {"ui"}), "") == Errc::unauthenticated);
  for (auto r : {req("GET", {"v1", "status"}), req("GET", {"v1", "peers"}),
                 req("GET", {"v1", "projects"}), req("GET", {"v1", "projects", "p", "sync"}),
                 req("GET", {"v1", "projects", "p", "conflicts"}),
                 req("GET", {"v1", "projects", "p", "invites"}),
                 req("POST", {"v1", "projects", "p", "invites"})}) {
    CHECK(code(r, session) == Errc::ok);
    r.headers["origin"] = "HTTP://127.0.0.1:7890";  // its own origin, in any case
    CHECK(code(r, session) == Errc::ok);
    r.headers["origin"] = "http://localhost:5173";
    CHECK(code(r, session) == Errc::permission_denied);
  }
  for (auto r : {req("POST", {"v1", "projects"}), req("GET", {"v1", "projects", "p", "secret"}),
                 req("GET", {"v1", "projects", "p", "docs", "c"}),
                 req("DELETE", {"v1", "peers", "x"}), req("POST", {"v1", "tickets"}),
                 req("POST", {"v1", "ui", "login"}), req("GET", {"metrics"})})
    CHECK(code(r, session) == Errc::permission_denied);
  CHECK(code(req("POST", {"v1", "projects"}), token) == Errc::ok);  // the token: everything
  CHECK(code(req("GET", {"v1", "status"}), std::string(64, 'c')) == Errc::unauthenticated);
}

TEST_CASE("CORS: allowed origins get the headers and a preflight answer, others nothing") {
  auto allowed = parse_origins(" http://localhost:5173 ,HTTPS://App.Example:8443,,");
  REQUIRE(allowed == std::vector<std::string>{"http://localhost:5173", "https://app.example:8443"});
  CHECK(cors_headers(allowed, std::nullopt).empty());
  CHECK(cors_headers(allowed, "http://localhost:5174").empty());
  CHECK(cors_headers(allowed, "null").empty());
  auto h = cors_headers(allowed, "https://app.example:8443");
  REQUIRE(!h.empty());
  CHECK(h[0] == std::pair<std::string, std::string>{"Access-Control-Allow-Origin",
                                                    "https://app.example:8443"});
  ApiRequest pre;
  pre.method = "OPTIONS";
  pre.headers["origin"] = "http://localhost:5173";
  auto ok = cors_preflight(allowed, pre);
  CHECK(ok.status == 204);
  CHECK(ok.body.empty());
  pre.headers["origin"] = "http://localhost:5173.evil.example";
  CHECK(cors_preflight(allowed, pre).status == 403);
  pre.headers.erase("origin");
  CHECK(cors_preflight(allowed, pre).status == 403);
  CHECK(cors_preflight({}, pre).status == 403);
}
