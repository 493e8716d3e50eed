// Bounded random-input test of the config parser (runs under ASan/UBSan in CI): mutated
// configs (the shipped TOML file, and the file of the previous format) never crash, every
// refusal names the source, and what parses survives a round trip through TOML.
#include <catch2/catch.hpp>
#include <fstream>
#include <random>
#include <sstream>

#include "common/ids.hpp"
#include "config/config_loader.hpp"

using namespace fieldsync::config;

TEST_CASE("mutated config files are parsed or refused with a located message") {
  auto file =
      GENERATE(as<std::string>{}, "/config/fieldsyncd.conf", "/tests/config/previous_format.conf");
  std::ifstream in(FIELDSYNC_SOURCE_DIR + file, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string seed =
      ss.str() + "[peer.a]\naddress = \"h:1\"\ndevice = \"" + fieldsync::DeviceId{}.str() + "\"\n";
  REQUIRE(seed.size() > 1000);

  static const std::string alphabet =
      "[]=#;\"'\\. \t\n\r\x01\xff"
      "0123456789kMGT-_:apiz";
  std::mt19937_64 rng(20261123);  // fixed: failures reproduce
  int parsed = 0, refused = 0;
  for (int round = 0; round < 1000; ++round) {
    std::string text = seed;
    int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      std::size_t pos = text.empty() ? 0 : rng() % text.size();
      char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 4) {
        case 0:
          if (!text.empty()) text[pos] = c;
          break;
        case 1: text.insert(pos, 1, c); break;
        case 2:
          if (!text.empty()) text.erase(pos, 1 + rng() % 16);
          break;
        case 3: text.insert(pos, text.substr(rng() % text.size(), rng() % 64)); break;
      }
    }
    auto r = parse_config(text, "fuzz.conf");
    if (r.ok()) {
      ++parsed;
      // Whatever parsed must survive a round trip unchanged.
      auto again = parse_config(to_config_text(*r), "again.conf");
      REQUIRE(again.ok());
      CHECK(to_config_text(*again) == to_config_text(*r));
    } else {
      ++refused;
      INFO(r.error().message);
      CHECK(r.error().message.rfind("fuzz.conf:", 0) == 0);
    }
  }
  CHECK(parsed > 0);
  CHECK(refused > 0);
}
