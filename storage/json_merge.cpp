#include "storage/json_merge.hpp"

#include <boost/json.hpp>
#include <set>

namespace fieldsync::storage {
namespace json = boost::json;
namespace {

Result<json::object> parse_object(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return make_error(Errc::invalid_argument, "invalid JSON: " + ec.message());
  if (!v.is_object()) return make_error(Errc::invalid_argument, "a document must be a JSON object");
  return std::move(v.as_object());
}

}  // namespace

Status validate_json_object(std::string_view text) {
  // Hot path of every write: parse into a stack arena instead of the heap.
  unsigned char arena[8192];
  json::monotonic_resource mr(arena, sizeof arena);
  boost::system::error_code ec;
  json::value v = json::parse(text, ec, &mr);
  if (ec) return make_error(Errc::invalid_argument, "invalid JSON: " + ec.message());
  if (!v.is_object()) return make_error(Errc::invalid_argument, "a document must be a JSON object");
  return {};
}

Result<MergeResult> merge_objects(const MergeInput& in) {
  json::object base;
  if (in.base) {
    auto b = parse_object(*in.base);
    if (!b) return b.error();
    base = std::move(*b);
  }
  std::vector<json::object> sides;
  for (const auto& s : in.sides) {
    auto o = parse_object(s);
    if (!o) return o.error();
    sides.push_back(std::move(*o));
  }
  std::set<std::string> keys;
  for (const auto& kv : base) keys.insert(std::string(kv.key()));
  for (const auto& side : sides)
    for (const auto& kv : side) keys.insert(std::string(kv.key()));

  MergeResult out;
  json::object merged;
  for (const auto& key : keys) {
    const json::value* bv = base.if_contains(key);
    std::optional<json::value> chosen;  // nullopt + decided = field removed
    bool decided = false, conflict = false;
    for (const auto& side : sides) {
      const json::value* sv = side.if_contains(key);
      bool changed = (sv == nullptr) != (bv == nullptr) || (sv && bv && *sv != *bv);
      if (!changed) continue;
      std::optional<json::value> value = sv ? std::optional<json::value>(*sv) : std::nullopt;
      if (!decided) {
        chosen = value;
        decided = true;
      } else if (chosen != value) {
        conflict = true;
      }
    }
    if (conflict) {
      out.conflicting_fields.push_back(key);
      // Keep the winner's (first side's) value.
      if (const json::value* wv = sides.empty() ? nullptr : sides.front().if_contains(key))
        merged[key] = *wv;
      continue;
    }
    if (!decided) {
      if (bv) merged[key] = *bv;
    } else if (chosen) {
      merged[key] = *chosen;
    }
  }
  out.body = json::serialize(merged);
  return out;
}

Result<bool> matches_filters(std::string_view body, const std::vector<FieldFilter>& filters) {
  if (filters.empty()) return true;
  boost::system::error_code ec;
  json::value doc = json::parse(body, ec);
  if (ec || !doc.is_object()) return false;
  for (const auto& f : filters) {
    json::value want = json::parse(f.json_value, ec);
    if (ec)
      return make_error(Errc::invalid_argument,
                        "filter value for " + quote_input(f.field) + " is not JSON");
    const json::value* have = doc.as_object().if_contains(f.field);
    if (!have || *have != want) return false;
  }
  return true;
}

}  // namespace fieldsync::storage
