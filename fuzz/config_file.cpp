// Fuzz target: the config file loader (config/config_loader.cpp), text an operator writes: TOML
// (toml++ and the key table) and the previous format (seeds previous_*).
// Checks: a refusal names the source; what parses survives a round trip through
// to_config_text() (TOML, whatever the input's format); every key's get_setting() text reads
// back as the same value, both as a one-line file and as a --set value.
#include "config/config_loader.hpp"
#include "fuzz/fuzz_support.hpp"

using namespace fieldsync;
using namespace fieldsync::config;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = fuzz::as_text(data, size);
  auto cfg = parse_config(text, "fuzz.conf");
  // The same text as one --set assignment per line: errors, never a crash.
  Config scratch;
  for (auto line : fuzz::split(text, '\n')) (void)apply_assignment(scratch, line);
  if (!cfg.ok()) {
    FUZZ_CHECK(cfg.error().message.rfind("fuzz.conf:", 0) == 0);
    return 0;
  }
  const std::string canonical = to_config_text(*cfg);
  ConfigFormat format = ConfigFormat::previous;
  auto again = parse_config(canonical, "again.conf", &format);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(format == ConfigFormat::toml);
  FUZZ_CHECK(to_config_text(*again) == canonical);
  for (auto key : setting_keys()) {
    // get_setting gives the value in TOML: as a one-line file it reads back equal.
    auto value = get_setting(*cfg, key);
    FUZZ_CHECK(value.ok());
    auto one = parse_config(std::string(key) + " = " + *value + "\n", "one.conf");
    auto back = one.ok() ? get_setting(*one, key) : Result<std::string>(one.error());
    if (!back.ok() || *back != *value)
      std::fprintf(stderr, "%.*s = %s does not read back\n", static_cast<int>(key.size()),
                   key.data(), value->c_str());
    FUZZ_CHECK(back.ok() && *back == *value);
    Config set;
    FUZZ_CHECK(apply_setting(set, key, *value).ok());
    FUZZ_CHECK(get_setting(set, key).value() == *value);
  }
  return 0;
}
