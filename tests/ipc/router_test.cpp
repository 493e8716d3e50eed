// Router matching and the one Errc -> HTTP mapping.
#include <catch2/catch.hpp>

#include <boost/json/parse.hpp>

#include "ipc/http_error.hpp"
#include "ipc/router.hpp"

using namespace fieldsync;
using namespace fieldsync::ipc;

namespace {
ApiRequest req(std::string method, std::vector<std::string> segs) {
  ApiRequest r;
  r.method = std::move(method);
  r.segments = std::move(segs);
  return r;
}
ApiResponse tag(std::string t) {
  ApiResponse r;
  r.body = std::move(t);
  return r;
}
}  // namespace

TEST_CASE("router matches placeholders and prefers literal segments") {
  Router router;
  router.add("GET", "/v1/projects/{pid}/docs/{coll}/{id}", [](ApiRequest& r) {
    return tag("doc " + r.param("pid") + " " + r.param("coll") + " " + r.param("id"));
  });
  router.add("GET", "/v1/projects/{pid}/docs/{coll}/{id}/history",
             [](ApiRequest&) { return tag("history"); });
  router.add("GET", "/v1/projects/{pid}/conflicts", [](ApiRequest&) { return tag("conflicts"); });
  router.add("GET", "/v1/projects/{pid}/{what}", [](ApiRequest&) { return tag("generic"); });
  router.add("POST", "/v1/projects", [](ApiRequest&) { return tag("create"); });

  auto r = req("GET", {"v1", "projects", "p1", "docs", "obs", "a b"});
  CHECK(router.dispatch(r).body == "doc p1 obs a b");
  r = req("GET", {"v1", "projects", "p1", "docs", "obs", "x", "history"});
  CHECK(router.dispatch(r).body == "history");
  r = req("GET", {"v1", "projects", "p1", "conflicts"});
  CHECK(router.dispatch(r).body == "conflicts");
  r = req("GET", {"v1", "projects", "p1", "other"});
  CHECK(router.dispatch(r).body == "generic");
}

TEST_CASE("router answers 404 for unknown paths and 405 with Allow for other methods") {
  Router router;
  router.add("GET", "/v1/status", [](ApiRequest&) { return tag("s"); });
  router.add("PUT", "/v1/things/{id}", [](ApiRequest&) { return tag("put"); });
  router.add("DELETE", "/v1/things/{id}", [](ApiRequest&) { return tag("del"); });

  auto r = req("GET", {"v1", "nope"});
  auto res = router.dispatch(r);
  CHECK(res.status == 404);
  CHECK(boost::json::parse(res.body).at("error") == "not_found");

  r = req("POST", {"v1", "things", "7"});
  res = router.dispatch(r);
  CHECK(res.status == 405);
  REQUIRE(res.headers.size() == 1);
  CHECK(res.headers[0].first == "Allow");
  CHECK(res.headers[0].second == "PUT, DELETE");

  r = req("GET", {"v1", "things", ""});  // an empty segment never fills a placeholder
  CHECK(router.dispatch(r).status == 404);
}

TEST_CASE("an exception escaping a handler becomes a 500 internal error") {
  Router router;
  router.add("GET", "/boom", [](ApiRequest&) -> ApiResponse { throw std::runtime_error("kaput"); });
  auto r = req("GET", {"boom"});
  auto res = router.dispatch(r);
  CHECK(res.status == 500);
  CHECK(boost::json::parse(res.body).at("error") == "internal");
}

TEST_CASE("every Errc maps to one HTTP status and a JSON error body") {
  CHECK(http_status(Errc::invalid_argument) == 400);
  CHECK(http_status(Errc::unauthenticated) == 401);
  CHECK(http_status(Errc::permission_denied) == 403);
  CHECK(http_status(Errc::not_found) == 404);
  CHECK(http_status(Errc::already_exists) == 409);
  CHECK(http_status(Errc::failed_precondition) == 409);
  CHECK(http_status(Errc::too_large) == 413);
  CHECK(http_status(Errc::verification_failed) == 422);
  CHECK(http_status(Errc::resource_exhausted) == 503);
  CHECK(http_status(Errc::unavailable) == 503);
  CHECK(http_status(Errc::unsupported) == 501);
  CHECK(http_status(Errc::data_loss) == 500);
  CHECK(http_status(Errc::internal) == 500);

  auto res = error_response(make_error(Errc::not_found, "no \"doc\"\n here"), "\"extra\":[1]");
  auto v = boost::json::parse(res.body);
  CHECK(v.at("error") == "not_found");
  CHECK(v.at("message") == "no \"doc\"\n here");
  CHECK(v.at("extra").as_array().size() == 1);
  CHECK(error_response(make_error(Errc::unauthenticated, "x")).headers.at(0).first ==
        "WWW-Authenticate");
}

TEST_CASE("streamed-body routes: found from the header, and fed whole by dispatch()") {
  Router router;
  std::string got;
  int aborted = 0;
  router.add("GET", "/v1/things/{id}", [](ApiRequest&) { return tag("get"); });
  router.add_streamed("POST", "/v1/things/{id}/import",
                      [&](ApiRequest& r) -> Result<std::shared_ptr<BodySink>> {
                        if (r.param("id") == "missing")
                          return make_error(Errc::not_found, "no such thing");
                        auto sink = std::make_shared<BodySink>();
                        sink->write = [&](ByteView piece) -> Status {
                          got += as_chars(piece);
                          if (got.size() > 5) return make_error(Errc::too_large, "too big");
                          return {};
                        };
                        sink->finish = [&, id = r.param("id")] { return tag("imported " + id); };
                        sink->abort = [&] { ++aborted; };
                        return sink;
                      });

  auto r = req("POST", {"v1", "things", "7", "import"});
  CHECK(router.takes_stream(r));
  auto get = req("GET", {"v1", "things", "7"});
  CHECK_FALSE(router.takes_stream(get));
  auto other = req("PUT", {"v1", "things", "7", "import"});
  CHECK_FALSE(router.takes_stream(other));
  CHECK(router.dispatch(other).status == 405);

  auto sink = router.open_sink(r);
  REQUIRE(sink);
  CHECK(r.param("id") == "7");
  auto missing = req("POST", {"v1", "things", "missing", "import"});
  auto refused = router.open_sink(missing);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Errc::not_found);
  CHECK(router.open_sink(get).error().code == Errc::not_found);

  r.body = "abc";
  CHECK(router.dispatch(r).body == "imported 7");
  CHECK(got == "abc");
  got.clear();
  r.body = "abcdefgh";
  auto res = router.dispatch(r);
  CHECK(res.status == 413);
  CHECK(aborted == 1);

  // Registering the path again with add() makes it an ordinary route.
  router.add("POST", "/v1/things/{id}/import", [](ApiRequest&) { return tag("plain"); });
  CHECK_FALSE(router.takes_stream(r));
  CHECK(router.dispatch(r).body == "plain");
}
