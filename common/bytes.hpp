// Byte buffers and the big-endian writer/reader used by every binary format
// (storage records, version encodings, wire frames). The reader never reads
// past its input: every getter reports failure instead.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fieldsync {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

inline ByteView as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
inline std::string_view as_chars(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Appends with resize + memcpy: vector::insert of a span trips GCC 12's
// -Wstringop-overflow false positive at -O2.
inline void append(Bytes& out, ByteView b) {
  if (b.empty()) return;
  std::size_t at = out.size();
  out.resize(at + b.size());
  std::memcpy(out.data() + at, b.data(), b.size());
}

class ByteWriter {
 public:
  explicit ByteWriter(Bytes& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(v); }
  void u16(std::uint16_t v) { put_be(v, 2); }
  void u32(std::uint32_t v) { put_be(v, 4); }
  void u64(std::uint64_t v) { put_be(v, 8); }
  void raw(ByteView b) { append(out_, b); }
  void raw(std::string_view s) { raw(as_bytes(s)); }
  // u32 length followed by the bytes.
  void blob(ByteView b) {
    u32(static_cast<std::uint32_t>(b.size()));
    raw(b);
  }
  void blob(std::string_view s) { blob(as_bytes(s)); }
  // u16 length followed by the bytes (short strings: collection, doc id).
  void str16(std::string_view s) {
    u16(static_cast<std::uint16_t>(s.size()));
    raw(s);
  }

 private:
  void put_be(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  Bytes& out_;
};

class ByteReader {
 public:
  explicit ByteReader(ByteView in) : in_(in) {}
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == in_.size(); }
  std::size_t remaining() const { return in_.size() - pos_; }
  std::size_t position() const { return pos_; }

  std::uint8_t u8() { return static_cast<std::uint8_t>(get_be(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(get_be(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(get_be(4)); }
  std::uint64_t u64() { return get_be(8); }
  ByteView raw(std::size_t n) {
    if (!need(n)) return {};
    ByteView v = in_.subspan(pos_, n);
    pos_ += n;
    return v;
  }
  template <std::size_t N>
  std::array<std::uint8_t, N> fixed() {
    std::array<std::uint8_t, N> a{};
    ByteView v = raw(N);
    if (ok_) std::memcpy(a.data(), v.data(), N);
    return a;
  }
  ByteView blob(std::size_t max_len) {
    std::uint32_t n = u32();
    if (n > max_len) {
      ok_ = false;
      return {};
    }
    return raw(n);
  }
  std::string_view str16() { return as_chars(raw(u16())); }

 private:
  bool need(std::size_t n) {
    if (!ok_ || in_.size() - pos_ < n) {
      ok_ = false;
      return false;
    }
    return true;
  }
  std::uint64_t get_be(int n) {
    if (!need(static_cast<std::size_t>(n))) return 0;
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | in_[pos_ + i];
    pos_ += static_cast<std::size_t>(n);
    return v;
  }
  ByteView in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace fieldsync
