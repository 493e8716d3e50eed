// Helpers for JSON request envelopes and raw document bodies.
//
// Document bodies are stored exactly as the app sent them (unknown fields, number spellings,
// key order), so they are never re-serialised: the raw_* functions find a member's exact text
// inside an already-validated JSON text, and splice_member() inserts raw text into an envelope.
// Stateless functions; thread-safe.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "common/result.hpp"

namespace fieldsync::ipc {

// Parses `text` as one JSON value and refuses, with invalid_argument naming the problem:
// invalid JSON, nesting deeper than `max_depth` (api.max_json_depth), and an object that
// holds the same key twice (at any depth: the parsed value and the raw text must agree on
// what a member is). `what` names the text in the error ("request body").
Result<boost::json::value> parse_value(std::string_view text, std::string_view what,
                                       std::uint32_t max_depth);
// parse_value() that also requires a JSON object.
Result<boost::json::object> parse_object(std::string_view text, std::string_view what,
                                         std::uint32_t max_depth);

// parse_value() without building the value: the same errors for the same text. For text that
// is then scanned with the raw_* functions.
Status check_value(std::string_view text, std::string_view what, std::uint32_t max_depth);

// invalid_argument naming the first member of `obj` that is not in `allowed`.
Status check_fields(const boost::json::object& obj, std::initializer_list<std::string_view> allowed,
                    std::string_view what);
// check_fields() for one member's key.
Status check_field(std::string_view key, std::initializer_list<std::string_view> allowed,
                   std::string_view what);

// The exact text of member `key` of the JSON object `object_text` (which must be valid JSON).
// A key that occurs twice gives its last value, as Boost.JSON's parse keeps it.
std::optional<std::string_view> raw_member(std::string_view object_text, std::string_view key);
// The exact texts of the elements of the JSON array `array_text` (which must be valid JSON).
std::vector<std::string_view> raw_elements(std::string_view array_text);
// The members of the JSON object `object_text` (which must be valid JSON), in text order: each
// key decoded and its value's exact text. Empty when the text is not an object.
struct RawMember {
  std::string key;
  std::string_view value;
};
std::vector<RawMember> raw_members(std::string_view object_text);

// `envelope` is a serialised JSON object; appends "key": raw_value as its last member.
std::string splice_member(std::string envelope, std::string_view key, std::string_view raw_value);

// A JSON string literal for `s`, as boost::json::serialize() writes it.
std::string json_quote(std::string_view s);
// json_quote(s) appended to `out`.
void append_json_quoted(std::string& out, std::string_view s);

}  // namespace fieldsync::ipc
