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

Bytes encode_header(const VersionHeader& h);
// Errors: invalid_argument for malformed bytes, unsupported for a newer format.
Result<VersionHeader> decode_header(ByteView bytes);
VersionId version_id_of(ByteView encoded_header);

bool valid_collection(std::string_view c);
bool valid_doc_id(std::string_view id);

}  // namespace fieldsync::storage
