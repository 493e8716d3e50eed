#include "storage/blob_ref.hpp"

#include <boost/json.hpp>
#include <set>

#include "common/encoding.hpp"
#include "common/json_parse.hpp"

namespace fieldsync::storage {
namespace json = boost::json;
namespace {

// Bounds the walk of a body no deeper than JSON parsing allows anyway (boost.json's default
// depth limit is 32); kept explicit so a change of parser never makes this recursive walk deep.
constexpr int kMaxWalkDepth = 64;

std::optional<BlobInfo> parse_ref(const json::object& o, std::string& why) {
  BlobInfo info;
  const auto* id = o.if_contains(kBlobRefKey);
  const json::string* id_text = id ? id->if_string() : nullptr;
  auto digest = id_text ? parse_digest_hex(*id_text) : std::nullopt;
  if (!digest) {
    why = "\"$blob\" must be the blob's SHA-256 as 64 lowercase hex digits";
    return std::nullopt;
  }
  info.id = *digest;
  const auto* size = o.if_contains("size");
  if (size && size->is_uint64()) {
    info.size = size->get_uint64();
  } else if (size && size->is_int64() && size->get_int64() >= 0) {
    info.size = static_cast<std::uint64_t>(size->get_int64());
  } else {
    why = "\"size\" must be a non-negative integer (the blob's bytes)";
    return std::nullopt;
  }
  const auto* type = o.if_contains("type");
  if (!type || !type->is_string() || !valid_media_type(type->get_string())) {
    why = "\"type\" must be a media type such as \"image/jpeg\"";
    return std::nullopt;
  }
  info.media_type = std::string(type->get_string());
  const auto* root = o.if_contains("root");
  const json::string* root_text = root ? root->if_string() : nullptr;
  auto root_digest = root_text ? parse_digest_hex(*root_text) : std::nullopt;
  if (!root_digest) {
    why = "\"root\" must be the blob's chunk root as 64 lowercase hex digits";
    return std::nullopt;
  }
  info.root = *root_digest;
  return info;
}

struct Walker {
  std::vector<BlobInfo> out;
  std::set<BlobId> seen;
  std::vector<std::string>* problems = nullptr;

  void walk(const json::value& v, std::string& path, int depth) {
    if (depth > kMaxWalkDepth) return;
    if (const auto* o = v.if_object()) {
      if (o->contains(kBlobRefKey)) {
        std::string why;
        if (auto ref = parse_ref(*o, why)) {
          if (seen.insert(ref->id).second) out.push_back(std::move(*ref));
        } else if (problems) {
          problems->push_back((path.empty() ? std::string("body") : path) + ": " + why);
        }
        return;  // a reference's other members are the app's, not searched further
      }
      for (const auto& [k, child] : *o) {
        std::size_t mark = path.size();
        if (!path.empty()) path += '.';
        path.append(k.data(), k.size());
        walk(child, path, depth + 1);
        path.resize(mark);
      }
    } else if (const auto* a = v.if_array()) {
      for (std::size_t i = 0; i < a->size(); ++i) {
        std::size_t mark = path.size();
        path += '[' + std::to_string(i) + ']';
        walk((*a)[i], path, depth + 1);
        path.resize(mark);
      }
    }
  }
};

}  // namespace

bool may_hold_blob_refs(std::string_view body) {
  // JSON spells "$", "b", "l" and "o" either as themselves or as a \u escape: text with
  // neither the name nor any \u holds no member named kBlobRefKey.
  return body.find(kBlobRefKey) != std::string_view::npos ||
         body.find("\\u") != std::string_view::npos;
}

std::vector<BlobInfo> find_blob_refs(std::string_view body, std::vector<std::string>* problems) {
  // Most bodies refer to no blob: they are not parsed (a parse costs ~1 us per 500 bytes).
  if (!may_hold_blob_refs(body)) return {};
  boost::system::error_code ec;
  json::value v = parse_json(body, ec);
  if (ec) return {};
  Walker w;
  w.problems = problems;
  std::string path;
  w.walk(v, path, 0);
  return std::move(w.out);
}

std::string blob_ref_json(const BlobInfo& info) {
  json::object o;
  o[kBlobRefKey] = digest_hex(info.id);
  o["size"] = info.size;
  o["type"] = info.media_type;
  o["root"] = digest_hex(info.root);
  return json::serialize(o);
}

std::string blob_variants_json(const BlobVariants& v) {
  auto ref = [](const BlobInfo& info) {
    json::object o;
    o[kBlobRefKey] = digest_hex(info.id);
    o["size"] = info.size;
    o["type"] = info.media_type;
    o["root"] = digest_hex(info.root);
    return o;
  };
  json::object o;
  o["of"] = ref(v.of);
  if (v.preview) o["preview"] = ref(*v.preview);
  if (v.thumbnail) o["thumbnail"] = ref(*v.thumbnail);
  o["made_by"] = v.made_by;
  return json::serialize(o);
}

std::optional<BlobVariants> parse_blob_variants(std::string_view body) {
  boost::system::error_code ec;
  json::value v = parse_json(body, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.get_object();
  auto ref_at = [&](std::string_view key, bool& bad) -> std::optional<BlobInfo> {
    const auto* m = o.if_contains(key);
    if (!m) return std::nullopt;
    std::string why;
    const auto* mo = m->if_object();
    auto r = mo && mo->contains(kBlobRefKey) ? parse_ref(*mo, why) : std::nullopt;
    if (!r) bad = true;
    return r;
  };
  bool bad = false;
  BlobVariants out;
  auto of = ref_at("of", bad);
  out.preview = ref_at("preview", bad);
  out.thumbnail = ref_at("thumbnail", bad);
  const auto* by = o.if_contains("made_by");
  if (bad || !of || !by || !by->is_string()) return std::nullopt;
  out.of = *of;
  out.made_by = std::string(by->get_string());
  if (out.made_by != kMadeByFieldsync && out.made_by != kMadeByApp) return std::nullopt;
  return out;
}

bool valid_media_type(std::string_view t) {
  if (t.empty() || t.size() > kMaxMediaTypeBytes) return false;
  // RFC 6838 restricted names: type "/" subtype, then optional parameters (printable ASCII).
  auto token_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '!' ||
           c == '#' || c == '$' || c == '&' || c == '-' || c == '^' || c == '_' || c == '.' ||
           c == '+';
  };
  std::size_t i = 0;
  std::size_t start = i;
  while (i < t.size() && token_char(t[i])) ++i;
  if (i == start || i >= t.size() || t[i] != '/') return false;
  start = ++i;
  while (i < t.size() && token_char(t[i])) ++i;
  if (i == start) return false;
  if (i < t.size() && t[i] != ';') return false;
  for (; i < t.size(); ++i)
    if (t[i] < 0x20 || t[i] > 0x7e) return false;
  return true;
}

std::string digest_hex(const crypto::Digest& d) { return to_hex(ByteView(d)); }

std::optional<crypto::Digest> parse_digest_hex(std::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  for (char c : hex)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
  auto bytes = from_hex(hex);
  if (!bytes || bytes->size() != 32) return std::nullopt;
  crypto::Digest d{};
  std::copy(bytes->begin(), bytes->end(), d.begin());
  return d;
}

}  // namespace fieldsync::storage
