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

#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "storage/blob_store.hpp"

namespace fieldsync::storage {

// The member name that marks a reference.
inline constexpr std::string_view kBlobRefKey = "$blob";

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

// 64 lowercase hex digits of a digest, and back (nullopt unless exactly that form).
std::string digest_hex(const crypto::Digest& d);
std::optional<crypto::Digest> parse_digest_hex(std::string_view hex);

}  // namespace fieldsync::storage
