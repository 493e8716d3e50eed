#include "ipc/qr_svg.hpp"

#include <qrencode.h>

#include <cerrno>
#include <memory>

namespace fieldsync::ipc {

Result<std::string> qr_svg(std::string_view text) {
  if (text.empty()) return make_error(Errc::invalid_argument, "nothing to draw as a QR code");
  const std::string data(text);
  errno = 0;
  std::unique_ptr<QRcode, decltype(&QRcode_free)> code(
      QRcode_encodeData(static_cast<int>(data.size()),
                        reinterpret_cast<const unsigned char*>(data.data()), 0, QR_ECLEVEL_M),
      &QRcode_free);
  if (!code)
    return make_error(errno == ERANGE ? Errc::invalid_argument : Errc::internal,
                      errno == ERANGE ? "text of " + std::to_string(data.size()) +
                                            " bytes is too long for a QR code"
                                      : std::string("libqrencode could not encode the text"));
  const int w = code->width;
  constexpr int kQuiet = 4;
  const int size = w + 2 * kQuiet;
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " +
                    std::to_string(size) + " " + std::to_string(size) +
                    "\" shape-rendering=\"crispEdges\"><rect width=\"" + std::to_string(size) +
                    "\" height=\"" + std::to_string(size) + "\" fill=\"#fff\"/><path d=\"";
  // One horizontal run of dark modules per subpath.
  for (int y = 0; y < w; ++y) {
    for (int x = 0; x < w;) {
      if (!(code->data[y * w + x] & 1)) {
        ++x;
        continue;
      }
      int run = 1;
      while (x + run < w && (code->data[y * w + x + run] & 1)) ++run;
      svg += "M" + std::to_string(x + kQuiet) + " " + std::to_string(y + kQuiet) + "h" +
             std::to_string(run) + "v1h-" + std::to_string(run) + "z";
      x += run;
    }
  }
  svg += "\" fill=\"#000\"/></svg>";
  return svg;
}

}  // namespace fieldsync::ipc
