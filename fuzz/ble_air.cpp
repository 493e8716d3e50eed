// Fuzz target: what a fieldsync device receives over the air from any device in Bluetooth LE
// range: an advertisement's manufacturer data (BleAdvert::parse, discovery/ble_advert.cpp),
// an identity value read from its GATT service (BleAdvert::open_identity) and the frames of a
// GATT byte stream (BleFramer::receive, transports/ble/ble_framing.cpp).
// Input byte 0 picks the mode (mod 3):
//   0: the rest is an advertisement payload; a parsed one must encode back to the same bytes,
//      and matching, digest and hint checks against a project secret must not fail;
//   1: the rest is an identity value, opened with a fixed secret; also a valid identity value
//      made for that secret with bytes of the input changed (positions and values from it):
//      either refused or opened to a device id;
//   2: the rest is a stream of frames (u8 length + bytes) fed to a framer, polled and read
//      between frames; what it reads never exceeds what was sent to it.
#include <algorithm>

#include "discovery/ble_advert.hpp"
#include "fuzz/fuzz_support.hpp"
#include "transports/ble/ble_framing.hpp"

using namespace fieldsync;
using discovery::BleAdvert;

namespace {

constexpr std::int64_t kNow = 1764000000;

Bytes secret() { return Bytes(32, 0x5A); }

void advert(ByteView in) {
  auto a = BleAdvert::parse(in);
  if (!a.ok()) {
    FUZZ_CHECK(!a.error().message.empty());
    return;
  }
  Bytes enc = a->encode();
  FUZZ_CHECK(enc.size() == in.size() && std::equal(enc.begin(), enc.end(), in.begin()));
  FUZZ_CHECK(enc.size() <= BleAdvert::kMaxPayloadBytes);
  Bytes s = secret();
  if (auto m = a->match(s, kNow)) {
    FUZZ_CHECK(m->index < a->entries.size());
    (void)a->holds_same(*m, s, BleAdvert::Holdings{});
    (void)a->open_hint(*m, s);
  }
}

void identity(ByteView in) {
  Bytes s = secret();
  auto r = BleAdvert::open_identity(in, s, kNow);
  if (!r.ok()) FUZZ_CHECK(!r.error().message.empty());
  // A real identity value for the secret, changed where the input says.
  DeviceId dev;
  for (std::size_t i = 0; i < DeviceId::size; ++i)
    dev.bytes[i] = in.size() > i ? in[i] : static_cast<std::uint8_t>(i);
  std::optional<BleAdvert::Hint> hint;
  if (!in.empty() && (in[0] & 1)) hint = BleAdvert::Hint{{10, 0, 0, 7}, 7891};
  std::vector<BleAdvert::Project> projects{{s, {}}, {Bytes(32, 0x11), {}}};
  std::int64_t bucket = kNow / 3600;
  auto adv = BleAdvert::make(2, projects, hint, bucket);
  Bytes value = BleAdvert::identity(adv, dev, projects, hint, bucket);
  auto clean = BleAdvert::open_identity(value, s, kNow);
  FUZZ_CHECK(clean.ok() && clean->device == dev && clean->hint == hint);
  for (std::size_t i = 0; i + 1 < in.size() && i < 16; i += 2) {
    std::size_t at = in[i] % (value.size() + 1);
    if (at == value.size())
      value.pop_back();
    else
      value[at] ^= in[i + 1];
  }
  auto changed = BleAdvert::open_identity(value, s, kNow);
  if (!changed.ok()) FUZZ_CHECK(!changed.error().message.empty());
}

void frames(ByteView in) {
  transports::ble::FramerOptions o;
  o.frame_bytes = 64;
  o.window = 4;
  transports::ble::BleFramer f(0x0102, o);
  std::uint64_t now = 0;
  std::size_t payload_in = 0, read_out = 0;
  Bytes buf(256);
  while (!in.empty()) {
    std::size_t n = std::min<std::size_t>(in[0], in.size() - 1);
    ByteView frame = in.subspan(1, n);
    in = in.subspan(1 + n);
    if (frame.size() > transports::ble::kFrameHeaderBytes)
      payload_in += frame.size() - transports::ble::kFrameHeaderBytes;
    auto st = f.receive(frame, now);
    if (!st.ok()) FUZZ_CHECK(!st.error().message.empty());
    for (const auto& out : f.poll(now)) FUZZ_CHECK(out.size() <= o.frame_bytes);
    read_out += f.read(std::span<std::uint8_t>(buf.data(), buf.size()));
    FUZZ_CHECK(read_out <= payload_in);
    now += 7;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  ByteView rest(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0: advert(rest); break;
    case 1: identity(rest); break;
    default: frames(rest); break;
  }
  return 0;
}
