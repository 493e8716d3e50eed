#include "transports/ble/ble_framing.hpp"

#include <algorithm>

namespace fieldsync::transports::ble {

namespace {

std::int32_t seq_diff(std::uint16_t a, std::uint16_t b) {
  return static_cast<std::int16_t>(static_cast<std::uint16_t>(a - b));
}

std::uint16_t be16(ByteView b, std::size_t at) {
  return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}

Error malformed(const std::string& what) {
  return make_error(Errc::invalid_argument, "BLE frame: " + what);
}

}  // namespace

BleFramer::BleFramer(std::uint16_t link, FramerOptions options) : link_(link), opt_(options) {
  opt_.frame_bytes = std::clamp(opt_.frame_bytes, kMinFrameBytes, kMaxFrameBytes);
  opt_.window = std::clamp<std::uint16_t>(opt_.window, 1, kMaxWindow);
}

std::optional<std::uint16_t> BleFramer::link_of(ByteView frame) {
  if (frame.size() < kFrameHeaderBytes) return std::nullopt;
  return be16(frame, 1);
}

Bytes BleFramer::reset_frame(std::uint16_t link) {
  return Bytes{kFrameReset, static_cast<std::uint8_t>(link >> 8),
               static_cast<std::uint8_t>(link & 0xff), 0, 0};
}

Bytes BleFramer::frame(std::uint8_t type, std::uint16_t seq, ByteView payload) const {
  Bytes f;
  f.reserve(kFrameHeaderBytes + payload.size());
  f.push_back(type);
  f.push_back(static_cast<std::uint8_t>(link_ >> 8));
  f.push_back(static_cast<std::uint8_t>(link_ & 0xff));
  f.push_back(static_cast<std::uint8_t>(seq >> 8));
  f.push_back(static_cast<std::uint8_t>(seq & 0xff));
  append(f, payload);
  return f;
}

void BleFramer::send(ByteView data) { unsent_.insert(unsent_.end(), data.begin(), data.end()); }

bool BleFramer::ack_allowed() const { return received_.size() < opt_.window * opt_.frame_bytes; }

Status BleFramer::receive(ByteView f, std::uint64_t now_ms) {
  if (f.size() < kFrameHeaderBytes) return malformed("shorter than its header");
  if (f.size() > kMaxFrameBytes) return malformed("longer than an attribute value");
  if (be16(f, 1) != link_) return malformed("frame of another link");
  std::uint16_t seq = be16(f, 3);
  ByteView payload = f.subspan(kFrameHeaderBytes);
  switch (f[0]) {
    case kFrameData: {
      if (payload.empty()) return malformed("empty DATA");
      std::int32_t d = seq_diff(seq, expected_);
      if (d < 0) {
        if (d < -static_cast<std::int32_t>(opt_.window)) return malformed("stale DATA sequence");
        ++stats_.duplicates;
        ack_now_ = true;  // our acknowledgement was lost or late: repeat it
        return {};
      }
      if (d >= opt_.window) return malformed("DATA beyond the window");
      if (d > 0) {
        if (!ahead_.emplace(seq, Bytes(payload.begin(), payload.end())).second)
          ++stats_.duplicates;
        else
          ++stats_.reordered;
        return {};
      }
      ++stats_.data_received;
      received_.insert(received_.end(), payload.begin(), payload.end());
      ++expected_;
      ++unacked_;
      for (auto it = ahead_.find(expected_); it != ahead_.end(); it = ahead_.find(expected_)) {
        received_.insert(received_.end(), it->second.begin(), it->second.end());
        ahead_.erase(it);
        ++stats_.data_received;
        ++expected_;
        ++unacked_;
      }
      if (unacked_ >= std::max<std::uint32_t>(1, opt_.window / 2))
        ack_now_ = true;
      else if (!ack_at_ms_)
        ack_at_ms_ = now_ms + opt_.ack_delay_ms;
      return {};
    }
    case kFrameAck: {
      if (!payload.empty()) return malformed("ACK with a payload");
      std::int32_t n = seq_diff(seq, send_base_);
      if (n < 0) {
        if (n < -static_cast<std::int32_t>(opt_.window)) return malformed("stale ACK");
        return {};  // an older acknowledgement arriving late
      }
      if (static_cast<std::size_t>(n) > flight_.size()) return malformed("ACK of unsent DATA");
      if (n > 0) {
        flight_.erase(flight_.begin(), flight_.begin() + n);
        send_base_ = static_cast<std::uint16_t>(send_base_ + n);
        last_progress_ms_ = now_ms;
        timeouts_ = 0;
      }
      return {};
    }
    case kFrameReset: return make_error(Errc::unavailable, "link reset by the peer");
    default: return malformed("unknown frame type " + std::to_string(f[0]));
  }
}

std::vector<Bytes> BleFramer::poll(std::uint64_t now_ms) {
  std::vector<Bytes> out;
  if (failed_) return out;
  bool ack_due = ack_now_ || (ack_at_ms_ && now_ms >= *ack_at_ms_);
  if (ack_due && ack_allowed()) {
    out.push_back(frame(kFrameAck, expected_));
    last_acked_ = expected_;
    unacked_ = 0;
    ack_now_ = false;
    ack_at_ms_.reset();
    ++stats_.acks_sent;
  }
  if (!flight_.empty() && now_ms >= last_progress_ms_ + opt_.retransmit_ms) {
    if (++timeouts_ > opt_.max_retransmits) {
      failed_ = make_error(
          Errc::unavailable,
          "no acknowledgement after " + std::to_string(opt_.max_retransmits) + " retransmissions");
      return out;
    }
    for (std::size_t i = 0; i < flight_.size(); ++i) {
      out.push_back(frame(kFrameData, static_cast<std::uint16_t>(send_base_ + i), flight_[i]));
      ++stats_.retransmits;
      ++stats_.data_sent;
    }
    last_progress_ms_ = now_ms;
  }
  const std::size_t chunk = opt_.frame_bytes - kFrameHeaderBytes;
  while (flight_.size() < opt_.window && !unsent_.empty()) {
    std::size_t n = std::min(chunk, unsent_.size());
    Bytes payload(unsent_.begin(), unsent_.begin() + static_cast<std::ptrdiff_t>(n));
    unsent_.erase(unsent_.begin(), unsent_.begin() + static_cast<std::ptrdiff_t>(n));
    if (flight_.empty()) last_progress_ms_ = now_ms;
    auto seq = static_cast<std::uint16_t>(send_base_ + flight_.size());
    out.push_back(frame(kFrameData, seq, payload));
    flight_.push_back(std::move(payload));
    ++stats_.data_sent;
  }
  return out;
}

std::optional<std::uint64_t> BleFramer::next_deadline() const {
  if (failed_) return std::nullopt;
  std::optional<std::uint64_t> at;
  auto earliest = [&at](std::uint64_t t) { at = at ? std::min(*at, t) : t; };
  if (ack_allowed()) {
    if (ack_now_) earliest(0);
    if (ack_at_ms_) earliest(*ack_at_ms_);
  }
  if (!flight_.empty()) earliest(last_progress_ms_ + opt_.retransmit_ms);
  if (!unsent_.empty() && flight_.size() < opt_.window) earliest(0);
  return at;
}

std::size_t BleFramer::read(std::span<std::uint8_t> out) {
  bool blocked = !ack_allowed();
  std::size_t n = std::min(out.size(), received_.size());
  std::copy_n(received_.begin(), n, out.begin());
  received_.erase(received_.begin(), received_.begin() + static_cast<std::ptrdiff_t>(n));
  if (blocked && ack_allowed() && expected_ != last_acked_) ack_now_ = true;
  return n;
}

}  // namespace fieldsync::transports::ble
