#include "discovery/project_discovery.hpp"
#include "common/json_parse.hpp"

#include <boost/json/value.hpp>

namespace fieldsync::discovery {

namespace json = boost::json;

std::string_view policy_name(SelectionPolicy p) {
  return p == SelectionPolicy::automatic ? "auto" : "manual";
}

Result<ProjectDiscovery> ProjectDiscovery::parse(std::string_view settings_json) {
  ProjectDiscovery out;
  boost::system::error_code ec;
  json::value v = parse_json(settings_json, ec);
  if (ec || !v.is_object())
    return make_error(Errc::invalid_argument, "project settings are not a JSON object");
  const auto* d = v.as_object().if_contains("discovery");
  if (!d || d->is_null()) return out;
  if (!d->is_object())
    return make_error(Errc::invalid_argument, "settings.discovery must be an object");
  const auto& o = d->as_object();
  if (const auto* vis = o.if_contains("visible")) {
    if (!vis->is_bool())
      return make_error(Errc::invalid_argument, "settings.discovery.visible must be true or false");
    out.visible = vis->as_bool();
  }
  if (const auto* pol = o.if_contains("policy")) {
    if (pol->is_string() && pol->as_string() == "manual") {
      out.policy = SelectionPolicy::manual;
    } else if (pol->is_string() && pol->as_string() == "auto") {
      out.policy = SelectionPolicy::automatic;
    } else {
      return make_error(Errc::invalid_argument,
                        "settings.discovery.policy must be \"manual\" or \"auto\"");
    }
  }
  return out;
}

}  // namespace fieldsync::discovery
