// Raw JSON member scanning: bodies are spliced byte for byte, never re-serialised.
#include <catch2/catch.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include "ipc/json_text.hpp"

using namespace fieldsync::ipc;

TEST_CASE("raw_member returns the exact text of a member") {
  std::string text =
      R"( { "a" : 1.50 , "body":{"z":1e3, "s":"}\"{", "n":[1,{"x":[]}]} ,"c":null } )";
  REQUIRE(raw_member(text, "a"));
  CHECK(*raw_member(text, "a") == "1.50");
  CHECK(*raw_member(text, "body") == R"({"z":1e3, "s":"}\"{", "n":[1,{"x":[]}]})");
  CHECK(*raw_member(text, "c") == "null");
  CHECK_FALSE(raw_member(text, "missing"));
  CHECK(*raw_member(R"({"b\u006fdy": [1]})", "body") == "[1]");  // escaped key
  CHECK_FALSE(raw_member("[1,2]", "a"));
}

TEST_CASE("raw_member gives a repeated key's last value, as Boost.JSON's parse does") {
  // parse_object refuses such text; the scanner still agrees with the parsed value.
  std::string text = R"({"collection":"c","body":1,"b\u006fdy":{"a":2},"x":0})";
  REQUIRE(raw_member(text, "body"));
  CHECK(*raw_member(text, "body") == R"({"a":2})");
  CHECK(boost::json::parse(*raw_member(text, "body")) == boost::json::parse(text).at("body"));
}

TEST_CASE("raw_elements splits an array at top level only") {
  auto e = raw_elements(R"([ {"a":[1,2]} , "x,y" ,3 ,[[]] ])");
  REQUIRE(e.size() == 4);
  CHECK(e[0] == R"({"a":[1,2]})");
  CHECK(e[1] == R"("x,y")");
  CHECK(e[2] == "3");
  CHECK(e[3] == "[[]]");
  CHECK(raw_elements("[]").empty());
  CHECK(raw_elements(" [ ] ").empty());
}

TEST_CASE("splice_member appends raw text to a serialised object") {
  CHECK(splice_member("{}", "body", "{\"x\": 1.50}") == "{\"body\":{\"x\": 1.50}}");
  CHECK(splice_member("{\"a\":1}", "b", "2") == "{\"a\":1,\"b\":2}");
  auto v = boost::json::parse(splice_member("{\"a\":1}", "q\"k", "[]"));
  CHECK(v.as_object().contains("q\"k"));
}

TEST_CASE("parse_object and check_fields name the problem") {
  auto bad = parse_object("{oops", "request body", 32);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == fieldsync::Errc::invalid_argument);
  CHECK(bad.error().message.find("request body is not valid JSON") == 0);
  auto arr = parse_object("[1]", "request body", 32);
  REQUIRE_FALSE(arr);
  CHECK(arr.error().message == "request body must be a JSON object");
  auto obj = parse_object(R"({"name":"x","colour":"red"})", "x", 32);
  REQUIRE(obj);
  auto st = check_fields(*obj, {"name", "settings"}, "project");
  REQUIRE_FALSE(st);
  CHECK(st.error().message.find("unknown field 'colour' in project") == 0);
  CHECK(check_fields(*obj, {"name", "colour"}, "project"));
}

TEST_CASE("the raw scanners never read out of bounds on mutated input") {
  // Bounded random test (run under ASan in CI): the scanners are meant for validated JSON, but a
  // mistake upstream must not turn into a crash.
  const std::string seed =
      R"({"writes":[{"collection":"a","body":{"x":"y\"z","n":[1,{"m":null}]}}],"k":true})";
  std::uint32_t state = 12345;
  auto next = [&state] {
    state = state * 1103515245u + 12345u;
    return (state >> 16) & 0x7fff;
  };
  const char alphabet[] = "{}[]\",:\\ ab1e.-tn";
  for (int i = 0; i < 5000; ++i) {
    std::string s = seed;
    int edits = 1 + static_cast<int>(next() % 6);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      std::size_t at = next() % s.size();
      switch (next() % 3) {
        case 0: s[at] = alphabet[next() % (sizeof alphabet - 1)]; break;
        case 1: s.erase(at, 1 + next() % 4); break;
        default: s.resize(at); break;
      }
    }
    auto w = raw_member(s, "writes");
    if (w) {
      for (auto el : raw_elements(*w)) (void)raw_member(el, "body");
    }
    (void)raw_member(s, "k");
    (void)raw_elements(s);
    (void)parse_value(s, "x", 32);
  }
  SUCCEED("no crash");
}

TEST_CASE("duplicate keys are refused at any depth, also when spelled with escapes") {
  using fieldsync::Errc;
  for (const char* text : {R"({"a":1,"a":2})", R"({"writes":[],"writes":[{"collection":"c"}]})",
                           R"({"body":{"x":1,"y":{"k":1,"k":1}}})", R"({"a":1,"\u0061":2})",
                           R"([{"q":1},{"q":2,"q":3}])"}) {
    INFO(text);
    auto r = parse_value(text, "request body", 32);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(r.error().message.find("twice in one object") != std::string::npos);
  }
  auto dup = parse_object(R"({"name":"p","name":"q"})", "request body", 32);
  REQUIRE_FALSE(dup);
  CHECK(dup.error().message ==
        "request body has the key 'name' twice in one object; duplicate keys are refused");
  // The same key in different objects is fine.
  CHECK(parse_value(R"({"a":{"a":1},"b":[{"a":2},{"a":3}],"c":"a"})", "x", 32));
}

TEST_CASE("check_value refuses what parse_value refuses, with the same message") {
  auto nested = [](int levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  for (std::string text :
       {std::string(R"({"a":1,"a":2})"), std::string(R"({"a":{"b":1,"b":2}})"),
        std::string("{\"a\":\"\xff\"}"), std::string("{"), nested(33), std::string(R"({"a":1} x)"),
        std::string(R"({"a":[1,{"b":null}]})"), std::string("[]"), std::string("7")}) {
    INFO(text);
    auto parsed = parse_value(text, "request body", 32);
    auto checked = check_value(text, "request body", 32);
    REQUIRE(parsed.ok() == checked.ok());
    if (!parsed) {
      CHECK(checked.error().code == parsed.error().code);
      CHECK(checked.error().message == parsed.error().message);
    }
  }
}

TEST_CASE("raw_members lists every member with its key decoded and its exact text") {
  std::string text = R"( { "a" : 1.50 , "b\u006fdy":{"z":1e3, "s":"}\"{"} ,"c":null, "d":[ 1 ] } )";
  auto ms = raw_members(text);
  REQUIRE(ms.size() == 4);
  CHECK(ms[0].key == "a");
  CHECK(ms[0].value == "1.50");
  CHECK(ms[1].key == "body");
  CHECK(ms[1].value == R"({"z":1e3, "s":"}\"{"})");
  CHECK(ms[2].key == "c");
  CHECK(ms[2].value == "null");
  CHECK(ms[3].key == "d");
  CHECK(ms[3].value == "[ 1 ]");
  CHECK(raw_members("{}").empty());
  CHECK(raw_members("[1]").empty());
}

TEST_CASE("json_quote writes what boost::json::serialize writes, byte for byte") {
  std::string every;
  for (int b = 0; b < 256; ++b) {
    std::string one(1, static_cast<char>(b));
    CHECK(json_quote(one) == boost::json::serialize(boost::json::string(one)));
    every += one;
  }
  for (std::string s : {std::string(), every, std::string("caf\xc3\xa9 \"q\" a\\b\n"),
                        std::string(300, 'x') + "\x01"}) {
    CHECK(json_quote(s) == boost::json::serialize(boost::json::string(s)));
    std::string out = "[";
    append_json_quoted(out, s);
    CHECK(out == "[" + json_quote(s));
  }
}

TEST_CASE("nesting deeper than the configured depth is refused naming api.max_json_depth") {
  auto nested = [](int levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  CHECK(parse_value(nested(32), "x", 32));
  auto deep = parse_value(nested(33), "document body", 32);
  REQUIRE_FALSE(deep);
  CHECK(deep.error().message ==
        "document body nests objects and arrays more than 32 levels deep (api.max_json_depth)");
  CHECK(parse_value(nested(33), "x", 40));
  CHECK_FALSE(parse_value(R"({"a":{"b":{}}})", "x", 2));
}

TEST_CASE("quote_input keeps messages valid UTF-8 and one line") {
  using fieldsync::quote_input;
  CHECK(quote_input("abc") == "'abc'");
  CHECK(quote_input("\xff\xfe.") == "'\\xff\\xfe.'");
  CHECK(quote_input("a\nb'c\\") == "'a\\x0ab\\x27c\\x5c'");
  CHECK(quote_input("caf\xc3\xa9") == "'caf\xc3\xa9'");       // valid UTF-8 kept
  CHECK(quote_input("\xc3") == "'\\xc3'");                    // truncated sequence escaped
  CHECK(quote_input("\xed\xa0\x80") == "'\\xed\\xa0\\x80'");  // surrogate escaped
  CHECK(quote_input(std::string(100, 'x'), 10) == "'" + std::string(10, 'x') + "...'");
  boost::system::error_code ec;
  for (int b = 0; b < 256; ++b) {
    std::string in = "id" + std::string(1, static_cast<char>(b)) + "\xe2\x82";
    auto json = fieldsync::ipc::json_quote(quote_input(in));
    boost::json::parse(json, ec);
    INFO(b);
    CHECK_FALSE(ec);
  }
}
