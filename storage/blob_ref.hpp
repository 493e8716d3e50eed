// Blob references: how a document's JSON body refers to a blob (docs/storage.md "Blobs").
// A reference is a JSON object holding the member "$blob":
//   {"$blob": "<SHA-256 of the bytes, 64 lowercase hex>", "size": <bytes, integer>,
//    "type": "<media type>", "root": "<chunk root, 64 lowercase hex>"}
// at any depth of the body (e.g. {"photos": [{"$blob": ...}, ...]}). Other members of the
// object are the app's and are kept. An object with "$blob" that is not a well-formed
// reference is refused by a local write (invalid_argument naming its path) and ignored when it
// arrives from a peer (it refers to nothing). "$blob" is reserved for references.
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "storage/blob_store.hpp"

namespace fieldsync::storage {

// The member name that marks a reference.
inline constexpr std::string_view kBlobRefKey = "$blob";

// False when the text `body` certainly holds no member named kBlobRefKey (neither the name
// nor any \u escape that could spell it appears): the test find_blob_refs makes before parsing.
bool may_hold_blob_refs(std::string_view body);

// Every well-formed reference of the JSON text `body`, each blob once, in document order.
// Malformed reference objects are skipped; with `problems` set, each is described there
// ("photos[1]: size must be a non-negative integer"). Text that is not JSON has none.
std::vector<BlobInfo> find_blob_refs(std::string_view body,
                                     std::vector<std::string>* problems = nullptr);

// The reference object for `info`, as JSON text (what an upload answers, ready to embed).
std::string blob_ref_json(const BlobInfo& info);

// True for a media type of the form type/subtype[;params], printable ASCII, at most
// kMaxMediaTypeBytes bytes.
bool valid_media_type(std::string_view media_type);

// Variants of a blob (docs/storage.md "Variants of a blob"): one document of the reserved
// collection `_variants` per original, its id the original's blob id (64 lowercase hex), body
//   {"of": <reference of the original>, "preview": <reference>, "thumbnail": <reference>,
//    "made_by": "fieldsync" | "app"}
// (either variant may be missing). Written only through Store::set_blob_variants.
inline constexpr std::string_view kVariantsCollection = "_variants";
inline constexpr std::string_view kMadeByFieldsync = "fieldsync";
inline constexpr std::string_view kMadeByApp = "app";

struct BlobVariants {
  BlobInfo of;
  std::optional<BlobInfo> preview;
  std::optional<BlobInfo> thumbnail;
  std::string made_by;  // kMadeByFieldsync or kMadeByApp
};

// The body of a `_variants` document, and back. parse_blob_variants() gives nullopt unless
// "of" is a well-formed reference, "made_by" one of the two values, and "preview" and
// "thumbnail", when present, well-formed references (a document from a peer that is not of
// this form names no variants).
std::string blob_variants_json(const BlobVariants& v);
std::optional<BlobVariants> parse_blob_variants(std::string_view body);

// 64 lowercase hex digits of a digest, and back (nullopt unless exactly that form).
std::string digest_hex(const crypto::Digest& d);
std::optional<crypto::Digest> parse_digest_hex(std::string_view hex);

}  // namespace fieldsync::storage
