// BleAdvert: what a fieldsync device puts in its Bluetooth LE advertisement and in its
// identity characteristic, and how a device in range recognises a project it shares, tells
// whether connecting is worth it and where it can reach the device over TCP
// (docs/protocol.md "Bluetooth LE").
//
// Advertisement (manufacturer data under company id 0xFFFF, at most kMaxPayloadBytes so the
// whole advertisement fits legacy advertising's 31 bytes with the flags):
//   0xF5 (magic) || version (u8) || nonce (4 bytes) || [hint (6 bytes)] || entries (6 bytes each)
//   version = format (2) << 4 | hint present << 3 | min(sync protocol, 7)
//   entry   = tag (4) || digest (2)
//   tag     = HMAC-SHA256(secret, "fieldsync-ble" || nonce || bucket (u64 BE))[0..4)
//   digest  = HMAC-SHA256(secret, "fieldsync-ble-vv" || nonce || bucket || holdings)[0..2)
//             (holdings: a 32-byte digest of the versions the device holds of the project)
//   hint    = IPv4 (4) || TCP port (u16 BE), XOR HMAC-SHA256(secret of the first entry,
//             "fieldsync-ble-ip" || nonce || bucket)[0..6)
// At most 3 entries, 2 with a hint. The nonce is random and new whenever the advertisement
// changes (its hourly rotation, DiscoveryTag::kPeriodSeconds, the projects, the hint or a
// digest), so tags, digests and hints of two devices, or of one device an hour apart, are
// unrelated to an outsider. No project id or name, no device id, no device name, no address
// in the clear.
//
// Identity value (a characteristic read after connecting; the central needs the device id to
// pin TLS): the advertisement payload it belongs to, then for each entry, in order,
//   device id (32 bytes) XOR HMAC-SHA256(secret, "fieldsync-ble-id" || nonce || bucket)
// then, when the hint is present, for each entry in order the hint encrypted with that
// entry's project (as above), so a member of any of the projects learns the device id and
// the TCP address from it; outsiders learn neither.
//
// Stateless functions; thread-safe.
// Errors (parse): invalid_argument for a payload that is not fieldsync's or is malformed,
// unsupported for another format.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"
#include "storage/types.hpp"

namespace fieldsync::discovery {

struct BleAdvert {
  static constexpr std::uint8_t kMagic = 0xF5;
  static constexpr std::uint8_t kFormat = 2;
  static constexpr std::uint8_t kHintFlag = 0x08;
  static constexpr std::uint8_t kMaxSyncProtocol = 7;
  static constexpr std::size_t kNonceBytes = 4;
  static constexpr std::size_t kTagBytes = 4;
  static constexpr std::size_t kDigestBytes = 2;
  static constexpr std::size_t kEntryBytes = kTagBytes + kDigestBytes;
  static constexpr std::size_t kHintBytes = 6;
  static constexpr std::size_t kHeaderBytes = 2 + kNonceBytes;
  // 31 - flags (3) - manufacturer data header (length, type, company id: 4) = 24.
  static constexpr std::size_t kMaxPayloadBytes = 24;
  static constexpr std::size_t kMaxEntries = (kMaxPayloadBytes - kHeaderBytes) / kEntryBytes;  // 3
  static constexpr std::size_t kMaxEntriesWithHint =
      (kMaxPayloadBytes - kHeaderBytes - kHintBytes) / kEntryBytes;  // 2

  using Tag = std::array<std::uint8_t, kTagBytes>;
  using Digest = std::array<std::uint8_t, kDigestBytes>;
  using Holdings = std::array<std::uint8_t, 32>;

  // Where the device listens for sync over TCP (IPv4 only: what fits, and what field LANs
  // route).
  struct Hint {
    std::array<std::uint8_t, 4> ipv4{};
    std::uint16_t port = 0;
    // "tcp://a.b.c.d:port"
    std::string uri() const;
    // From a listen address "tcp://a.b.c.d:port" (nullopt: not IPv4 TCP).
    static std::optional<Hint> from_uri(const std::string& uri);
    bool operator==(const Hint&) const = default;
  };
  // One project this device advertises.
  struct Project {
    Bytes secret;
    Holdings holdings{};
    bool operator==(const Project&) const = default;
  };
  struct Entry {
    Tag tag{};
    Digest digest{};
  };

  std::uint8_t sync_protocol = 0;
  std::array<std::uint8_t, kNonceBytes> nonce{};
  std::optional<std::array<std::uint8_t, kHintBytes>> hint;  // encrypted
  std::vector<Entry> entries;

  // The holdings digest of a project's version vector: SHA-256 over (author id || seq u64 BE)
  // in author order. Two devices holding the same versions have the same one.
  static Holdings holdings_of(const storage::VersionVector& vv);

  Bytes encode() const;
  static Result<BleAdvert> parse(ByteView payload);
  // How many projects fit, with or without a hint.
  static std::size_t capacity(bool with_hint) {
    return with_hint ? kMaxEntriesWithHint : kMaxEntries;
  }

  static Tag tag(ByteView secret, ByteView nonce, std::int64_t bucket);
  // A new advertisement (a fresh nonce) for `projects` (at most capacity(hint) are used; the
  // hint is encrypted for the first) at `bucket`.
  static BleAdvert make(std::uint16_t sync_protocol, const std::vector<Project>& projects,
                        std::optional<Hint> hint, std::int64_t bucket);
  // The identity value of `advert` (made with the same `projects`, `hint` and `bucket`).
  static Bytes identity(const BleAdvert& advert, const DeviceId& device,
                        const std::vector<Project>& projects, std::optional<Hint> hint,
                        std::int64_t bucket);

  // Which entry matches `secret` for the bucket of `unix_seconds` or either neighbour.
  struct Match {
    std::size_t index = 0;
    std::int64_t bucket = 0;
  };
  std::optional<Match> match(ByteView secret, std::int64_t unix_seconds) const;
  // Whether the matched entry's digest is that of `holdings`: the device holds what we hold
  // (a 1 in 65,536 chance of a false yes, until its next change or rotation).
  bool holds_same(const Match& m, ByteView secret, const Holdings& holdings) const;
  // The hint, when it is there and encrypted for the matched entry (the first).
  std::optional<Hint> open_hint(const Match& m, ByteView secret) const;

  // What a member of the project with `secret` reads from an identity value.
  struct Identity {
    DeviceId device;
    std::optional<Hint> hint;
  };
  // Errors: invalid_argument (malformed), not_found (no entry of that project in it).
  static Result<Identity> open_identity(ByteView identity, ByteView secret,
                                        std::int64_t unix_seconds);
};

}  // namespace fieldsync::discovery
