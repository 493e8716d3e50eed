// zstd compression of whole buffers: the one place fieldsync uses libzstd.
//
// Thread-safety: each thread keeps its own compression and decompression contexts
// (reused across calls, so the hot path does not allocate them); safe from any thread.
// Errors: zstd_decompress never trusts the size a frame declares: the caller gives the
// exact size it expects (already checked against its own limit), the output buffer is at
// most that big, and a frame that would produce more, less, or is corrupt fails with a
// clear error (invalid_argument) without allocating beyond that bound. Nothing throws.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "common/bytes.hpp"
#include "common/result.hpp"

namespace fieldsync {

// Compression levels accepted (1 fastest .. 19); 0 means "do not compress" to callers.
inline constexpr int kZstdMinLevel = 1;
inline constexpr int kZstdMaxLevel = 19;

// Appends one zstd frame holding `in` (with its content size) to `out`.
Status zstd_compress(ByteView in, int level, Bytes& out);

// Decompresses `in` (one or more zstd frames) into `out` (replacing its contents), which
// must come to exactly `expected_size` bytes; the caller checks expected_size against its
// limit before calling. Fails (invalid_argument) on corrupt input, a frame that would
// produce more than expected_size bytes, or fewer.
Status zstd_decompress(ByteView in, std::size_t expected_size, Bytes& out);

// A trained dictionary for both directions at one compression level (zstd's DDict, made at
// load, and CDict, made at the first compression: a CDict is ~420 KB at level 3, ~64 KB at
// level 1, for a 16 KiB dictionary, and a store may hold many that it only reads). Safe to
// share between threads.
class ZstdDictionary {
 public:
  // invalid_argument when `dict` is not a dictionary zstd can load.
  static Result<std::shared_ptr<const ZstdDictionary>> load(ByteView dict, int level);
  ~ZstdDictionary();
  ZstdDictionary(const ZstdDictionary&) = delete;
  ZstdDictionary& operator=(const ZstdDictionary&) = delete;
  ByteView bytes() const { return bytes_; }

 private:
  ZstdDictionary() = default;
  const void* cdict() const;  // made once, on first use; nullptr if that failed
  friend Status zstd_compress_small(ByteView, int, const ZstdDictionary*, Bytes&);
  friend Status zstd_decompress_small(ByteView, const ZstdDictionary*, std::span<std::uint8_t>);
  Bytes bytes_;
  int level_ = 3;
  mutable std::once_flag cdict_once_;
  mutable void* cdict_ = nullptr;
  void* ddict_ = nullptr;
};

// For many small buffers stored one by one (document bodies at rest): one frame with its
// content size but no checksum and no dictionary id (the caller records which dictionary it
// used), with `dict` when given (its level then applies, not `level`).
Status zstd_compress_small(ByteView in, int level, const ZstdDictionary* dict, Bytes& out);
// The content size a frame declares; nullopt when it is not a frame or declares none.
std::optional<std::size_t> zstd_frame_size(ByteView in);
// As zstd_decompress, for a frame made by zstd_compress_small with the same dictionary, into
// `out`, which must be exactly the size the caller expects (checked against the frame).
Status zstd_decompress_small(ByteView in, const ZstdDictionary* dict, std::span<std::uint8_t> out);
// Trains a dictionary of at most `max_bytes` on `samples`; invalid_argument when zstd finds
// too little to learn from (too few or too small samples).
Result<Bytes> zstd_train_dictionary(const std::vector<ByteView>& samples, std::size_t max_bytes);

}  // namespace fieldsync
