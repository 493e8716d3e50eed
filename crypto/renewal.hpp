// Identity renewals as the TLS layer shows them (docs/protocol.md section 1 "Renewed
// identities"). When a device renews its identity (docs/storage.md "One identity, one
// history"), its old key signs a statement naming the new one. The device's certificate
// carries the chain of these statements, so a peer that dialed it under an old id can check,
// before the TLS handshake completes, that the new key continues the device it pinned.
// All functions are pure and thread-safe; parse_renewal_links reads bytes from a stranger.
#pragma once

#include <optional>
#include <span>
#include <vector>

#include "common/bytes.hpp"
#include "common/ids.hpp"
#include "crypto/crypto.hpp"

namespace fieldsync::crypto {

// One renewal: `from` (the old key) signed "fieldsync/renewal/v1" || from || to.
struct RenewalLink {
  DeviceId from;
  DeviceId to;
  Signature sig{};
  bool operator==(const RenewalLink&) const = default;
};

// At most this many links are carried (the newest ones) and accepted.
inline constexpr std::size_t kMaxRenewalLinks = 16;
// Size of one encoded link: from (32), to (32), signature (64).
inline constexpr std::size_t kRenewalLinkBytes = 32 + 32 + 64;

Bytes renewal_message(const DeviceId& from, const DeviceId& to);
// The link by which `old_key` vouches for `to`.
RenewalLink sign_renewal(const SigningKey& old_key, const DeviceId& to);

// Encoding: u8 version (1), u8 count (<= kMaxRenewalLinks), count links of kRenewalLinkBytes,
// oldest first. encode keeps the newest kMaxRenewalLinks links.
Bytes encode_renewal_links(std::span<const RenewalLink> links);
// nullopt for any other layout (wrong version, count over the limit, trailing bytes).
// Signatures are not checked here.
std::optional<std::vector<RenewalLink>> parse_renewal_links(ByteView bytes);

// True when `links` lead from `pinned` to `presented`: each step is a link whose `from` is the
// current id and whose signature verifies under it, in order (links that do not continue the
// walk are skipped). False when pinned == presented (nothing to prove).
bool renewal_chain_proves(std::span<const RenewalLink> links, const DeviceId& pinned,
                          const DeviceId& presented);

}  // namespace fieldsync::crypto
