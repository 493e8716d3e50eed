// Fuzz target: the field-level merge of concurrent document bodies (storage/json_merge.cpp),
// which scans the heads' stored JSON text (bodies that came from apps and peers) member by
// member. Input: lines: the base body (or "-" for none), then 1..4 head bodies.
// Checks: when every body is a JSON object the merge succeeds and gives a JSON object whose
// every member's value is one of the inputs' values for that key, text for text; a conflicting
// field is one the heads hold differently; a body that is not an object is refused. A key a
// body repeats counts with its last member, as the JSON parser reads it. Values are compared as
// parse_json() reads them: a number is the same double wherever its text stands.
#include <boost/json/value.hpp>
#include <string_view>
#include <vector>

#include "common/json_parse.hpp"
#include "fuzz/fuzz_support.hpp"
#include "storage/json_merge.hpp"

using namespace fieldsync;
namespace json = boost::json;

namespace {

bool is_object(std::string_view s) {
  boost::system::error_code ec;
  json::value v = parse_json(s, ec);
  return !ec && v.is_object();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> lines;
  while (!in.empty() && lines.size() < 5) {
    std::size_t nl = in.find('\n');
    lines.push_back(in.substr(0, nl));
    in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  }
  if (lines.size() < 2) return 0;
  storage::MergeInput mi;
  if (lines[0] != "-") mi.base = std::string(lines[0]);
  for (std::size_t i = 1; i < lines.size(); ++i) mi.sides.emplace_back(lines[i]);
  bool all_objects = !mi.base || is_object(*mi.base);
  for (const auto& s : mi.sides) all_objects = all_objects && is_object(s);
  auto m = storage::merge_objects(mi);
  FUZZ_CHECK(m.ok() == all_objects);
  if (!m.ok()) {
    FUZZ_CHECK(m.error().code == Errc::invalid_argument);
    return 0;
  }
  boost::system::error_code ec;
  json::value out = parse_json(m->body, ec);
  FUZZ_CHECK(!ec && out.is_object());
  std::vector<json::value> inputs;
  if (mi.base) inputs.push_back(parse_json(*mi.base, ec));
  for (const auto& s : mi.sides) inputs.push_back(parse_json(s, ec));
  for (const auto& kv : out.as_object()) {
    bool found = false;
    for (const auto& v : inputs)
      if (const auto* x = v.as_object().if_contains(kv.key()); x && *x == kv.value()) found = true;
    FUZZ_CHECK(found);
  }
  return 0;
}
