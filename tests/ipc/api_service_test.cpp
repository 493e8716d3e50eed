// Route handlers through ApiService with a real Store, without sockets.
#include <catch2/catch.hpp>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <iterator>
#include <mutex>
#include <thread>

#include <boost/json/parse.hpp>

#include "ipc/api_service.hpp"
#include "ipc/routes_blobs.hpp"
#include "ipc/routes_bundles.hpp"
#include "ipc/routes_join.hpp"
#include "ipc/routes_members.hpp"
#include "ipc/routes_peers.hpp"
#include "storage/store.hpp"
#include "storage/temp_dir.hpp"

using namespace fieldsync;
using namespace fieldsync::ipc;
namespace json = boost::json;

namespace {

struct Fixture {
  test::TempDir dir;
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<ApiService> api;
  config::ApiOptions options;

  Fixture() {
    storage::StoreOptions so;
    so.data_dir = dir.path() / "data";
    so.durable = false;
    auto s = storage::Store::open(so);
    REQUIRE(s);
    store = std::move(*s);
    options.max_page_size = 10;
    options.longpoll_timeout_ms = 1000;
    api = std::make_unique<ApiService>(*store, options, "test-device");
  }

  ApiResponse call(std::string method, std::string path, std::string body = {},
                   std::multimap<std::string, std::string> query = {},
                   std::map<std::string, std::string> headers = {}) {
    ApiRequest r;
    r.method = std::move(method);
    r.target = path;
    std::size_t i = 1;
    while (i <= path.size()) {
      auto j = path.find('/', i);
      if (j == std::string::npos) j = path.size();
      r.segments.push_back(path.substr(i, j - i));
      i = j + 1;
    }
    r.query = std::move(query);
    r.headers = std::move(headers);
    r.body = std::move(body);
    return api->handle(r);
  }

  std::string project() {
    auto r = call("POST", "/v1/projects", R"({"name":"p"})");
    REQUIRE(r.status == 201);
    return std::string(json::parse(r.body).at("id").as_string());
  }
};

}  // namespace

TEST_CASE("status lists the device and the registered sections") {
  Fixture f;
  auto r = f.call("GET", "/v1/status");
  REQUIRE(r.status == 200);
  auto v = json::parse(r.body);
  CHECK(v.at("device_id").as_string() == f.store->device_id().str());
  CHECK(v.at("peers").as_object().empty());
  CHECK(v.at("device_name") == "test-device");
  f.api->set_status_section("peers", [] { return std::string(R"({"connected":2})"); });
  f.api->set_status_section("sync", [] { return std::string("[]"); });
  v = json::parse(f.call("GET", "/v1/status").body);
  CHECK(v.at("peers").at("connected") == 2);
  CHECK(v.at("sync").as_array().empty());
}

TEST_CASE("document bodies round-trip byte for byte, also through batch") {
  Fixture f;
  auto pid = f.project();
  const std::string body = R"({"b": 1.50, "a" : [1e3, {"unknown": true}], "s": "\u00e9"})";
  auto c = f.call("POST", "/v1/projects/" + pid + "/docs/obs", body, {{"id", "o1"}});
  REQUIRE(c.status == 201);
  auto g = f.call("GET", "/v1/projects/" + pid + "/docs/obs/o1");
  REQUIRE(g.status == 200);
  CHECK(g.body.size() > body.size());
  CHECK(g.body.substr(g.body.size() - body.size() - 1) == body + "}");

  auto b = f.call("POST", "/v1/projects/" + pid + "/batch",
                  R"({"writes":[{"collection":"obs","id":"o2","body":)" + body + "}]}");
  REQUIRE(b.status == 200);
  g = f.call("GET", "/v1/projects/" + pid + "/docs/obs/o2");
  CHECK(g.body.substr(g.body.size() - body.size() - 1) == body + "}");
}

TEST_CASE("envelopes refuse unknown fields by name") {
  Fixture f;
  auto pid = f.project();
  auto r = f.call("POST", "/v1/projects/" + pid + "/batch",
                  R"({"writes":[{"collection":"c","body":{},"prio":1}]})");
  CHECK(r.status == 400);
  CHECK(json::parse(r.body).at("message").as_string().find("'prio'") != json::string::npos);
  r = f.call("POST", "/v1/projects/" + pid + "/docs/c/x/resolve", R"({"body":{},"force":true})");
  CHECK(r.status == 400);
}

TEST_CASE("batch envelopes are checked as a whole and name what is wrong") {
  Fixture f;
  auto pid = f.project();
  const std::string batch = "/v1/projects/" + pid + "/batch";
  struct Case {
    std::string body, message;
  };
  for (const Case& c : {
           Case{"[]", "request body must be a JSON object"},
           Case{R"({"writes":{}})", "'writes' (an array) is required"},
           Case{R"({})", "'writes' (an array) is required"},
           Case{R"({"writes":[],"x":1})", "unknown field 'x' in batch request"},
           Case{R"({"writes":[7]})", "writes[0] must be an object"},
           Case{R"({"writes":[{"collection":"c","body":{}},{"collection":"c","body":[]}]})",
                "writes[1].body is required (a JSON object)"},
           Case{R"({"writes":[{"collection":"c","body":{},"id":5}]})",
                "writes[0].id must be a string"},
           Case{R"({"writes":[{"collection":"c","body":{"a":[1,}]}]})", "is not valid JSON"},
           Case{R"({"writes":[{"collection":"c","body":{"k":1,"k":2}}]})", "'k' twice"},
       }) {
    INFO(c.body);
    auto r = f.call("POST", batch, c.body);
    CHECK(r.status == 400);
    CHECK(std::string(json::parse(r.body).at("message").as_string()).find(c.message) !=
          std::string::npos);
  }
  // Escaped keys and whitespace anywhere: the body is stored as sent.
  auto r = f.call("POST", batch,
                  " { \"wr\\u0069tes\" : [ { \"c\\u006fllection\" : \"c\" , \"id\":\"e\","
                  " \"b\\u006fdy\" : {\"x\" : [1 , 2]} , \"schema\" : 3 } ] } ");
  REQUIRE(r.status == 200);
  auto g = f.call("GET", "/v1/projects/" + pid + "/docs/c/e");
  REQUIRE(g.status == 200);
  CHECK(g.body.find(R"("body":{"x" : [1 , 2]})") != std::string::npos);
  CHECK(json::parse(g.body).at("schema") == 3);
}

TEST_CASE("long-poll and SSE requests become change streams with the right cursor") {
  Fixture f;
  auto pid = f.project();
  REQUIRE(f.call("PUT", "/v1/projects/" + pid + "/docs/c/x", "{}").status == 200);
  REQUIRE(f.call("PUT", "/v1/projects/" + pid + "/docs/c/y", "{}").status == 200);

  auto lp = f.call("GET", "/v1/projects/" + pid + "/changes", {},
                   {{"feed", "longpoll"}, {"since", "now"}, {"timeout", "999999"}});
  REQUIRE(lp.stream);
  CHECK(lp.stream->mode == ChangeStream::Mode::longpoll);
  CHECK(lp.stream->since == 2);
  CHECK(lp.stream->timeout == std::chrono::milliseconds(1000));  // bounded by the config
  auto chunk = lp.stream->fetch(0);
  REQUIRE(chunk);
  CHECK(chunk->events.size() == 2);
  CHECK(chunk->last_seq == 2);
  CHECK(json::parse(lp.stream->render(*chunk)).at("changes").as_array().size() == 2);

  auto sse = f.call("GET", "/v1/projects/" + pid + "/changes", {},
                    {{"feed", "sse"}, {"since", "0"}, {"limit", "1"}}, {{"last-event-id", "1"}});
  REQUIRE(sse.stream);
  CHECK(sse.stream->mode == ChangeStream::Mode::sse);
  CHECK(sse.stream->since == 1);
  // The page size is known to the server, which shares pages between streams of the same size.
  CHECK(sse.stream->limit == 1);
  auto one = sse.stream->fetch(0);
  REQUIRE(one);
  CHECK(one->events.size() == 1);

  auto bad = f.call("GET", "/v1/projects/" + pid + "/changes", {}, {{"feed", "sse"}},
                    {{"last-event-id", "x"}});
  CHECK(bad.status == 400);
  CHECK(
      f.call("GET", "/v1/projects/" + std::string(32, 'a') + "/changes", {}, {{"feed", "longpoll"}})
          .status == 404);
}

TEST_CASE("list limit is clamped to api.max_page_size") {
  Fixture f;
  auto pid = f.project();
  for (int i = 0; i < 12; ++i)
    REQUIRE(f.call("PUT", "/v1/projects/" + pid + "/docs/c/d" + std::to_string(i), "{}").status ==
            200);
  auto r = f.call("GET", "/v1/projects/" + pid + "/docs/c", {}, {{"limit", "500"}});
  REQUIRE(r.status == 200);
  auto v = json::parse(r.body);
  CHECK(v.at("docs").as_array().size() == 10);
  CHECK(v.at("next").is_string());
}

TEST_CASE("docs/openapi.yaml and docs/api.md describe every route") {
  Fixture f;
  std::ifstream in(FIELDSYNC_SOURCE_DIR "/docs/openapi.yaml");
  REQUIRE(in);
  std::string yaml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ifstream md_in(FIELDSYNC_SOURCE_DIR "/docs/api.md");
  std::string md((std::istreambuf_iterator<char>(md_in)), std::istreambuf_iterator<char>());
  // The sync engine's group too (registered by the daemon; with no engine it answers 503).
  register_peer_routes(f.api->router(), f.api->context(), nullptr);
  register_member_routes(f.api->router(), f.api->context(), nullptr);
  register_join_routes(f.api->router(), f.api->context(), nullptr);
  register_bundle_routes(f.api->router(), f.api->context(), {});
  register_blob_routes(f.api->router(), f.api->context(), f.store->blobs());
  for (const auto& [method, pattern] : f.api->router().routes()) {
    INFO(method << " " << pattern);
    auto at = yaml.find("\n  " + pattern + ":\n");
    REQUIRE(at != std::string::npos);
    auto next = yaml.find("\n  /", at + 1);
    std::string block = yaml.substr(at, next == std::string::npos ? std::string::npos : next - at);
    std::string lower;
    for (char c : method) lower.push_back(static_cast<char>(std::tolower(c)));
    CHECK(block.find("\n    " + lower + ":") != std::string::npos);
    CHECK(md.find(method + " " + pattern) != std::string::npos);
  }
}

TEST_CASE("envelopes with duplicate keys are refused with 400, never stored") {
  Fixture f;
  auto pid = f.project();
  const std::string batch = "/v1/projects/" + pid + "/batch";
  // Two "writes" arrays: validation saw the last, the stored text would have been the first.
  auto r = f.call("POST", batch,
                  R"({"writes":[{"collection":"c","id":"a","body":{"ok":1}}],)"
                  R"("writes":[{"collection":"c","id":"a","body":{"ok":2}}]})");
  CHECK(r.status == 400);
  CHECK(json::parse(r.body).at("message").as_string().find("'writes' twice") != json::string::npos);
  // Different lengths used to be a 500 "batch scan mismatch".
  r = f.call("POST", batch, R"({"writes":[{"collection":"c","id":"a","body":{}}],"writes":[]})");
  CHECK(r.status == 400);
  r = f.call("POST", batch, R"({"writes":[{"collection":"c","id":"a","body":{},"body":{"x":1}}]})");
  CHECK(r.status == 400);
  CHECK(f.call("GET", "/v1/projects/" + pid + "/docs/c/a").status == 404);
  // Inside document bodies too (POST, PUT, resolve) and in project envelopes.
  CHECK(f.call("PUT", "/v1/projects/" + pid + "/docs/c/b", R"({"k":1,"k":2})").status == 400);
  CHECK(f.call("POST", "/v1/projects/" + pid + "/docs/c", R"({"n":{"k":1,"k":2}})").status == 400);
  CHECK(f.call("POST", "/v1/projects", R"({"name":"a","name":"b"})").status == 400);
  CHECK(f.call("PATCH", "/v1/projects/" + pid, R"({"settings":{},"settings":{"x":1}})").status ==
        400);
  CHECK(f.call("GET", "/v1/projects/" + pid + "/docs/c/b").status == 404);
}

TEST_CASE("numbers from requests are range-checked, never truncated") {
  Fixture f;
  auto pid = f.project();
  const std::string doc = "/v1/projects/" + pid + "/docs/c/";
  for (const char* bad : {"4294967296", "4294967297", "-1", "18446744073709551616", "1.5"}) {
    INFO(bad);
    auto r = f.call("PUT", doc + "x", "{}", {{"schema", bad}});
    CHECK(r.status == 400);
    CHECK(json::parse(r.body).at("message").as_string().find("0..4294967295") !=
          json::string::npos);
    CHECK(f.call("POST", "/v1/projects/" + pid + "/docs/c", "{}", {{"schema", bad}}).status == 400);
  }
  CHECK(f.call("GET", doc + "x").status == 404);
  auto ok = f.call("PUT", doc + "x", "{}", {{"schema", "4294967295"}});
  REQUIRE(ok.status == 200);
  CHECK(json::parse(f.call("GET", doc + "x").body).at("schema") == 4294967295u);
  for (const char* bad : {"4294967297", "-1", "1e3", "99999999999999999999"}) {
    INFO(bad);
    auto r = f.call(
        "POST", "/v1/projects/" + pid + "/batch",
        std::string(R"({"writes":[{"collection":"c","id":"y","body":{},"schema":)") + bad + "}]}");
    CHECK(r.status == 400);
  }
  CHECK(f.call("GET", doc + "y").status == 404);
}

TEST_CASE("error messages quote invalid input as valid UTF-8") {
  Fixture f;
  auto pid = f.project();
  struct Case {
    std::string method, path;
    std::multimap<std::string, std::string> query;
  };
  const std::vector<Case> cases = {
      {"GET", "/v1/projects/\xff\xfe", {}},
      {"PUT", "/v1/projects/" + pid + "/docs/c/bad\xff\x01id", {}},
      {"PUT", "/v1/projects/" + pid + "/docs/c\xc3/x", {}},
      {"GET", "/v1/projects/" + pid + "/docs/c/nope\xe2\x82", {}},
      {"PUT", "/v1/projects/" + pid + "/docs/c/x", {{"base", "\xff"}}},
      {"GET", "/v1/projects/" + pid + "/docs/c", {{"include_deleted", "\xff"}}},
      {"GET", "/v1/projects/" + pid + "/docs/c", {{"where", "f\xff=\xfe"}}},
      {"DELETE", "/v1/projects/" + pid + "/members/\xff", {}},
      {"GET", "/v1/no\xff/where", {}}};
  for (const auto& [method, path, query] : cases) {
    INFO(path);
    auto r = f.call(method, path, method == "PUT" ? "{}" : "", query);
    CHECK(r.status >= 400);
    boost::system::error_code ec;
    auto v = json::parse(r.body, ec);  // fails on invalid UTF-8
    REQUIRE_FALSE(ec);
    CHECK(v.at("message").as_string().find("\\x") != json::string::npos);
  }
}

TEST_CASE("ids and collection names . and .. are refused") {
  Fixture f;
  auto pid = f.project();
  for (const char* id : {".", ".."}) {
    INFO(id);
    auto r = f.call("PUT", "/v1/projects/" + pid + "/docs/c/" + id, "{}");
    CHECK(r.status == 400);
    CHECK(json::parse(r.body).at("message").as_string().find("not . or ..") != json::string::npos);
    CHECK(f.call("POST", "/v1/projects/" + pid + "/docs/c", "{}", {{"id", id}}).status == 400);
    CHECK(f.call("PUT", "/v1/projects/" + pid + "/docs/" + id + "/x", "{}").status == 400);
    CHECK(f.call("POST", "/v1/projects/" + pid + "/batch",
                 std::string(R"({"writes":[{"collection":"c","id":")") + id + R"(","body":{}}]})")
              .status == 400);
  }
  CHECK(f.call("PUT", "/v1/projects/" + pid + "/docs/c/...", "{}").status == 200);
  CHECK(f.call("PUT", "/v1/projects/" + pid + "/docs/c/.a", "{}").status == 200);
}

TEST_CASE("project settings over 1 MiB are refused with 413 where they come in") {
  Fixture f;
  std::string big = R"({"name":"p","settings":{"pad":")" + std::string(1u << 20, 'x') + "\"}}";
  auto r = f.call("POST", "/v1/projects", big);
  CHECK(r.status == 413);
  CHECK(json::parse(r.body).at("error") == "too_large");
  auto pid = f.project();
  r = f.call("PATCH", "/v1/projects/" + pid, big);
  CHECK(r.status == 413);
  // Everything still reads: listings, status, the project.
  CHECK(f.call("GET", "/v1/projects").status == 200);
  auto st = f.call("GET", "/v1/status");
  REQUIRE(st.status == 200);
  CHECK(json::parse(st.body).at("unreadable_projects").as_array().empty());
  CHECK(f.call("GET", "/v1/projects/" + pid).status == 200);
}

TEST_CASE("request JSON deeper than api.max_json_depth is refused") {
  Fixture f;
  f.options.max_json_depth = 4;
  f.api = std::make_unique<ApiService>(*f.store, f.options, "test-device");
  auto pid = f.project();
  CHECK(f.call("PUT", "/v1/projects/" + pid + "/docs/c/ok", R"({"a":{"b":{"c":{}}}})").status ==
        200);
  auto r = f.call("PUT", "/v1/projects/" + pid + "/docs/c/deep", R"({"a":{"b":{"c":{"d":{}}}}})");
  CHECK(r.status == 400);
  CHECK(json::parse(r.body).at("message").as_string().find("api.max_json_depth") !=
        json::string::npos);
  CHECK(f.call("POST", "/v1/projects/" + pid + "/batch",
               R"({"writes":[{"collection":"c","id":"b","body":{"a":{"b":{}}}}]})")
            .status == 400);
}

TEST_CASE("a batch write's members nest as deep as api.max_json_depth allows, and no deeper") {
  Fixture f;
  f.options.max_json_depth = 64;
  f.api = std::make_unique<ApiService>(*f.store, f.options, "test-device");
  auto pid = f.project();
  auto nested = [](int levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  // Deeper than a default parse allows (32), within the configured 64: the member's own
  // check answers (a schema is a number), not a failure to read text that was checked.
  auto r =
      f.call("POST", "/v1/projects/" + pid + "/batch",
             R"({"writes":[{"collection":"c","id":"s","body":{},"schema":)" + nested(40) + "}]}");
  CHECK(r.status == 400);
  CHECK(std::string(json::parse(r.body).at("message").as_string()).find("writes[0].schema") !=
        std::string::npos);
  r = f.call("POST", "/v1/projects/" + pid + "/batch",
             R"({"writes":[{"collection":"c","id":"s","body":)" + nested(70) + "}]}");
  CHECK(r.status == 400);
  CHECK(std::string(json::parse(r.body).at("message").as_string()).find("api.max_json_depth") !=
        std::string::npos);
}

TEST_CASE("reads answer from a reader thread once a server posts, the same as inline") {
  Fixture f;
  std::string pid = f.project();
  REQUIRE(f.call("PUT", "/v1/projects/" + pid + "/docs/c/x", R"({"n":1})").status == 200);
  const std::string path = "/v1/projects/" + pid + "/docs/c";
  // Without a server (no post): inline.
  ApiResponse inline_answer = f.call("GET", path);
  REQUIRE(inline_answer.status == 200);
  REQUIRE_FALSE(inline_answer.deferred);

  // A "server": jobs posted to it run here, on the test's thread.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> posted;
  f.api->context().post = [&](std::function<void()> job) {
    std::lock_guard<std::mutex> lock(mu);
    posted.push_back(std::move(job));
    cv.notify_all();
  };
  const auto server_thread = std::this_thread::get_id();
  for (const auto& [method, p] : std::vector<std::pair<std::string, std::string>>{
           {"GET", path},
           {"GET", path + "/x"},
           {"GET", path + "/x/history"},
           {"GET", "/v1/projects/" + pid + "/changes"},
           {"GET", "/v1/projects/" + pid + "/conflicts"},
           {"GET", "/v1/projects/" + pid + "/collections"}}) {
    INFO(p);
    ApiResponse r = f.call(method, p);
    REQUIRE(r.deferred);
    std::optional<ApiResponse> answer;
    std::thread::id answered_on;
    r.deferred->start([&](ApiResponse a) {
      answer = std::move(a);
      answered_on = std::this_thread::get_id();
    });
    // The work runs on a reader thread and its reply is posted back here.
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return !posted.empty(); }));
    auto job = std::move(posted.front());
    posted.pop_front();
    lock.unlock();
    CHECK_FALSE(answer);  // not before the server runs the posted reply
    job();
    REQUIRE(answer);
    CHECK(answered_on == server_thread);
    CHECK(answer->status == 200);
    if (p == path) CHECK(answer->body == inline_answer.body);
  }
  // Writes go to the writer thread and answer once committed, through the server's thread.
  ApiResponse w = f.call("PUT", path + "/y", R"({"n":2})");
  REQUIRE(w.deferred);
  std::optional<ApiResponse> written;
  w.deferred->start([&](ApiResponse a) { written = std::move(a); });
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return !posted.empty(); }));
    auto job = std::move(posted.front());
    posted.pop_front();
    lock.unlock();
    CHECK_FALSE(written);
    CHECK(f.store->get_document(*ProjectId::parse(pid), "c", "y"));  // committed before the answer
    job();
  }
  REQUIRE(written);
  CHECK(written->status == 200);
}

TEST_CASE("api.max_group_writes = 0 answers writes inline") {
  Fixture f;
  config::ApiOptions o = f.options;
  o.max_group_writes = 0;
  ApiService api(*f.store, o, "inline");
  api.context().post = [](std::function<void()> job) { job(); };
  std::string pid = f.project();
  ApiRequest r;
  r.method = "PUT";
  r.segments = {"v1", "projects", pid, "docs", "c", "x"};
  r.body = R"({"n":1})";
  ApiResponse a = api.handle(r);
  CHECK_FALSE(a.deferred);
  CHECK(a.status == 200);
}

TEST_CASE("api.reader_threads = 0 answers reads inline") {
  Fixture f;
  config::ApiOptions o = f.options;
  o.reader_threads = 0;
  ApiService api(*f.store, o, "inline");
  api.context().post = [](std::function<void()> job) { job(); };
  ApiRequest r;
  r.method = "GET";
  r.segments = {"v1", "projects", f.project(), "changes"};
  auto answer = api.handle(r);
  CHECK(answer.status == 200);
  CHECK_FALSE(answer.deferred);
}
