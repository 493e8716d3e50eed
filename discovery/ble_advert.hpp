// BleAdvert: what a fieldsync device puts in its Bluetooth LE advertisement and in its
// identity characteristic, and how a device in range recognises a project it shares
// (docs/protocol.md "Bluetooth LE").
//
// Advertisement (manufacturer data under company id 0xFFFF, at most kMaxPayloadBytes so the
// whole advertisement fits legacy advertising's 31 bytes with the flags):
//   0xF5 (magic) || format (u8, 1) || sync protocol (u8) || nonce (4 bytes) || tags (4 bytes each)
//   tag  = HMAC-SHA256(project secret, "fieldsync-ble" || nonce || bucket (u64 BE))[0..4)
// The nonce is random and new at every rotation (DiscoveryTag::kPeriodSeconds) and whenever
// the projects change, so tags of two devices, or of one device an hour apart, are unrelated
// to an outsider. No project id or name, no device id, no device name.
//
// Identity value (a characteristic read after connecting; the central needs the device id to
// pin TLS): the advertisement payload it belongs to, then for each tag, in order,
//   device id (32 bytes) XOR HMAC-SHA256(secret, "fieldsync-ble-id" || nonce || bucket)
// so only members of one of the projects learn the device id from it.
//
// Stateless functions; thread-safe.
// Errors (parse): invalid_argument for a payload that is not fieldsync's, unsupported for a
// newer format.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"

namespace fieldsync::discovery {

struct BleAdvert {
  static constexpr std::uint8_t kMagic = 0xF5;
  static constexpr std::uint8_t kFormat = 1;
  static constexpr std::size_t kNonceBytes = 4;
  static constexpr std::size_t kTagBytes = 4;
  static constexpr std::size_t kHeaderBytes = 3 + kNonceBytes;
  // 31 - flags (3) - manufacturer data header (length, type, company id: 4) = 24.
  static constexpr std::size_t kMaxPayloadBytes = 24;
  static constexpr std::size_t kMaxTags = (kMaxPayloadBytes - kHeaderBytes) / kTagBytes;  // 4

  std::uint8_t sync_protocol = 0;
  std::array<std::uint8_t, kNonceBytes> nonce{};
  std::vector<std::array<std::uint8_t, kTagBytes>> tags;

  Bytes encode() const;
  static Result<BleAdvert> parse(ByteView payload);

  static std::array<std::uint8_t, kTagBytes> tag(ByteView secret, ByteView nonce,
                                                 std::int64_t bucket);
  // A new advertisement for `secrets` (at most kMaxTags are used) at `bucket`.
  static BleAdvert make(std::uint16_t sync_protocol, const std::vector<Bytes>& secrets,
                        std::int64_t bucket);
  // The identity value of `advert` (made with the same `secrets` and `bucket`).
  static Bytes identity(const BleAdvert& advert, const DeviceId& device,
                        const std::vector<Bytes>& secrets, std::int64_t bucket);

  // Which tag matches `secret` for the bucket of `unix_seconds` or either neighbour.
  struct Match {
    std::size_t index = 0;
    std::int64_t bucket = 0;
  };
  std::optional<Match> match(ByteView secret, std::int64_t unix_seconds) const;
  // The device id in an identity value, for a member of the project with `secret`.
  // Errors: invalid_argument (malformed), not_found (no tag of that project in it).
  static Result<DeviceId> open_identity(ByteView identity, ByteView secret,
                                        std::int64_t unix_seconds);
};

}  // namespace fieldsync::discovery
