#include "common/encoding.hpp"

namespace fieldsync {
namespace {
constexpr char kHex[] = "0123456789abcdef";
constexpr char kB32[] = "abcdefghijklmnopqrstuvwxyz234567";

int hex_val(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
int b32_val(char c) {
  if (c >= 'a' && c <= 'z') return c - 'a';
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= '2' && c <= '7') return c - '2' + 26;
  return -1;
}
}  // namespace

std::string to_hex(ByteView b) {
  std::string s;
  s.reserve(b.size() * 2);
  for (auto c : b) {
    s.push_back(kHex[c >> 4]);
    s.push_back(kHex[c & 15]);
  }
  return s;
}

std::optional<Bytes> from_hex(std::string_view s) {
  if (s.size() % 2) return std::nullopt;
  Bytes out(s.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    int hi = hex_val(s[2 * i]), lo = hex_val(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

std::string to_base32(ByteView b) {
  std::string s;
  std::uint32_t buf = 0;
  int bits = 0;
  for (auto c : b) {
    buf = (buf << 8) | c;
    bits += 8;
    while (bits >= 5) {
      s.push_back(kB32[(buf >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) s.push_back(kB32[(buf << (5 - bits)) & 31]);
  return s;
}

std::optional<Bytes> from_base32(std::string_view s) {
  Bytes out;
  std::uint32_t buf = 0;
  int bits = 0;
  for (char c : s) {
    int v = b32_val(c);
    if (v < 0) return std::nullopt;
    buf = (buf << 5) | static_cast<std::uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<std::uint8_t>(buf >> (bits - 8)));
      bits -= 8;
    }
  }
  // Leftover bits must be zero padding, or the text was not canonical.
  if (bits >= 5 || (buf & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

}  // namespace fieldsync
