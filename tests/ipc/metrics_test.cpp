// GET /metrics and GET /v1/health without a socket, and the exposition writer.
#include <catch2/catch.hpp>

#include <boost/json/parse.hpp>

#include "ipc/api_service.hpp"
#include "ipc/metrics.hpp"
#include "storage/store.hpp"
#include "storage/temp_dir.hpp"

using namespace fieldsync;
using namespace fieldsync::ipc;

namespace {

struct Fixture {
  test::TempDir dir;
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<ApiService> api;

  Fixture() {
    storage::StoreOptions so;
    so.data_dir = dir.path() / "data";
    so.durable = false;
    auto s = storage::Store::open(so);
    REQUIRE(s);
    store = std::move(*s);
    api = std::make_unique<ApiService>(*store, config::ApiOptions{}, "test-device");
  }

  ApiResponse get(const std::string& first, const std::string& second = {},
                  std::multimap<std::string, std::string> query = {}) {
    ApiRequest r;
    r.method = "GET";
    r.segments.push_back(first);
    if (!second.empty()) r.segments.push_back(second);
    r.target = "/" + first + (second.empty() ? "" : "/" + second);
    r.query = std::move(query);
    return api->handle(r);
  }
};

}  // namespace

TEST_CASE("the exposition writer escapes labels and writes cumulative histograms") {
  MetricsWriter w;
  w.family("fieldsync_x_total", "counter", "Help with a \\ and\na newline.");
  w.sample("fieldsync_x_total", {{"a", "q\"b\\c\nd"}}, std::uint64_t{7});
  Histogram h({0.1, 1});
  h.observe(0.05);
  h.observe(0.1);
  h.observe(0.5);
  h.observe(3);
  w.family("fieldsync_h", "histogram", "H.");
  h.write(w, "fieldsync_h");
  CHECK(w.text() ==
        "# HELP fieldsync_x_total Help with a \\\\ and\\na newline.\n"
        "# TYPE fieldsync_x_total counter\n"
        "fieldsync_x_total{a=\"q\\\"b\\\\c\\nd\"} 7\n"
        "# HELP fieldsync_h H.\n"
        "# TYPE fieldsync_h histogram\n"
        "fieldsync_h_bucket{le=\"0.10000000000000001\"} 2\n"
        "fieldsync_h_bucket{le=\"1\"} 3\n"
        "fieldsync_h_bucket{le=\"+Inf\"} 4\n"
        "fieldsync_h_sum 3.6499999999999999\n"
        "fieldsync_h_count 4\n");
}

TEST_CASE("GET /metrics lists the projects' versions and the API's answers") {
  Fixture f;
  auto pid = f.store->create_project("p");
  REQUIRE(pid);
  storage::WriteRequest wr;
  wr.collection = "c";
  wr.doc_id = "d";
  wr.body = "{}";
  REQUIRE(f.store->write(pid->id, wr));
  f.api->context().metrics.observe(200, 0.002);
  f.api->context().metrics.observe(404, 0.0001);
  f.api->context().metrics_sections.emplace_back([](MetricsWriter& w) {
    w.family("fieldsync_extra", "gauge", "E.");
    w.sample("fieldsync_extra", {}, std::uint64_t{5});
  });
  auto r = f.get("metrics");
  REQUIRE(r.status == 200);
  CHECK(r.content_type.rfind("text/plain; version=0.0.4", 0) == 0);
  const std::string& t = r.body;
  auto vv = f.store->version_vector(pid->id);
  REQUIRE(vv);
  std::uint64_t versions = 0;
  for (const auto& [a, seq] : *vv) versions += seq;
  CHECK(versions >= 1);
  CHECK(t.find("fieldsync_project_versions{project=\"" + pid->id.str() + "\"} " +
               std::to_string(versions) + "\n") != std::string::npos);
  CHECK(t.find("fieldsync_projects 1\n") != std::string::npos);
  CHECK(t.find("fieldsync_api_requests_total{code=\"2xx\"} 1\n") != std::string::npos);
  CHECK(t.find("fieldsync_api_requests_total{code=\"4xx\"} 1\n") != std::string::npos);
  CHECK(t.find("fieldsync_api_request_duration_seconds_count 2\n") != std::string::npos);
  CHECK(t.find("fieldsync_api_request_duration_seconds_bucket{le=\"0.0025000000000000001\"} 2\n") !=
        std::string::npos);
  CHECK(t.find("# TYPE fieldsync_extra gauge\nfieldsync_extra 5\n") != std::string::npos);
  CHECK(f.get("metrics", {}, {{"x", "1"}}).status == 400);
}

TEST_CASE("GET /v1/health answers 200, and 503 with the reasons") {
  Fixture f;
  auto r = f.get("v1", "health");
  REQUIRE(r.status == 200);
  auto v = boost::json::parse(r.body);
  CHECK(v.at("status").as_string() == "ok");
  CHECK(f.get("v1", "health", {{"x", "1"}}).status == 400);

  f.api->context().health_checks.emplace_back([] { return std::string("sync is stuck"); });
  r = f.get("v1", "health");
  CHECK(r.status == 503);
  CHECK(r.body.find("sync is stuck") != std::string::npos);
  f.api->context().health_checks.clear();

  f.store->report_identity_conflict("a test says so");
  r = f.get("v1", "health");
  CHECK(r.status == 503);
  CHECK(r.body.find("\"unavailable\"") != std::string::npos);
  CHECK(r.body.find("identity renewal pending") != std::string::npos);
}
