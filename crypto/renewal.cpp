#include "crypto/renewal.hpp"

#include <algorithm>
#include <string_view>

namespace fieldsync::crypto {

namespace {
constexpr std::uint8_t kRenewalEncodingVersion = 1;
}

Bytes renewal_message(const DeviceId& from, const DeviceId& to) {
  Bytes m;
  append(m, as_bytes(std::string_view("fieldsync/renewal/v1")));
  append(m, from.view());
  append(m, to.view());
  return m;
}

RenewalLink sign_renewal(const SigningKey& old_key, const DeviceId& to) {
  RenewalLink l;
  l.from = old_key.device_id();
  l.to = to;
  l.sig = old_key.sign(renewal_message(l.from, to));
  return l;
}

Bytes encode_renewal_links(std::span<const RenewalLink> links) {
  if (links.size() > kMaxRenewalLinks) links = links.subspan(links.size() - kMaxRenewalLinks);
  Bytes out;
  out.reserve(2 + links.size() * kRenewalLinkBytes);
  out.push_back(kRenewalEncodingVersion);
  out.push_back(static_cast<std::uint8_t>(links.size()));
  for (const auto& l : links) {
    append(out, l.from.view());
    append(out, l.to.view());
    append(out, ByteView(l.sig.data(), l.sig.size()));
  }
  return out;
}

std::optional<std::vector<RenewalLink>> parse_renewal_links(ByteView bytes) {
  if (bytes.size() < 2 || bytes[0] != kRenewalEncodingVersion) return std::nullopt;
  const std::size_t count = bytes[1];
  if (count > kMaxRenewalLinks || bytes.size() != 2 + count * kRenewalLinkBytes)
    return std::nullopt;
  std::vector<RenewalLink> out(count);
  const std::uint8_t* p = bytes.data() + 2;
  for (auto& l : out) {
    std::copy_n(p, 32, l.from.bytes.begin());
    std::copy_n(p + 32, 32, l.to.bytes.begin());
    std::copy_n(p + 64, 64, l.sig.begin());
    p += kRenewalLinkBytes;
  }
  return out;
}

bool renewal_chain_proves(std::span<const RenewalLink> links, const DeviceId& pinned,
                          const DeviceId& presented) {
  if (pinned == presented || links.size() > kMaxRenewalLinks) return false;
  DeviceId cur = pinned;
  for (const auto& l : links) {
    if (l.from != cur || l.to == cur) continue;
    if (!verify(cur, renewal_message(l.from, l.to), l.sig)) return false;
    cur = l.to;
    if (cur == presented) return true;
  }
  return false;
}

}  // namespace fieldsync::crypto
