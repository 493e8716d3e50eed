// Fuzz target: InviteCode::decode (sync/invite_code.cpp), a code pasted by a user.
// Input byte 0 picks the mode:
//   odd (e.g. "c"):  the rest is the code text as typed (prefix, base32, separators, checksum);
//   even (e.g. "p"): the rest is the binary payload; the target appends its valid checksum and
//         base32-encodes it, so the fuzzer reaches the payload decoder behind the checksum.
// Checks: a decoded code re-encodes to a code that decodes to the same fields.
#include <cctype>

#include "common/encoding.hpp"
#include "crypto/crypto.hpp"
#include "fuzz/fuzz_support.hpp"
#include "sync/invite_code.hpp"

using namespace fieldsync;
using namespace fieldsync::sync;

namespace {

bool same(const InviteCode& a, const InviteCode& b) {
  return a.inviter == b.inviter && a.project == b.project && a.project_name == b.project_name &&
         a.invite_id == b.invite_id && a.secret == b.secret && a.expires_ms == b.expires_ms &&
         a.addresses == b.addresses;
}

std::string code_for_payload(ByteView payload) {
  Bytes raw(payload.begin(), payload.end());
  auto sum = crypto::sha256(payload);
  raw.insert(raw.end(), sum.begin(), sum.begin() + 4);
  std::string text = to_base32(raw);
  for (auto& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return "FS1:" + text;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  ByteView rest(data + 1, size - 1);
  std::string text = (data[0] & 1) ? std::string(as_chars(rest)) : code_for_payload(rest);
  auto c = InviteCode::decode(text);
  if (!c.ok()) {
    FUZZ_CHECK(!c.error().message.empty());
    return 0;
  }
  if (!(data[0] & 1)) FUZZ_CHECK(c->encode() == text);  // payload decoding is canonical
  auto again = InviteCode::decode(c->encode());
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(same(*c, *again));
  return 0;
}
