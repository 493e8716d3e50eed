// Parsing JSON text into a boost::json::value with every number read exactly.
//
// Boost.JSON 1.81's parser reads a number with many significant digits (15 and up) to a
// double one unit in the last place off now and then, and reads the same text differently
// depending on what follows it in the buffer: "0.30000000000000004" alone and inside
// {"x":0.30000000000000004,...} can give two different doubles. A query literal would then
// miss the document that holds the very same text. parse_json() is json::parse() except that
// each number with a fraction or an exponent is the double nearest to its text (round to
// nearest, as std::from_chars reads it), whatever surrounds it. Integers are as json::parse()
// gives them (int64, uint64, or a double past 2^64).
//
// Every product parse of JSON text goes through this function. Thread-safety: a free function.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/parse_options.hpp>
#include <boost/json/storage_ptr.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

namespace fieldsync {

// As boost::json::parse(text, ec, sp, opt): on an error, `ec` is set and the value is null.
// With `duplicate`, the keys are checked too: it is set to the first key that occurs twice in
// one object (objects in the order they close; in an object, the least such key), or nullopt
// (of use when `ec` is clear).
boost::json::value parse_json(std::string_view text, boost::system::error_code& ec,
                              boost::json::storage_ptr sp = {},
                              const boost::json::parse_options& opt = {},
                              std::optional<std::string>* duplicate = nullptr);

// parse_json() without building the value: the same `ec` for the same text, and the same
// `duplicate`. For text that is checked and then kept or scanned as it is.
void check_json(std::string_view text, boost::system::error_code& ec,
                const boost::json::parse_options& opt = {},
                std::optional<std::string>* duplicate = nullptr);

// For text check_json() or parse_json() accepted: whether its value is an object (its first
// character after whitespace is '{').
bool checked_is_object(std::string_view text);

}  // namespace fieldsync
