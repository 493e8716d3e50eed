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

}  // namespace fieldsync
