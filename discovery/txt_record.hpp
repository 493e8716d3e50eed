// TxtRecord: the DNS-SD TXT record of a fieldsync device's `_fieldsync._tcp` service, and its
// encoding to / parsing from TXT strings ("key=value", each at most 255 bytes).
//
//   v=1                  format of this record (a newer major format is refused)
//   sp=<n>               highest sync protocol version the device speaks
//   id=<device id>       52 base32 characters: the device's Ed25519 public key (its TLS pin)
//   t0=<tag>,<tag>,...   rotating project tags (DiscoveryTag), up to 18 per string, then
//   t1=..., t2=...       further strings as needed
//
// Project ids and names never appear. The device name is the service instance name, the
// port is in the SRV record. Unknown keys are ignored (room for later fields).
// Plain value type; not thread-safe by itself.
// Errors (parse): invalid_argument for a missing or malformed field, failed_precondition for a
// newer format version.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/ids.hpp"
#include "common/result.hpp"

namespace fieldsync::discovery {

class TxtRecord {
 public:
  static constexpr int kFormatVersion = 1;
  static constexpr std::size_t kTagsPerString = 18;  // 3 + 18 * 14 - 1 = 254 bytes
  static constexpr std::size_t kMaxTags = 256;       // parse bound: matching cost stays small

  std::uint16_t sync_protocol = 0;
  DeviceId device;
  std::vector<std::string> tags;

  std::vector<std::string> encode() const;
  static Result<TxtRecord> parse(const std::vector<std::string>& strings);
};

}  // namespace fieldsync::discovery
