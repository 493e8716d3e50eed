#include "media/variants.hpp"

#include <vips/vips.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <mutex>
#include <system_error>

namespace fieldsync::media {
namespace {

// One owned reference to a VipsImage (or any GObject libvips returns).
class Image {
 public:
  Image() = default;
  explicit Image(VipsImage* p) : p_(p) {}
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  ~Image() {
    if (p_ != nullptr) g_object_unref(p_);
  }
  VipsImage* get() const { return p_; }
  VipsImage** out() { return &p_; }  // for a libvips output argument; must be empty
  int width() const { return vips_image_get_width(p_); }
  int height() const { return vips_image_get_height(p_); }

 private:
  VipsImage* p_ = nullptr;
};

// libvips' error message for the failed call, on one line (and cleared).
std::string vips_message() {
  char* raw = vips_error_buffer_copy();
  std::string msg = raw != nullptr ? raw : "";
  g_free(raw);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  for (auto& c : msg) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (msg.size() > 200) msg = msg.substr(0, 200) + "...";
  return msg.empty() ? std::string("unknown libvips error") : msg;
}

std::once_flag g_init_once;
std::string g_init_error;  // written once under g_init_once, then only read

// libvips' warnings (a corrupt image gives several) would go to stderr for every bad image a
// peer sends; what matters reaches the caller as the Error.
void drop_warning(const gchar*, GLogLevelFlags, const gchar*, gpointer) {}

void init_vips() {
  if (VIPS_INIT("fieldsync") != 0) {
    g_init_error = "cannot start libvips: " + vips_message();
    return;
  }
  g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING, drop_warning, nullptr);
  vips_concurrency_set(kVipsThreads);
  // No operation cache: nothing decoded and no file descriptor outlives a call.
  vips_cache_set_max(0);
  vips_cache_set_max_mem(0);
  vips_cache_set_max_files(0);
  // Only the three loaders fieldsync reads, and none of libvips' untrusted ones.
  vips_block_untrusted_set(TRUE);
  vips_operation_block_set("VipsForeignLoad", TRUE);
  for (const char* allowed : {"VipsForeignLoadJpeg", "VipsForeignLoadPng", "VipsForeignLoadWebp"}) {
    vips_operation_block_set(allowed, FALSE);
  }
}

Status ensure_vips() {
  std::call_once(g_init_once, init_vips);
  if (!g_init_error.empty()) return make_error(Errc::internal, g_init_error);
  return {};
}

std::string normalise_media_type(std::string_view media_type) {
  auto semi = media_type.find(';');
  if (semi != std::string_view::npos) media_type = media_type.substr(0, semi);
  while (!media_type.empty() && media_type.front() == ' ') media_type.remove_prefix(1);
  while (!media_type.empty() && media_type.back() == ' ') media_type.remove_suffix(1);
  std::string out(media_type);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Error not_an_image(std::string_view why) {
  return make_error(Errc::invalid_argument,
                    "not an image fieldsync makes variants of: " + std::string(why));
}

// The declared type and the magic bytes agree on one of the three formats: that format.
Result<std::string_view> check_type(std::string_view media_type, ByteView head) {
  std::string declared = normalise_media_type(media_type);
  if (declared != kJpeg && declared != kPng && declared != kWebp) {
    return not_an_image("media type " + quote_input(media_type) +
                        " (image/jpeg, image/png or image/webp)");
  }
  auto sniffed = sniff_image_type(head);
  if (!sniffed) return not_an_image("the data is not a JPEG, PNG or WebP image");
  if (*sniffed != declared) {
    return not_an_image("declared " + declared + " but the data is " + std::string(*sniffed));
  }
  return *sniffed;
}

Status check_options(const VariantOptions& opt) {
  auto bad = [](const std::string& what) {
    return make_error(Errc::invalid_argument, "variant options: " + what);
  };
  if (opt.preview_edge < 16 || opt.preview_edge > 8192) return bad("preview_edge must be 16..8192");
  if (opt.thumbnail_edge < 16 || opt.thumbnail_edge > opt.preview_edge) {
    return bad("thumbnail_edge must be 16..preview_edge");
  }
  if (opt.jpeg_quality < 1 || opt.jpeg_quality > 100) return bad("jpeg_quality must be 1..100");
  if (opt.max_pixels == 0 || opt.max_buffered_pixels == 0 || opt.max_input_bytes == 0) {
    return bad("limits must be above 0");
  }
  return {};
}

// The original as a libvips source (a file or memory), read through the loader of its checked
// type only. One source serves the header check and the decode.
class Source {
 public:
  explicit Source(VipsSource* s) : s_(s) {}
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;
  ~Source() {
    if (s_ != nullptr) g_object_unref(s_);
  }
  bool ok() const { return s_ != nullptr; }

  // Opens the image with the loader of its (checked) type: nothing is decoded until pixels
  // are asked for. VIPS_ACCESS_SEQUENTIAL: never the random-access mode that decodes the whole
  // image to memory or a temporary file first. FAIL_ON_ERROR: truncated or corrupt data fails
  // the decode instead of giving grey rows. `jpeg_shrink` (1, 2, 4, 8) and `webp_scale` (0..1]
  // make the decoder itself shrink (shrink-on-load).
  int load(std::string_view type, int jpeg_shrink, double webp_scale, VipsImage** out) const {
    const int access = VIPS_ACCESS_SEQUENTIAL;
    const int fail_on = VIPS_FAIL_ON_ERROR;
    if (type == kJpeg) {
      return vips_jpegload_source(s_, out, "access", access, "fail_on", fail_on, "shrink",
                                  jpeg_shrink, nullptr);
    }
    if (type == kPng) {
      return vips_pngload_source(s_, out, "access", access, "fail_on", fail_on, nullptr);
    }
    return vips_webpload_source(s_, out, "access", access, "fail_on", fail_on, "scale", webp_scale,
                                nullptr);
  }

 private:
  VipsSource* s_;
};

struct Header {
  std::uint64_t width = 0;
  std::uint64_t height = 0;
};

// Reads the header only and applies the pixel limits to it.
Result<Header> check_header(const Source& src, std::string_view type, const VariantOptions& opt) {
  Image header;
  if (src.load(type, 1, 1.0, header.out()) != 0) {
    return make_error(Errc::invalid_argument, "cannot read the image header: " + vips_message());
  }
  Header h{static_cast<std::uint64_t>(header.width()), static_cast<std::uint64_t>(header.height())};
  std::uint64_t pixels = h.width * h.height;
  std::string size = std::to_string(h.width) + "x" + std::to_string(h.height);
  if (pixels > opt.max_pixels) {
    return make_error(Errc::too_large, "the image is " + size + " pixels, more than max_pixels (" +
                                           std::to_string(opt.max_pixels) + ")");
  }
  int interlaced = 0;
  if (vips_image_get_typeof(header.get(), "interlaced") != 0 &&
      vips_image_get_int(header.get(), "interlaced", &interlaced) == 0 && interlaced != 0 &&
      pixels > opt.max_buffered_pixels) {
    return make_error(Errc::too_large, "the image is interlaced/progressive and " + size +
                                           " pixels, more than max_buffered_pixels (" +
                                           std::to_string(opt.max_buffered_pixels) + ")");
  }
  return h;
}

// 8-bit sRGB (or 8-bit grey), whatever the original's colour space and depth.
int to_8bit_display(VipsImage* in, VipsImage** out) {
  VipsInterpretation interp = vips_image_get_interpretation(in);
  bool grey = interp == VIPS_INTERPRETATION_B_W || interp == VIPS_INTERPRETATION_GREY16;
  VipsInterpretation target = grey ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB;
  Image converted;
  if (interp != target) {
    if (vips_colourspace(in, converted.out(), target, nullptr) != 0) return -1;
    in = converted.get();
  }
  if (vips_image_get_format(in) != VIPS_FORMAT_UCHAR) {
    return vips_cast(in, out, VIPS_FORMAT_UCHAR, nullptr);
  }
  return vips_copy(in, out, nullptr);
}

// Encodes `in` with no metadata at all: every metadata field removed from a copy, and the
// saver's "strip" on top. JPEG without alpha, PNG with alpha (libvips 8.14's webpsave ignores
// "strip" and always writes an EXIF chunk, so no WebP output).
Result<EncodedImage> encode(VipsImage* in, const VariantOptions& opt) {
  Image bare;
  if (vips_copy(in, bare.out(), nullptr) != 0) {
    return make_error(Errc::internal, "cannot encode a variant: " + vips_message());
  }
  if (gchar** fields = vips_image_get_fields(bare.get()); fields != nullptr) {
    for (gchar** f = fields; *f != nullptr; ++f) vips_image_remove(bare.get(), *f);
    g_strfreev(fields);
  }
  void* buf = nullptr;
  std::size_t len = 0;
  EncodedImage img;
  int rc;
  if (vips_image_hasalpha(bare.get()) != 0) {
    img.media_type = std::string(kPng);
    rc = vips_pngsave_buffer(bare.get(), &buf, &len, "compression", 6, "strip", TRUE, nullptr);
  } else {
    img.media_type = std::string(kJpeg);
    rc = vips_jpegsave_buffer(bare.get(), &buf, &len, "Q", opt.jpeg_quality, "strip", TRUE,
                              "optimize_coding", TRUE, "interlace",
                              opt.progressive_jpeg ? TRUE : FALSE, nullptr);
  }
  if (rc != 0) return make_error(Errc::internal, "cannot encode a variant: " + vips_message());
  auto* bytes = static_cast<const std::uint8_t*>(buf);
  img.data.assign(bytes, bytes + len);
  g_free(buf);
  img.width = vips_image_get_width(bare.get());
  img.height = vips_image_get_height(bare.get());
  return img;
}

Result<Variants> make(const Source& src, std::string_view type, const VariantOptions& opt) {
  vips_error_clear();  // messages left by calls that recovered
  auto header = check_header(src, type, opt);
  if (!header.ok()) return header.error();
  // Shrink-on-load to no less than twice the preview (the final resize does the rest, as
  // vips_thumbnail does): a 50 MP JPEG is decoded at 1/2, a 100 MP one at 1/4.
  std::uint64_t longest = std::max(header->width, header->height);
  std::uint64_t floor = 2 * static_cast<std::uint64_t>(opt.preview_edge);
  int jpeg_shrink = 1;
  while (jpeg_shrink < 8 && longest / (2 * static_cast<std::uint64_t>(jpeg_shrink)) >= floor) {
    jpeg_shrink *= 2;
  }
  double webp_scale =
      longest > floor ? static_cast<double>(floor) / static_cast<double>(longest) : 1.0;
  Image loaded;
  Image shrunk;
  Image display;
  // vips_thumbnail_image: rotated upright by the orientation tag (which it removes), converted
  // to sRGB when the image has an ICC profile, never bigger than the original.
  if (src.load(type, jpeg_shrink, webp_scale, loaded.out()) != 0 ||
      vips_thumbnail_image(loaded.get(), shrunk.out(), opt.preview_edge, "height", opt.preview_edge,
                           "size", VIPS_SIZE_DOWN, "export_profile", "srgb", nullptr) != 0 ||
      to_8bit_display(shrunk.get(), display.out()) != 0) {
    return make_error(Errc::invalid_argument, "cannot read the image: " + vips_message());
  }
  // The preview, decoded into memory once (at most preview_edge^2 pixels): the whole decode
  // runs here, and fails here on truncated or corrupt data.
  Image preview(vips_image_copy_memory(display.get()));
  if (preview.get() == nullptr) {
    return make_error(Errc::invalid_argument, "cannot read the image: " + vips_message());
  }
  // The thumbnail from the preview in memory (already upright).
  Image thumbnail;
  if (vips_thumbnail_image(preview.get(), thumbnail.out(), opt.thumbnail_edge, "height",
                           opt.thumbnail_edge, "size", VIPS_SIZE_DOWN, "auto_rotate", FALSE,
                           nullptr) != 0) {
    return make_error(Errc::internal, "cannot shrink the preview: " + vips_message());
  }
  auto p = encode(preview.get(), opt);
  if (!p.ok()) return p.error();
  auto t = encode(thumbnail.get(), opt);
  if (!t.ok()) return t.error();
  return Variants{std::move(p).value(), std::move(t).value()};
}

}  // namespace

std::optional<std::string_view> sniff_image_type(ByteView head) {
  auto starts = [&](std::size_t at, std::string_view magic) {
    return head.size() >= at + magic.size() &&
           std::memcmp(head.data() + at, magic.data(), magic.size()) == 0;
  };
  if (starts(0, "\xFF\xD8\xFF")) return kJpeg;
  if (starts(0, "\x89PNG\r\n\x1A\n")) return kPng;
  if (starts(0, "RIFF") && starts(8, "WEBP")) return kWebp;
  return std::nullopt;
}

Result<Variants> make_variants(const std::filesystem::path& original, std::string_view media_type,
                               const VariantOptions& opt) {
  FS_TRY(check_options(opt));
  std::error_code ec;
  auto size = std::filesystem::file_size(original, ec);
  if (ec) {
    return make_error(
        ec == std::errc::no_such_file_or_directory ? Errc::not_found : Errc::invalid_argument,
        "cannot read " + quote_input(original.string()) + ": " + ec.message());
  }
  if (size > opt.max_input_bytes) {
    return make_error(Errc::too_large, "the image is " + std::to_string(size) +
                                           " bytes, more than max_input_bytes (" +
                                           std::to_string(opt.max_input_bytes) + ")");
  }
  std::uint8_t head[16] = {};
  std::ifstream in(original, std::ios::binary);
  in.read(reinterpret_cast<char*>(head), sizeof head);
  if (!in && !in.eof()) {
    return make_error(Errc::invalid_argument, "cannot read " + quote_input(original.string()));
  }
  auto type = check_type(media_type, ByteView(head, static_cast<std::size_t>(in.gcount())));
  if (!type.ok()) return type.error();
  FS_TRY(ensure_vips());
  // A libvips source reads the path as it is (vips_thumbnail would take "[...]" in a file
  // name as load options).
  Source src(vips_source_new_from_file(original.c_str()));
  if (!src.ok()) {
    return make_error(Errc::invalid_argument,
                      "cannot open " + quote_input(original.string()) + ": " + vips_message());
  }
  return make(src, *type, opt);
}

Result<Variants> make_variants(ByteView original, std::string_view media_type,
                               const VariantOptions& opt) {
  FS_TRY(check_options(opt));
  if (original.size() > opt.max_input_bytes) {
    return make_error(Errc::too_large, "the image is " + std::to_string(original.size()) +
                                           " bytes, more than max_input_bytes (" +
                                           std::to_string(opt.max_input_bytes) + ")");
  }
  auto type = check_type(media_type, original.first(std::min<std::size_t>(original.size(), 16)));
  if (!type.ok()) return type.error();
  FS_TRY(ensure_vips());
  Source src(vips_source_new_from_memory(original.data(), original.size()));
  if (!src.ok()) return make_error(Errc::internal, "cannot read memory: " + vips_message());
  return make(src, *type, opt);
}

}  // namespace fieldsync::media
