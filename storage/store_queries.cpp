// Store: reads (documents, versions, history, lists, merge preview) and the changes feed.
#include <algorithm>
#include <boost/json.hpp>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "common/encoding.hpp"
#include "common/json_parse.hpp"
#include "storage/index_key.hpp"
#include "storage/json_merge.hpp"
#include "storage/store_impl.hpp"
#include "storage/subscription.hpp"
#include "storage/version_codec.hpp"

namespace fieldsync::storage {

namespace {

namespace json = boost::json;

// The collation of sort keys: null < false < true < numbers < strings < arrays < objects;
// numbers by value, strings by their UTF-8 bytes, arrays element by element, objects by text.
int type_rank(const json::value& v) {
  if (v.is_null()) return 0;
  if (v.is_bool()) return v.get_bool() ? 2 : 1;
  if (v.is_number()) return 3;
  if (v.is_string()) return 4;
  if (v.is_array()) return 5;
  return 6;
}

double number_of(const json::value& v) {
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return v.get_double();
}

int compare_json(const json::value& a, const json::value& b) {
  int ra = type_rank(a), rb = type_rank(b);
  if (ra != rb) return ra < rb ? -1 : 1;
  switch (ra) {
    case 3: {
      double x = number_of(a), y = number_of(b);
      return x < y ? -1 : (y < x ? 1 : 0);
    }
    case 4: {
      auto c = std::string_view(a.get_string()).compare(std::string_view(b.get_string()));
      return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    case 5: {
      const auto &x = a.get_array(), &y = b.get_array();
      for (std::size_t i = 0; i < x.size() && i < y.size(); ++i)
        if (int c = compare_json(x[i], y[i])) return c;
      return x.size() < y.size() ? -1 : (y.size() < x.size() ? 1 : 0);
    }
    case 6: {
      auto c = json::serialize(a).compare(json::serialize(b));
      return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    default: return 0;
  }
}

// The winner's body parsed once for a query's conditions and sort: null when there is none or
// it does not parse.
json::value parsed_body(const DocumentState& st) {
  if (!st.body) return nullptr;
  boost::system::error_code ec;
  json::value doc = parse_json(*st.body, ec);
  if (ec) return nullptr;
  return doc;
}

json::value value_at(const json::value& doc, const std::vector<std::string>& path) {
  const json::value* v = doc.is_object() ? find_path(doc, path) : nullptr;
  return v ? *v : json::value(nullptr);
}

struct SortRow {
  json::value key;
  std::string collection;
  std::string id;
};

// a before b in the query's order (descending reverses every part).
bool sorted_before(const SortRow& a, const SortRow& b, bool descending) {
  int c = compare_json(a.key, b.key);
  if (c == 0) c = a.collection.compare(b.collection);
  if (c == 0) c = a.id.compare(b.id);
  return descending ? c > 0 : c < 0;
}

// The `next` of a sorted page: hex of the JSON [key, collection, id] of its last row.
std::string sort_cursor(const SortRow& r) {
  json::array a{r.key, json::string(r.collection), json::string(r.id)};
  std::string text = json::serialize(a);
  return to_hex(ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

Result<SortRow> parse_sort_cursor(std::string_view cursor) {
  auto bad = [] {
    return make_error(Errc::invalid_argument,
                      "bad cursor (after= of a sorted query takes the `next` of the same query)");
  };
  auto bytes = from_hex(cursor);
  if (!bytes) return bad();
  boost::system::error_code ec;
  json::value v =
      parse_json(std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()), ec);
  if (ec || !v.is_array() || v.get_array().size() != 3 || !v.get_array()[1].is_string() ||
      !v.get_array()[2].is_string())
    return bad();
  auto& a = v.get_array();
  return SortRow{a[0], std::string(a[1].get_string()), std::string(a[2].get_string())};
}

// Whether a listed document passes the query's conditions (its record is not deleted).
// `doc`: parsed_body(st).
Result<bool> passes(const ListQuery& q, const DocRecord& rec, const DocumentState& st,
                    const json::value& doc) {
  if (q.conflicts_only && rec.heads.size() < 2) return false;
  if (!q.filters.empty()) {
    if (!st.body) return false;
    auto m = matches_filters(doc, q.filters);
    if (!m) return m.error();
    if (!*m) return false;
  }
  return !q.selector || (st.body && q.selector->matches_parsed(st.collection, doc));
}

// Whether the query reads the body at all (conditions or a sort).
bool reads_body(const ListQuery& q) {
  return !q.filters.empty() || q.selector || !q.sort_path.empty();
}

// The page of a query whose matches were gathered (in any order) as sort rows: the first
// `limit` in order, and the cursor after them when more match.
Status finish_sorted(const Store::Impl& im, const LmdbTxn& txn, const ProjectId& project,
                     const ListQuery& q, std::vector<SortRow>& rows, ListPage& page) {
  const std::size_t n = std::min<std::size_t>(rows.size(), q.limit);
  auto before = [&](const SortRow& a, const SortRow& b) {
    return sorted_before(a, b, q.sort_descending);
  };
  std::partial_sort(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(n), rows.end(),
                    before);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& r = rows[i];
    auto rec = im.existing_doc(txn, project, r.collection, r.id);
    if (!rec) return rec.error();
    auto st = im.doc_state(txn, project, r.collection, r.id, *rec);
    if (!st) return st.error();
    page.docs.push_back(std::move(*st));
  }
  if (rows.size() > n && n > 0) page.next = sort_cursor(rows[n - 1]);
  return {};
}

Error too_many_sorted(const ListQuery& q) {
  return make_error(Errc::invalid_argument,
                    "more than " + std::to_string(q.max_sort_docs) +
                        " documents match a sorted query (api.max_sort_docs): narrow it with "
                        "where= or selector=, declare an index on the sort field, or page "
                        "through it unsorted");
}

std::string path_text(const std::vector<std::string>& path) {
  std::string s;
  for (const auto& seg : path) s += (s.empty() ? "" : ".") + seg;
  return s;
}

// What the query's conditions say of one field that an index can narrow to: equal to a value,
// or within bounds (inclusive; a superset: the conditions still decide each document).
struct FieldCondition {
  std::optional<json::value> eq;
  std::optional<json::value> lo, hi;
  bool lo_open = false, hi_open = false;  // the bound itself is not in
};

std::map<std::string, FieldCondition> field_conditions(const ListQuery& q) {
  std::map<std::string, FieldCondition> out;
  for (const auto& f : q.filters) {
    if (f.field.empty() || f.field.find('.') != std::string::npos) continue;  // not a dot path
    boost::system::error_code ec;
    json::value v = parse_json(f.json_value, ec);
    if (ec || v.is_array() || v.is_object()) continue;
    auto& c = out[f.field];
    if (!c.eq) c.eq = std::move(v);
  }
  if (!q.selector) return out;
  for (auto& t : q.selector->index_terms()) {
    auto& c = out[t.path];
    if (t.values.size() == 1) {
      if (!c.eq) c.eq = std::move(t.values.front());
    } else if (t.values.size() > 1) {
      // "in": the span from its least to its greatest value, when all are of one type.
      const int rank = type_rank(t.values.front());
      bool one_type = std::all_of(t.values.begin(), t.values.end(),
                                  [&](const json::value& v) { return type_rank(v) == rank; });
      if (!one_type || c.lo || c.hi) continue;
      auto [lo, hi] = std::minmax_element(
          t.values.begin(), t.values.end(),
          [](const json::value& a, const json::value& b) { return compare_json(a, b) < 0; });
      c.lo = *lo;
      c.hi = *hi;
    } else if (!c.lo && !c.hi) {
      c.lo = std::move(t.lo);
      c.hi = std::move(t.hi);
      c.lo_open = t.lo_open;
      c.hi_open = t.hi_open;
    }
  }
  return out;
}

// How an index serves a query: the entry keys from `low` (inclusive) up to `high`
// (exclusive), all under `base` (the index's entry prefix and the encodings of the fields
// fixed by equality: `fixed` of them).
struct IndexPlan {
  const Store::Impl::IndexDef* index = nullptr;
  Bytes base;
  Bytes low, high;  // whole keys; high empty: up to the end of base
  std::size_t fixed = 0;
  bool ranged = false;   // a range on the field after the fixed ones
  bool ordered = false;  // entries come in the query's sort order (sort field last)
  bool by_id = false;    // every field fixed: entries come in document id order
  int score() const {
    return (ordered ? 1000 : 0) + static_cast<int>(fixed) * 10 + (ranged ? 5 : 0);
  }
};

// The exclusive upper end of the encodings up to `enc` (a full value: itself and nothing
// above; a truncated one: every value it stands for).
Bytes above(Bytes enc) {
  if (index_key::truncated(enc)) {
    ++enc.back();
  } else {
    enc.push_back(0xff);
  }
  return enc;
}

// The lower end of the encodings from `enc` (a truncated one: every value it stands for).
Bytes from(Bytes enc) {
  if (index_key::truncated(enc)) enc.resize(enc.size() - 2);
  return enc;
}

// The exclusive upper end of the encodings below `enc` (a truncated one: below every value it
// stands for).
Bytes below(Bytes enc) { return from(std::move(enc)); }

std::optional<IndexPlan> plan_for(const Store::Impl::IndexDef& d, const ProjectId& p,
                                  const std::map<std::string, FieldCondition>& conds,
                                  const std::string& sort_field) {
  IndexPlan plan;
  plan.index = &d;
  Key base;
  base.raw(p.view()).u8('f');
  base.u32(d.number);
  const std::size_t budget = index_key::string_budget(d.paths.size());
  std::optional<FieldCondition> range;
  std::size_t k = 0;
  for (; k < d.spec.fields.size(); ++k) {
    auto it = conds.find(d.spec.fields[k]);
    if (it == conds.end()) break;
    if (!it->second.eq) {
      if (it->second.lo || it->second.hi) range = it->second;
      break;
    }
    Bytes enc;
    if (index_key::append(enc, *it->second.eq, budget)) {
      range = FieldCondition{std::nullopt, it->second.eq, it->second.eq};  // a long string
      break;
    }
    base.raw(enc);
  }
  plan.fixed = k;
  plan.base = base.bytes();
  plan.ranged = range.has_value();
  plan.by_id = k == d.spec.fields.size();
  plan.ordered =
      !sort_field.empty() && k + 1 == d.spec.fields.size() && d.spec.fields[k] == sort_field;
  if (!plan.ordered && !plan.ranged && k == 0) return std::nullopt;  // narrows nothing
  plan.low = plan.base;
  if (range) {
    Bytes lo, hi;
    if (range->lo) index_key::append(lo, *range->lo, budget);
    if (range->hi) index_key::append(hi, *range->hi, budget);
    // Bounds of one type hold only values of that type (range compares within a type).
    auto rank_of = [](const Bytes& e) { return static_cast<index_key::Rank>(e.front()); };
    // An open bound leaves its own value out, exactly when its encoding is whole.
    Bytes low = !range->lo                                    ? Bytes(1, hi.front())
                : range->lo_open && !index_key::truncated(lo) ? above(lo)
                                                              : from(lo);
    Bytes high = !range->hi                                    ? index_key::rank_end(rank_of(lo))
                 : range->hi_open && !index_key::truncated(hi) ? below(hi)
                                                               : above(hi);
    append(plan.low, low);
    plan.high = plan.base;
    append(plan.high, high);
  }
  return plan;
}

}  // namespace

Result<std::optional<ListPage>> Store::Impl::indexed_list(const LmdbTxn& txn, const ProjectId& p,
                                                          const ListQuery& q) const {
  if (q.collection.empty() || q.include_deleted) return std::optional<ListPage>{};
  auto set = index_set(txn, p);
  if (!set) return set.error();
  if (set->empty()) return std::optional<ListPage>{};
  const auto conds = field_conditions(q);
  const std::string sort_field = path_text(q.sort_path);
  std::optional<IndexPlan> best;
  for (const auto& d : *set) {
    if (!d.ready || d.spec.collection != q.collection) continue;
    auto plan = plan_for(d, p, conds, sort_field);
    if (plan && (!best || plan->score() > best->score())) best = std::move(plan);
  }
  if (!best) return std::optional<ListPage>{};
  const IndexPlan& plan = *best;
  ListPage page;
  page.plan.index = plan.index->spec.name;
  const bool sorted = !q.sort_path.empty();

  // Each entry's document, read and checked against the whole query.
  struct Row {
    DocRecord rec;
    DocumentState st;
    json::value doc;  // parsed_body(st) when the query reads it
  };
  auto load = [&](std::string_view id) -> Result<std::optional<Row>> {
    auto rec = existing_doc(txn, p, q.collection, id);
    if (!rec) return rec.error();
    ++page.plan.examined;
    auto st = doc_state(txn, p, q.collection, id, *rec);
    if (!st) return st.error();
    json::value doc = reads_body(q) ? parsed_body(*st) : json::value(nullptr);
    auto ok = passes(q, *rec, *st, doc);
    if (!ok) return ok.error();
    if (!*ok) return std::optional<Row>{};
    return std::optional<Row>(Row{std::move(*rec), std::move(*st), std::move(doc)});
  };
  auto doc_id_of = [&](ByteView key) -> Result<std::string_view> {
    // The fields after the fixed ones, then the document id.
    ByteView rest = key.subspan(plan.base.size());
    for (std::size_t i = plan.fixed; i < plan.index->paths.size() && !rest.empty(); ++i) {
      std::size_t n = index_key::length(rest);
      if (n == 0) return make_error(Errc::data_loss, "corrupt index entry");
      const bool cut = index_key::truncated(rest.first(n));
      rest = rest.subspan(n);
      if (cut) break;  // a truncated value ends the values
    }
    if (rest.empty()) return make_error(Errc::data_loss, "corrupt index entry");
    return as_chars(rest);
  };
  auto in_range = [&](ByteView key) {
    if (!has_prefix(key, plan.base)) return false;
    if (!plan.high.empty() &&
        !std::lexicographical_compare(key.begin(), key.end(), plan.high.begin(), plan.high.end()))
      return false;
    return std::lexicographical_compare(key.begin(), key.end(), plan.low.begin(), plan.low.end()) ==
           false;
  };
  LmdbCursor c(txn, t().indexes);

  if (plan.by_id && !sorted) {
    // Every field fixed: the entries are in document id order, as an unsorted list is.
    Bytes start = plan.base;
    if (!q.start_after.empty()) {
      append(start, as_bytes(q.start_after));
      start.push_back(0);  // strictly after the cursor
    }
    for (bool ok = c.seek(start); ok && in_range(c.key()); ok = c.next()) {
      auto id = doc_id_of(c.key());
      if (!id) return id.error();
      if (page.docs.size() >= q.limit) {
        page.next = page.docs.back().doc_id;
        break;
      }
      auto row = load(*id);
      if (!row) return row.error();
      if (*row) page.docs.push_back(std::move((*row)->st));
    }
    return std::optional<ListPage>(std::move(page));
  }

  std::optional<SortRow> sort_after;
  if (sorted && !q.start_after.empty()) {
    auto r = parse_sort_cursor(q.start_after);
    if (!r) return r.error();
    sort_after = std::move(*r);
  }
  auto sort_row = [&](const Row& r) {
    return SortRow{value_at(r.doc, q.sort_path), r.st.collection, r.st.doc_id};
  };

  if (plan.ordered) {
    // The sort field is the index's last: entries come in the query's order, ties by id,
    // except within a run of one truncated value, which is sorted here.
    const std::size_t budget = index_key::string_budget(plan.index->paths.size());
    Bytes low = plan.low, high = plan.high.empty() ? plan.base : plan.high;
    if (plan.high.empty()) high.push_back(0xff);
    if (sort_after) {
      Bytes enc;
      const bool cut = index_key::append(enc, sort_after->key, budget);
      Bytes at = plan.base;
      append(at, enc);
      if (!cut) append(at, as_bytes(sort_after->id));
      if (!q.sort_descending) {
        if (!cut) at.push_back(0);
        if (std::lexicographical_compare(low.begin(), low.end(), at.begin(), at.end())) low = at;
      } else {
        if (cut) at.push_back(0xff);
        if (std::lexicographical_compare(at.begin(), at.end(), high.begin(), high.end())) high = at;
      }
    }
    bool ok = false;
    if (!q.sort_descending) {
      ok = c.seek(low);
    } else {
      ok = c.seek(high) ? c.prev() : c.last();
    }
    auto within = [&](ByteView key) {
      if (!in_range(key)) return false;
      if (std::lexicographical_compare(key.begin(), key.end(), low.begin(), low.end()))
        return false;
      return std::lexicographical_compare(key.begin(), key.end(), high.begin(), high.end());
    };
    std::vector<SortRow> taken;
    bool more = false;
    std::vector<std::pair<SortRow, DocumentState>> run;  // entries of one truncated value
    Bytes run_value;
    auto take = [&](SortRow row, DocumentState st) {
      if (sort_after && !sorted_before(*sort_after, row, q.sort_descending)) return;
      if (page.docs.size() >= q.limit) {
        more = true;
        return;
      }
      taken.push_back(std::move(row));
      page.docs.push_back(std::move(st));
    };
    auto flush_run = [&] {
      std::sort(run.begin(), run.end(), [&](const auto& a, const auto& b) {
        return sorted_before(a.first, b.first, q.sort_descending);
      });
      for (auto& [row, st] : run) take(std::move(row), std::move(st));
      run.clear();
      run_value.clear();
    };
    for (; ok && within(c.key()) && !more; ok = q.sort_descending ? c.prev() : c.next()) {
      ByteView rest = c.key().subspan(plan.base.size());
      std::size_t n = index_key::length(rest);
      if (n == 0 || n >= rest.size()) return make_error(Errc::data_loss, "corrupt index entry");
      ByteView value = rest.first(n);
      if (!run.empty() &&
          !std::equal(value.begin(), value.end(), run_value.begin(), run_value.end()))
        flush_run();
      if (more) break;
      auto row = load(as_chars(rest.subspan(n)));
      if (!row) return row.error();
      if (!*row) continue;
      SortRow sr = sort_row(**row);
      if (index_key::truncated(value)) {
        if (run.empty()) run_value.assign(value.begin(), value.end());
        run.emplace_back(std::move(sr), std::move((*row)->st));
      } else {
        take(std::move(sr), std::move((*row)->st));
      }
    }
    if (!more && !run.empty()) flush_run();
    if (more && !taken.empty()) page.next = sort_cursor(taken.back());
    return std::optional<ListPage>(std::move(page));
  }

  // The index narrows the documents; their order comes from sorting them here.
  std::vector<SortRow> rows;
  for (bool ok = c.seek(plan.low); ok && in_range(c.key()); ok = c.next()) {
    auto id = doc_id_of(c.key());
    if (!id) return id.error();
    if (!sorted && !q.start_after.empty() && std::string_view(*id) <= q.start_after) continue;
    auto row = load(*id);
    if (!row) return row.error();
    if (!*row) continue;
    SortRow sr = sorted ? sort_row(**row) : SortRow{nullptr, q.collection, (*row)->st.doc_id};
    if (sort_after && !sorted_before(*sort_after, sr, q.sort_descending)) continue;
    if (rows.size() >= q.max_sort_docs) {
      if (sorted) return too_many_sorted(q);
      return std::optional<ListPage>{};  // too many to order by id here: scan instead
    }
    rows.push_back(std::move(sr));
  }
  if (sorted) {
    FS_TRY(finish_sorted(*this, txn, p, q, rows, page));
    return std::optional<ListPage>(std::move(page));
  }
  std::sort(rows.begin(), rows.end(),
            [](const SortRow& a, const SortRow& b) { return a.id < b.id; });
  const std::size_t n = std::min<std::size_t>(rows.size(), q.limit);
  for (std::size_t i = 0; i < n; ++i) {
    auto rec = existing_doc(txn, p, q.collection, rows[i].id);
    if (!rec) return rec.error();
    auto st = doc_state(txn, p, q.collection, rows[i].id, *rec);
    if (!st) return st.error();
    page.docs.push_back(std::move(*st));
  }
  if (rows.size() > n && n > 0) page.next = rows[n - 1].id;
  return std::optional<ListPage>(std::move(page));
}

Result<DocumentState> Store::get_document(const ProjectId& project, std::string_view collection,
                                          std::string_view doc_id) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto rec = impl_->existing_doc(*txn, project, collection, doc_id);
  if (!rec) return rec.error();
  return impl_->doc_state(*txn, project, collection, doc_id, *rec);
}

Result<Version> Store::get_version(const ProjectId& project, std::string_view collection,
                                   std::string_view doc_id, const VersionId& id) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  Key dk = doc_key(project, collection, doc_id);
  auto rec = impl_->doc(*txn, dk);
  if (!rec) return rec.error();
  auto loc = *rec ? impl_->find_version(*txn, dk, **rec, id)
                  : Result<std::optional<Location>>(std::optional<Location>{});
  if (!loc) return loc.error();
  if (!*loc)
    return make_error(Errc::not_found, "no version " + id.str() + " of " + std::string(collection) +
                                           "/" + std::string(doc_id));
  return impl_->load_version(*txn, project, **loc);
}

Result<std::vector<Version>> Store::history(const ProjectId& project, std::string_view collection,
                                            std::string_view doc_id, std::uint32_t limit) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto rec = impl_->existing_doc(*txn, project, collection, doc_id);
  if (!rec) return rec.error();
  auto held = impl_->doc_versions(*txn, doc_key(project, collection, doc_id), *rec);
  if (!held) return held.error();
  std::vector<Version> out;
  for (const auto& h : *held) {
    if (out.size() >= limit) break;
    auto v = impl_->load_version(*txn, project, h.at);
    if (!v) return v.error();
    out.push_back(std::move(*v));
  }
  return out;
}

Result<ListPage> Store::list_documents(const ProjectId& project, const ListQuery& q) const {
  if (!q.collection.empty() && !valid_collection(q.collection))
    return make_error(Errc::invalid_argument,
                      "invalid collection name " + quote_input(q.collection));
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  auto indexed = impl_->indexed_list(*txn, project, q);
  if (!indexed) return indexed.error();
  if (*indexed) return std::move(**indexed);
  Key prefix =
      q.collection.empty() ? Key{}.raw(project.view()) : collection_prefix(project, q.collection);
  Key start = prefix;
  if (!q.start_after.empty()) {
    if (q.collection.empty()) {
      auto slash = q.start_after.find('/');
      if (slash == std::string::npos) return make_error(Errc::invalid_argument, "bad cursor");
      start = doc_key(project, q.start_after.substr(0, slash), q.start_after.substr(slash + 1));
    } else {
      start = doc_key(project, q.collection, q.start_after);
    }
    start.u8(0);  // strictly after the cursor
  }
  ListPage page;
  const bool sorted = !q.sort_path.empty();
  std::optional<SortRow> sort_after;
  if (sorted) {
    start = prefix;  // every match is read, then sorted
    if (!q.start_after.empty()) {
      auto r = parse_sort_cursor(q.start_after);
      if (!r) return r.error();
      sort_after = std::move(*r);
    }
  }
  std::vector<SortRow> rows;
  LmdbCursor c(*txn, impl_->t().docs);
  for (bool ok = c.seek(start); ok && has_prefix(c.key(), prefix); ok = c.next()) {
    auto parts = split_doc_key(c.key());
    if (!parts || parts->collection.empty())
      return make_error(Errc::data_loss, "corrupt document key");
    std::string coll(parts->collection);
    std::string id(parts->id);
    if (q.collection.empty() && coll.front() == '_') continue;  // fieldsync's own collections
    if (!sorted && page.docs.size() >= q.limit) {
      page.next = q.collection.empty() ? page.docs.back().collection + "/" + page.docs.back().doc_id
                                       : page.docs.back().doc_id;
      break;
    }
    auto rec = DocRecord::decode(c.value());
    if (!rec) return make_error(Errc::data_loss, "corrupt document record");
    if ((rec->flags & DocRecord::kDeleted) && !q.include_deleted) continue;
    if (q.conflicts_only && rec->heads.size() < 2) continue;
    ++page.plan.examined;
    auto st = impl_->doc_state(*txn, project, coll, id, *rec);
    if (!st) return st.error();
    const json::value doc = reads_body(q) ? parsed_body(*st) : json::value(nullptr);
    auto pass = passes(q, *rec, *st, doc);
    if (!pass) return pass.error();
    if (!*pass) continue;
    if (!sorted) {
      page.docs.push_back(std::move(*st));
      continue;
    }
    SortRow row{value_at(doc, q.sort_path), coll, id};
    if (sort_after && !sorted_before(*sort_after, row, q.sort_descending)) continue;
    if (rows.size() >= q.max_sort_docs) return too_many_sorted(q);
    rows.push_back(std::move(row));
  }
  if (!sorted) return page;
  FS_TRY(finish_sorted(*impl_, *txn, project, q, rows, page));
  return page;
}

Result<std::vector<std::string>> Store::list_collections(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  std::vector<std::string> out;
  LmdbCursor c(*txn, impl_->t().docs);
  Key prefix = Key{}.raw(project.view());
  for (bool ok = c.seek(prefix); ok && has_prefix(c.key(), prefix);) {
    auto parts = split_doc_key(c.key());
    if (!parts || parts->collection.empty())
      return make_error(Errc::data_loss, "corrupt document key");
    std::string name(parts->collection);
    Key next = collection_prefix(project, name);
    if (name.front() != '_') out.push_back(name);  // fieldsync's own collections are not listed
    // Doc ids are printable ASCII, so prefix|0xff sorts after every key of this collection.
    next.u8(0xff);
    ok = c.seek(next);
  }
  return out;
}

Result<MergeResult> Store::merge_heads(const ProjectId& project, std::string_view collection,
                                       std::string_view doc_id) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  auto rec = impl_->existing_doc(*txn, project, collection, doc_id);
  if (!rec) return rec.error();
  Key dk = doc_key(project, collection, doc_id);
  const auto heads = rec->head_ids();

  // Every version of this document we hold, by id (the DAG walk needs parents).
  std::unordered_map<VersionId, Version, FixedIdHash> versions;
  auto held = impl_->doc_versions(*txn, dk, *rec);
  if (!held) return held.error();
  for (const auto& h : *held) {
    auto v = impl_->load_version(*txn, project, h.at);
    if (!v) return v.error();
    versions.emplace(v->id, std::move(*v));
  }
  // Ancestor sets of every head.
  std::vector<std::unordered_set<VersionId, FixedIdHash>> anc(heads.size());
  for (std::size_t i = 0; i < heads.size(); ++i) {
    std::vector<VersionId> stack{heads[i]};
    while (!stack.empty()) {
      VersionId v = stack.back();
      stack.pop_back();
      auto it = versions.find(v);
      if (it == versions.end() || !anc[i].insert(v).second) continue;  // unknown parent: stop there
      for (const auto& p : it->second.header.parents) stack.push_back(p);
    }
  }
  MergeInput in;
  MergeResult out;
  out.heads = heads;
  for (const auto& head : heads) {
    const Version& v = versions.at(head);
    if (v.header.kind == VersionKind::tombstone) {
      out.conflicting_fields.push_back("(deleted)");
      continue;
    }
    if (!v.body)
      return make_error(Errc::failed_precondition,
                        "a head's body is not held on this device (purged)");
    in.sides.push_back(*v.body);
  }
  // Base: the newest version that is an ancestor of every head.
  const Version* base = nullptr;
  for (const auto& id : anc[0]) {
    bool common =
        std::all_of(anc.begin() + 1, anc.end(), [&](const auto& s) { return s.count(id) > 0; });
    const Version& v = versions.at(id);
    if (common && (!base || v.header.hlc > base->header.hlc)) base = &v;
  }
  if (base && base->body) in.base = *base->body;
  if (in.sides.empty()) {
    out.body = "{}";
    return out;
  }
  auto merged = merge_objects(in);
  if (!merged) return merged.error();
  out.body = std::move(merged->body);
  for (auto& f : merged->conflicting_fields) out.conflicting_fields.push_back(std::move(f));
  return out;
}

Result<std::vector<Change>> Store::changes_since(const ProjectId& project, std::uint64_t since,
                                                 std::uint32_t limit) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  std::vector<Change> out;
  Key prefix = Key{}.raw(project.view());
  LmdbCursor c(*txn, impl_->t().changes);
  for (bool ok = c.seek(change_key(project, since + 1));
       ok && has_prefix(c.key(), prefix) && out.size() < limit; ok = c.next()) {
    auto loc = decode_location(c.value());
    if (!loc) return make_error(Errc::data_loss, "corrupt changes feed");
    auto v = impl_->load_version(*txn, project, loc->first, /*with_body=*/false);
    if (!v) return v.error();
    Change ch;
    ch.seq = ByteReader(c.key().subspan(ProjectId::size)).u64();
    ch.version = v->id;
    ch.collection = std::move(v->header.collection);
    ch.doc_id = std::move(v->header.doc_id);
    ch.author = v->header.author;
    ch.deleted = v->header.kind == VersionKind::tombstone;
    ch.local = loc->second;
    out.push_back(std::move(ch));
  }
  return out;
}

Result<std::uint64_t> Store::last_change_seq(const ProjectId& project) const {
  auto txn = impl_->read_txn();
  if (!txn) return txn.error();
  FS_TRY(impl_->project(*txn, project));
  return impl_->change_counter(*txn, project);
}

}  // namespace fieldsync::storage
