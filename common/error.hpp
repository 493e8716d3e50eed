// Error: the one error type that crosses component boundaries in fieldsync.
//
// Codes are coarse and transport-neutral (modelled on gRPC status codes) so that
// exactly one function per edge maps them: ipc/http_error.cpp to HTTP statuses,
// sync/wire_error to protocol error frames. Details go in `message`, which is
// safe to show to a local user and must never contain secrets.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace fieldsync {

enum class Errc {
  ok = 0,
  invalid_argument,     // malformed input: bad JSON, bad id, unknown field
  not_found,            // no such project / document / version / peer
  already_exists,       // create of something that exists
  failed_precondition,  // stale base version, wrong state
  aborted,              // a conditional write whose condition does not hold (HTTP If-Match)
  too_large,            // a named size limit was exceeded
  resource_exhausted,   // disk full, map full, too many connections
  unauthenticated,      // missing or wrong credentials
  permission_denied,    // authenticated, but not allowed
  verification_failed,  // bad hash chain or signature on received data
  unavailable,          // peer or service not reachable right now
  unsupported,          // newer format / protocol version we do not speak
  data_loss,            // on-disk corruption detected
  internal,             // a bug or an unexpected system error
};

std::string_view errc_name(Errc code);

struct Error {
  Errc code = Errc::internal;
  std::string message;
};

inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

// Input (an id, a name, a parameter) quoted in an error message: in single quotes, cut to
// `max_bytes` bytes of input (then "..."), with control characters, quotes, backslashes and
// bytes that are not valid UTF-8 escaped as \xNN. The message stays valid UTF-8 and one line
// whatever the input. The one helper for quoting input in messages.
std::string quote_input(std::string_view s, std::size_t max_bytes = 80);

}  // namespace fieldsync
