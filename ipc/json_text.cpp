#include "ipc/json_text.hpp"
#include "common/json_parse.hpp"

#include <algorithm>

#include <boost/json/error.hpp>

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

namespace fieldsync::ipc {

namespace json = boost::json;

namespace {

// The error parse_value() gives for `ec` and `duplicate` from parse_json() or check_json().
Status value_error(const boost::system::error_code& ec, const std::optional<std::string>& duplicate,
                   std::string_view what, std::uint32_t max_depth) {
  if (ec == json::error::too_deep)
    return make_error(Errc::invalid_argument,
                      std::string(what) + " nests objects and arrays more than " +
                          std::to_string(max_depth) + " levels deep (api.max_json_depth)");
  if (ec)
    return make_error(Errc::invalid_argument,
                      std::string(what) + " is not valid JSON: " + ec.message());
  if (duplicate)
    return make_error(Errc::invalid_argument,
                      std::string(what) + " has the key " + quote_input(*duplicate) +
                          " twice in one object; duplicate keys are refused");
  return {};
}

}  // namespace

Result<json::value> parse_value(std::string_view text, std::string_view what,
                                std::uint32_t max_depth) {
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = max_depth;
  std::optional<std::string> duplicate;
  json::value v = parse_json(text, ec, {}, opt, &duplicate);
  FS_TRY(value_error(ec, duplicate, what, max_depth));
  return v;
}

Status check_value(std::string_view text, std::string_view what, std::uint32_t max_depth) {
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = max_depth;
  std::optional<std::string> duplicate;
  check_json(text, ec, opt, &duplicate);
  return value_error(ec, duplicate, what, max_depth);
}

Result<json::object> parse_object(std::string_view text, std::string_view what,
                                  std::uint32_t max_depth) {
  auto v = parse_value(text, what, max_depth);
  if (!v) return v.error();
  if (!v->is_object())
    return make_error(Errc::invalid_argument, std::string(what) + " must be a JSON object");
  return std::move(v->as_object());
}

Status check_field(std::string_view key, std::initializer_list<std::string_view> allowed,
                   std::string_view what) {
  for (auto a : allowed)
    if (key == a) return {};
  std::string list;
  for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  return make_error(Errc::invalid_argument, "unknown field " + quote_input(key) + " in " +
                                                std::string(what) + " (allowed: " + list + ")");
}

Status check_fields(const json::object& obj, std::initializer_list<std::string_view> allowed,
                    std::string_view what) {
  for (const auto& kv : obj) FS_TRY(check_field(kv.key(), allowed, what));
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

}  // namespace

std::optional<std::string_view> raw_member(std::string_view object_text, std::string_view key) {
  // A key given twice: the last one counts, as in the value Boost.JSON parses, so the raw
  // text and the parsed value always agree.
  std::optional<std::string_view> found;
  for (const RawMember& m : raw_members(object_text))
    if (m.key == key) found = m.value;
  return found;
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

std::vector<RawMember> raw_members(std::string_view object_text) {
  std::vector<RawMember> out;
  Scanner sc{object_text};
  sc.ws();
  if (sc.i >= object_text.size() || object_text[sc.i] != '{') return out;
  ++sc.i;
  while (true) {
    sc.ws();
    std::size_t ks = sc.i;
    if (!sc.string()) return out;
    std::string k = decode_key(object_text.substr(ks, sc.i - ks));
    sc.ws();
    if (sc.i >= object_text.size() || object_text[sc.i] != ':') return out;
    ++sc.i;
    sc.ws();
    std::size_t vs = sc.i;
    if (!sc.value()) return out;
    out.push_back(RawMember{std::move(k), object_text.substr(vs, sc.i - vs)});
    sc.ws();
    if (sc.i >= object_text.size() || object_text[sc.i] != ',') return out;
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

std::string json_quote(std::string_view s) {
  std::string out;
  append_json_quoted(out, s);
  return out;
}

void append_json_quoted(std::string& out, std::string_view s) {
  // As json::serialize() quotes a string: '"' and '\\' escaped, control characters as \b \f
  // \n \r \t or \u00xx, every other byte as it is.
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + s.size() + 2);
  out += '"';
  std::size_t plain = 0;  // start of the bytes not yet copied
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + plain, i - plain);
    plain = i + 1;
    out += '\\';
    switch (c) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '\b': out += 'b'; break;
      case '\f': out += 'f'; break;
      case '\n': out += 'n'; break;
      case '\r': out += 'r'; break;
      case '\t': out += 't'; break;
      default:
        out += "u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
    }
  }
  out.append(s.data() + plain, s.size() - plain);
  out += '"';
}

}  // namespace fieldsync::ipc
