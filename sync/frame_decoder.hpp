// FrameDecoder: splits a received byte stream into protocol frames (u32 length, u8 type,
// payload; docs/protocol.md "Framing"). Buffers at most one frame plus its header.
//
// Ownership: owns its buffer; returned payload views stay valid until the next feed().
// Thread-safety: none; one decoder per stream, used from one strand.
// Errors: next() returns too_large for a frame over max_frame_bytes and invalid_argument
// for a zero-length frame; after an error the decoder stays failed.
#pragma once

#include <cstdint>
#include <optional>

#include "common/bytes.hpp"
#include "common/result.hpp"

namespace fieldsync::sync {

struct Frame {
  std::uint8_t type = 0;
  ByteView payload;
};

class FrameDecoder {
 public:
  explicit FrameDecoder(std::uint32_t max_frame_bytes) : max_frame_(max_frame_bytes) {}

  // Appends received bytes. Call next() until it yields nothing before feeding again.
  void feed(ByteView data);
  // The next complete frame, nullopt when more bytes are needed, or an error.
  Result<std::optional<Frame>> next();
  // Bytes received but not yet returned as frames.
  std::size_t buffered() const { return buf_.size() - pos_; }

 private:
  std::uint32_t max_frame_;
  Bytes buf_;
  std::size_t pos_ = 0;
  std::optional<Error> failed_;
};

}  // namespace fieldsync::sync
