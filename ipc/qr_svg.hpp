// QR codes as SVG for the status page's invites (docs/api.md "Status page"): libqrencode makes
// the symbol, this draws it. The only libqrencode user. Stateless; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/result.hpp"

namespace fieldsync::ipc {

// An SVG image (image/svg+xml, UTF-8) of `text` as a QR code: byte mode, error correction
// level M, the smallest version that holds it, a 4-module quiet zone, one module per user unit
// (viewBox = width + 8), dark modules black on white. The image scales with its element.
// Errors: invalid_argument when the text is empty or too long for a QR code (about 2 300
// bytes at level M), internal when libqrencode fails otherwise.
Result<std::string> qr_svg(std::string_view text);

}  // namespace fieldsync::ipc
