// media/variants: real JPEG, PNG and WebP files made here with libvips, their variants decoded
// and checked (size, orientation, metadata), and hostile inputs refused.
#include <vips/vips.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "media/variants.hpp"

using namespace fieldsync;
using namespace fieldsync::media;
namespace fs = std::filesystem;

namespace {

struct Img {
  VipsImage* p = nullptr;
  Img() = default;
  explicit Img(VipsImage* q) : p(q) {}
  Img(Img&& o) noexcept : p(std::exchange(o.p, nullptr)) {}
  Img(const Img&) = delete;
  Img& operator=(const Img&) = delete;
  ~Img() {
    if (p != nullptr) g_object_unref(p);
  }
};

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "fieldsync-media-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void start_vips() {
  static bool started = [] { return VIPS_INIT("media_tests") == 0; }();
  REQUIRE(started);
}

Bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}
void write_file(const fs::path& p, ByteView b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(out.good());
}

// A w x h sRGB image: dark on the left, bright on the right (a horizontal ramp).
Img ramp(int w, int h) {
  start_vips();
  Img grey, scaled, one, rgb;
  REQUIRE(vips_grey(&grey.p, w, h, nullptr) == 0);  // 0..1, left to right
  REQUIRE(vips_linear1(grey.p, &scaled.p, 255.0, 0.0, nullptr) == 0);
  REQUIRE(vips_cast_uchar(scaled.p, &one.p, nullptr) == 0);
  VipsImage* bands[3] = {one.p, one.p, one.p};
  REQUIRE(vips_bandjoin(bands, &rgb.p, 3, nullptr) == 0);
  Img out;
  REQUIRE(vips_copy(rgb.p, &out.p, "interpretation", VIPS_INTERPRETATION_sRGB, nullptr) == 0);
  return Img(std::exchange(out.p, nullptr));
}

// The same ramp with an alpha channel (opaque on top, transparent at the bottom).
Img ramp_with_alpha(int w, int h) {
  Img rgb = ramp(w, h);
  Img alpha_f, alpha_s, alpha, rgba;
  REQUIRE(vips_xyz(&alpha_f.p, w, h, nullptr) == 0);
  Img y;
  REQUIRE(vips_extract_band(alpha_f.p, &y.p, 1, nullptr) == 0);
  REQUIRE(vips_linear1(y.p, &alpha_s.p, -255.0 / h, 255.0, nullptr) == 0);
  REQUIRE(vips_cast_uchar(alpha_s.p, &alpha.p, nullptr) == 0);
  REQUIRE(vips_bandjoin2(rgb.p, alpha.p, &rgba.p, nullptr) == 0);
  Img out;
  REQUIRE(vips_copy(rgba.p, &out.p, "interpretation", VIPS_INTERPRETATION_sRGB, nullptr) == 0);
  return Img(std::exchange(out.p, nullptr));
}

// A copy of `in` with EXIF orientation, a GPS position, a camera make and XMP attached.
Img with_metadata(VipsImage* in, int orientation) {
  Img out;
  REQUIRE(vips_copy(in, &out.p, nullptr) == 0);
  vips_image_set_int(out.p, "orientation", orientation);
  vips_image_set_string(out.p, "exif-ifd0-Make", "FieldCamMake");
  vips_image_set_string(out.p, "exif-ifd3-GPSLatitudeRef", "S");
  vips_image_set_string(out.p, "exif-ifd3-GPSLatitude", "12/1 30/1 15/1");
  vips_image_set_string(out.p, "exif-ifd3-GPSLongitudeRef", "E");
  vips_image_set_string(out.p, "exif-ifd3-GPSLongitude", "36/1 49/1 7/1");
  static const char xmp[] =
      "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF "
      "xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\"><rdf:Description "
      "exif:GPSLatitude=\"12,30.25S\" xmlns:exif=\"http://ns.adobe.com/exif/1.0/\"/>"
      "</rdf:RDF></x:xmpmeta>";
  vips_image_set_blob_copy(out.p, "xmp-data", xmp, sizeof xmp - 1);
  return Img(std::exchange(out.p, nullptr));
}

void save(VipsImage* img, const fs::path& p, const char* extra = nullptr) {
  int rc = -1;
  auto ext = p.extension().string();
  bool interlace = extra != nullptr && std::string(extra) == "interlace";
  if (ext == ".jpg") {
    rc = vips_jpegsave(img, p.c_str(), "Q", 90, "interlace", interlace, nullptr);
  } else if (ext == ".png") {
    rc = vips_pngsave(img, p.c_str(), "interlace", interlace, "compression", 1, nullptr);
  } else if (ext == ".webp") {
    rc = vips_webpsave(img, p.c_str(), "Q", 80, nullptr);
  }
  INFO(vips_error_buffer());
  REQUIRE(rc == 0);
}

// An encoded variant, decoded.
Img decode(const EncodedImage& e) {
  start_vips();
  Img out(vips_image_new_from_buffer(e.data.data(), e.data.size(), "", nullptr));
  INFO(vips_error_buffer());
  REQUIRE(out.p != nullptr);
  return out;
}

double mean_of(VipsImage* img, int left, int top, int width, int height) {
  Img area;
  REQUIRE(vips_extract_area(img, &area.p, left, top, width, height, nullptr) == 0);
  Img first;
  REQUIRE(vips_extract_band(area.p, &first.p, 0, nullptr) == 0);
  double avg = 0;
  REQUIRE(vips_avg(first.p, &avg, nullptr) == 0);
  return avg;
}

bool contains(const Bytes& hay, std::string_view needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

// No EXIF (and so no GPS), XMP, IPTC, ICC profile or orientation in a decoded variant, nor
// any of the original's metadata strings in its bytes.
void check_no_metadata(const EncodedImage& e) {
  Img img = decode(e);
  for (const char* field : {"exif-data", "xmp-data", "iptc-data", "icc-profile-data",
                            "exif-ifd3-GPSLatitude", "exif-ifd0-Make"}) {
    INFO(field);
    CHECK(vips_image_get_typeof(img.p, field) == 0);
  }
  int orientation = 1;
  if (vips_image_get_typeof(img.p, "orientation") != 0) {
    REQUIRE(vips_image_get_int(img.p, "orientation", &orientation) == 0);
  }
  CHECK(orientation == 1);
  CHECK_FALSE(contains(e.data, "Exif"));
  CHECK_FALSE(contains(e.data, "FieldCamMake"));
  CHECK_FALSE(contains(e.data, "GPSLatitude"));
  CHECK_FALSE(contains(e.data, "xmpmeta"));
}

std::uint32_t crc32(ByteView b) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (auto byte : b) {
    c ^= byte;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}
void put_be32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

}  // namespace

TEST_CASE("a 12 MP JPEG with EXIF orientation and GPS: upright, sized, stripped, original kept",
          "[media]") {
  TempDir dir;
  Img base = ramp(4000, 3000);
  Img tagged = with_metadata(base.p, 6);  // 6: rotate 90 degrees clockwise to display
  fs::path original = dir.path / "photo.jpg";
  save(tagged.p, original);
  Bytes before = read_file(original);
  // The original really carries what must not leak.
  REQUIRE(contains(before, "FieldCamMake"));
  REQUIRE(contains(before, "xmpmeta"));
  {
    Img loaded(vips_image_new_from_file(original.c_str(), nullptr));
    REQUIRE(loaded.p != nullptr);
    REQUIRE(vips_image_get_typeof(loaded.p, "exif-ifd3-GPSLatitude") != 0);
  }

  auto v = make_variants(original, "image/jpeg", VariantOptions{});
  INFO((v.ok() ? "" : v.error().message));
  REQUIRE(v.ok());
  // Stored 4000x3000 landscape, displayed 3000x4000 portrait: the longest edge is 1200 / 200.
  CHECK(v->preview.media_type == kJpeg);
  CHECK(v->preview.width == 900);
  CHECK(v->preview.height == 1200);
  CHECK(v->thumbnail.media_type == kJpeg);
  CHECK(v->thumbnail.width == 150);
  CHECK(v->thumbnail.height == 200);
  for (const auto* e : {&v->preview, &v->thumbnail}) {
    Img img = decode(*e);
    CHECK(vips_image_get_width(img.p) == e->width);
    CHECK(vips_image_get_height(img.p) == e->height);
    CHECK(vips_image_get_bands(img.p) == 3);
    // The stored left (dark) edge is the displayed top after the rotation.
    int w = e->width, h = e->height;
    double top = mean_of(img.p, 0, 0, w, h / 10);
    double bottom = mean_of(img.p, 0, h - h / 10, w, h / 10);
    CHECK(top < 40);
    CHECK(bottom > 215);
    double left = mean_of(img.p, 0, 0, w / 10, h);
    double right = mean_of(img.p, w - w / 10, 0, w / 10, h);
    CHECK(std::abs(left - right) < 10);
    check_no_metadata(*e);
  }
  CHECK(read_file(original) == before);  // byte for byte

  // The same from memory.
  auto m = make_variants(ByteView(before), "Image/JPEG; charset=binary", VariantOptions{});
  REQUIRE(m.ok());
  CHECK(m->preview.width == 900);
  CHECK(m->preview.height == 1200);
  CHECK(m->thumbnail.height == 200);
  check_no_metadata(m->preview);
}

TEST_CASE("a PNG with alpha smaller than the preview: PNG with alpha, not upscaled", "[media]") {
  TempDir dir;
  Img rgba = ramp_with_alpha(800, 600);
  fs::path original = dir.path / "sketch.png";
  save(rgba.p, original);
  Bytes before = read_file(original);

  auto v = make_variants(original, "image/png", VariantOptions{});
  INFO((v.ok() ? "" : v.error().message));
  REQUIRE(v.ok());
  CHECK(v->preview.media_type == kPng);
  CHECK(v->preview.width == 800);  // re-encoded at its own size
  CHECK(v->preview.height == 600);
  CHECK(v->thumbnail.media_type == kPng);
  CHECK(v->thumbnail.width == 200);
  CHECK(v->thumbnail.height == 150);
  for (const auto* e : {&v->preview, &v->thumbnail}) {
    Img img = decode(*e);
    REQUIRE(vips_image_get_bands(img.p) == 4);
    CHECK(vips_image_get_width(img.p) == e->width);
    int h = e->height;
    // Opaque on top, transparent at the bottom: the alpha channel survived.
    Img alpha;
    REQUIRE(vips_extract_band(img.p, &alpha.p, 3, nullptr) == 0);
    CHECK(mean_of(alpha.p, 0, 0, e->width, h / 10) > 220);
    CHECK(mean_of(alpha.p, 0, h - h / 10, e->width, h / 10) < 35);
    check_no_metadata(*e);
  }
  CHECK(read_file(original) == before);
}

TEST_CASE("a PNG without alpha and a WebP give JPEG variants", "[media]") {
  TempDir dir;
  Img rgb = ramp(1600, 900);
  fs::path png = dir.path / "a.png";
  fs::path webp = dir.path / "a.webp";
  save(rgb.p, png);
  save(rgb.p, webp);
  for (auto [path, type] : {std::pair{png, kPng}, std::pair{webp, kWebp}}) {
    INFO(type);
    auto v = make_variants(path, type, VariantOptions{});
    INFO((v.ok() ? "" : v.error().message));
    REQUIRE(v.ok());
    CHECK(v->preview.media_type == kJpeg);
    CHECK(v->preview.width == 1200);
    CHECK(v->preview.height == 675);
    CHECK(v->thumbnail.width == 200);
    CHECK(v->thumbnail.height == 113);
    check_no_metadata(v->thumbnail);
  }
}

TEST_CASE("progressive_jpeg gives progressive variants", "[media]") {
  TempDir dir;
  Img rgb = ramp(1600, 900);
  fs::path jpg = dir.path / "a.jpg";
  save(rgb.p, jpg);
  for (bool progressive : {false, true}) {
    VariantOptions opt;
    opt.progressive_jpeg = progressive;
    auto v = make_variants(jpg, kJpeg, opt);
    REQUIRE(v.ok());
    Img img = decode(v->preview);
    int interlaced = 0;
    if (vips_image_get_typeof(img.p, "interlaced") != 0) {
      REQUIRE(vips_image_get_int(img.p, "interlaced", &interlaced) == 0);
    }
    CHECK((interlaced != 0) == progressive);
  }
}

TEST_CASE("variants made on several threads at once", "[media]") {
  TempDir dir;
  Img rgb = ramp(2400, 1600);
  Img rgba = ramp_with_alpha(900, 600);
  fs::path jpg = dir.path / "a.jpg";
  fs::path png = dir.path / "b.png";
  save(rgb.p, jpg);
  save(rgba.p, png);
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < 3; ++round) {
        auto v = i % 2 == 0 ? make_variants(jpg, kJpeg, VariantOptions{})
                            : make_variants(png, kPng, VariantOptions{});
        if (v.ok() && v->thumbnail.width == 200) ++good;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(good == 12);
}

TEST_CASE("a tiny image: both variants at its own size, metadata still stripped", "[media]") {
  TempDir dir;
  Img small = ramp(50, 40);
  Img tagged = with_metadata(small.p, 1);
  fs::path original = dir.path / "tiny.jpg";
  save(tagged.p, original);
  auto v = make_variants(original, "image/jpeg", VariantOptions{});
  REQUIRE(v.ok());
  CHECK(v->preview.width == 50);
  CHECK(v->preview.height == 40);
  CHECK(v->thumbnail.width == 50);
  CHECK(v->thumbnail.height == 40);
  check_no_metadata(v->preview);
  check_no_metadata(v->thumbnail);
}

TEST_CASE("a photo with a Display P3 profile: converted to sRGB, then the profile stripped",
          "[media]") {
  TempDir dir;
  start_vips();
  // A flat (200, 60, 60) in P3 numbers, tagged with libvips' built-in P3 profile; in sRGB that
  // colour is about (217, 42, 52). Stripping the profile without converting would keep 200/60.
  Img black, flat, bytes, srgb, p3;
  REQUIRE(vips_black(&black.p, 640, 480, "bands", 3, nullptr) == 0);
  double a[3] = {1, 1, 1};
  double b[3] = {200, 60, 60};
  REQUIRE(vips_linear(black.p, &flat.p, a, b, 3, nullptr) == 0);
  REQUIRE(vips_cast_uchar(flat.p, &bytes.p, nullptr) == 0);
  REQUIRE(vips_copy(bytes.p, &srgb.p, "interpretation", VIPS_INTERPRETATION_sRGB, nullptr) == 0);
  REQUIRE(vips_icc_transform(srgb.p, &p3.p, "p3", "input_profile", "srgb", nullptr) == 0);
  const void* profile = nullptr;
  std::size_t profile_len = 0;
  REQUIRE(vips_image_get_blob(p3.p, "icc-profile-data", &profile, &profile_len) == 0);
  Img tagged;
  REQUIRE(vips_copy(srgb.p, &tagged.p, nullptr) == 0);
  vips_image_set_blob_copy(tagged.p, "icc-profile-data", profile, profile_len);
  fs::path original = dir.path / "p3.jpg";
  save(tagged.p, original);

  auto v = make_variants(original, "image/jpeg", VariantOptions{});
  REQUIRE(v.ok());
  Img img = decode(v->preview);
  Img red, green;
  REQUIRE(vips_extract_band(img.p, &red.p, 0, nullptr) == 0);
  REQUIRE(vips_extract_band(img.p, &green.p, 1, nullptr) == 0);
  double r = 0, g = 0;
  REQUIRE(vips_avg(red.p, &r, nullptr) == 0);
  REQUIRE(vips_avg(green.p, &g, nullptr) == 0);
  CHECK(r > 210);
  CHECK(g < 50);
  check_no_metadata(v->preview);
}

TEST_CASE("truncated or corrupt images fail with invalid_argument", "[media]") {
  TempDir dir;
  Img rgb = ramp(1000, 800);
  for (const char* name : {"t.jpg", "t.png", "t.webp"}) {
    INFO(name);
    fs::path whole = dir.path / name;
    save(rgb.p, whole);
    Bytes data = read_file(whole);
    auto type = *sniff_image_type(data);
    REQUIRE(make_variants(whole, type, VariantOptions{}).ok());
    Bytes cut(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(data.size() / 2));
    fs::path truncated = dir.path / (std::string("cut-") + name);
    write_file(truncated, cut);
    auto v = make_variants(truncated, type, VariantOptions{});
    REQUIRE_FALSE(v.ok());
    CHECK(v.error().code == Errc::invalid_argument);
    auto m = make_variants(ByteView(cut), type, VariantOptions{});
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == Errc::invalid_argument);
    // Only the magic bytes left.
    auto head = make_variants(ByteView(data).first(16), type, VariantOptions{});
    REQUIRE_FALSE(head.ok());
    CHECK(head.error().code == Errc::invalid_argument);
  }
}

TEST_CASE("a PNG header claiming 60000x60000 is refused by max_pixels before decoding", "[media]") {
  TempDir dir;
  Img rgb = ramp(64, 64);
  fs::path small = dir.path / "small.png";
  save(rgb.p, small);
  Bytes png = read_file(small);
  // IHDR is the first chunk: length(4) "IHDR"(4) width(4) height(4) ... crc(4) from byte 8.
  REQUIRE(std::memcmp(png.data() + 12, "IHDR", 4) == 0);
  put_be32(png, 16, 60000);
  put_be32(png, 20, 60000);
  put_be32(png, 29, crc32(ByteView(png).subspan(12, 17)));
  fs::path bomb = dir.path / "bomb.png";
  write_file(bomb, png);
  {
    // libvips itself takes the header as valid: only the limit stops it.
    start_vips();
    Img header(vips_image_new_from_file(bomb.c_str(), nullptr));
    REQUIRE(header.p != nullptr);
    CHECK(vips_image_get_width(header.p) == 60000);
  }
  auto v = make_variants(bomb, "image/png", VariantOptions{});
  REQUIRE_FALSE(v.ok());
  CHECK(v.error().code == Errc::too_large);
  CHECK(v.error().message.find("max_pixels") != std::string::npos);
  auto m = make_variants(ByteView(png), "image/png", VariantOptions{});
  REQUIRE_FALSE(m.ok());
  CHECK(m.error().code == Errc::too_large);

  // The limit is the option's: a 64x64 image over max_pixels = 4000 is refused too.
  VariantOptions tight;
  tight.max_pixels = 4000;
  auto t = make_variants(small, "image/png", tight);
  REQUIRE_FALSE(t.ok());
  CHECK(t.error().code == Errc::too_large);
}

TEST_CASE("interlaced PNG and progressive JPEG are held to max_buffered_pixels", "[media]") {
  TempDir dir;
  Img rgb = ramp(1500, 1000);
  VariantOptions opt;
  opt.max_buffered_pixels = 1'000'000;
  for (const char* name : {"i.png", "i.jpg"}) {
    INFO(name);
    fs::path plain = dir.path / (std::string("plain-") + name);
    fs::path interlaced = dir.path / name;
    save(rgb.p, plain);
    save(rgb.p, interlaced, "interlace");
    auto type = *sniff_image_type(read_file(plain));
    CHECK(make_variants(plain, type, opt).ok());
    auto v = make_variants(interlaced, type, opt);
    REQUIRE_FALSE(v.ok());
    CHECK(v.error().code == Errc::too_large);
    CHECK(v.error().message.find("max_buffered_pixels") != std::string::npos);
    CHECK(make_variants(interlaced, type, VariantOptions{}).ok());
  }
}

TEST_CASE("not an image, or not the type declared: invalid_argument", "[media]") {
  TempDir dir;
  fs::path text = dir.path / "notes.txt";
  std::string words = "Visit 12: three children weighed, all fine.\n";
  write_file(text, as_bytes(words));
  for (auto type : {"text/plain", "image/jpeg", "image/png", "image/webp", "image/gif", ""}) {
    INFO(type);
    auto v = make_variants(text, type, VariantOptions{});
    REQUIRE_FALSE(v.ok());
    CHECK(v.error().code == Errc::invalid_argument);
    CHECK(v.error().message.find("not an image fieldsync makes variants of") == 0);
  }
  // A GIF is an image, but not one fieldsync makes variants of.
  std::string gif = "GIF89a\x01\x00\x01\x00\x00\x00\x00;";
  auto g = make_variants(as_bytes(gif), "image/gif", VariantOptions{});
  REQUIRE_FALSE(g.ok());
  CHECK(g.error().code == Errc::invalid_argument);
  // A real JPEG declared as PNG.
  Img rgb = ramp(64, 48);
  fs::path jpg = dir.path / "a.jpg";
  save(rgb.p, jpg);
  auto wrong = make_variants(jpg, "image/png", VariantOptions{});
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.error().code == Errc::invalid_argument);
  CHECK(make_variants(jpg, "image/jpeg", VariantOptions{}).ok());
  // Empty input, a missing file.
  auto empty = make_variants(ByteView{}, "image/jpeg", VariantOptions{});
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error().code == Errc::invalid_argument);
  auto missing = make_variants(dir.path / "gone.jpg", "image/jpeg", VariantOptions{});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == Errc::not_found);
}

TEST_CASE("options and max_input_bytes are checked", "[media]") {
  TempDir dir;
  Img rgb = ramp(64, 48);
  fs::path jpg = dir.path / "a.jpg";
  save(rgb.p, jpg);
  VariantOptions bad;
  bad.thumbnail_edge = 2000;  // above preview_edge
  auto b = make_variants(jpg, "image/jpeg", bad);
  REQUIRE_FALSE(b.ok());
  CHECK(b.error().code == Errc::invalid_argument);
  VariantOptions small;
  small.max_input_bytes = 100;
  auto s = make_variants(jpg, "image/jpeg", small);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code == Errc::too_large);
  CHECK(s.error().message.find("max_input_bytes") != std::string::npos);
}

TEST_CASE("sniff_image_type reads the magic bytes", "[media]") {
  using namespace std::literals;
  auto sniff = [](std::string_view s) { return sniff_image_type(as_bytes(s)); };
  CHECK(sniff("\xFF\xD8\xFF\xE0rest"sv) == kJpeg);
  CHECK(sniff("\x89PNG\r\n\x1A\nrest"sv) == kPng);
  CHECK(sniff("RIFF\x10\x00\x00\x00WEBPVP8 "sv) == kWebp);
  CHECK_FALSE(sniff("RIFF\x10\x00\x00\x00WAVEfmt "sv));
  CHECK_FALSE(sniff("\xFF\xD8"));
  CHECK_FALSE(sniff(""));
}
