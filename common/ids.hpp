// Strong identifier types.
//
// DeviceId  = the device's raw Ed25519 public key (32 bytes), so any device can
//             verify a signature from the id alone. Text: base32, 52 chars; a
//             human-comparable short form groups the first 16 chars "abcd-efgh-...".
// ProjectId = 16 random bytes. Text: 32 hex chars.
// VersionId = SHA-256 of a version's canonical header encoding. Text: 64 hex chars.
#pragma once

#include <algorithm>
#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/bytes.hpp"

namespace fieldsync {

template <class Tag, std::size_t N>
struct FixedId {
  static constexpr std::size_t size = N;
  std::array<std::uint8_t, N> bytes{};

  ByteView view() const { return {bytes.data(), N}; }
  bool is_zero() const {
    for (auto c : bytes)
      if (c) return false;
    return true;
  }
  auto operator<=>(const FixedId&) const = default;
};

struct DeviceTag {};
struct ProjectTag {};
struct VersionTag {};

struct DeviceId : FixedId<DeviceTag, 32> {
  std::string str() const;        // base32, 52 chars
  std::string short_str() const;  // "abcd-efgh-ijkl-mnop"
  static std::optional<DeviceId> parse(std::string_view text);
};
struct ProjectId : FixedId<ProjectTag, 16> {
  std::string str() const;
  static std::optional<ProjectId> parse(std::string_view text);
};
struct VersionId : FixedId<VersionTag, 32> {
  std::string str() const;
  static std::optional<VersionId> parse(std::string_view text);
};

template <class Id>
std::optional<Id> id_from_bytes(ByteView b) {
  if (b.size() != Id::size) return std::nullopt;
  Id id;
  std::copy(b.begin(), b.end(), id.bytes.begin());
  return id;
}

struct FixedIdHash {
  template <class Id>
  std::size_t operator()(const Id& id) const {
    std::size_t h;
    std::memcpy(&h, id.bytes.data(), sizeof h);  // ids are hashes or random: any 8 bytes do
    return h;
  }
};

}  // namespace fieldsync
