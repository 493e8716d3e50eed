#include "ipc/json_text.hpp"
#include "common/json_parse.hpp"

#include <algorithm>

#include <boost/json/error.hpp>

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

namespace fieldsync::ipc {

namespace json = boost::json;

namespace {
std::optional<std::string> duplicate_key(std::string_view text);
}  // namespace

Result<json::value> parse_value(std::string_view text, std::string_view what,
                                std::uint32_t max_depth) {
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = max_depth;
  json::value v = parse_json(text, ec, {}, opt);
  if (ec == json::error::too_deep)
    return make_error(Errc::invalid_argument,
                      std::string(what) + " nests objects and arrays more than " +
                          std::to_string(max_depth) + " levels deep (api.max_json_depth)");
  if (ec)
    return make_error(Errc::invalid_argument,
                      std::string(what) + " is not valid JSON: " + ec.message());
  if (auto dup = duplicate_key(text))
    return make_error(Errc::invalid_argument,
                      std::string(what) + " has the key " + quote_input(*dup) +
                          " twice in one object; duplicate keys are refused");
  return v;
}

Result<json::object> parse_object(std::string_view text, std::string_view what,
                                  std::uint32_t max_depth) {
  auto v = parse_value(text, what, max_depth);
  if (!v) return v.error();
  if (!v->is_object())
    return make_error(Errc::invalid_argument, std::string(what) + " must be a JSON object");
  return std::move(v->as_object());
}

Status check_fields(const json::object& obj, std::initializer_list<std::string_view> allowed,
                    std::string_view what) {
  for (const auto& kv : obj) {
    bool ok = false;
    for (auto a : allowed) ok = ok || kv.key() == a;
    if (!ok) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return make_error(Errc::invalid_argument, "unknown field " + quote_input(kv.key()) + " in " +
                                                    std::string(what) + " (allowed: " + list + ")");
    }
  }
  return {};
}

namespace {

struct Scanner {
  std::string_view s;
  std::size_t i = 0;

  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool string() {
    if (i >= s.size() || s[i] != '"') return false;
    ++i;
    while (i < s.size()) {
      char c = s[i++];
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        return true;
      }
    }
    return false;
  }
  bool value() {
    ws();
    if (i >= s.size()) return false;
    char c = s[i];
    if (c == '"') return string();
    if (c == '{' || c == '[') {
      char close = c == '{' ? '}' : ']';
      ++i;
      ws();
      if (i < s.size() && s[i] == close) {
        ++i;
        return true;
      }
      while (i < s.size()) {
        if (c == '{') {
          ws();
          if (!string()) return false;
          ws();
          if (i >= s.size() || s[i] != ':') return false;
          ++i;
        }
        if (!value()) return false;
        ws();
        if (i >= s.size()) return false;
        if (s[i] == ',') {
          ++i;
          continue;
        }
        if (s[i] == close) {
          ++i;
          return true;
        }
        return false;
      }
      return false;
    }
    // number, true, false, null
    std::size_t start = i;
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
           s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
      ++i;
    return i > start;
  }
};

std::string decode_key(std::string_view quoted) {
  if (quoted.find('\\') == std::string_view::npos)
    return std::string(quoted.substr(1, quoted.size() - 2));
  boost::system::error_code ec;
  json::value v = parse_json(quoted, ec);
  if (ec || !v.is_string()) return {};
  return std::string(v.as_string());
}

// Walks JSON text that json::parse accepted and returns the first key that appears twice
// in one object. Recursion is bounded by the depth limit the text was parsed with.
struct DuplicateFinder {
  Scanner sc;
  std::optional<std::string> found;

  bool value() {
    sc.ws();
    if (sc.i >= sc.s.size()) return false;
    char c = sc.s[sc.i];
    if (c == '{') return object();
    if (c == '[') {
      ++sc.i;
      sc.ws();
      if (sc.i < sc.s.size() && sc.s[sc.i] == ']') return ++sc.i, true;
      while (true) {
        if (!value()) return false;
        sc.ws();
        if (sc.i >= sc.s.size()) return false;
        if (sc.s[sc.i++] == ']') return true;
      }
    }
    return sc.value();  // string or scalar
  }
  bool object() {
    ++sc.i;
    std::vector<std::string> keys;
    sc.ws();
    if (sc.i < sc.s.size() && sc.s[sc.i] == '}') return ++sc.i, true;
    while (true) {
      sc.ws();
      std::size_t ks = sc.i;
      if (!sc.string()) return false;
      keys.push_back(decode_key(sc.s.substr(ks, sc.i - ks)));
      sc.ws();
      if (sc.i >= sc.s.size() || sc.s[sc.i] != ':') return false;
      ++sc.i;
      if (!value()) return false;
      if (found) return false;
      sc.ws();
      if (sc.i >= sc.s.size()) return false;
      if (sc.s[sc.i++] == '}') break;
    }
    std::sort(keys.begin(), keys.end());
    auto it = std::adjacent_find(keys.begin(), keys.end());
    if (it != keys.end()) {
      found = *it;
      return false;
    }
    return true;
  }
};

std::optional<std::string> duplicate_key(std::string_view text) {
  DuplicateFinder f{Scanner{text}, std::nullopt};
  f.value();
  return f.found;
}

}  // namespace

std::optional<std::string_view> raw_member(std::string_view object_text, std::string_view key) {
  Scanner sc{object_text};
  sc.ws();
  if (sc.i >= object_text.size() || object_text[sc.i] != '{') return std::nullopt;
  ++sc.i;
  // A key given twice: the last one counts, as in the value Boost.JSON parses, so the raw
  // text and the parsed value always agree.
  std::optional<std::string_view> found;
  while (true) {
    sc.ws();
    std::size_t ks = sc.i;
    if (!sc.string()) return found;
    std::string k = decode_key(object_text.substr(ks, sc.i - ks));
    sc.ws();
    if (sc.i >= object_text.size() || object_text[sc.i] != ':') return found;
    ++sc.i;
    sc.ws();
    std::size_t vs = sc.i;
    if (!sc.value()) return found;
    if (k == key) found = object_text.substr(vs, sc.i - vs);
    sc.ws();
    if (sc.i >= object_text.size() || object_text[sc.i] != ',') return found;
    ++sc.i;
  }
}

std::vector<std::string_view> raw_elements(std::string_view array_text) {
  std::vector<std::string_view> out;
  Scanner sc{array_text};
  sc.ws();
  if (sc.i >= array_text.size() || array_text[sc.i] != '[') return out;
  ++sc.i;
  sc.ws();
  if (sc.i < array_text.size() && array_text[sc.i] == ']') return out;
  while (true) {
    sc.ws();
    std::size_t vs = sc.i;
    if (!sc.value()) return out;
    out.push_back(array_text.substr(vs, sc.i - vs));
    sc.ws();
    if (sc.i >= array_text.size() || array_text[sc.i] != ',') return out;
    ++sc.i;
  }
}

std::string splice_member(std::string envelope, std::string_view key, std::string_view raw_value) {
  // envelope ends with '}'; it is empty ("{}") or has members.
  while (!envelope.empty() && envelope.back() != '}') envelope.pop_back();
  if (envelope.empty()) envelope = "{}";
  envelope.pop_back();
  if (envelope.size() > 1) envelope += ',';
  envelope += json_quote(key);
  envelope += ':';
  envelope += raw_value;
  envelope += '}';
  return envelope;
}

std::string json_quote(std::string_view s) { return json::serialize(json::string(s)); }

}  // namespace fieldsync::ipc
