// syncctl never writes a control character the daemon sent (a peer's name, an error reason)
// to the terminal.
#include <catch2/catch.hpp>

#include <boost/json/parse.hpp>
#include <sstream>

#include "cli/command.hpp"

using namespace fieldsync::cli;

TEST_CASE("server strings are printed with control characters escaped", "[cli]") {
  boost::json::value name = boost::json::string(
      "\x1b]0;owned\x07\x1b[2J\xc2\x9b"
      "31mevil");
  std::string shown = str(name);
  CHECK(shown.find('\x1b') == std::string::npos);
  CHECK(shown.find('\x07') == std::string::npos);
  CHECK(shown.find("\xc2\x9b") == std::string::npos);
  CHECK(shown == "\\x1b]0;owned\\x07\\x1b[2J\\u009b31mevil");
  CHECK(str(boost::json::string("caf\xc3\xa9")) == "caf\xc3\xa9");

  boost::json::object o;
  o["name"] = name;
  o["del"] = "a\x7f";
  std::string j = json_text(o);
  for (char c : j) CHECK((static_cast<unsigned char>(c) >= 0x20 && c != 0x7f));
  CHECK(j.find("\xc2\x9b") == std::string::npos);
  // Still JSON, with the same content.
  CHECK(boost::json::parse(j) == boost::json::value(o));
}

TEST_CASE("tables show escaped cells", "[cli]") {
  std::ostringstream out;
  print_table(out, {"NAME"}, {{str(boost::json::string("a\nb"))}});
  CHECK(out.str() == "NAME\na\\x0ab\n");
}

TEST_CASE("numbers are printed in their shortest spelling, never as 7.1E0", "[cli]") {
  auto v = boost::json::parse(R"({"a":7.1,"b":7.0,"c":-0.5,"d":1e300,"e":12,"f":[2.5e-7]})");
  std::string j = json_text(v);
  CHECK(j == R"({"a":7.1,"b":7.0,"c":-0.5,"d":1e+300,"e":12,"f":[2.5e-07]})");
  CHECK(boost::json::parse(j) == v);
}

TEST_CASE("a number too large for a double is still printed as JSON", "[cli]") {
  auto v = boost::json::parse(R"({"x":2e308})");
  std::string j = json_text(v);
  CHECK(j.find("inf") == std::string::npos);
  CHECK(boost::json::parse(j).at("x").is_double());
}
