// Makes the seed corpora of the bundle fuzz targets from real bundles of kFuzzProject:
// fuzz/corpus/bundle_file gets the files BundleWriter wrote, fuzz/corpus/bundle_records their
// plaintexts with END signed again over the header bundle_records writes (kRecordsSalt), so
// they import completely there. Bundles have random salts and keys: each run writes different
// bytes. Every seed is imported into a fresh store first and must end as expected.
// Usage: fuzz_bundle_seeds <corpus dir>   (writes <dir>/bundle_file/*, <dir>/bundle_records/*)
//        fuzz_bundle_seeds --check        (makes and checks them, writes nothing; a ctest test)
#include <cstring>
#include <fstream>
#include <iostream>

#include "fuzz/fuzz_bundle.hpp"
#include "storage/blob_ref.hpp"

using namespace fieldsync;

namespace {

struct Seed {
  std::string name;
  Bytes file;                 // a real bundle file
  std::optional<Errc> error;  // how its import into a fresh fuzz store ends
  std::uint64_t blobs = 0;    // the blobs it stores there
};

struct Device {
  std::unique_ptr<storage::Store> store;
  explicit Device(const char* name) {
    auto o = fuzz::fuzz_store_options(fuzz::make_temp_dir(name));
    o.checkpoint_interval = 3;  // several checkpoints per batch, several batches per log
    store = fuzz::open_fuzz_store(o);
  }
  void put(const std::string& doc, const std::string& body) {
    storage::WriteRequest w;
    w.collection = "obs";
    w.doc_id = doc;
    w.body = body;
    w.use_current = true;
    FUZZ_CHECK(store->write(project(), w).ok());
  }
  void remove(const std::string& doc) {
    storage::WriteRequest w;
    w.collection = "obs";
    w.doc_id = doc;
    w.kind = storage::VersionKind::tombstone;
    w.use_current = true;
    FUZZ_CHECK(store->write(project(), w).ok());
  }
  Bytes export_bundle(bundle::ExportOptions o) {
    o.device_name = "seed producer";
    o.chunk_bytes = bundle::kMinChunkBytes;
    auto w = bundle::BundleWriter::create(*store, project(), std::move(o));
    FUZZ_CHECK(w.ok());
    Bytes out;
    for (;;) {
      auto piece = (*w)->next();
      FUZZ_CHECK(piece.ok());
      if (piece->empty()) return out;
      append(out, *piece);
    }
  }
  static ProjectId project() { return *ProjectId::parse(fuzz::kFuzzProject); }
};

std::size_t whole(ByteView b) { return b.size(); }

// The plaintext of `file` with END signed again by `producer` over the header bundle_records
// writes. `extra`, if any, is added as a record before END (and covered by the signature).
Bytes records_for_fuzzing(ByteView file, const crypto::SigningKey& producer, ByteView extra = {},
                          std::uint8_t extra_type = 0) {
  auto plain = fuzz::open_bundle(fuzz::fuzz_project_secret(), file);
  FUZZ_CHECK(plain.has_value());
  Bytes header = bundle::detail::encode_header(
      fuzz::kRecordsSalt,
      bundle::detail::project_tag(fuzz::fuzz_project_secret(), fuzz::kRecordsSalt));
  crypto::Sha256 digest;
  digest.update(header);
  Bytes out;
  ByteReader r(*plain);
  while (!r.at_end()) {
    std::size_t at = r.position();
    std::uint8_t type = r.u8();
    ByteView payload = r.raw(r.u32());
    FUZZ_CHECK(r.ok());
    if (type == static_cast<std::uint8_t>(bundle::RecordType::end)) {
      FUZZ_CHECK(r.at_end());
      if (!extra.empty()) {
        std::size_t x = out.size();
        bundle::detail::put_record_header(out, extra_type,
                                          static_cast<std::uint32_t>(extra.size()));
        append(out, extra);
        digest.update(ByteView(out).subspan(x));
      }
      auto end = bundle::detail::decode_end(payload);
      FUZZ_CHECK(end.ok());
      end->signature =
          producer.sign(bundle::detail::end_message(digest.finish(), end->entries, end->batches));
      Bytes e = bundle::detail::encode_end(*end);
      bundle::detail::put_record_header(out, type, static_cast<std::uint32_t>(e.size()));
      append(out, e);
      return out;
    }
    ByteView record = ByteView(*plain).subspan(at, r.position() - at);
    digest.update(record);
    append(out, record);
  }
  FUZZ_CHECK(false && "no END record");
  return out;
}

std::string errc_or_ok(const std::optional<Errc>& e) {
  return e ? std::string(errc_name(*e)) : "ok";
}

// Imports `file` into a store holding only kFuzzProject, as the fuzz targets do; true when
// it ends as `expected`.
bool imports_as(const char* what, const std::string& name, ByteView file,
                const std::optional<Errc>& expected, std::uint64_t blobs = 0) {
  static fuzz::ScratchStores stores("fieldsync-seeds-check");
  auto got = fuzz::import_checked(stores.get(), file, [&] { return whole(file); });
  stores.after(got.report);
  if (got.error == expected && (got.error || got.report.complete) &&
      got.report.blobs_imported == blobs)
    return true;
  std::cerr << what << "/" << name << ": import ended " << (got.error ? "with " : "")
            << errc_or_ok(got.error) << " and " << got.report.blobs_imported << " blobs, expected "
            << errc_or_ok(expected) << " and " << blobs << "\n";
  return false;
}

void write_file(const std::filesystem::path& path, ByteView bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  FUZZ_CHECK(out.good());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_bundle_seeds <corpus dir> | --check\n";
    return 2;
  }
  const bool check_only = std::strcmp(argv[1], "--check") == 0;

  Device p("fieldsync-seeds-p"), q("fieldsync-seeds-q");
  std::vector<Seed> seeds;
  std::vector<std::pair<std::string, Bytes>> records;  // extra bundle_records seeds

  // No entries: BEGIN and END only.
  seeds.push_back({"empty", p.export_bundle({}), std::nullopt});

  // One author: puts, an update, a delete; several batches and checkpoints.
  for (int i = 0; i < 5; ++i)
    p.put("p" + std::to_string(i), "{\"n\":" + std::to_string(i) + ",\"site\":\"ridge\"}");
  p.put("p1", "{\"n\":1,\"site\":\"creek\"}");
  p.remove("p2");
  bundle::ExportOptions small_batches;
  small_batches.batch_entries = 4;
  seeds.push_back({"one_author", p.export_bundle(small_batches), std::nullopt});

  // Two authors: Q imports P's bundle and writes; Q's bundle reaches P, which then notes what
  // Q holds (a bundle made for Q leaves that out), and P edits one of Q's documents.
  {
    const Bytes& from_p = seeds.back().file;
    auto got = fuzz::import_checked(*q.store, from_p, [&] { return whole(from_p); });
    FUZZ_CHECK(!got.error && got.report.applied == 7);
  }
  q.put("q0", "{\"from\":\"q\"}");
  q.put("q1", "{\"from\":\"q\",\"tags\":[1,2,3]}");
  {
    Bytes from_q = q.export_bundle({});
    auto got = fuzz::import_checked(*p.store, from_q, [&] { return whole(from_q); });
    FUZZ_CHECK(!got.error && got.report.applied == 2);
  }
  p.put("q0", "{\"from\":\"p\"}");
  seeds.push_back({"two_authors", p.export_bundle(small_batches), std::nullopt});

  // Made for Q: starts after P's entries Q holds, which a fresh store lacks (refused after
  // BEGIN).
  bundle::ExportOptions for_q;
  for_q.for_devices = {q.store->device_id()};
  seeds.push_back({"for_other_device", p.export_bundle(for_q), Errc::failed_precondition});

  // Blobs: P uploads a photo (two records for its chunk at 4 KiB records), its preview and
  // thumbnail, a binary blob and an empty one, and refers to them; bundles with all of them,
  // with the variants only, and a blob record Q made of a blob nobody refers to.
  {
    auto& blobs = p.store->blobs();
    auto bytes = [](std::size_t n, std::uint8_t seed) {
      Bytes b(n);
      for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(seed + i * 131 + i / 7);
      return b;
    };
    auto photo = blobs.put(Device::project(), bytes(6000, 1), "image/jpeg");
    auto preview = blobs.put(Device::project(), bytes(900, 2), "image/jpeg");
    auto thumb = blobs.put(Device::project(), bytes(200, 3), "image/jpeg");
    auto binary = blobs.put(Device::project(), bytes(1500, 4), "application/octet-stream");
    auto empty = blobs.put(Device::project(), {}, "text/plain");
    FUZZ_CHECK(photo.ok() && preview.ok() && thumb.ok() && binary.ok() && empty.ok());
    p.put("site", "{\"photo\":" + storage::blob_ref_json(*photo) + ",\"files\":[" +
                      storage::blob_ref_json(*binary) + "," + storage::blob_ref_json(*empty) +
                      "]}");
    FUZZ_CHECK(p.store
                   ->set_blob_variants(Device::project(), *photo, *preview, *thumb,
                                       storage::kMadeByFieldsync)
                   .ok());
    FUZZ_CHECK(blobs.index(Device::project()).ok());
    bundle::ExportOptions all;
    all.max_record_bytes = 4096;
    seeds.push_back({"blobs", p.export_bundle(all), std::nullopt, 5});
    bundle::ExportOptions variants;
    variants.blobs = bundle::BlobSelection::variants;
    seeds.push_back({"blobs_variants", p.export_bundle(variants), std::nullopt, 2});
  }

  // Records-only seeds: an extension record (skipped, still signed), and a blob nobody refers
  // to (skipped).
  {
    Bytes ext = {'x', 't'};
    records.emplace_back("extension",
                         records_for_fuzzing(seeds[1].file, p.store->signing_key(), ext, 0x9f));
    Bytes stray = {'s', 't', 'r', 'a', 'y'};
    Bytes head = bundle::detail::encode_blob({crypto::sha256(stray), stray.size(), 1});
    records.emplace_back("blob_unreferenced",
                         records_for_fuzzing(seeds[1].file, p.store->signing_key(), head, 0x81));
  }

  bool ok = true;
  std::vector<std::pair<std::string, Bytes>> file_out, records_out;
  for (auto& s : seeds) {
    ok = imports_as("bundle_file", s.name, s.file, s.error, s.blobs) && ok;
    file_out.emplace_back(s.name, s.file);
    records_out.emplace_back(s.name, records_for_fuzzing(s.file, p.store->signing_key()));
    // What bundle_records does with the plaintext (its smallest chunk size here).
    Bytes sealed = fuzz::seal_bundle(fuzz::fuzz_project_secret(), fuzz::kRecordsSalt,
                                     records_out.back().second, bundle::kMinChunkBytes);
    ok = imports_as("bundle_records", s.name, sealed, s.error, s.blobs) && ok;
  }
  for (auto& [name, plain] : records) {
    Bytes sealed = fuzz::seal_bundle(fuzz::fuzz_project_secret(), fuzz::kRecordsSalt, plain,
                                     bundle::kMinChunkBytes);
    ok = imports_as("bundle_records", name, sealed, std::nullopt) && ok;
    records_out.emplace_back(name, std::move(plain));
  }
  if (!ok) return 1;
  if (check_only) {
    std::cerr << file_out.size() << " bundle_file and " << records_out.size()
              << " bundle_records seeds made and checked\n";
    return 0;
  }
  const std::filesystem::path dir = argv[1];
  for (const auto& [sub, list] :
       {std::pair{"bundle_file", &file_out}, std::pair{"bundle_records", &records_out}}) {
    std::filesystem::create_directories(dir / sub);
    for (const auto& [name, bytes] : *list) {
      write_file(dir / sub / name, bytes);
      std::cerr << "wrote " << (dir / sub / name).string() << " (" << bytes.size() << " bytes)\n";
    }
  }
  return 0;
}
