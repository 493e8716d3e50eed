// QR codes of invites as SVG: the drawing is exactly libqrencode's symbol.
#include <qrencode.h>

#include <catch2/catch.hpp>

#include <regex>
#include <set>
#include <string>
#include <utility>

#include "ipc/qr_svg.hpp"

using namespace fieldsync;

TEST_CASE("qr_svg draws every dark module of libqrencode's symbol, and nothing else") {
  const std::string text = "FS1:AE3WQZL7XKQ2-example-invite-code-with-some-length-0123456789";
  auto svg = ipc::qr_svg(text);
  REQUIRE(svg);
  QRcode* code =
      QRcode_encodeData(static_cast<int>(text.size()),
                        reinterpret_cast<const unsigned char*>(text.data()), 0, QR_ECLEVEL_M);
  REQUIRE(code);
  const int w = code->width;
  std::set<std::pair<int, int>> want;
  for (int y = 0; y < w; ++y)
    for (int x = 0; x < w; ++x)
      if (code->data[y * w + x] & 1) want.emplace(x + 4, y + 4);
  QRcode_free(code);
  const std::string size = std::to_string(w + 8);
  CHECK(svg->find("viewBox=\"0 0 " + size + " " + size + "\"") != std::string::npos);
  CHECK(svg.value().rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
  // Each run "M x y h n v1 h-n z" covers n modules of row y.
  std::set<std::pair<int, int>> drawn;
  std::regex run(R"(M(\d+) (\d+)h(\d+)v1h-(\d+)z)");
  for (std::sregex_iterator it(svg->begin(), svg->end(), run), end; it != end; ++it) {
    const int x = std::stoi((*it)[1]), y = std::stoi((*it)[2]), n = std::stoi((*it)[3]);
    CHECK(n == std::stoi((*it)[4]));
    for (int i = 0; i < n; ++i) CHECK(drawn.emplace(x + i, y).second);
  }
  CHECK(drawn == want);
}

TEST_CASE("qr_svg refuses empty and oversized text") {
  CHECK(ipc::qr_svg("").error().code == Errc::invalid_argument);
  auto big = ipc::qr_svg(std::string(5000, 'x'));
  REQUIRE_FALSE(big);
  CHECK(big.error().code == Errc::invalid_argument);
  CHECK(big.error().message.find("too long for a QR code") != std::string::npos);
}
