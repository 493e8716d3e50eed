// ProjectDiscovery: a project's discovery settings, read from the "discovery" member of the
// project's settings JSON (PATCH /v1/projects/{pid} {"settings": {...}}):
//
//   {"discovery": {"visible": true, "policy": "manual"}}
//
//   visible  true (default): announce this project's rotating tag on the local network;
//            false: no tag, so members nearby do not recognise this device for it.
//   policy   "manual" (default): discovered members are listed; a user picks one to sync with.
//            "auto": sync with every discovered device that proves membership (its tag matches).
//
// Other settings members are left alone. Stateless parse; thread-safe.
// Errors (parse): invalid_argument when "discovery" is present but malformed (the caller logs
// it and uses the defaults, so a typo never exposes more than the defaults do).
#pragma once

#include <string_view>

#include "common/result.hpp"

namespace fieldsync::discovery {

enum class SelectionPolicy { manual, automatic };

class ProjectDiscovery {
 public:
  bool visible = true;
  SelectionPolicy policy = SelectionPolicy::manual;

  static Result<ProjectDiscovery> parse(std::string_view settings_json);
};

std::string_view policy_name(SelectionPolicy p);

}  // namespace fieldsync::discovery
