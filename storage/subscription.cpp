#include "storage/subscription.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <cmath>
#include <optional>
#include <set>
#include <vector>

#include "common/json_parse.hpp"
#include "storage/json_merge.hpp"

namespace fieldsync::storage {
namespace json = boost::json;

namespace {

enum class Kind { eq, in, range, bbox, all, any };

struct Term {
  Kind kind = Kind::eq;
  std::vector<std::string> path;  // eq, in, range; bbox: latitude path
  std::vector<std::string> lon;   // bbox: longitude path
  std::string path_text, lon_text;
  std::vector<json::value> values;  // eq: one; in: several
  std::optional<json::value> gt, gte, lt, lte;
  double south = 0, west = 0, north = 0, east = 0;
  std::vector<Term> children;  // all, any
};

Error bad(const std::string& what) {
  return make_error(Errc::invalid_argument, "subscription: " + what);
}

std::string num_text(double d) {
  if (d == 0) return "0";  // also -0, which would read back as the integer 0
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d);
  return std::string(buf, r.ptr);
}

std::string canonical_number(double d);

// The canonical spelling of a scalar: strings escaped as JSON, numbers in their shortest form.
std::string scalar_text(const json::value& v) {
  switch (v.kind()) {
    case json::kind::int64: return std::to_string(v.get_int64());
    case json::kind::uint64: return std::to_string(v.get_uint64());
    case json::kind::double_: return canonical_number(v.get_double());
    default: return json::serialize(v);
  }
}

// How Boost.JSON reads a spelling back (any number kind as a double).
std::optional<double> read_back(const std::string& text) {
  boost::system::error_code ec;
  json::value v = parse_json(text, ec);
  if (ec || !v.is_number()) return std::nullopt;
  if (v.is_int64()) return double(v.get_int64());
  if (v.is_uint64()) return double(v.get_uint64());
  return v.get_double();
}

// The canonical spelling of a double: the first of a few spellings that Boost.JSON reads back
// as exactly this double. Its number parser is not correctly rounded for every input (the
// shortest spelling of 3.6666666666e81 reads back one ulp away, and that one's shortest
// spelling reads back as the first), so the shortest spelling alone would not round-trip.
// nullopt: none does (such a number is refused when a subscription is parsed).
std::optional<std::string> spell(double d) {
  if (d == 0) return "0";
  std::vector<std::string> tries{num_text(d), num_text(std::nextafter(d, HUGE_VAL)),
                                 num_text(std::nextafter(d, -HUGE_VAL))};
  for (int digits : {17, 18, 19, 20}) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::general, digits);
    tries.emplace_back(buf, r.ptr);
  }
  for (const auto& t : tries)
    if (auto back = read_back(t); back && *back == d) return t;
  return std::nullopt;
}

std::string canonical_number(double d) { return spell(d).value_or(num_text(d)); }

// The first double of the parsed JSON that has no canonical spelling, if any.
const json::value* unspellable(const json::value& v) {
  if (v.is_double()) return !std::isfinite(v.get_double()) || spell(v.get_double()) ? nullptr : &v;
  if (v.is_array()) {
    for (const auto& x : v.get_array())
      if (auto* u = unspellable(x)) return u;
  } else if (v.is_object()) {
    for (const auto& kv : v.get_object())
      if (auto* u = unspellable(kv.value())) return u;
  }
  return nullptr;
}

// Numbers must be finite: 2e308 reads as infinity, which has no JSON spelling to give back.
bool finite(const json::value& v) { return !v.is_double() || std::isfinite(v.get_double()); }

bool is_scalar(const json::value& v) {
  return (v.is_string() || v.is_number() || v.is_bool() || v.is_null()) && finite(v);
}

Result<std::vector<std::string>> parse_path(const json::value* v, std::string_view what) {
  if (!v || !v->is_string()) return bad(std::string(what) + " must be a string path like \"a.b\"");
  return parse_dot_path(v->get_string(), what);
}

double as_double(const json::value& v) {
  if (v.is_int64()) return double(v.get_int64());
  if (v.is_uint64()) return double(v.get_uint64());
  return v.get_double();
}

// -1, 0, 1; nullopt when the two cannot be compared (different types).
std::optional<int> compare(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) {
    double x = as_double(a), y = as_double(b);
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = std::string_view(a.get_string()).compare(std::string_view(b.get_string()));
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_bool() && b.is_bool()) return a.get_bool() == b.get_bool() ? 0 : 1;
  if (a.is_null() && b.is_null()) return 0;
  return std::nullopt;
}

struct Parser {
  std::size_t terms = 0;

  Status check_keys(const json::object& o, std::initializer_list<std::string_view> allowed,
                    std::string_view what) {
    for (const auto& kv : o) {
      if (std::find(allowed.begin(), allowed.end(), std::string_view(kv.key())) == allowed.end())
        return bad("unknown field \"" + std::string(kv.key()) + "\" in " + std::string(what));
    }
    return {};
  }

  Result<Term> term(const json::value& v, std::size_t depth) {
    if (depth > kMaxSubscriptionDepth)
      return bad("nested deeper than " + std::to_string(kMaxSubscriptionDepth) + " levels");
    const json::object* o = v.if_object();
    if (!o || o->size() != 1)
      return bad(
          "a condition is an object with one of \"eq\", \"in\", \"range\", \"bbox\", \"all\", "
          "\"any\"");
    const auto& [key, arg] = *o->begin();
    std::string_view k = key;
    Term t;
    if (k == "all" || k == "any") {
      t.kind = k == "all" ? Kind::all : Kind::any;
      const json::array* a = arg.if_array();
      if (!a || a->empty()) return bad("\"" + std::string(k) + "\" takes a non-empty array");
      for (const auto& c : *a) {
        auto sub = term(c, depth + 1);
        if (!sub) return sub.error();
        t.children.push_back(std::move(*sub));
      }
      return t;
    }
    if (++terms > kMaxSubscriptionTerms)
      return bad("more than " + std::to_string(kMaxSubscriptionTerms) + " conditions");
    const json::object* a = arg.if_object();
    if (!a) return bad("\"" + std::string(k) + "\" takes an object");
    if (k == "eq") {
      t.kind = Kind::eq;
      FS_TRY(check_keys(*a, {"path", "value"}, "eq"));
      auto p = parse_path(a->if_contains("path"), "eq.path");
      if (!p) return p.error();
      t.path = std::move(*p);
      t.path_text = std::string(a->at("path").get_string());
      const json::value* val = a->if_contains("value");
      if (!val || !is_scalar(*val))
        return bad("eq.value must be a string, number, true, false or null");
      t.values.push_back(*val);
      return t;
    }
    if (k == "in") {
      t.kind = Kind::in;
      FS_TRY(check_keys(*a, {"path", "values"}, "in"));
      auto p = parse_path(a->if_contains("path"), "in.path");
      if (!p) return p.error();
      t.path = std::move(*p);
      t.path_text = std::string(a->at("path").get_string());
      const json::value* vals = a->if_contains("values");
      if (!vals || !vals->is_array() || vals->get_array().empty() ||
          vals->get_array().size() > kMaxSubscriptionValues)
        return bad("in.values must be an array of 1.." + std::to_string(kMaxSubscriptionValues) +
                   " values");
      for (const auto& x : vals->get_array()) {
        if (!is_scalar(x)) return bad("in.values holds strings, numbers, true, false or null");
        t.values.push_back(x);
      }
      return t;
    }
    if (k == "range") {
      t.kind = Kind::range;
      FS_TRY(check_keys(*a, {"path", "gt", "gte", "lt", "lte"}, "range"));
      auto p = parse_path(a->if_contains("path"), "range.path");
      if (!p) return p.error();
      t.path = std::move(*p);
      t.path_text = std::string(a->at("path").get_string());
      auto bound = [&](const char* name, std::optional<json::value>& into) -> Status {
        const json::value* b = a->if_contains(name);
        if (!b) return {};
        if ((!b->is_number() && !b->is_string()) || !finite(*b))
          return bad(std::string("range.") + name + " must be a finite number or a string");
        into = *b;
        return {};
      };
      FS_TRY(bound("gt", t.gt));
      FS_TRY(bound("gte", t.gte));
      FS_TRY(bound("lt", t.lt));
      FS_TRY(bound("lte", t.lte));
      if (t.gt && t.gte) return bad("range takes gt or gte, not both");
      if (t.lt && t.lte) return bad("range takes lt or lte, not both");
      if (!t.gt && !t.gte && !t.lt && !t.lte) return bad("range needs a bound (gt, gte, lt, lte)");
      return t;
    }
    if (k == "bbox") {
      t.kind = Kind::bbox;
      FS_TRY(check_keys(*a, {"lat", "lon", "south", "west", "north", "east"}, "bbox"));
      json::value lat_default("lat"), lon_default("lon");
      const json::value* lat = a->if_contains("lat");
      const json::value* lon = a->if_contains("lon");
      auto lp = parse_path(lat ? lat : &lat_default, "bbox.lat");
      if (!lp) return lp.error();
      auto op = parse_path(lon ? lon : &lon_default, "bbox.lon");
      if (!op) return op.error();
      t.path = std::move(*lp);
      t.lon = std::move(*op);
      t.path_text = std::string((lat ? lat : &lat_default)->get_string());
      t.lon_text = std::string((lon ? lon : &lon_default)->get_string());
      auto edge = [&](const char* name, double& into, double lo, double hi) -> Status {
        const json::value* e = a->if_contains(name);
        if (!e || !e->is_number() || as_double(*e) < lo || as_double(*e) > hi)
          return bad(std::string("bbox.") + name + " must be a number in [" + num_text(lo) + ", " +
                     num_text(hi) + "]");
        into = as_double(*e);
        return {};
      };
      FS_TRY(edge("south", t.south, -90, 90));
      FS_TRY(edge("north", t.north, -90, 90));
      FS_TRY(edge("west", t.west, -180, 180));
      FS_TRY(edge("east", t.east, -180, 180));
      if (t.south > t.north) return bad("bbox.south is north of bbox.north");
      return t;  // west > east: the box crosses the antimeridian
    }
    return bad("unknown condition \"" + std::string(k) + "\" (eq, in, range, bbox, all, any)");
  }
};

std::string term_text(const Term& t) {
  auto q = [](std::string_view s) { return json::serialize(json::string(s)); };
  switch (t.kind) {
    case Kind::eq:
      return "{\"eq\":{\"path\":" + q(t.path_text) + ",\"value\":" + scalar_text(t.values[0]) +
             "}}";
    case Kind::in: {
      std::string s = "{\"in\":{\"path\":" + q(t.path_text) + ",\"values\":[";
      for (std::size_t i = 0; i < t.values.size(); ++i)
        s += (i ? "," : "") + scalar_text(t.values[i]);
      return s + "]}}";
    }
    case Kind::range: {
      std::string s = "{\"range\":{\"path\":" + q(t.path_text);
      if (t.gt) s += ",\"gt\":" + scalar_text(*t.gt);
      if (t.gte) s += ",\"gte\":" + scalar_text(*t.gte);
      if (t.lt) s += ",\"lt\":" + scalar_text(*t.lt);
      if (t.lte) s += ",\"lte\":" + scalar_text(*t.lte);
      return s + "}}";
    }
    case Kind::bbox:
      return "{\"bbox\":{\"lat\":" + q(t.path_text) + ",\"lon\":" + q(t.lon_text) +
             ",\"south\":" + canonical_number(t.south) + ",\"west\":" + canonical_number(t.west) +
             ",\"north\":" + canonical_number(t.north) + ",\"east\":" + canonical_number(t.east) +
             "}}";
    case Kind::all:
    case Kind::any: {
      std::string s = t.kind == Kind::all ? "{\"all\":[" : "{\"any\":[";
      for (std::size_t i = 0; i < t.children.size(); ++i)
        s += (i ? "," : "") + term_text(t.children[i]);
      return s + "]}";
    }
  }
  return "{}";
}

const json::value* lookup(const json::object& body, const std::vector<std::string>& path) {
  const json::object* o = &body;
  const json::value* v = nullptr;
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (!o) return nullptr;
    v = o->if_contains(path[i]);
    if (!v) return nullptr;
    o = v->if_object();
  }
  return v;
}

bool eval(const Term& t, const json::object& body) {
  switch (t.kind) {
    case Kind::all:
      return std::all_of(t.children.begin(), t.children.end(),
                         [&](const Term& c) { return eval(c, body); });
    case Kind::any:
      return std::any_of(t.children.begin(), t.children.end(),
                         [&](const Term& c) { return eval(c, body); });
    case Kind::eq:
    case Kind::in: {
      const json::value* v = lookup(body, t.path);
      if (!v) return false;
      return std::any_of(t.values.begin(), t.values.end(), [&](const json::value& want) {
        auto c = compare(*v, want);
        return c && *c == 0;
      });
    }
    case Kind::range: {
      const json::value* v = lookup(body, t.path);
      if (!v) return false;
      auto ok = [&](const std::optional<json::value>& b, auto pass) {
        if (!b) return true;
        auto c = compare(*v, *b);
        return c && pass(*c);
      };
      return ok(t.gt, [](int c) { return c > 0; }) && ok(t.gte, [](int c) { return c >= 0; }) &&
             ok(t.lt, [](int c) { return c < 0; }) && ok(t.lte, [](int c) { return c <= 0; });
    }
    case Kind::bbox: {
      const json::value* la = lookup(body, t.path);
      const json::value* lo = lookup(body, t.lon);
      if (!la || !lo || !la->is_number() || !lo->is_number()) return false;
      double lat = as_double(*la), lon = as_double(*lo);
      if (lat < t.south || lat > t.north) return false;
      if (t.west <= t.east) return lon >= t.west && lon <= t.east;
      return lon >= t.west || lon <= t.east;  // across the antimeridian
    }
  }
  return false;
}

}  // namespace

struct Subscription::Impl {
  std::optional<std::set<std::string>> collections;
  std::optional<Term> where;
  std::string canonical = "{}";
  std::string where_text;                  // canonical text of `where`
  std::vector<std::string> where_clauses;  // of a top-level "all": each child's text
};

namespace {
const std::shared_ptr<const Subscription::Impl>& everything_impl() {
  static const auto e = std::make_shared<const Subscription::Impl>();
  return e;
}
}  // namespace

Subscription::Subscription() : impl_(everything_impl()) {}
Subscription::~Subscription() = default;
Subscription::Subscription(const Subscription&) = default;
Subscription& Subscription::operator=(const Subscription&) = default;
Subscription::Subscription(Subscription&&) noexcept = default;
Subscription& Subscription::operator=(Subscription&&) noexcept = default;

std::vector<Subscription::IndexTerm> Subscription::index_terms() const {
  std::vector<IndexTerm> out;
  if (!impl_->where) return out;
  auto add = [&](const Term& t) {
    IndexTerm x;
    x.path = t.path_text;
    switch (t.kind) {
      case Kind::eq:
      case Kind::in: x.values = t.values; break;
      case Kind::range:
        x.lo = t.gt ? t.gt : t.gte;
        x.hi = t.lt ? t.lt : t.lte;
        x.lo_open = t.gt.has_value();
        x.hi_open = t.lt.has_value();
        break;
      case Kind::bbox:
        x.lo = json::value(t.south);
        x.hi = json::value(t.north);
        break;
      default: return;
    }
    out.push_back(std::move(x));
  };
  const Term& w = *impl_->where;
  if (w.kind == Kind::all) {
    for (const auto& c : w.children) add(c);
  } else {
    add(w);
  }
  return out;
}

Result<Subscription> Subscription::parse(std::string_view text) {
  if (text.size() > kMaxSubscriptionBytes)
    return bad("longer than " + std::to_string(kMaxSubscriptionBytes) + " bytes");
  boost::system::error_code ec;
  json::parse_options po;
  po.max_depth = 2 * kMaxSubscriptionDepth + 8;
  json::value v = parse_json(text, ec, {}, po);
  if (ec) return bad("not valid JSON (" + ec.message() + ")");
  if (const json::value* u = unspellable(v))
    return bad("the number " + num_text(u->get_double()) +
               " cannot be kept exactly; give it with fewer digits");
  Subscription s;
  if (v.is_null()) return s;
  const json::object* o = v.if_object();
  if (!o) return bad("must be a JSON object");
  auto impl = std::make_shared<Impl>();
  Parser p;
  FS_TRY(p.check_keys(*o, {"collections", "where"}, "the subscription"));
  if (const json::value* c = o->if_contains("collections"); c && !c->is_null()) {
    const json::array* a = c->if_array();
    if (!a || a->empty() || a->size() > kMaxSubscriptionCollections)
      return bad("collections must be an array of 1.." +
                 std::to_string(kMaxSubscriptionCollections) + " collection names");
    impl->collections.emplace();
    for (const auto& x : *a) {
      if (!x.is_string() || x.get_string().empty() || x.get_string().size() > 64)
        return bad("collections holds collection names (1..64 bytes)");
      impl->collections->insert(std::string(x.get_string()));
    }
  }
  if (const json::value* w = o->if_contains("where"); w && !w->is_null()) {
    auto t = p.term(*w, 1);
    if (!t) return t.error();
    impl->where_text = term_text(*t);
    if (t->kind == Kind::all)
      for (const auto& c : t->children) impl->where_clauses.push_back(term_text(c));
    impl->where = std::move(*t);
  }
  if (!impl->collections && !impl->where) return s;
  std::string c = "{";
  if (impl->collections) {
    c += "\"collections\":[";
    bool first = true;
    for (const auto& name : *impl->collections) {
      c += (first ? "" : ",") + json::serialize(json::string(name));
      first = false;
    }
    c += "]";
  }
  if (impl->where) c += std::string(impl->collections ? "," : "") + "\"where\":" + impl->where_text;
  impl->canonical = c + "}";
  if (impl->canonical.size() > kMaxSubscriptionBytes)
    return bad("longer than " + std::to_string(kMaxSubscriptionBytes) + " bytes");
  s.impl_ = std::move(impl);
  return s;
}

Result<Subscription> Subscription::intersect(const Subscription& a, const Subscription& b) {
  if (a.everything() || a == b) return b;
  if (b.everything()) return a;
  std::string c = "{";
  const auto& ca = a.impl_->collections;
  const auto& cb = b.impl_->collections;
  if (ca || cb) {
    std::set<std::string> both;
    if (ca && cb) {
      for (const auto& x : *ca)
        if (cb->count(x)) both.insert(x);
      // No common collection: only the reserved ones (always wanted) are left.
      if (both.empty()) both.insert("_");
    } else {
      both = ca ? *ca : *cb;
    }
    c += "\"collections\":[";
    bool first = true;
    for (const auto& x : both) {
      c += (first ? "" : ",") + json::serialize(json::string(x));
      first = false;
    }
    c += "]";
  }
  const auto& wa = a.impl_->where_text;
  const auto& wb = b.impl_->where_text;
  if (!wa.empty() || !wb.empty()) {
    std::string w = wa.empty() ? wb : wb.empty() ? wa : "{\"all\":[" + wa + "," + wb + "]}";
    c += std::string(c.size() > 1 ? "," : "") + "\"where\":" + w;
  }
  return parse(c + "}");
}

Result<Subscription> Subscription::parse_canonical(std::string_view text) {
  auto s = parse(text);
  if (!s) return s.error();
  if (s->canonical() != text) return bad("not in canonical form");
  return s;
}

bool Subscription::everything() const { return !impl_->collections && !impl_->where; }

const std::string& Subscription::canonical() const { return impl_->canonical; }

bool Subscription::wants_collection(std::string_view collection) const {
  if (!collection.empty() && collection.front() == '_') return true;
  return !impl_->collections || impl_->collections->count(std::string(collection)) > 0;
}

bool Subscription::matches(std::string_view collection, std::string_view body) const {
  if (everything()) return true;
  if (!wants_collection(collection)) return false;
  if (!collection.empty() && collection.front() == '_') return true;
  if (!impl_->where) return true;
  boost::system::error_code ec;
  json::value v = parse_json(body, ec);
  if (ec || !v.is_object()) return false;
  return eval(*impl_->where, v.get_object());
}

bool Subscription::matches_parsed(std::string_view collection, const json::value& body) const {
  if (everything()) return true;
  if (!wants_collection(collection)) return false;
  if (!collection.empty() && collection.front() == '_') return true;
  if (!impl_->where) return true;
  if (!body.is_object()) return false;
  return eval(*impl_->where, body.get_object());
}

bool Subscription::within(const Subscription& wider) const {
  if (wider.everything() || *this == wider) return true;
  if (everything()) return false;
  const Impl& w = *wider.impl_;
  const Impl& me = *impl_;
  if (w.collections) {
    if (!me.collections) return false;
    for (const auto& c : *me.collections)
      if (!w.collections->count(c)) return false;
  }
  if (!w.where) return true;
  if (!me.where) return false;
  if (me.where_text == w.where_text) return true;
  // Ours is all[...] holding wider's condition, or all of wider's all[...] conditions.
  auto has = [&](const std::string& clause) {
    return std::find(me.where_clauses.begin(), me.where_clauses.end(), clause) !=
           me.where_clauses.end();
  };
  if (!w.where_clauses.empty())
    return std::all_of(w.where_clauses.begin(), w.where_clauses.end(), has);
  return has(w.where_text);
}

}  // namespace fieldsync::storage
