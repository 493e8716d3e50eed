#include "discovery/discovery_tag.hpp"

#include <algorithm>

#include "common/encoding.hpp"
#include "crypto/crypto.hpp"

namespace fieldsync::discovery {

namespace {
constexpr std::string_view kLabel = "fieldsync-discovery";
}

std::int64_t DiscoveryTag::bucket_of(std::int64_t unix_seconds) {
  // Floor division, so a (theoretical) negative time still maps to one bucket per period.
  std::int64_t q = unix_seconds / kPeriodSeconds;
  if (unix_seconds % kPeriodSeconds < 0) --q;
  return q;
}

std::string DiscoveryTag::compute(ByteView secret, const DeviceId& device, std::int64_t bucket) {
  Bytes msg;
  msg.reserve(kLabel.size() + DeviceId::size + 8);
  append(msg, as_bytes(kLabel));
  append(msg, device.view());
  auto b = static_cast<std::uint64_t>(bucket);
  for (int shift = 56; shift >= 0; shift -= 8) msg.push_back(static_cast<std::uint8_t>(b >> shift));
  auto mac = crypto::hmac_sha256(secret, ByteView(msg.data(), msg.size()));
  return to_base32(ByteView(mac.data(), kTagBytes));
}

bool DiscoveryTag::matches(ByteView secret, const DeviceId& device,
                           const std::vector<std::string>& tags, std::int64_t unix_seconds) {
  std::int64_t now = bucket_of(unix_seconds);
  for (std::int64_t b = now - 1; b <= now + 1; ++b) {
    std::string want = compute(secret, device, b);
    for (const auto& t : tags) {
      if (t.size() == want.size() && crypto::constant_time_equal(as_bytes(want), as_bytes(t)))
        return true;
    }
  }
  return false;
}

bool DiscoveryTag::well_formed(std::string_view tag) {
  return tag.size() == kTagChars && std::all_of(tag.begin(), tag.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
         });
}

}  // namespace fieldsync::discovery
