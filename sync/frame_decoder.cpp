#include "sync/frame_decoder.hpp"

namespace fieldsync::sync {

void FrameDecoder::feed(ByteView data) {
  // Drop consumed bytes first so the buffer never holds more than one partial frame.
  if (pos_ > 0) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
  }
  buf_.insert(buf_.end(), data.begin(), data.end());
}

Result<std::optional<Frame>> FrameDecoder::next() {
  if (failed_) return *failed_;
  ByteView rest(buf_.data() + pos_, buf_.size() - pos_);
  if (rest.size() < 4) return std::optional<Frame>{};
  ByteReader r(rest);
  std::uint32_t len = r.u32();
  if (len == 0) {
    failed_ = make_error(Errc::invalid_argument, "zero-length frame");
    return *failed_;
  }
  if (len > max_frame_) {
    failed_ = make_error(Errc::too_large, "frame of " + std::to_string(len) +
                                              " bytes exceeds sync.max_frame_bytes (" +
                                              std::to_string(max_frame_) + ")");
    return *failed_;
  }
  if (r.remaining() < len) return std::optional<Frame>{};
  Frame f;
  f.type = rest[4];
  f.payload = rest.subspan(5, len - 1);
  pos_ += 4 + len;
  return std::optional<Frame>{f};
}

}  // namespace fieldsync::sync
