// InviteCode: what a new device needs to join a project, as a copy-and-paste and
// QR-friendly string (docs/protocol.md "Invite codes"):
//   "FS1:" + base32 (upper case: QR alphanumeric mode) of the payload and a checksum.
// The code is a bearer secret until it is used or expires: whoever holds it can join once.
// Thread-safety: plain value type.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/ids.hpp"
#include "common/result.hpp"

namespace fieldsync::sync {

struct InviteCode {
  static constexpr std::size_t kMaxAddresses = 8;

  DeviceId inviter;  // the device that holds the invite (TLS pin)
  ProjectId project;
  std::string project_name;  // shown to the joiner before joining
  std::array<std::uint8_t, 16> invite_id{};
  std::array<std::uint8_t, 32> secret{};
  std::int64_t expires_ms = 0;  // unix ms
  // Where the inviter listens for sync, best first: address URIs (transports/address.hpp),
  // TCP ones as bare "host:port". At most kMaxAddresses.
  std::vector<std::string> addresses;

  std::string encode() const;
  // Errors: invalid_argument (not an invite code, typo: bad checksum, malformed),
  // unsupported (a newer invite format).
  static Result<InviteCode> decode(std::string_view text);
};

// The joiner's proof that it holds the invite, bound to one TLS connection:
// HMAC-SHA256(secret, "fieldsync/join/v1" || invite id || channel binding || joiner).
std::array<std::uint8_t, 32> join_proof(const std::array<std::uint8_t, 32>& secret,
                                        const std::array<std::uint8_t, 16>& invite_id,
                                        ByteView channel_binding, const DeviceId& joiner);

// A short code both people can read aloud and compare before trusting a new device (like
// Signal safety numbers): the same on both devices, different for any other key pair.
// 30 digits in six groups of five, from SHA-256 over both keys in sorted order.
std::string verification_code(const DeviceId& a, const DeviceId& b);

}  // namespace fieldsync::sync
