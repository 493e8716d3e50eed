// DiscoveryTag: the rotating keyed tag a device announces for each visible project, so that
// members of the project recognise each other on the local network while outsiders learn
// neither the project's id nor its name and cannot link one hour's tag to the next.
//
//   tag = base32( HMAC-SHA256(project_secret,
//                             "fieldsync-discovery" || device id (32 bytes) || bucket (u64
//                             BE))[0..8) )
//   bucket = floor(unix seconds / kPeriodSeconds)
//
// Binding the device id makes tags of two devices in the same project unrelated to an
// outsider (no "these two share a project"), and a copied tag is useless under another
// device id (the TLS pin checks the id). A receiver accepts the previous, current and next
// bucket, which tolerates clock skew up to one period. Format in docs/operations.md.
// Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"

namespace fieldsync::discovery {

class DiscoveryTag {
 public:
  // The rotation period. Every member must use the same value: it is part of the format.
  static constexpr std::int64_t kPeriodSeconds = 3600;
  static constexpr std::size_t kTagBytes = 8;
  static constexpr std::size_t kTagChars = 13;  // base32 of 8 bytes, unpadded

  static std::int64_t bucket_of(std::int64_t unix_seconds);
  // The tag `device` announces for a project with `secret` during `bucket`.
  static std::string compute(ByteView secret, const DeviceId& device, std::int64_t bucket);
  // Whether one of `tags` (announced by `device`) is the project's tag for the bucket of
  // `unix_seconds` or either neighbour. Constant-time per comparison.
  static bool matches(ByteView secret, const DeviceId& device, const std::vector<std::string>& tags,
                      std::int64_t unix_seconds);
  static bool well_formed(std::string_view tag);
};

}  // namespace fieldsync::discovery
