// Fuzz target: `where` filters of document lists (GET .../docs/{coll}?where=field=<JSON>):
// the route's parsing of each clause (ipc/routes_documents.cpp) and the matching against a
// stored body (storage/json_merge.cpp matches_filters), over a real store.
// Input: line 1 is a document body, every further line one where clause as the client sends
// it (after URL decoding). The body is stored as document w/d (when the store accepts it),
// then listed with the clauses through the router.
// Checks: a malformed clause is a 400 naming where; otherwise the list holds w/d exactly when
// matches_filters says the stored body matches all clauses; no request ends in a 500.
// A line "?name=value" is another query parameter instead (selector=, sort=, after=, keys=,
// limit=, ...): then the answer must be 200 or 400, nothing more is checked.
#include <boost/json/value.hpp>

#include "common/json_parse.hpp"
#include "fuzz/fuzz_store.hpp"
#include "ipc/api_service.hpp"
#include "ipc/json_text.hpp"
#include "storage/json_merge.hpp"

using namespace fieldsync;
namespace json = boost::json;

namespace {

struct World {
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<ipc::ApiService> api;
  ProjectId project;
  std::optional<std::string> stored;  // the body of w/d, once written
};

World& world() {
  static World* w = [] {
    auto* n = new World;
    n->store = fuzz::open_fuzz_store(
        fuzz::fuzz_store_options(fuzz::make_temp_dir("fieldsync-fuzz-where")));
    n->api = std::make_unique<ipc::ApiService>(*n->store, config::ApiOptions{}, "fuzz");
    n->project = *ProjectId::parse(fuzz::kFuzzProject);
    return n;
  }();
  return *w;
}

// A clause value the API accepts: JSON as the route parses it (duplicate keys and nesting
// beyond api.max_json_depth are malformed too).
bool is_json(std::string_view text) {
  return ipc::parse_value(text, "where", config::ApiOptions{}.max_json_depth).ok();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  World& w = world();
  auto lines = fuzz::split(fuzz::as_text(data, size), '\n');
  std::string_view body = lines[0];

  std::vector<storage::FieldFilter> filters;
  std::vector<std::pair<std::string, std::string>> others;
  bool malformed = false;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    std::string_view clause = lines[i];
    if (!clause.empty() && clause.front() == '?') {
      auto eq = clause.find('=');
      std::string_view name = clause.substr(1, eq == std::string_view::npos ? clause.npos : eq - 1);
      std::string_view value = eq == std::string_view::npos ? "" : clause.substr(eq + 1);
      others.emplace_back(std::string(name), std::string(value));
      continue;
    }
    auto eq = clause.find('=');
    if (eq == std::string_view::npos || eq == 0 || !is_json(clause.substr(eq + 1))) {
      malformed = true;
      continue;
    }
    filters.push_back({std::string(clause.substr(0, eq)), std::string(clause.substr(eq + 1))});
  }
  // Direct matching of the raw input body: any text, never a crash; valid filters never fail.
  auto direct = storage::matches_filters(body, filters);
  FUZZ_CHECK(direct.ok());

  storage::WriteRequest wr;
  wr.collection = "w";
  wr.doc_id = "d";
  wr.body = std::string(body);
  wr.use_current = true;
  if (w.store->write(w.project, wr).ok()) w.stored = std::string(body);

  ipc::ApiRequest req;
  req.method = "GET";
  req.segments = {"v1", "projects", fuzz::kFuzzProject, "docs", "w"};
  for (std::size_t i = 1; i < lines.size(); ++i)
    if (lines[i].empty() || lines[i].front() != '?')
      req.query.emplace("where", std::string(lines[i]));
  for (const auto& [name, value] : others) req.query.emplace(name, value);
  auto res = w.api->handle(req);
  FUZZ_CHECK(res.status != 500);
  if (!others.empty()) {
    FUZZ_CHECK(res.status == 200 || res.status == 400);
    return 0;
  }
  if (malformed) {
    FUZZ_CHECK(res.status == 400);
    FUZZ_CHECK(res.body.find("where") != std::string::npos);
    return 0;
  }
  FUZZ_CHECK(res.status == 200);
  boost::system::error_code ec;
  json::value page = parse_json(res.body, ec);
  FUZZ_CHECK(!ec);
  const auto& docs = page.as_object().at("docs").as_array();
  bool listed = false;
  for (const auto& d : docs) listed = listed || d.as_object().at("id") == "d";
  bool expected = false;
  if (w.stored) {
    auto m = storage::matches_filters(*w.stored, filters);
    FUZZ_CHECK(m.ok());
    expected = *m;
  }
  FUZZ_CHECK(listed == expected);
  return 0;
}
