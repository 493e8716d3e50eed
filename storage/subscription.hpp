// Subscription: what a device wants of a project (docs/storage.md "Subscriptions"): some
// collections, and a filter on document fields (equality, set membership, a numeric or text
// range, a lat/lon box), combined with "all"/"any". No subscription (everything()) is a full
// replica, as every device was before subscriptions existed.
//
// A version is wanted when its collection is reserved (a leading '_': membership, variants:
// every device holds them) or passes `collections`, and its body passes `where`. Tombstones
// have no body: whether a delete reaches a subscribed device is decided by the sender from
// the version it supersedes (Store::read_log), like any change that makes a document leave.
//
// The JSON form (API, syncctl, the wire) is checked on the way in against the named limits
// below; canonical() is the one spelling every device produces for the same subscription, so
// two devices compare subscriptions by text, and a text that is not canonical is refused when
// it comes from a peer.
//
// Thread-safety: an immutable value once parsed; matches() may run on any thread.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace fieldsync::storage {

// Limits of a subscription's JSON form, checked when it is set (API) and when it is read
// (from the store or a peer).
inline constexpr std::size_t kMaxSubscriptionBytes = 4096;  // the JSON text
inline constexpr std::size_t kMaxSubscriptionTerms = 64;    // eq/in/range/bbox terms in all
inline constexpr std::size_t kMaxSubscriptionDepth = 8;     // nesting of all/any
inline constexpr std::size_t kMaxSubscriptionCollections = 64;
inline constexpr std::size_t kMaxSubscriptionValues = 256;  // values of one "in"
inline constexpr std::size_t kMaxSubscriptionPathBytes = 256;
// Peers a project may give a selection of their own (Store::set_selection).
inline constexpr std::size_t kMaxSelections = 256;

class Subscription {
 public:
  // Everything: a full replica.
  Subscription();
  ~Subscription();
  Subscription(const Subscription&);
  Subscription& operator=(const Subscription&);
  Subscription(Subscription&&) noexcept;
  Subscription& operator=(Subscription&&) noexcept;

  // Parses the JSON form. invalid_argument naming what is wrong (unknown key, bad path,
  // wrong type, a limit above). `{}` (or "null") is everything.
  static Result<Subscription> parse(std::string_view json);
  // As parse(), and the text must be canonical (what a peer or the store sends).
  static Result<Subscription> parse_canonical(std::string_view json);

  bool everything() const;
  // The canonical JSON form ("{}" for everything).
  const std::string& canonical() const;
  bool operator==(const Subscription& o) const { return canonical() == o.canonical(); }

  // Whether a version of `collection` with this body is wanted. A body that is not a JSON
  // object is wanted only by everything().
  bool matches(std::string_view collection, std::string_view body) const;
  // The same for a body parsed already (a query that reads it for more than this).
  bool matches_parsed(std::string_view collection, const boost::json::value& body) const;
  // Whether the collection can hold wanted versions at all (reserved ones always can).
  bool wants_collection(std::string_view collection) const;

  // Whether every version this subscription wants, `wider` wants too (a conservative test:
  // false may be said of a subscription that is in fact narrower). True when `wider` is
  // everything, the two are equal, or this one adds conditions to all of wider's.
  bool within(const Subscription& wider) const;
  // What both want: the common collections, and both filters (everything with x is x).
  // invalid_argument when the result would exceed the limits.
  static Result<Subscription> intersect(const Subscription& a, const Subscription& b);

  // The conditions every match passes that an index can narrow to (store_indexes.cpp): those
  // of the top-level "all" (or the one condition) that are eq, in, range or bbox (a range on
  // its latitude path). A document passes each: a superset, matches() still decides.
  struct IndexTerm {
    std::string path;                          // dot path
    std::vector<boost::json::value> values;    // eq, in: equal to one of these
    std::optional<boost::json::value> lo, hi;  // range, bbox: bounds
    bool lo_open = false, hi_open = false;     // gt, lt: the bound itself is not in
  };
  std::vector<IndexTerm> index_terms() const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

// What a log read for a peer leaves out (Store::read_log).
struct LogFilter {
  Subscription want;         // what the receiver is given (its subscription, maybe restricted)
  bool left_out_ok = false;  // it accepts entries left out here as left out
  // It takes proven runs (docs/storage.md "Proven runs"): with left_out_ok and a `want` that
  // is not everything, a sealed run gives only the wanted entries, each with its audit path.
  bool proven_ok = false;
};

// How Store::apply_log treats a batch's left-out entries.
struct ApplyOptions {
  // The sender left out only what our subscription does not want. False when it gives us
  // less (a selection of its own for us): what it left out is asked for again from others.
  bool judged = true;
};

// What Store::set_subscription did.
struct SubscriptionChange {
  std::uint32_t documents_removed = 0;  // left this device
  std::uint32_t documents_kept = 0;     // would have left, but hold undelivered own versions
  bool asks_again = false;              // versions left out before are asked for again
};

}  // namespace fieldsync::storage
