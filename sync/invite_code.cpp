#include "sync/invite_code.hpp"

#include <algorithm>
#include <cctype>

#include "common/bytes.hpp"
#include "common/encoding.hpp"
#include "crypto/crypto.hpp"

namespace fieldsync::sync {
namespace {

constexpr std::string_view kPrefix = "FS1:";
constexpr std::uint8_t kFormat = 1;
constexpr std::size_t kMaxAddresses = InviteCode::kMaxAddresses;
constexpr std::size_t kMaxName = 200;
constexpr std::size_t kChecksum = 4;

}  // namespace

std::string InviteCode::encode() const {
  Bytes p;
  ByteWriter w(p);
  w.u8(kFormat);
  w.raw(inviter.view());
  w.raw(project.view());
  w.str16(project_name.substr(0, kMaxName));
  w.raw(ByteView(invite_id));
  w.raw(ByteView(secret));
  w.u64(static_cast<std::uint64_t>(expires_ms));
  std::size_t n = std::min(addresses.size(), kMaxAddresses);
  w.u8(static_cast<std::uint8_t>(n));
  for (std::size_t i = 0; i < n; ++i) w.str16(addresses[i]);
  auto sum = crypto::sha256(p);
  w.raw(ByteView(sum.data(), kChecksum));
  std::string text = to_base32(p);
  for (auto& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return std::string(kPrefix) + text;
}

Result<InviteCode> InviteCode::decode(std::string_view text) {
  // Forgive what copying and reading aloud add: spaces, dashes, line breaks, lower case.
  std::string clean;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c)) && c != '-')
      clean.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  if (clean.rfind(kPrefix, 0) != 0) {
    if (clean.size() > 3 && clean.rfind("FS", 0) == 0 && clean[3] == ':')
      return make_error(Errc::unsupported,
                        "invite code of a newer fieldsync (" + clean.substr(0, 3) + ")");
    return make_error(Errc::invalid_argument, "not a fieldsync invite code (it starts with FS1:)");
  }
  auto raw = from_base32(std::string_view(clean).substr(kPrefix.size()));
  if (!raw || raw->size() < 1 + kChecksum)
    return make_error(Errc::invalid_argument, "invite code is damaged (bad characters)");
  ByteView payload(raw->data(), raw->size() - kChecksum);
  auto sum = crypto::sha256(payload);
  if (!std::equal(sum.begin(), sum.begin() + kChecksum, raw->end() - kChecksum))
    return make_error(Errc::invalid_argument,
                      "invite code is damaged (checksum mismatch: check for typos)");
  ByteReader r(payload);
  std::uint8_t format = r.u8();
  if (format != kFormat)
    return make_error(Errc::unsupported, "invite code format " + std::to_string(format) +
                                             " is newer than this daemon");
  InviteCode c;
  c.inviter.bytes = r.fixed<32>();
  c.project.bytes = r.fixed<16>();
  c.project_name = std::string(r.str16());
  c.invite_id = r.fixed<16>();
  c.secret = r.fixed<32>();
  c.expires_ms = static_cast<std::int64_t>(r.u64());
  std::size_t n = r.u8();
  if (n > kMaxAddresses)
    return make_error(Errc::invalid_argument, "invite code is malformed (addresses)");
  for (std::size_t i = 0; i < n; ++i) c.addresses.emplace_back(r.str16());
  if (!r.ok() || !r.at_end() || c.project_name.size() > kMaxName)
    return make_error(Errc::invalid_argument, "invite code is malformed");
  return c;
}

std::array<std::uint8_t, 32> join_proof(const std::array<std::uint8_t, 32>& secret,
                                        const std::array<std::uint8_t, 16>& invite_id,
                                        ByteView channel_binding, const DeviceId& joiner) {
  Bytes msg;
  ByteWriter w(msg);
  w.raw("fieldsync/join/v1");
  w.raw(ByteView(invite_id));
  w.blob(channel_binding);
  w.raw(joiner.view());
  return crypto::hmac_sha256(ByteView(secret), msg);
}

std::string verification_code(const DeviceId& a, const DeviceId& b) {
  const DeviceId& lo = std::min(a, b);
  const DeviceId& hi = std::max(a, b);
  auto d = crypto::sha256({as_bytes("fieldsync/verify/v1"), lo.view(), hi.view()});
  std::string out;
  for (int g = 0; g < 6; ++g) {
    // Five bytes per group, reduced to five digits (bias below 1e-7: irrelevant here).
    std::uint64_t v = 0;
    for (int i = 0; i < 5; ++i) v = (v << 8) | d[static_cast<std::size_t>(g * 5 + i)];
    std::string digits = std::to_string(v % 100000);
    if (g) out.push_back(' ');
    out.append(5 - digits.size(), '0');
    out += digits;
  }
  return out;
}

}  // namespace fieldsync::sync
