// Text that comes from outside (a peer's device name, a peer's error reason, a server reply
// printed on a terminal): validation, sanitising and escaping.
//
// Thread-safety: free functions on values. Errors: none (every input has an output).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace fieldsync {

// True when `s` is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF),
// holds no control character (C0, DEL, C1) and is at most max_bytes long.
bool is_clean_text(std::string_view s, std::size_t max_bytes);

// `s` made clean: every invalid UTF-8 byte and every control character becomes U+FFFD, and
// the result is cut at a character boundary to at most max_bytes.
std::string sanitize_text(std::string_view s, std::size_t max_bytes);

// `s` made safe to print on a terminal: control characters and invalid UTF-8 bytes are shown
// as \xNN (C1 controls as \u00NN) and a backslash as \\; valid printable UTF-8 is unchanged.
std::string escape_for_terminal(std::string_view s);

}  // namespace fieldsync
