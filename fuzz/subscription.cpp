// Fuzz target: subscriptions (storage/subscription.cpp), the JSON a client sends to
// PUT /v1/projects/{pid}/subscription and a peer sends in SUBSCRIPTION.
// Input: line 1 is the subscription's JSON, the rest a document body to match against it.
// Checks: what parses has a canonical form that parses again to the same canonical form (and
// is accepted by parse_canonical), within the limits; a subscription is within itself and
// within everything; matching any body (also invalid JSON) neither crashes nor throws, and a
// reserved collection always matches.
#include <string_view>

#include "fuzz/fuzz_support.hpp"
#include "storage/subscription.hpp"

using namespace fieldsync;
using storage::Subscription;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::size_t nl = in.find('\n');
  std::string_view text = in.substr(0, nl);
  std::string_view body = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  auto s = Subscription::parse(text);
  if (!s.ok()) {
    FUZZ_CHECK(s.error().code == Errc::invalid_argument);
    FUZZ_CHECK(!Subscription::parse_canonical(text).ok());
    return 0;
  }
  const std::string& c = s->canonical();
  FUZZ_CHECK(c.size() <= storage::kMaxSubscriptionBytes);
  auto again = Subscription::parse_canonical(c);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->canonical() == c);
  FUZZ_CHECK(again->everything() == s->everything());
  FUZZ_CHECK(s->within(*s));
  FUZZ_CHECK(s->within(Subscription{}));
  FUZZ_CHECK(!Subscription{}.within(*s) || s->everything());
  bool m = s->matches("obs", body);
  FUZZ_CHECK(m == again->matches("obs", body));
  FUZZ_CHECK(s->matches("_members", body));
  (void)s->wants_collection("obs");
  return 0;
}
