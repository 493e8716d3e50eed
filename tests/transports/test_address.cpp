// Address URIs and the handshake budget: plain values, no I/O.
#include <catch2/catch.hpp>

#include "transports/address.hpp"
#include "transports/handshake_budget.hpp"

using namespace fieldsync;
using namespace fieldsync::transports;

TEST_CASE("addresses are URIs, a bare host:port means tcp", "[transports]") {
  CHECK(parse_address("tcp://10.0.0.5:7891")->str() == "tcp://10.0.0.5:7891");
  CHECK(parse_address("10.0.0.5:7891")->str() == "tcp://10.0.0.5:7891");
  CHECK(parse_address("[fe80::1]:7891")->rest == "[fe80::1]:7891");
  CHECK(parse_address("hub.local:7891")->scheme == "tcp");
  CHECK(parse_address("mem://alpha")->scheme == "mem");
  CHECK(parse_address("ble://AA:BB:CC:DD:EE:FF")->rest == "AA:BB:CC:DD:EE:FF");
  for (const char* bad : {"", "tcp://", "10.0.0.5", "10.0.0.5:0", "10.0.0.5:65536", "::1:7891",
                          "TCP://a:1", "tcp://a b:1", "1tcp://x", "tcp://a:1\n", "x:y"}) {
    INFO(bad);
    auto r = parse_address(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_argument);
  }
  CHECK_FALSE(parse_address(std::string(kMaxAddressBytes + 1, 'a')).ok());
  auto hp = split_host_port("[::1]:80");
  REQUIRE(hp);
  CHECK(hp->first == "::1");
  CHECK(hp->second == 80);
}

TEST_CASE("a full handshake budget evicts the oldest holder", "[transports]") {
  HandshakeBudget budget(2);
  std::vector<std::string> evicted, logged;
  auto take = [&](const std::string& name) {
    auto s = budget.take(name, [&](const std::string& line) { logged.push_back(line); });
    REQUIRE(s);
    s->on_evict([&evicted, name] { evicted.push_back(name); });
    return s;
  };
  auto a = take("a");
  auto b = take("b");
  CHECK(budget.in_use() == 2);
  auto c = take("c");  // evicts a
  CHECK(evicted == std::vector<std::string>{"a"});
  CHECK_FALSE(a->held());
  CHECK(budget.in_use() == 2);
  REQUIRE(logged.size() == 1);
  CHECK(logged[0].find("(a)") != std::string::npos);
  b->release();  // admitted
  CHECK(budget.in_use() == 1);
  auto d = take("d");  // room: nobody evicted
  CHECK(evicted.size() == 1);
  c.reset();  // a connection that ended frees its slot
  CHECK(budget.in_use() == 1);
  HandshakeBudget none(0);
  CHECK_FALSE(none.take("x"));
}
