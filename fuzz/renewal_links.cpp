// Fuzz target: the renewal links a dialed peer's TLS certificate carries (crypto/renewal.hpp,
// crypto/tls_context.cpp; docs/protocol.md section 1 "Renewed identities").
// Input byte 0 picks the mode:
//   odd:  the rest is a whole DER certificate, read as the verify callback reads it;
//   even: the rest is the extension's payload (version, count, links).
// Checks: parsed links re-encode to the same bytes; a chain walk over them never proves a key
// to itself and never crashes (signatures are fuzzer-made, so it almost never proves).
#include <algorithm>

#include "crypto/renewal.hpp"
#include "crypto/tls_context.hpp"
#include "fuzz/fuzz_support.hpp"

using namespace fieldsync;
using namespace fieldsync::crypto;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  ByteView rest(data + 1, size - 1);
  std::vector<RenewalLink> links;
  if (data[0] & 1) {
    auto got = certificate_renewal_links(rest);
    if (!got) return 0;
    links = std::move(*got);
    FUZZ_CHECK(links.size() <= kMaxRenewalLinks);
  } else {
    auto got = parse_renewal_links(rest);
    if (!got) return 0;
    links = std::move(*got);
    Bytes again = encode_renewal_links(links);
    FUZZ_CHECK(again.size() == rest.size());
    FUZZ_CHECK(std::equal(again.begin(), again.end(), rest.begin()));
  }
  if (!links.empty()) {
    FUZZ_CHECK(!renewal_chain_proves(links, links.front().from, links.front().from));
    (void)renewal_chain_proves(links, links.front().from, links.back().to);
  }
  return 0;
}
