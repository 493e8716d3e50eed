// Writes a test photo for the integration tests (which have no image library):
//   media_make_test_image OUT.jpg|OUT.png WIDTH HEIGHT
// A JPEG is an sRGB ramp carrying EXIF with a GPS position and a camera make; a PNG is the same
// ramp with an alpha channel (transparent at the bottom). Exit status 0, or 1 with a message.
#include <vips/vips.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

int fail(const char* what) {
  std::fprintf(stderr, "media_make_test_image: %s: %s\n", what, vips_error_buffer());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: media_make_test_image OUT.jpg|OUT.png WIDTH HEIGHT\n");
    return 2;
  }
  if (VIPS_INIT(argv[0])) return fail("starting libvips");
  const std::string out = argv[1];
  const int w = std::atoi(argv[2]);
  const int h = std::atoi(argv[3]);
  const bool png = out.size() > 4 && out.substr(out.size() - 4) == ".png";
  VipsImage *grey = nullptr, *scaled = nullptr, *one = nullptr, *rgb = nullptr, *img = nullptr;
  if (vips_grey(&grey, w, h, nullptr) || vips_linear1(grey, &scaled, 255.0, 0.0, nullptr) ||
      vips_cast_uchar(scaled, &one, nullptr))
    return fail("drawing");
  VipsImage* bands[3] = {one, one, one};
  if (vips_bandjoin(bands, &rgb, 3, nullptr)) return fail("drawing");
  if (png) {
    VipsImage *xyz = nullptr, *y = nullptr, *a = nullptr, *alpha = nullptr, *rgba = nullptr;
    if (vips_xyz(&xyz, w, h, nullptr) || vips_extract_band(xyz, &y, 1, nullptr) ||
        vips_linear1(y, &a, -255.0 / h, 255.0, nullptr) || vips_cast_uchar(a, &alpha, nullptr) ||
        vips_bandjoin2(rgb, alpha, &rgba, nullptr) ||
        vips_copy(rgba, &img, "interpretation", VIPS_INTERPRETATION_sRGB, nullptr))
      return fail("drawing the alpha channel");
    if (vips_pngsave(img, out.c_str(), "compression", 1, nullptr)) return fail("writing the PNG");
    return 0;
  }
  if (vips_copy(rgb, &img, "interpretation", VIPS_INTERPRETATION_sRGB, nullptr))
    return fail("drawing");
  vips_image_set_string(img, "exif-ifd0-Make", "FieldCamMake");
  vips_image_set_string(img, "exif-ifd3-GPSLatitudeRef", "S");
  vips_image_set_string(img, "exif-ifd3-GPSLatitude", "12/1 30/1 15/1");
  vips_image_set_string(img, "exif-ifd3-GPSLongitudeRef", "E");
  vips_image_set_string(img, "exif-ifd3-GPSLongitude", "36/1 49/1 7/1");
  if (vips_jpegsave(img, out.c_str(), "Q", 90, nullptr)) return fail("writing the JPEG");
  return 0;
}
