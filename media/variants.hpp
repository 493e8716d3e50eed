// Image variants of a photo attachment: a preview (longest edge 1200 px) and a thumbnail
// (200 px), made from the original with libvips. The one place fieldsync uses libvips: no
// libvips type leaves media/.
//
// Inputs: JPEG, PNG and WebP only, by the declared media type AND the file's magic bytes
// (both must agree); anything else is invalid_argument "not an image fieldsync makes variants
// of". Every other libvips loader is blocked in the process.
// Outputs: JPEG (quality 80, sRGB) for an image without an alpha channel; PNG for one with alpha
// (a PNG or WebP with transparency: drawings, screenshots, rarely photos). Not WebP: libvips
// 8.14's WebP saver ignores "strip" and always writes an EXIF chunk.
// Each variant: rotated upright by the EXIF orientation, converted to sRGB when the original
// has a colour profile, then stripped of ALL metadata (EXIF with GPS position, XMP, IPTC, ICC
// profile, comments). The original is only read, never changed.
// Never upscaled: an image already within a variant's size is re-encoded at its own size (so
// its metadata is stripped like any other); the caller never serves the original in its place.
//
// Memory: the original is never decoded whole at full size. JPEG and WebP are decoded
// already shrunk (shrink-on-load, to no less than twice the preview size); PNG is read in
// sequential strips; only the preview is ever held in memory whole. The exceptions are inputs whose
// format needs the whole image at once, interlaced PNG and progressive JPEG, which libpng/libjpeg
// buffer whole (about 3-8 bytes a pixel); they have their own lower limit (max_buffered_pixels).
// Limits are checked from the header, before any pixel is decoded.
//
// Hostile input: images come from peers and apps. Truncated or corrupt data fails
// (invalid_argument) instead of giving a grey-padded variant; libvips' untrusted loaders and
// every loader but JPEG/PNG/WebP are blocked; the operation cache is off (no decoded pixels
// or open files kept between calls).
//
// Threads: libvips is initialised once per process, on the first call, from any thread
// (std::call_once), with kVipsThreads worker threads per pipeline. make_variants may be called
// from any thread and from several at once (libvips operations are thread-safe; each call
// builds its own pipeline; only the text of error messages may mix when calls overlap, as
// libvips keeps one error buffer per process); the daemon calls it from one background worker,
// so that at most one image is in memory. libvips keeps per-thread buffers until a thread exits.
// Nothing throws.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "common/bytes.hpp"
#include "common/result.hpp"

namespace fieldsync::media {

inline constexpr std::string_view kJpeg = "image/jpeg";
inline constexpr std::string_view kPng = "image/png";
inline constexpr std::string_view kWebp = "image/webp";

// libvips worker threads per pipeline (vips_concurrency_set): a background job on a field
// device must not take every core from sync.
inline constexpr int kVipsThreads = 1;

struct VariantOptions {
  int preview_edge = 1200;   // longest edge of the preview, pixels (16..8192)
  int thumbnail_edge = 200;  // longest edge of the thumbnail, pixels (16..preview_edge)
  int jpeg_quality = 80;     // 1..100
  bool progressive_jpeg = false;
  // Width x height of the original, from its header. Over it: too_large, nothing decoded.
  std::uint64_t max_pixels = 100'000'000;
  // The same for interlaced PNG and progressive JPEG, which are buffered whole to decode.
  std::uint64_t max_buffered_pixels = 50'000'000;
  // Size of the original in bytes (a file or a buffer). Over it: too_large, nothing read.
  std::uint64_t max_input_bytes = 128ull * 1024 * 1024;
};

struct EncodedImage {
  Bytes data;              // the encoded image, no metadata
  std::string media_type;  // kJpeg, or kPng for an image with alpha
  int width = 0;           // pixels, after rotation
  int height = 0;
};

struct Variants {
  EncodedImage preview;
  EncodedImage thumbnail;
};

// The image type `head` (the first bytes of a file, at least 12) starts like: kJpeg, kPng,
// kWebp, or nullopt for anything else.
std::optional<std::string_view> sniff_image_type(ByteView head);

// Makes the preview and the thumbnail of the image in the file `original`, declared as
// `media_type` (e.g. "image/jpeg"; parameters after ';' and letter case are ignored).
// Errors: invalid_argument (not a JPEG/PNG/WebP, magic bytes not of the declared type,
// truncated or corrupt data, bad options), too_large (max_pixels, max_buffered_pixels,
// max_input_bytes), not_found (no such file), internal (libvips failed to start or to encode).
Result<Variants> make_variants(const std::filesystem::path& original, std::string_view media_type,
                               const VariantOptions& opt = {});

// The same for an original already in memory (`original` must stay valid during the call).
Result<Variants> make_variants(ByteView original, std::string_view media_type,
                               const VariantOptions& opt = {});

}  // namespace fieldsync::media
