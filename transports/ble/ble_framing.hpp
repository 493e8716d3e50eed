// BleFramer: the byte stream fieldsync runs over one GATT connection (docs/protocol.md
// "Bluetooth LE"). GATT moves small values: the central writes one characteristic, the
// peripheral notifies another, each value at most ATT_MTU - 3 bytes. The framer cuts a byte
// stream into such values, numbers them, acknowledges them cumulatively, puts reordered ones
// back in order, retransmits what is not acknowledged in time, and keeps at most `window`
// unacknowledged chunks in flight (flow control over a link of a few KB/s).
//
//   frame = type (u8) || link (u16 BE) || seq (u16 BE) || payload
//   type 0x01 DATA   seq = this chunk's number (mod 2^16); payload 1..frame_bytes-5 bytes
//   type 0x02 ACK    seq = the next chunk number expected (every earlier one arrived); no payload
//   type 0x03 RESET  the link is gone (seq 0, no payload)
//
// `link` is chosen at random by the central for each connection: a peripheral's notifications
// reach every subscribed central, so each end keeps only the frames of its own link. The
// framer has no integrity of its own: TLS 1.3 runs on top (a tampered chunk fails its record).
//
// Pure state machine: no I/O, no clock (callers pass now_ms), no threads. Not thread-safe.
// Errors (receive): invalid_argument for a malformed frame or a sequence number outside the
// window (the link must be reset), unavailable for a RESET from the peer. failed() reports
// a link given up after max_retransmits timeouts without progress.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "common/bytes.hpp"
#include "common/result.hpp"

namespace fieldsync::transports::ble {

inline constexpr std::uint8_t kFrameData = 0x01;
inline constexpr std::uint8_t kFrameAck = 0x02;
inline constexpr std::uint8_t kFrameReset = 0x03;
inline constexpr std::size_t kFrameHeaderBytes = 5;
inline constexpr std::size_t kMinFrameBytes = 20;   // ATT's default MTU 23 - 3
inline constexpr std::size_t kMaxFrameBytes = 512;  // ATT's largest attribute value
inline constexpr std::uint16_t kMaxWindow = 64;     // far below 2^15: seq comparisons hold

struct FramerOptions {
  std::size_t frame_bytes = kMinFrameBytes;  // largest frame: the link's ATT MTU - 3
  std::uint16_t window = 8;                  // unacknowledged DATA frames in flight, 1..64
  std::uint32_t ack_delay_ms = 20;           // longest wait before acknowledging
  std::uint32_t retransmit_ms = 2000;        // no acknowledgement this long: send again
  std::uint32_t max_retransmits = 5;         // timeouts in a row before the link fails
};

class BleFramer {
 public:
  BleFramer(std::uint16_t link, FramerOptions options);

  std::uint16_t link() const { return link_; }
  const FramerOptions& options() const { return opt_; }
  // The link id of a frame (nullopt: too short to be one).
  static std::optional<std::uint16_t> link_of(ByteView frame);
  static Bytes reset_frame(std::uint16_t link);

  // Queues bytes to send.
  void send(ByteView data);
  // Bytes queued and not yet cut into a frame.
  std::size_t unsent_bytes() const { return unsent_.size(); }
  // DATA frames sent and not yet acknowledged.
  std::size_t in_flight() const { return flight_.size(); }

  // One received frame of this link.
  Status receive(ByteView frame, std::uint64_t now_ms);
  // Frames to put on the air now, in order: an acknowledgement when one is due, then
  // retransmissions, then new DATA frames while the window has room.
  std::vector<Bytes> poll(std::uint64_t now_ms);
  // When poll() has something to do next without new input (ack delay, retransmission).
  std::optional<std::uint64_t> next_deadline() const;

  // In-order received bytes not read yet; read() takes up to out.size() of them. The
  // receiver acknowledges only while fewer than window * frame_bytes are waiting, so a
  // reader that stops reading stops the sender instead of growing this buffer.
  std::size_t readable() const { return received_.size(); }
  std::size_t read(std::span<std::uint8_t> out);

  std::optional<Error> failed() const { return failed_; }

  struct Stats {
    std::uint64_t data_sent = 0;  // DATA frames, retransmissions included
    std::uint64_t data_received = 0;
    std::uint64_t acks_sent = 0;
    std::uint64_t retransmits = 0;  // DATA frames sent again
    std::uint64_t duplicates = 0;   // DATA frames received again
    std::uint64_t reordered = 0;    // DATA frames received ahead of a gap
  };
  const Stats& stats() const { return stats_; }

 private:
  Bytes frame(std::uint8_t type, std::uint16_t seq, ByteView payload = {}) const;
  bool ack_allowed() const;

  std::uint16_t link_;
  FramerOptions opt_;
  // Sending.
  std::deque<std::uint8_t> unsent_;
  std::deque<Bytes> flight_;  // payloads of [send_base_, send_base_ + size)
  std::uint16_t send_base_ = 0;
  std::uint64_t last_progress_ms_ = 0;  // last send into an empty window or ack progress
  std::uint32_t timeouts_ = 0;
  // Receiving.
  std::uint16_t expected_ = 0;
  std::map<std::uint16_t, Bytes> ahead_;  // offset from expected_ -> payload
  std::deque<std::uint8_t> received_;
  bool ack_now_ = false;  // a duplicate or a full half-window: acknowledge at once
  std::uint32_t unacked_ = 0;
  std::optional<std::uint64_t> ack_at_ms_;
  std::uint16_t last_acked_ = 0;
  std::optional<Error> failed_;
  Stats stats_;
};

}  // namespace fieldsync::transports::ble
