#include "discovery/txt_record.hpp"

#include <charconv>
#include <map>

#include "discovery/discovery_tag.hpp"

namespace fieldsync::discovery {

std::vector<std::string> TxtRecord::encode() const {
  std::vector<std::string> out;
  out.push_back("v=" + std::to_string(kFormatVersion));
  out.push_back("sp=" + std::to_string(sync_protocol));
  out.push_back("id=" + device.str());
  for (std::size_t i = 0; i < tags.size(); i += kTagsPerString) {
    std::string s = "t" + std::to_string(i / kTagsPerString) + "=";
    for (std::size_t j = i; j < tags.size() && j < i + kTagsPerString; ++j) {
      if (j > i) s += ',';
      s += tags[j];
    }
    out.push_back(std::move(s));
  }
  return out;
}

namespace {

std::optional<std::uint64_t> number(std::string_view v) {
  std::uint64_t n = 0;
  if (v.empty() || v.size() > 9) return std::nullopt;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size()) return std::nullopt;
  return n;
}

Error bad(const std::string& what) {
  return make_error(Errc::invalid_argument, "TXT record: " + what);
}

}  // namespace

Result<TxtRecord> TxtRecord::parse(const std::vector<std::string>& strings) {
  // RFC 6763 6.4: keys are case-insensitive and only the first occurrence counts.
  std::map<std::string, std::string> kv;
  for (const auto& s : strings) {
    auto eq = s.find('=');
    std::string key = s.substr(0, eq);
    for (auto& c : key) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    if (key.empty()) continue;
    kv.try_emplace(key, eq == std::string::npos ? std::string() : s.substr(eq + 1));
  }
  auto v = kv.find("v");
  if (v == kv.end()) return bad("no version (v=)");
  auto ver = number(v->second);
  if (!ver) return bad("bad version '" + v->second.substr(0, 16) + "'");
  if (*ver != kFormatVersion)
    return make_error(Errc::failed_precondition,
                      "TXT record: format version " + std::to_string(*ver) + " is not supported");
  TxtRecord r;
  if (auto sp = kv.find("sp"); sp != kv.end()) {
    auto n = number(sp->second);
    if (!n || *n > 0xffff) return bad("bad sync protocol version");
    r.sync_protocol = static_cast<std::uint16_t>(*n);
  }
  auto id = kv.find("id");
  if (id == kv.end()) return bad("no device id (id=)");
  auto dev = DeviceId::parse(id->second);
  if (!dev) return bad("bad device id");
  r.device = *dev;
  for (std::size_t i = 0;; ++i) {
    auto t = kv.find("t" + std::to_string(i));
    if (t == kv.end()) break;
    std::string_view rest = t->second;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      std::string_view tag = rest.substr(0, comma);
      if (!DiscoveryTag::well_formed(tag)) return bad("malformed tag");
      if (r.tags.size() >= kMaxTags) return bad("more than " + std::to_string(kMaxTags) + " tags");
      r.tags.emplace_back(tag);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return r;
}

}  // namespace fieldsync::discovery
