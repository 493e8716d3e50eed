// Fuzz target: the JSON envelope helpers of the local API: parse_object/check_fields and the
// raw-text scanners raw_member/raw_elements/splice_member (ipc/json_text.cpp), which pick the
// exact text of a document body out of a request envelope, and the request parameter
// parsing of ipc/route_support.cpp (query numbers and flags, version ids, If-Match,
// "parents" lists). page_limit is reached through the HTTP target (it needs a store).
// Input: the whole input is a request body; each of its lines is also used as the value of
// the query parameters and headers those helpers read.
// Checks: json_quote writes what Boost.JSON's serialize does, check_value answers as
// parse_value does; on any text that Boost.JSON accepts, raw_member finds every member and its text
// parses to the very value the parsed object holds (what the handlers validated is what
// gets stored), raw_members lists each member once, raw_elements yields every element, and
// splice_member gives valid JSON.
// On any other text the scanners only have to stay inside the input.
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <boost/json/value.hpp>

#include "common/json_parse.hpp"
#include "fuzz/fuzz_support.hpp"
#include "ipc/json_text.hpp"
#include "ipc/route_support.hpp"

using namespace fieldsync;
using namespace fieldsync::ipc;
namespace json = boost::json;

namespace {

bool within(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

json::value parse_or_null(std::string_view text, bool& ok) {
  boost::system::error_code ec;
  json::value v = parse_json(text, ec);
  ok = !ec;
  return v;
}

void check_scanners(std::string_view text) {
  // json_quote writes what Boost.JSON writes.
  FUZZ_CHECK(json_quote(text) == json::serialize(json::string(text)));
  // check_value gives parse_value's answer, without building the value.
  auto pv = parse_value(text, "request body", 32);
  auto cv = check_value(text, "request body", 32);
  FUZZ_CHECK(pv.ok() == cv.ok());
  if (!pv.ok()) FUZZ_CHECK(pv.error().message == cv.error().message);
  bool ok = false;
  json::value v = parse_or_null(text, ok);
  if (!ok) {
    // Not JSON: whatever the scanners return must lie inside the text.
    if (auto m = raw_member(text, "body")) FUZZ_CHECK(within(*m, text));
    for (auto e : raw_elements(text)) FUZZ_CHECK(within(e, text));
    return;
  }
  if (v.is_object()) {
    const auto& obj = v.as_object();
    // parse_object also refuses duplicate keys and deep nesting; what it accepts is as parsed.
    auto parsed = parse_object(text, "request body", 32);
    if (parsed.ok()) {
      FUZZ_CHECK(*parsed == obj);
      // Without duplicate keys, raw_members lists every member once, as parsed.
      auto members = raw_members(text);
      FUZZ_CHECK(members.size() == obj.size());
      for (const RawMember& m : members) {
        FUZZ_CHECK(within(m.value, text));
        bool m_ok = false;
        json::value mv = parse_or_null(m.value, m_ok);
        FUZZ_CHECK(m_ok && obj.contains(m.key) && mv == obj.at(m.key));
      }
    }
    (void)check_fields(obj, {"collection", "id", "body", "base", "delete", "schema"}, "writes[0]");
    for (const auto& kv : obj) {
      auto raw = raw_member(text, kv.key());
      FUZZ_CHECK(raw.has_value());
      FUZZ_CHECK(within(*raw, text));
      bool raw_ok = false;
      json::value rv = parse_or_null(*raw, raw_ok);
      FUZZ_CHECK(raw_ok);
      FUZZ_CHECK(rv == kv.value());
      // The envelope a handler answers with, the member spliced in raw, is valid JSON.
      std::string spliced = splice_member(R"({"id":"x"})", kv.key(), *raw);
      bool spliced_ok = false;
      json::value sv = parse_or_null(spliced, spliced_ok);
      FUZZ_CHECK(spliced_ok && sv.is_object());
      FUZZ_CHECK(sv.as_object().at(kv.key()) == kv.value());
    }
    if (!obj.contains("no such member")) FUZZ_CHECK(!raw_member(text, "no such member"));
    if (auto* parents = obj.if_contains("parents")) (void)version_list(*parents, "parents");
  } else if (v.is_array()) {
    const auto& arr = v.as_array();
    auto elems = raw_elements(text);
    FUZZ_CHECK(elems.size() == arr.size());
    for (std::size_t i = 0; i < elems.size(); ++i) {
      bool e_ok = false;
      json::value ev = parse_or_null(elems[i], e_ok);
      FUZZ_CHECK(e_ok);
      FUZZ_CHECK(ev == arr[i]);
    }
    (void)version_list(v, "parents");
  } else {
    FUZZ_CHECK(!parse_object(text, "request body", 32).ok());
  }
}

void check_parameters(std::string_view text) {
  for (auto line : fuzz::split(text, '\n')) {
    ApiRequest req;
    for (auto name : {"limit", "since", "timeout", "include_deleted", "base"})
      req.query.emplace(name, std::string(line));
    req.headers["if-match"] = std::string(line);
    if (auto n = uint_query(req, "since", 7, 1000); n.ok()) FUZZ_CHECK(!line.empty() && *n <= 1000);
    (void)flag_query(req, "include_deleted");
    (void)parse_version(line, "a version");
    storage::WriteRequest w;
    FUZZ_CHECK(!set_write_base(req, w, true).ok());  // ?base= and If-Match together
    req.query.erase("base");
    storage::WriteRequest m;
    if (set_write_base(req, m, false).ok())  // now from If-Match
      FUZZ_CHECK(m.strict && (m.use_current || m.parents.size() == 1));
    req.headers.erase("if-match");
    req.headers["if-none-match"] = std::string(line);
    storage::WriteRequest n;
    if (set_write_base(req, n, true).ok()) FUZZ_CHECK(n.must_not_exist && n.strict);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = fuzz::as_text(data, size);
  check_scanners(text);
  check_parameters(text);
  return 0;
}
