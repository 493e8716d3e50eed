// Document bodies at rest (docs/storage.md "Bodies at rest"): how a log record stores a body.
//
// A body is stored compressed (zstd) when that makes it smaller, with the project's trained
// dictionary once it has one. Dictionaries are numbered store-wide (u16, from 1) and kept in
// `meta` for good: a record names the one it was compressed with. A project's first
// kDictionaryTrainingBodies compressed bodies go without one; the write transaction that packs
// the next trains one on a sample of the project's bodies as it sees them
// (Store::Impl::put_log), and the project's later bodies use it.
//
// Thread-safety: every member is safe from any thread (one shared mutex guards the tables;
// compressing and decompressing run outside it on shared, immutable dictionaries). Only write
// transactions (one at a time: LMDB's writer) count bodies without a dictionary and add
// dictionaries; bodies are packed with one on other threads too (Store::prepare_log).
// Errors: unpack() answers data_loss for a stored body that does not decompress (a dictionary
// it names is missing, or the bytes are corrupt); pack() fails only when zstd does (internal).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>

#include "common/bytes.hpp"
#include "common/compress.hpp"
#include "common/ids.hpp"
#include "common/result.hpp"

namespace fieldsync::storage {

// Bodies a project writes compressed without a dictionary before one is trained for it.
inline constexpr std::size_t kDictionaryTrainingBodies = 1024;
// At most this many bodies (and kDictionarySampleBytes) are the sample a dictionary learns from.
inline constexpr std::size_t kDictionarySampleBodies = 4096;
inline constexpr std::size_t kDictionarySampleBytes = 4u << 20;
// Bodies shorter than this are stored as they are (a frame would not pay for itself).
inline constexpr std::size_t kMinCompressedBody = 32;

class BodyCodec {
 public:
  // level: storage.body_compression_level (0: bodies are stored as they are);
  // dictionary_bytes: storage.body_dictionary_bytes (0: no dictionaries are trained).
  BodyCodec(int level, std::size_t dictionary_bytes)
      : level_(level), dict_bytes_(dictionary_bytes) {}

  struct Packed {
    bool compressed = false;
    std::uint16_t dict = 0;  // 0: none
    Bytes frame;             // the zstd frame when compressed
  };
  // The stored form of a body of project `p`: compressed when that is smaller. A body
  // compressed without a dictionary counts towards training one (note_untrained).
  Result<Packed> pack(const ProjectId& p, ByteView body) const;
  // The body a stored frame holds; `max_bytes`: the most it may declare.
  Status unpack(std::uint16_t dict, ByteView frame, std::size_t max_bytes, Bytes& out) const;
  Status unpack(std::uint16_t dict, ByteView frame, std::size_t max_bytes, std::string& out) const;

  // Loading and adding dictionaries (Store::open; put_log when it trained one).
  Status add_dictionary(std::uint16_t number, ByteView dict);
  void set_current(const ProjectId& p, std::uint16_t number);
  std::optional<std::uint16_t> current(const ProjectId& p) const;
  // A dictionary added (its bytes() to store it again); null if unknown.
  std::shared_ptr<const ZstdDictionary> dictionary(std::uint16_t number) const;
  void forget_project(const ProjectId& p);

  // Whether the project has packed kDictionaryTrainingBodies bodies without a dictionary.
  bool due(const ProjectId& p) const;
  // A training that found too little to learn from: counted again from zero.
  void retry_later(const ProjectId& p);
  bool trains() const { return level_ > 0 && dict_bytes_ > 0; }
  std::size_t dictionary_bytes() const { return dict_bytes_; }
  int level() const { return level_; }

 private:
  void note_untrained(const ProjectId& p) const;
  // The size a frame declares (within max_bytes) and the dictionary it needs.
  Result<std::pair<std::size_t, std::shared_ptr<const ZstdDictionary>>> prepare(
      std::uint16_t dict, ByteView frame, std::size_t max_bytes) const;

  const int level_;
  const std::size_t dict_bytes_;
  mutable std::shared_mutex mu_;
  std::map<std::uint16_t, std::shared_ptr<const ZstdDictionary>> dicts_;  // under mu_
  std::map<ProjectId, std::uint16_t> current_;                            // under mu_
  mutable std::map<ProjectId, std::size_t> untrained_;                    // under mu_
};

}  // namespace fieldsync::storage
