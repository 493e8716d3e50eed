// Route handlers through ApiService with a real Store, without sockets.
#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>

#include <boost/json/parse.hpp>

#include "ipc/api_service.hpp"
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

  auto sse = f.call("GET", "/v1/projects/" + pid + "/changes", {}, {{"feed", "sse"}, {"since", "0"}},
                    {{"last-event-id", "1"}});
  REQUIRE(sse.stream);
  CHECK(sse.stream->mode == ChangeStream::Mode::sse);
  CHECK(sse.stream->since == 1);

  auto bad = f.call("GET", "/v1/projects/" + pid + "/changes", {}, {{"feed", "sse"}},
                    {{"last-event-id", "x"}});
  CHECK(bad.status == 400);
  CHECK(f.call("GET", "/v1/projects/" + std::string(32, 'a') + "/changes", {}, {{"feed", "longpoll"}})
            .status == 404);
}

TEST_CASE("list limit is clamped to api.max_page_size") {
  Fixture f;
  auto pid = f.project();
  for (int i = 0; i < 12; ++i)
    REQUIRE(f.call("PUT", "/v1/projects/" + pid + "/docs/c/d" + std::to_string(i), "{}").status == 200);
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
