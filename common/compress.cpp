#include "common/compress.hpp"

#include <zstd.h>

#include <memory>
#include <string>

namespace fieldsync {

namespace {

struct CCtxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

ZSTD_CCtx* thread_cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxFree> ctx(ZSTD_createCCtx());
  return ctx.get();
}

ZSTD_DCtx* thread_dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxFree> ctx(ZSTD_createDCtx());
  return ctx.get();
}

Error corrupt(std::string what) {
  return make_error(Errc::invalid_argument, "bad compressed data: " + std::move(what));
}

}  // namespace

Status zstd_compress(ByteView in, int level, Bytes& out) {
  ZSTD_CCtx* cctx = thread_cctx();
  if (!cctx) return make_error(Errc::resource_exhausted, "cannot create a zstd context");
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);  // corruption is told apart, not parsed
  std::size_t at = out.size();
  out.resize(at + ZSTD_compressBound(in.size()));
  std::size_t n = ZSTD_compress2(cctx, out.data() + at, out.size() - at, in.data(), in.size());
  if (ZSTD_isError(n)) {
    out.resize(at);
    return make_error(Errc::internal,
                      std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  }
  out.resize(at + n);
  return {};
}

Status zstd_decompress(ByteView in, std::size_t expected_size, Bytes& out) {
  // Exactly one frame, which declares exactly the expected size: anything else is refused
  // before a byte is allocated for it.
  std::size_t frame = ZSTD_findFrameCompressedSize(in.data(), in.size());
  if (ZSTD_isError(frame)) return corrupt(ZSTD_getErrorName(frame));
  if (frame != in.size()) return corrupt("bytes after the zstd frame");
  unsigned long long declared = ZSTD_getFrameContentSize(in.data(), in.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR) return corrupt("not a zstd frame");
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN) return corrupt("frame without a content size");
  if (declared != expected_size)
    return corrupt("frame declares " + std::to_string(declared) + " bytes, expected " +
                   std::to_string(expected_size));
  ZSTD_DCtx* dctx = thread_dctx();
  if (!dctx) return make_error(Errc::resource_exhausted, "cannot create a zstd context");
  // The output buffer is the bound: a frame that would produce more fails (dstSize_tooSmall).
  out.resize(expected_size);
  std::size_t n = ZSTD_decompressDCtx(dctx, out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(n)) {
    out.clear();
    return corrupt(ZSTD_getErrorName(n));
  }
  if (n != expected_size) {
    out.clear();
    return corrupt("frame produced " + std::to_string(n) + " bytes, expected " +
                   std::to_string(expected_size));
  }
  return {};
}

}  // namespace fieldsync
