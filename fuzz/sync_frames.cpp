// Fuzz target: the sync wire format (sync/frame_decoder.cpp, sync/messages.cpp, sync/join.cpp,
// ZBATCH's zstd decompression in common/compress.cpp),
// i.e. what a peer sends over TLS. The input is a byte stream of frames; every frame's payload
// goes to every message decoder (a peer chooses the type byte too). Checks: the stream splits
// into the same frames whether fed at once or in pieces, and what decodes re-encodes to a
// frame that decodes to the same encoding.
#include <algorithm>

#include "fuzz/fuzz_support.hpp"
#include "storage/subscription.hpp"
#include "sync/frame_decoder.hpp"
#include "sync/join.hpp"
#include "sync/messages.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;

namespace {

constexpr std::uint32_t kMaxFrame = 1 << 16;

struct SeenFrame {
  std::uint8_t type;
  Bytes payload;
  bool operator==(const SeenFrame&) const = default;
};

// Frames from `data` fed in pieces of `piece` bytes; `error` is set when the decoder failed.
std::vector<SeenFrame> frames_of(ByteView data, std::size_t piece, bool& error) {
  FrameDecoder d(kMaxFrame);
  std::vector<SeenFrame> out;
  error = false;
  for (std::size_t at = 0; at < data.size() && !error; at += piece) {
    d.feed(data.subspan(at, std::min(piece, data.size() - at)));
    while (true) {
      auto f = d.next();
      if (!f.ok()) {
        error = true;
        break;
      }
      if (!*f) break;
      FUZZ_CHECK((*f)->payload.size() + 1 <= kMaxFrame);
      out.push_back({(*f)->type, Bytes((*f)->payload.begin(), (*f)->payload.end())});
    }
  }
  return out;
}

// `frame` is one encoded frame: its payload must decode again and re-encode identically.
template <class Decode, class Encode>
void check_reencode(const Bytes& frame, Decode decode, Encode encode) {
  FUZZ_CHECK(frame.size() >= kFrameHeaderBytes);
  auto again = decode(ByteView(frame).subspan(kFrameHeaderBytes));
  FUZZ_CHECK(again.ok());
  Bytes frame2;
  encode(frame2, *again);
  FUZZ_CHECK(frame2 == frame);
}

void decode_all(ByteView p) {
  DecodeLimits lim;
  lim.max_projects = 64;
  if (auto m = decode_hello(p); m.ok()) {
    Bytes f;
    encode_hello(f, *m);
    check_reencode(f, decode_hello, encode_hello);
  }
  if (auto m = decode_projects(p, lim); m.ok()) {
    FUZZ_CHECK(m->proofs.size() <= lim.max_projects);
    Bytes f;
    encode_projects(f, *m);
    check_reencode(
        f, [&](ByteView b) { return decode_projects(b, lim); }, encode_projects);
  }
  if (auto m = decode_vector(p, lim); m.ok()) {
    Bytes f;
    encode_vector(f, MsgType::vv, *m);
    check_reencode(
        f, [&](ByteView b) { return decode_vector(b, lim); },
        [](Bytes& out, const VectorMsg& v) { encode_vector(out, MsgType::vv, v); });
  }
  for (bool seals : {false, true}) {  // without and with seals after the checkpoints
    DecodeLimits l = lim;
    l.seals = seals;
    auto enc = [seals](Bytes& out, const Batch& b) { encode_batch(out, b, seals); };
    if (auto m = decode_batch(p, l); m.ok()) {
      Bytes f;
      enc(f, *m);
      check_reencode(
          f, [&](ByteView b) { return decode_batch(b, l); }, enc);
    }
  }
  // ZBATCH: what decompresses stays within the limit, compresses back to a frame that
  // decompresses to the same bytes, and goes on to the BATCH decoder.
  Bytes plain;
  lim.max_batch_payload = kMaxFrame - 1;
  if (decode_zbatch(p, lim, plain).ok()) {
    FUZZ_CHECK(plain.size() <= lim.max_batch_payload);
    Bytes f;
    FUZZ_CHECK(encode_zbatch(f, plain, 1).ok());
    Bytes again;
    FUZZ_CHECK(decode_zbatch(ByteView(f).subspan(kFrameHeaderBytes), lim, again).ok());
    FUZZ_CHECK(again == plain);
    if (auto m = decode_batch(plain, lim); m.ok()) {
      Bytes b;
      encode_batch(b, *m);
      FUZZ_CHECK(ByteView(b).subspan(kFrameHeaderBytes).size() == plain.size());
    }
  }
  if (auto m = decode_ack(p); m.ok()) {
    Bytes f;
    encode_ack(f, *m);
    check_reencode(f, decode_ack, encode_ack);
  }
  if (auto m = decode_done(p); m.ok()) {
    Bytes f;
    encode_done(f, *m);
    check_reencode(f, decode_done, encode_done);
  }
  if (auto m = decode_error(p); m.ok()) {
    Bytes f;
    encode_error(f, *m);
    check_reencode(f, decode_error, encode_error);
  }
  if (auto m = decode_notice(p); m.ok()) {
    Bytes f;
    encode_notice(f, *m);
    check_reencode(f, decode_notice, encode_notice);
  }
  if (auto m = decode_join(p); m.ok()) {
    Bytes f;
    encode_join(f, *m);
    check_reencode(f, decode_join, encode_join);
  }
  if (auto m = decode_joined(p); m.ok()) {
    Bytes f;
    encode_joined(f, *m);
    check_reencode(f, decode_joined, encode_joined);
  }
  if (auto m = decode_blob_get(p); m.ok()) {
    FUZZ_CHECK(m->count <= kMaxBlobGetChunks);
    Bytes f;
    encode_blob_get(f, *m);
    check_reencode(f, decode_blob_get, encode_blob_get);
  }
  if (auto m = decode_blob_head(p, lim); m.ok()) {
    FUZZ_CHECK(m->hashes.size() <= lim.max_blob_chunks);
    FUZZ_CHECK(m->held || m->hashes.empty());
    Bytes f;
    encode_blob_head(f, *m);
    check_reencode(
        f, [&](ByteView b) { return decode_blob_head(b, lim); }, encode_blob_head);
  }
  if (auto m = decode_blob_wants(p); m.ok()) {
    FUZZ_CHECK(p.size() == 16 + 8 + 8);
    Bytes f;
    encode_blob_wants(f, *m);
    check_reencode(f, decode_blob_wants, encode_blob_wants);
  }
  if (auto m = decode_subscription(p, lim); m.ok()) {
    FUZZ_CHECK(m->whole.size() <= lim.max_authors);
    FUZZ_CHECK(storage::Subscription::parse_canonical(m->subscription).ok());
    Bytes f;
    encode_subscription(f, *m);
    check_reencode(
        f, [&](ByteView b) { return decode_subscription(b, lim); }, encode_subscription);
  }
  if (auto m = decode_blob_chunk(p); m.ok()) {
    FUZZ_CHECK(m->data.size() <= storage::kBlobChunkBytes);
    auto enc = [](Bytes& out, const BlobChunk& c) {
      encode_blob_chunk(out, c.project, c.blob, c.index, ByteView(c.data));
    };
    Bytes f;
    enc(f, *m);
    check_reencode(f, decode_blob_chunk, enc);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ByteView in(data, size);
  bool whole_error = false, piece_error = false;
  auto whole = frames_of(in, std::max<std::size_t>(size, 1), whole_error);
  // Frame boundaries must not depend on how the stream arrives.
  const std::size_t piece = size ? 1 + data[size - 1] % 7 : 1;
  auto pieces = frames_of(in, piece, piece_error);
  FUZZ_CHECK(whole == pieces);
  FUZZ_CHECK(whole_error == piece_error);
  for (std::size_t i = 0; i < whole.size() && i < 64; ++i) decode_all(whole[i].payload);
  return 0;
}
