#include "storage/index_key.hpp"

#include <bit>
#include <cstring>

namespace fieldsync::storage::index_key {

namespace json = boost::json;

namespace {

void append_number(Bytes& out, double d) {
  if (d == 0) d = 0;  // -0 and 0 are one value
  std::uint64_t bits = std::bit_cast<std::uint64_t>(d);
  bits = (bits >> 63) ? ~bits : (bits | (1ull << 63));
  out.push_back(kNumber);
  ByteWriter(out).u64(bits);
}

bool append_string(Bytes& out, std::string_view s, std::size_t budget) {
  out.push_back(kString);
  std::size_t kept = 0;
  for (char ch : s) {
    const auto c = static_cast<std::uint8_t>(ch);
    const std::size_t n = c == 0 ? 2 : 1;
    if (kept + n > budget) {
      out.push_back(0);
      out.push_back(2);
      return true;
    }
    out.push_back(c);
    if (c == 0) out.push_back(1);
    kept += n;
  }
  out.push_back(0);
  out.push_back(0);
  return false;
}

}  // namespace

std::size_t string_budget(std::size_t fields) {
  return fields == 0 ? kIndexKeyBytes - 3 : kIndexKeyBytes / fields - 3;
}

bool append(Bytes& out, const json::value& v, std::size_t budget) {
  switch (v.kind()) {
    case json::kind::null: out.push_back(kNull); return false;
    case json::kind::bool_: out.push_back(v.get_bool() ? kTrue : kFalse); return false;
    case json::kind::int64: append_number(out, static_cast<double>(v.get_int64())); return false;
    case json::kind::uint64: append_number(out, static_cast<double>(v.get_uint64())); return false;
    case json::kind::double_: append_number(out, v.get_double()); return false;
    case json::kind::string: return append_string(out, v.get_string(), budget);
    case json::kind::array:
    case json::kind::object:
      out.push_back(v.is_array() ? kArray : kObject);
      out.push_back(0);
      out.push_back(2);
      return true;
  }
  return false;
}

std::size_t length(ByteView key) {
  if (key.empty()) return 0;
  switch (key[0]) {
    case kNull:
    case kFalse:
    case kTrue: return 1;
    case kNumber: return key.size() >= 9 ? 9 : 0;
    case kString:
    case kArray:
    case kObject: {
      std::size_t kept = 0;
      for (std::size_t i = 1; i < key.size();) {
        if (key[i] != 0) {
          ++i;
          ++kept;
        } else if (i + 1 >= key.size()) {
          return 0;
        } else if (key[i + 1] == 1) {
          i += 2;
          kept += 2;
        } else if (key[i + 1] == 0 || key[i + 1] == 2) {
          return i + 2;
        } else {
          return 0;
        }
        if (kept > kIndexKeyBytes) return 0;
      }
      return 0;
    }
    default: return 0;
  }
}

bool truncated(ByteView enc) {
  return enc.size() >= 3 && enc[0] >= kString && enc[enc.size() - 2] == 0 && enc.back() == 2;
}

Bytes rank_end(Rank r) { return Bytes{static_cast<std::uint8_t>(r + 1)}; }

}  // namespace fieldsync::storage::index_key
