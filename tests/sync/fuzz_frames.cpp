// libFuzzer target: the frame decoder and every message decoder (built with clang only).
#include "sync/frame_decoder.hpp"
#include "sync/messages.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FrameDecoder d(1 << 16);
  d.feed(ByteView(data, size));
  DecodeLimits lim;
  for (int i = 0; i < 64; ++i) {
    auto f = d.next();
    if (!f.ok() || !*f) break;
    ByteView p = (*f)->payload;
    (void)decode_hello(p);
    (void)decode_projects(p, lim);
    (void)decode_vector(p, lim);
    (void)decode_batch(p, lim);
    (void)decode_ack(p);
    (void)decode_done(p);
    (void)decode_error(p);
  }
  return 0;
}
