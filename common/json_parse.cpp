#include "common/json_parse.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/value_stack.hpp>

namespace fieldsync {

namespace json = boost::json;

namespace {

// The keys of the objects open in a parse, to find one given twice. Short keys stay in their
// std::string (no allocation); the vectors keep their capacity through the parse.
class KeyTracker {
 public:
  explicit KeyTracker(std::optional<std::string>* found) : found_(found) {}
  void object_begin() {
    if (found_) open_.push_back(keys_.size());
  }
  void key_part(json::string_view s) {
    if (found_) part_.append(s.data(), s.size());
  }
  void key(json::string_view s) {
    if (!found_) return;
    part_.append(s.data(), s.size());
    keys_.push_back(std::move(part_));
    part_.clear();
  }
  void object_end() {
    if (!found_) return;
    std::size_t start = open_.back();
    open_.pop_back();
    if (!*found_ && keys_.size() - start > 1) {
      sorted_.assign(keys_.begin() + static_cast<std::ptrdiff_t>(start), keys_.end());
      std::sort(sorted_.begin(), sorted_.end());
      auto it = std::adjacent_find(sorted_.begin(), sorted_.end());
      if (it != sorted_.end()) *found_ = std::string(*it);
    }
    keys_.resize(start);
  }

 private:
  std::optional<std::string>* found_;
  std::string part_;
  std::vector<std::string> keys_;         // of every open object, outermost first
  std::vector<std::size_t> open_;         // where each open object's keys start in keys_
  std::vector<std::string_view> sorted_;  // scratch
};

// A basic_parser handler that builds the value as json::parser does, except for doubles.
struct ExactHandler {
  static constexpr std::size_t max_object_size = json::object::max_size();
  static constexpr std::size_t max_array_size = json::array::max_size();
  static constexpr std::size_t max_key_size = json::string::max_size();
  static constexpr std::size_t max_string_size = json::string::max_size();

  json::value_stack st;
  std::string number;  // the earlier parts of a number split across writes (none here)
  KeyTracker keys;

  ExactHandler(json::storage_ptr temp, unsigned char* buf, std::size_t size,
               std::optional<std::string>* duplicate)
      : st(std::move(temp), buf, size), keys(duplicate) {}

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) {
    keys.object_begin();
    return true;
  }
  bool on_object_end(std::size_t n, json::error_code&) {
    keys.object_end();
    st.push_object(n);
    return true;
  }
  bool on_array_begin(json::error_code&) { return true; }
  bool on_array_end(std::size_t n, json::error_code&) {
    st.push_array(n);
    return true;
  }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    keys.key_part(s);
    st.push_chars(s);
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    keys.key(s);
    st.push_key(s);
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t, json::error_code&) {
    st.push_chars(s);
    return true;
  }
  bool on_string(json::string_view s, std::size_t, json::error_code&) {
    st.push_string(s);
    return true;
  }
  bool on_number_part(json::string_view s, json::error_code&) {
    number.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t i, json::string_view, json::error_code&) {
    number.clear();
    st.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, json::string_view, json::error_code&) {
    number.clear();
    st.push_uint64(u);
    return true;
  }
  bool on_double(double d, json::string_view s, json::error_code&) {
    std::string_view text(s.data(), s.size());
    if (!number.empty()) {
      number.append(s.data(), s.size());
      text = number;
    }
    double exact = 0;
    auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), exact);
    // Out of range (past the largest double, or below the smallest): the parser's value.
    if (err == std::errc() && end == text.data() + text.size()) d = exact;
    number.clear();
    st.push_double(d);
    return true;
  }
  bool on_bool(bool b, json::error_code&) {
    st.push_bool(b);
    return true;
  }
  bool on_null(json::error_code&) {
    st.push_null();
    return true;
  }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }
};

// A basic_parser handler that keeps nothing but the keys of the open objects (check_json).
struct CheckHandler {
  // As ExactHandler's (json::value_stack's limits): the same text is refused for its size.
  static constexpr std::size_t max_object_size = ExactHandler::max_object_size;
  static constexpr std::size_t max_array_size = ExactHandler::max_array_size;
  static constexpr std::size_t max_key_size = ExactHandler::max_key_size;
  static constexpr std::size_t max_string_size = ExactHandler::max_string_size;

  KeyTracker keys;

  explicit CheckHandler(std::optional<std::string>* duplicate) : keys(duplicate) {}

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) {
    keys.object_begin();
    return true;
  }
  bool on_object_end(std::size_t, json::error_code&) {
    keys.object_end();
    return true;
  }
  bool on_array_begin(json::error_code&) { return true; }
  bool on_array_end(std::size_t, json::error_code&) { return true; }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    keys.key_part(s);
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    keys.key(s);
    return true;
  }
  bool on_string_part(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_string(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(std::int64_t, json::string_view, json::error_code&) { return true; }
  bool on_uint64(std::uint64_t, json::string_view, json::error_code&) { return true; }
  bool on_double(double, json::string_view, json::error_code&) { return true; }
  bool on_bool(bool, json::error_code&) { return true; }
  bool on_null(json::error_code&) { return true; }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }
};

// The whole of `text` through `p`: ec as json::parse() sets it.
template <class Parser>
void run(Parser& p, std::string_view text, boost::system::error_code& ec) {
  ec = {};
  std::size_t n = p.write_some(false, text.data(), text.size(), ec);
  if (!ec && n < text.size()) ec = json::error::extra_data;
  if (!ec && !p.done()) ec = json::error::incomplete;
}

}  // namespace

json::value parse_json(std::string_view text, boost::system::error_code& ec, json::storage_ptr sp,
                       const json::parse_options& opt, std::optional<std::string>* duplicate) {
  if (duplicate) duplicate->reset();
  unsigned char temp[BOOST_JSON_STACK_BUFFER_SIZE];
  json::basic_parser<ExactHandler> p(opt, json::storage_ptr(), temp, sizeof temp, duplicate);
  p.handler().st.reset(std::move(sp));
  run(p, text, ec);
  if (ec) return nullptr;
  return p.handler().st.release();
}

void check_json(std::string_view text, boost::system::error_code& ec,
                const json::parse_options& opt, std::optional<std::string>* duplicate) {
  if (duplicate) duplicate->reset();
  json::basic_parser<CheckHandler> p(opt, duplicate);
  run(p, text, ec);
}

bool checked_is_object(std::string_view text) {
  std::size_t first = text.find_first_not_of(" \t\r\n");
  return first != std::string_view::npos && text[first] == '{';
}

}  // namespace fieldsync
