#include "storage/body_codec.hpp"

#include <mutex>
#include <string>

namespace fieldsync::storage {

Result<BodyCodec::Packed> BodyCodec::pack(const ProjectId& p, ByteView body) const {
  Packed out;
  if (level_ <= 0 || body.size() < kMinCompressedBody) return out;
  std::shared_ptr<const ZstdDictionary> dict;
  {
    std::shared_lock lock(mu_);
    if (auto c = current_.find(p); c != current_.end()) {
      if (auto d = dicts_.find(c->second); d != dicts_.end()) {
        out.dict = c->second;
        dict = d->second;
      }
    }
  }
  FS_TRY(zstd_compress_small(body, level_, dict.get(), out.frame));
  if (out.frame.size() + 2 >= body.size()) return Packed{};  // not smaller: as it is
  out.compressed = true;
  if (out.dict == 0) note_untrained(p);
  return out;
}

Result<std::pair<std::size_t, std::shared_ptr<const ZstdDictionary>>> BodyCodec::prepare(
    std::uint16_t dict, ByteView frame, std::size_t max_bytes) const {
  auto size = zstd_frame_size(frame);
  if (!size || *size > max_bytes)
    return make_error(Errc::data_loss, "a stored body does not decompress: bad frame header");
  std::shared_ptr<const ZstdDictionary> d;
  if (dict != 0) {
    std::shared_lock lock(mu_);
    auto it = dicts_.find(dict);
    if (it == dicts_.end())
      return make_error(Errc::data_loss, "a stored body names dictionary " + std::to_string(dict) +
                                             ", which this store lacks");
    d = it->second;
  }
  return std::make_pair(*size, std::move(d));
}

namespace {
Status unpacked(Status st) {
  if (!st)
    return make_error(Errc::data_loss, "a stored body does not decompress: " + st.error().message);
  return {};
}
}  // namespace

Status BodyCodec::unpack(std::uint16_t dict, ByteView frame, std::size_t max_bytes,
                         Bytes& out) const {
  auto p = prepare(dict, frame, max_bytes);
  if (!p) return p.error();
  out.resize(p->first);
  return unpacked(zstd_decompress_small(frame, p->second.get(), out));
}

Status BodyCodec::unpack(std::uint16_t dict, ByteView frame, std::size_t max_bytes,
                         std::string& out) const {
  auto p = prepare(dict, frame, max_bytes);
  if (!p) return p.error();
  out.resize(p->first);
  return unpacked(zstd_decompress_small(
      frame, p->second.get(),
      std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(out.data()), out.size())));
}

Status BodyCodec::add_dictionary(std::uint16_t number, ByteView dict) {
  auto d = ZstdDictionary::load(dict, level_ > 0 ? level_ : 3);
  if (!d)
    return make_error(Errc::data_loss, "body dictionary " + std::to_string(number) +
                                           " does not load: " + d.error().message);
  std::unique_lock lock(mu_);
  dicts_[number] = std::move(*d);
  return {};
}

void BodyCodec::set_current(const ProjectId& p, std::uint16_t number) {
  std::unique_lock lock(mu_);
  current_[p] = number;
  untrained_.erase(p);
}

std::optional<std::uint16_t> BodyCodec::current(const ProjectId& p) const {
  std::shared_lock lock(mu_);
  auto it = current_.find(p);
  if (it == current_.end()) return std::nullopt;
  return it->second;
}

std::shared_ptr<const ZstdDictionary> BodyCodec::dictionary(std::uint16_t number) const {
  std::shared_lock lock(mu_);
  auto it = dicts_.find(number);
  return it == dicts_.end() ? nullptr : it->second;
}

void BodyCodec::forget_project(const ProjectId& p) {
  std::unique_lock lock(mu_);
  // Its dictionary served only its records, which are gone (a reader still decoding one holds
  // its own reference).
  if (auto it = current_.find(p); it != current_.end()) {
    dicts_.erase(it->second);
    current_.erase(it);
  }
  untrained_.erase(p);
}

void BodyCodec::note_untrained(const ProjectId& p) const {
  if (!trains()) return;
  std::unique_lock lock(mu_);
  auto& n = untrained_[p];
  if (n < kDictionaryTrainingBodies) ++n;
}

bool BodyCodec::due(const ProjectId& p) const {
  if (!trains()) return false;
  std::shared_lock lock(mu_);
  auto it = untrained_.find(p);
  return it != untrained_.end() && it->second >= kDictionaryTrainingBodies && !current_.count(p);
}

void BodyCodec::retry_later(const ProjectId& p) {
  std::unique_lock lock(mu_);
  untrained_.erase(p);
}

}  // namespace fieldsync::storage
