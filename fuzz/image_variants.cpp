// Fuzz target: make_variants (media/variants.cpp), photos that peers and apps send.
// Input byte 0 is the declared media type: 'j' image/jpeg, 'p' image/png, 'w' image/webp,
// anything else "image/gif" (never accepted); the rest is the image. The seeds (corpus/
// image_variants) are small images written by libvips: baseline and progressive JPEG (one with
// EXIF orientation and GPS), PNG with and without alpha, interlaced PNG, lossy and lossless
// WebP, each prefixed with its type letter.
// Limits are smaller than the defaults so that an input decodes in milliseconds.
// Checks: an error is invalid_argument or too_large with a message; variants are within their
// size, non-empty, JPEG or PNG, and are themselves images make_variants accepts and leaves at
// their size (they need no further shrinking).
#include "fuzz/fuzz_support.hpp"
#include "media/variants.hpp"

using namespace fieldsync;
using namespace fieldsync::media;

namespace {

VariantOptions fuzz_options() {
  VariantOptions opt;
  opt.preview_edge = 256;
  opt.thumbnail_edge = 64;
  opt.max_pixels = 4'000'000;
  opt.max_buffered_pixels = 1'000'000;
  opt.max_input_bytes = 1 << 20;
  return opt;
}

void check_variant(const EncodedImage& e, int edge, const VariantOptions& opt) {
  FUZZ_CHECK(!e.data.empty());
  FUZZ_CHECK(e.media_type == kJpeg || e.media_type == kPng);
  FUZZ_CHECK(e.width >= 1 && e.height >= 1);
  FUZZ_CHECK(e.width <= edge && e.height <= edge);
  FUZZ_CHECK(sniff_image_type(e.data) == e.media_type);
  auto again = make_variants(ByteView(e.data), e.media_type, opt);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->preview.width == e.width && again->preview.height == e.height);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view type = data[0] == 'j'   ? kJpeg
                          : data[0] == 'p' ? kPng
                          : data[0] == 'w' ? kWebp
                                           : std::string_view("image/gif");
  static const VariantOptions opt = fuzz_options();
  auto v = make_variants(ByteView(data + 1, size - 1), type, opt);
  if (!v.ok()) {
    FUZZ_CHECK(v.error().code == Errc::invalid_argument || v.error().code == Errc::too_large);
    FUZZ_CHECK(!v.error().message.empty());
    return 0;
  }
  check_variant(v->preview, opt.preview_edge, opt);
  check_variant(v->thumbnail, opt.thumbnail_edge, opt);
  return 0;
}
