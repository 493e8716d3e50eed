// Field-level merge of concurrent JSON object versions, and the field filters of
// list queries. Pure functions over JSON text.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include "common/result.hpp"
#include "storage/types.hpp"

namespace fieldsync::storage {

// Checks that `text` is one JSON object. Errors: invalid_argument with the parse error.
Status validate_json_object(std::string_view text);

struct MergeInput {
  std::optional<std::string> base;  // common ancestor body (nullopt: none / deleted)
  std::vector<std::string> sides;   // the heads' bodies, winner first
};

// Per top-level field: unchanged on every side -> base; changed on some sides to one
// value -> that value; changed to different values -> conflicting (winner's value is
// kept in the body and the field is listed).
Result<MergeResult> merge_objects(const MergeInput& in);

// True when every filter's field equals its JSON value in the object `body`.
// Errors: invalid_argument when a filter value is not JSON.
Result<bool> matches_filters(std::string_view body, const std::vector<FieldFilter>& filters);
// The same for a body parsed already (anything but an object matches no filter).
Result<bool> matches_filters(const boost::json::value& doc,
                             const std::vector<FieldFilter>& filters);

// A dot path into a JSON body ("gps.lat"): 1..256 bytes, no empty segment. Its segments, or
// invalid_argument naming `what`.
Result<std::vector<std::string>> parse_dot_path(std::string_view text, std::string_view what);
// The value at a parsed dot path inside `doc` (nullptr when a segment is missing or its
// parent is not an object).
const boost::json::value* find_path(const boost::json::value& doc,
                                    const std::vector<std::string>& path);

}  // namespace fieldsync::storage
