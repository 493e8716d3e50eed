// Joining a project with an invite code (docs/protocol.md "Joining"): the JOIN and JOINED
// messages and the logic of both ends, independent of the connection that carries them.
//
// Joiner -> inviter: JOIN   {invite id, proof = join_proof(secret, invite id, binding, joiner)}
// Inviter -> joiner: JOINED {project id, name, settings, created hlc, creator, secret, role}
// The inviter checks the proof (so a code seen by a third party on the wire is useless on
// any other connection), then redeems the invite (single use, expiry) and adds the joiner
// as a member in one transaction. The project secret then travels inside TLS only.
// Thread-safety: free functions; Store calls are synchronous.
#pragma once

#include <array>
#include <cstdint>

#include "common/bytes.hpp"
#include "common/result.hpp"
#include "storage/store.hpp"
#include "sync/invite_code.hpp"

namespace fieldsync::sync {

inline constexpr std::uint8_t kMsgJoin = 0x0A;
inline constexpr std::uint8_t kMsgJoined = 0x0B;

struct Join {
  std::array<std::uint8_t, 16> invite_id{};
  std::array<std::uint8_t, 32> proof{};
};

struct Joined {
  storage::ProjectInfo project;
  std::array<std::uint8_t, 32> secret{};
  storage::Role role = storage::Role::member;
};

void encode_join(Bytes& out, const Join& m);
void encode_joined(Bytes& out, const Joined& m);
Result<Join> decode_join(ByteView payload);
Result<Joined> decode_joined(ByteView payload);

// Joiner side: the JOIN for this invite on this connection.
Join make_join(const InviteCode& code, ByteView channel_binding, const DeviceId& joiner);

// Inviter side. Errors: not_found (unknown invite), permission_denied (proof does not match:
// wrong code or replayed on another connection), failed_precondition ("invite already used",
// "invite expired").
Result<Joined> answer_join(storage::Store& store, const Join& join, ByteView channel_binding,
                           const DeviceId& joiner, std::int64_t now_ms);

// Joiner side: adds the project the inviter sent. invalid_argument if it is not the project
// the code named; a project already held is fine (joining twice is harmless).
Result<storage::ProjectInfo> accept_joined(storage::Store& store, const InviteCode& code,
                                           const Joined& joined);

}  // namespace fieldsync::sync
