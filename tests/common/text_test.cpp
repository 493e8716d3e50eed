#include <catch2/catch.hpp>

#include "common/text.hpp"

using namespace fieldsync;

TEST_CASE("clean text: valid UTF-8, no control characters, bounded", "[common][text]") {
  CHECK(is_clean_text("field laptop", 64));
  CHECK(is_clean_text("Feldger\xC3\xA4t \xE2\x9C\x93 \xF0\x9F\x8C\xB2", 64));
  CHECK_FALSE(is_clean_text("abc", 2));
  CHECK_FALSE(is_clean_text("a\x1b[2Jb", 64));  // ESC
  CHECK_FALSE(is_clean_text("a\nb", 64));
  CHECK_FALSE(is_clean_text("a\x7f", 64));  // DEL
  CHECK_FALSE(
      is_clean_text("a\xC2\x9B"
                    "31m",
                    64));  // C1 CSI
  CHECK_FALSE(is_clean_text("\xff\xfe", 64));
  CHECK_FALSE(is_clean_text("\xC0\xAF", 64));          // overlong '/'
  CHECK_FALSE(is_clean_text("\xED\xA0\x80", 64));      // surrogate
  CHECK_FALSE(is_clean_text("\xF4\x90\x80\x80", 64));  // past U+10FFFF
  CHECK_FALSE(is_clean_text("\xE2\x9C", 64));          // truncated
}

TEST_CASE("sanitize_text replaces bad bytes and cuts at a character boundary", "[common][text]") {
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(sanitize_text("ok", 64) == "ok");
  CHECK(sanitize_text("a\x1b[31mb", 64) == "a" + fffd + "[31mb");
  CHECK(sanitize_text("\xff"
                      "x",
                      64) == fffd + "x");
  CHECK(sanitize_text("\xC2\x9B", 64) == fffd);
  // Four-byte character at the limit: dropped whole, never cut in the middle.
  std::string s = std::string(62, 'a') + "\xF0\x9F\x8C\xB2";
  CHECK(sanitize_text(s, 64) == std::string(62, 'a'));
  for (std::string in :
       {std::string("\xF0\x9F"), std::string(200, '\x01'), std::string("\xE2\x9C\x93\xE2"), s}) {
    auto out = sanitize_text(in, 64);
    CHECK(is_clean_text(out, 64));
  }
}

TEST_CASE("escape_for_terminal shows control characters instead of sending them",
          "[common][text]") {
  CHECK(escape_for_terminal("plain \xC3\xA4") == "plain \xC3\xA4");
  CHECK(escape_for_terminal("\x1b]0;pwned\x07") == "\\x1b]0;pwned\\x07");
  CHECK(escape_for_terminal("a\\b") == "a\\\\b");
  CHECK(escape_for_terminal("\xC2\x9B"
                            "2J") == "\\u009b2J");
  CHECK(escape_for_terminal("\xff") == "\\xff");
  CHECK(escape_for_terminal("line\nbreak") == "line\\x0abreak");
}
