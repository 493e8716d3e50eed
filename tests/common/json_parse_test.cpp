#include <catch2/catch.hpp>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "common/json_parse.hpp"

using namespace fieldsync;
namespace json = boost::json;

namespace {

double nearest(const std::string& text) {
  double d = 0;
  auto r = std::from_chars(text.data(), text.data() + text.size(), d);
  REQUIRE(r.ec == std::errc());
  return d;
}

json::value parse_ok(const std::string& text, const json::parse_options& opt = {}) {
  boost::system::error_code ec;
  json::value v = parse_json(text, ec, {}, opt);
  INFO(text);
  REQUIRE_FALSE(ec);
  return v;
}

}  // namespace

TEST_CASE("parse_json reads a number to the same double wherever it stands", "[common][json]") {
  // Two numbers Boost.JSON 1.81 reads differently alone and inside a larger text.
  for (std::string n : {"22.22222222222222222", "0.30000000000000004"}) {
    INFO(n);
    double want = nearest(n);
    CHECK(parse_ok(n).as_double() == want);
    CHECK(parse_ok("{\"x\":" + n + "}").at("x").as_double() == want);
    CHECK(parse_ok("{\"x\":" + n + ",\"e\":0e300,\"later\":\"text\"}").at("x").as_double() == want);
  }
  // Many doubles printed with 17 digits (as C's %.17g does) read back exactly, alone and
  // followed by more members.
  std::mt19937_64 rng(7);
  int checked = 0;
  while (checked < 20000) {
    std::uint64_t bits = rng();
    double d;
    std::memcpy(&d, &bits, sizeof d);
    if (!std::isfinite(d)) continue;
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", d);
    std::string n = buf;
    if (n.find_first_of(".e") == std::string::npos) continue;  // an integer: not a double
    json::value alone = parse_ok(n);
    json::value inside = parse_ok("[" + n + ",\"after\",1]");
    INFO(n);
    REQUIRE(alone.as_double() == d);
    REQUIRE(inside.as_array()[0].as_double() == d);
    ++checked;
  }
}

TEST_CASE("parse_json gives what json::parse gives for all but numbers' last digits",
          "[common][json]") {
  for (
      std::string text :
      {R"({"a":[1,-2,18446744073709551615,18446744073709551616,-0,-0.0,1E5,1.5e+3],"b":{"c":null,"d":true,"e":false},"s":"\u00e9\n","":""})",
       "[]", "{}", "\"x\"", "  42  ", "1e400", "-1e400", "1e-400", "4.9e-324"}) {
    INFO(text);
    boost::system::error_code ec;
    CHECK(parse_json(text, ec) == json::parse(text));
    CHECK_FALSE(ec);
  }
  // Integers keep their kinds.
  json::value v = parse_ok("[9223372036854775807,18446744073709551615,-9223372036854775808]");
  CHECK(v.as_array()[0].is_int64());
  CHECK(v.as_array()[1].is_uint64());
  CHECK(v.as_array()[2].is_int64());
}

TEST_CASE("parse_json refuses what json::parse refuses, with the same error", "[common][json]") {
  json::parse_options shallow;
  shallow.max_depth = 2;
  struct Case {
    std::string text;
    json::parse_options opt;
  };
  for (const Case& c : {Case{"", {}}, Case{"{", {}}, Case{"[1,]", {}}, Case{"{} x", {}},
                        Case{"{\"a\":1}{", {}}, Case{"01", {}}, Case{"1.", {}},
                        Case{"\"\xff\"", {}}, Case{"[[[1]]]", shallow}, Case{"nul", {}}}) {
    INFO(c.text);
    boost::system::error_code ours, theirs;
    json::value v = parse_json(c.text, ours, {}, c.opt);
    json::parse(c.text, theirs, {}, c.opt);
    CHECK(ours);
    CHECK(ours == theirs);
    CHECK(v.is_null());
    boost::system::error_code checked;
    check_json(c.text, checked, c.opt);
    CHECK(checked == theirs);
  }
}

TEST_CASE("check_json accepts what parse_json accepts, and both find a key given twice",
          "[common][json]") {
  for (const std::string& text :
       std::vector<std::string>{R"({"a":1,"b":[true,null,{"c":"é"}],"d":-1.5e300})", R"([])",
                                R"("s")", R"(12)", R"({"k":{"k":{"k":1}},"l":[{"k":1},{"k":2}]})",
                                std::string(5000, '[') + std::string(5000, ']')}) {
    INFO(text.substr(0, 80));
    json::parse_options deep;
    deep.max_depth = 10000;
    boost::system::error_code parsed, checked;
    std::optional<std::string> dup_parsed = "x", dup_checked = "x";
    json::value v = parse_json(text, parsed, {}, deep, &dup_parsed);
    check_json(text, checked, deep, &dup_checked);
    CHECK_FALSE(parsed);
    CHECK_FALSE(checked);
    CHECK_FALSE(dup_parsed);  // reset when none
    CHECK_FALSE(dup_checked);
  }
  struct Case {
    std::string text, duplicate;
  };
  for (
      const Case& c : {
          Case{R"({"a":1,"a":2})", "a"},
          Case{R"({"a":1,"a":2})", "a"},              // the same key, spelt with an escape
          Case{R"({"z":1,"b":1,"z":2,"b":2})", "b"},  // the least of an object's
          // the inner object closes first
          Case{R"({"o":1,"o":2,"i":{"q":1,"q":2}})", "q"},
          Case{R"([{"x":1},{"y":1,"y":2},{"w":1,"w":2}])", "y"},
          Case{
              R"({"long key past the small string buffer":1,"long key past the small string buffer":2})",
              "long key past the small string buffer"},
      }) {
    INFO(c.text);
    boost::system::error_code parsed, checked;
    std::optional<std::string> dup_parsed, dup_checked;
    json::value v = parse_json(c.text, parsed, {}, {}, &dup_parsed);
    check_json(c.text, checked, {}, &dup_checked);
    CHECK_FALSE(parsed);
    CHECK_FALSE(checked);
    CHECK(dup_parsed == c.duplicate);
    CHECK(dup_checked == c.duplicate);
  }
}

TEST_CASE("parse_json builds the value in the memory resource it is given", "[common][json]") {
  json::monotonic_resource mr;
  boost::system::error_code ec;
  json::value v = parse_json(R"({"key":"a string longer than the small buffer"})", ec, &mr);
  REQUIRE_FALSE(ec);
  CHECK(v.storage().get() == &mr);
  CHECK(v.at("key").as_string().storage().get() == &mr);
}
