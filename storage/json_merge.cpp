#include "storage/json_merge.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <set>

#include "common/json_parse.hpp"
#include "storage/subscription.hpp"

namespace fieldsync::storage {
namespace json = boost::json;

Status validate_json_object(std::string_view text) {
  // Hot path of every write: checked without building the value.
  boost::system::error_code ec;
  check_json(text, ec);
  if (ec) return make_error(Errc::invalid_argument, "invalid JSON: " + ec.message());
  if (!checked_is_object(text))
    return make_error(Errc::invalid_argument, "a document must be a JSON object");
  return {};
}

namespace {

// One top-level member of a JSON object, as written: the key's literal (quotes and escapes
// kept), the key decoded, and the value's exact text.
struct RawMember {
  std::string_view key_literal;
  std::string key;
  std::string_view value;
};

std::size_t skip_ws(std::string_view t, std::size_t i) {
  while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) ++i;
  return i;
}

// End of the string literal starting at t[i] == '"'.
std::size_t skip_string(std::string_view t, std::size_t i) {
  for (++i; i < t.size(); ++i) {
    if (t[i] == '\\') {
      ++i;
    } else if (t[i] == '"') {
      return i + 1;
    }
  }
  return t.size();
}

// End of the value starting at t[i] (valid JSON assumed: checked by the parse before).
std::size_t skip_value(std::string_view t, std::size_t i) {
  if (i >= t.size()) return i;
  if (t[i] == '"') return skip_string(t, i);
  if (t[i] == '{' || t[i] == '[') {
    int depth = 0;
    for (; i < t.size(); ++i) {
      char c = t[i];
      if (c == '"') {
        i = skip_string(t, i) - 1;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
    }
    return t.size();
  }
  while (i < t.size() && t[i] != ',' && t[i] != '}' && t[i] != ']' && t[i] != ' ' && t[i] != '\t' &&
         t[i] != '\n' && t[i] != '\r')
    ++i;
  return i;
}

// The members of an object text, in order. The text is parsed first (so the scan can trust
// it); a key written twice keeps its last value, as the parse does.
Result<std::vector<RawMember>> raw_members(std::string_view text) {
  boost::system::error_code ec;
  json::value v = parse_json(text, ec);
  if (ec) return make_error(Errc::invalid_argument, "invalid JSON: " + ec.message());
  if (!v.is_object()) return make_error(Errc::invalid_argument, "a document must be a JSON object");
  std::vector<RawMember> out;
  std::size_t i = skip_ws(text, 0) + 1;  // past '{'
  while (true) {
    i = skip_ws(text, i);
    if (i >= text.size() || text[i] != '"') break;  // '}' (or the end)
    std::size_t key_end = skip_string(text, i);
    std::string_view literal = text.substr(i, key_end - i);
    auto key = parse_json(literal, ec);
    if (ec || !key.is_string()) return make_error(Errc::invalid_argument, "invalid JSON key");
    i = skip_ws(text, key_end) + 1;  // past ':'
    i = skip_ws(text, i);
    std::size_t value_end = skip_value(text, i);
    RawMember m{literal, std::string(key.get_string()), text.substr(i, value_end - i)};
    auto dup =
        std::find_if(out.begin(), out.end(), [&](const RawMember& x) { return x.key == m.key; });
    if (dup != out.end()) out.erase(dup);
    out.push_back(std::move(m));
    i = skip_ws(text, value_end);
    if (i < text.size() && text[i] == ',') ++i;
  }
  return out;
}

// A value's text without the whitespace between tokens: two values are the same when these
// are equal (number spellings count: 1.0 and 1 are different edits, so neither is lost).
std::string compact(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    char c = v[i];
    if (c == '"') {
      std::size_t e = skip_string(v, i);
      out.append(v.substr(i, e - i));
      i = e - 1;
    } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      out += c;
    }
  }
  return out;
}

// The member named `key`: the last one when a body (from an older peer: the API refuses them)
// repeats a key, as the JSON parser reads such an object everywhere else.
const RawMember* find(const std::vector<RawMember>& ms, const std::string& key) {
  const RawMember* last = nullptr;
  for (const auto& m : ms)
    if (m.key == key) last = &m;
  return last;
}

}  // namespace

// Works on the members' exact texts, never re-serialising a value: numbers keep their
// spelling and precision (12345678901234567890123 stays so), and keys keep the order the
// winner wrote them in (then the base's, then the other sides' new ones).
Result<MergeResult> merge_objects(const MergeInput& in) {
  std::vector<RawMember> base;
  if (in.base) {
    auto b = raw_members(*in.base);
    if (!b) return b.error();
    base = std::move(*b);
  }
  std::vector<std::vector<RawMember>> sides;
  for (const auto& s : in.sides) {
    auto o = raw_members(s);
    if (!o) return o.error();
    sides.push_back(std::move(*o));
  }
  std::vector<std::string> keys;
  std::set<std::string> seen;
  auto add_keys = [&](const std::vector<RawMember>& ms) {
    for (const auto& m : ms)
      if (seen.insert(m.key).second) keys.push_back(m.key);
  };
  if (!sides.empty()) add_keys(sides.front());
  add_keys(base);
  for (const auto& side : sides) add_keys(side);

  MergeResult out;
  std::string body = "{";
  auto emit = [&](const RawMember& m) {
    if (body.size() > 1) body += ',';
    body.append(m.key_literal);
    body += ':';
    body.append(m.value);
  };
  for (const auto& key : keys) {
    const RawMember* bv = find(base, key);
    std::optional<std::string> bc =
        bv ? std::optional<std::string>(compact(bv->value)) : std::nullopt;
    const RawMember* chosen = nullptr;  // nullptr + decided = field removed
    std::optional<std::string> chosen_c;
    bool decided = false, conflict = false;
    for (const auto& side : sides) {
      const RawMember* sv = find(side, key);
      std::optional<std::string> sc =
          sv ? std::optional<std::string>(compact(sv->value)) : std::nullopt;
      if (sc == bc) continue;  // unchanged on this side
      if (!decided) {
        chosen = sv;
        chosen_c = sc;
        decided = true;
      } else if (chosen_c != sc) {
        conflict = true;
      }
    }
    if (conflict) {
      out.conflicting_fields.push_back(key);
      // Keep the winner's (first side's) value.
      if (const RawMember* wv = sides.empty() ? nullptr : find(sides.front(), key)) emit(*wv);
      continue;
    }
    if (!decided) {
      if (bv) emit(*bv);
    } else if (chosen) {
      emit(*chosen);
    }
  }
  out.body = body + "}";
  return out;
}

Result<bool> matches_filters(std::string_view body, const std::vector<FieldFilter>& filters) {
  if (filters.empty()) return true;
  boost::system::error_code ec;
  json::value doc = parse_json(body, ec);
  if (ec) return false;
  return matches_filters(doc, filters);
}

Result<bool> matches_filters(const json::value& doc, const std::vector<FieldFilter>& filters) {
  if (filters.empty()) return true;
  if (!doc.is_object()) return false;
  boost::system::error_code ec;
  for (const auto& f : filters) {
    json::value want = parse_json(f.json_value, ec);
    if (ec)
      return make_error(Errc::invalid_argument,
                        "filter value for " + quote_input(f.field) + " is not JSON");
    const json::value* have = doc.as_object().if_contains(f.field);
    if (!have || *have != want) return false;
  }
  return true;
}

const json::value* find_path(const json::value& doc, const std::vector<std::string>& path) {
  const json::value* v = &doc;
  for (const auto& seg : path) {
    const json::object* o = v->if_object();
    if (!o) return nullptr;
    v = o->if_contains(seg);
    if (!v) return nullptr;
  }
  return v;
}

Result<std::vector<std::string>> parse_dot_path(std::string_view s, std::string_view what) {
  constexpr std::size_t kMaxPathBytes = kMaxSubscriptionPathBytes;
  if (s.empty() || s.size() > kMaxPathBytes)
    return make_error(Errc::invalid_argument, std::string(what) + " must be a dot path of 1.." +
                                                  std::to_string(kMaxPathBytes) + " bytes");
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = s.find('.', start);
    std::string_view seg = s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    if (seg.empty())
      return make_error(Errc::invalid_argument,
                        std::string(what) + " has an empty segment: " + quote_input(s));
    out.emplace_back(seg);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return out;
}

}  // namespace fieldsync::storage
