// Canonical binary encoding of a VersionHeader (docs/storage.md "Version encoding").
// A version's id is SHA-256 of exactly these bytes, so every device that holds the
// bytes can check the id; the bytes are stored and forwarded unchanged.
#pragma once

#include "common/result.hpp"
#include "storage/types.hpp"

namespace fieldsync::storage {

inline constexpr std::uint8_t kVersionFormat = 1;
inline constexpr std::size_t kMaxCollectionBytes = 64;
inline constexpr std::size_t kMaxDocIdBytes = 128;
inline constexpr std::size_t kMaxParents = 64;
inline constexpr std::size_t kMaxExtensionBytes = 4096;

// Extension fields (docs/storage.md "Version encoding"): a run of (type u8, length u16,
// value) records, ascending by type, each type at most once. Types this daemon does not
// know are kept and forwarded unchanged, like the rest of the header.
inline constexpr std::uint8_t kExtErasureEpoch = 1;  // u64: see erasure_epoch()

// The hlc of the latest erasure of the version's document that its writer held when it wrote
// it (docs/storage.md "Erasure"); 0 when the header names none (or its extensions do not read).
std::uint64_t erasure_epoch(const VersionHeader& h);
// Sets (or, with 0, removes) that field, keeping the other extension records.
void set_erasure_epoch(VersionHeader& h, std::uint64_t hlc);

Bytes encode_header(const VersionHeader& h);
// Errors: invalid_argument for malformed bytes, unsupported for a newer format.
Result<VersionHeader> decode_header(ByteView bytes);
VersionId version_id_of(ByteView encoded_header);

// The characters of names and ids (docs/api.md "Names and ids", docs/storage.md).
// valid_*: what a stored or received version may hold (kept as it always was, so versions
// written by older daemons still decode). valid_new_*: what a local write may create; also
// refuses "." and "..", which clients that normalise URLs cannot reach.
inline constexpr std::string_view kCollectionRule = "1-64 of A-Z a-z 0-9 _ - ., not . or ..";
inline constexpr std::string_view kDocIdRule = "1-128 of A-Z a-z 0-9 _ - . : @ ~ +, not . or ..";
bool valid_collection(std::string_view c);
bool valid_doc_id(std::string_view id);
bool valid_new_collection(std::string_view c);
bool valid_new_doc_id(std::string_view id);

}  // namespace fieldsync::storage
