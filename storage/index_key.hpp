// Order-preserving byte encodings of JSON values, the keys of declared indexes
// (docs/storage.md "Indexes"). Private to storage/.
//
// The byte order of two encodings is the collation of sorted queries (store_queries.cpp):
// null < false < true < numbers (by value, as doubles) < strings (by UTF-8 bytes) < arrays <
// objects. Each encoding delimits itself, so the encodings of several fields concatenate into
// a composite key with the same order, field by field.
//
//   null 0x01 | false 0x02 | true 0x03
//   number 0x04 + 8 bytes: the double's bits, sign bit flipped (negatives: all bits flipped)
//   string 0x05 + bytes (a 0x00 byte as 0x00 0x01) + 0x00 0x00
//   a string whose content bytes would exceed the budget: its first bytes + 0x00 0x02
//   array 0x06 0x00 0x02 | object 0x07 0x00 0x02
//
// The last three are "truncated": they keep the order against every other value, but not
// among values that share the kept bytes (two long strings with the same first 128 bytes, two
// arrays). A reader that needs their exact order sorts them by value (store_indexes.cpp).
//
// Thread-safety: pure functions.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>

#include "common/bytes.hpp"

namespace fieldsync::storage::index_key {

// The most bytes the values of one index entry take, all fields together: with the project,
// index number and a document id (at most 128 bytes) an entry key stays within LMDB's 511.
inline constexpr std::size_t kIndexKeyBytes = 320;
// The content bytes (escapes counted) a string of an index of `fields` fields keeps: a longer
// one is truncated. 317 for one field, 37 for eight.
std::size_t string_budget(std::size_t fields);

enum Rank : std::uint8_t {
  kNull = 1,
  kFalse = 2,
  kTrue = 3,
  kNumber = 4,
  kString = 5,
  kArray = 6,
  kObject = 7
};

// Appends the encoding of `v` (a string keeps at most `budget` content bytes); returns whether
// it is truncated.
bool append(Bytes& out, const boost::json::value& v, std::size_t budget);
// The length of the value encoding at the start of `key`; 0 when it is malformed.
std::size_t length(ByteView key);
// Whether the encoding (as delimited by length()) is truncated.
bool truncated(ByteView enc);
// The first byte string above every encoding of rank r and not above any encoding of a
// higher rank.
Bytes rank_end(Rank r);

}  // namespace fieldsync::storage::index_key
