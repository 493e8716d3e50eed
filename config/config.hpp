// Config: every setting of fieldsyncd, with its default. Loaded from the config file
// (docs/operations.md "Configuration"), then overridden by command-line flags.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "storage/types.hpp"

namespace fieldsync::config {

struct ApiOptions {
  // Unix socket; empty = /run/fieldsync/api.sock when root, else <data_dir>/api.sock.
  std::filesystem::path socket_path;
  std::uint32_t socket_mode = 0660;  // api.socket_mode (octal in the file)
  std::string socket_group;          // api.socket_group: group allowed to use the socket
  // api.token_group: group that may read <data_dir>/api.token (0640, the data directory 0710
  // with that group); empty: owner only (0600, 0700).
  std::string token_group;
  bool http_enabled = true;                // api.http_enabled
  std::string http_address = "127.0.0.1";  // api.http_address: loopback unless set explicitly
  std::uint16_t http_port = 7890;  // api.http_port (0 = ephemeral, written to data_dir/api.port)
  std::uint64_t max_body_bytes = 8u << 20;  // api.max_body_bytes: one request body
  std::uint32_t max_connections = 256;      // api.max_connections: TCP connections
  std::uint32_t max_page_size = 1000;       // api.max_page_size: docs/changes per response
  std::uint32_t max_sort_docs = 100000;     // api.max_sort_docs: matches a sorted list may sort
  // api.reader_threads: threads that answer reads (documents, lists, the changes feed's normal
  // pages) off the event loop; as many threads of their own check received sync batches ahead
  // of their apply; 0: on it
  std::uint32_t reader_threads = 2;
  // api.max_group_writes: document writes committed together by the writer thread (one fsync);
  // 0: no writer thread, each write commits on the event loop
  std::uint32_t max_group_writes = 64;
  std::uint32_t max_json_depth = 32;  // api.max_json_depth: nesting of request JSON (bodies too)
  std::uint32_t request_timeout_ms = 30000;   // api.request_timeout_ms: read of one request
  std::uint32_t longpoll_timeout_ms = 60000;  // api.longpoll_timeout_ms: upper bound for ?timeout=
  std::uint32_t sse_heartbeat_ms = 15000;     // api.sse_heartbeat_ms
  std::uint32_t shutdown_grace_ms = 5000;     // api.shutdown_grace_ms: in-flight requests at stop
  // Request framing: each part of a request is bounded before it is buffered.
  std::uint64_t max_header_bytes = 16u << 10;  // api.max_header_bytes: request line + fields
  std::uint64_t max_chunk_extension_bytes = 1u << 10;  // api.max_chunk_extension_bytes: per chunk
  std::uint64_t max_trailer_bytes = 4u << 10;          // api.max_trailer_bytes: chunked trailer
  // Connection budgets: TCP (api.max_connections) and the Unix socket have separate ones.
  std::uint32_t max_unix_connections = 64;   // api.max_unix_connections
  std::uint32_t max_streams = 32;            // api.max_streams: SSE + long-poll per listener
  std::uint32_t header_timeout_ms = 5000;    // api.header_timeout_ms: first authenticated header
  std::uint32_t accept_retry_max_ms = 1000;  // api.accept_retry_max_ms: backoff at fd exhaustion
  std::uint64_t max_stream_buffer_bytes = 1u << 20;  // api.max_stream_buffer_bytes: unsent SSE
  // api.max_stream_bytes: one streamed request body (routes that take their body as a stream)
  std::uint64_t max_stream_bytes = 4ull << 30;
  // api.cors_origins: comma-separated origins (scheme://host[:port]) whose web pages may call
  // the HTTP API from a browser (CORS); empty: none.
  std::string cors_origins;
  std::uint32_t ticket_ttl_ms = 60000;  // api.ticket_ttl_ms: life of a stream ticket
};

struct SyncOptions {
  bool enabled = true;                       // sync.enabled
  std::string listen_address = "0.0.0.0";    // sync.listen_address
  std::uint16_t listen_port = 7891;          // sync.listen_port (0 = ephemeral)
  std::uint32_t max_frame_bytes = 4u << 20;  // sync.max_frame_bytes
  std::uint32_t batch_entries = 2048;        // sync.batch_entries: log entries per batch
  std::uint64_t batch_bytes = 2u << 20;      // sync.batch_bytes: body bytes per batch
  std::uint32_t window_batches = 4;  // sync.window_batches: unacknowledged batches in flight
  std::uint32_t handshake_timeout_ms = 10000;  // sync.handshake_timeout_ms
  std::uint32_t idle_timeout_ms = 120000;      // sync.idle_timeout_ms
  std::uint32_t connect_timeout_ms = 10000;    // sync.connect_timeout_ms
  std::uint32_t max_peers = 32;                // sync.max_peers: concurrent sync sessions
  // Incoming connections still in the TLS or sync handshake: a budget of their own, separate
  // from max_peers (the oldest is dropped when full); their TLS deadline; devices pending
  // approval kept after they disconnect (trust_policy ask); the listener's longest pause when
  // out of descriptors; log lines of one kind that remote parties can cause per interval.
  std::uint32_t max_handshakes = 16;              // sync.max_handshakes
  std::uint32_t tls_handshake_timeout_ms = 3000;  // sync.tls_handshake_timeout_ms
  std::uint32_t max_pending_devices = 32;         // sync.max_pending_devices
  std::uint32_t accept_backoff_max_ms = 1000;     // sync.accept_backoff_max_ms
  std::uint32_t log_lines_per_key = 10;           // sync.log_lines_per_key
  std::uint32_t log_interval_ms = 10000;          // sync.log_interval_ms
  std::uint32_t retry_min_ms = 1000;              // sync.retry_min_ms: first reconnect backoff
  std::uint32_t retry_max_ms = 300000;            // sync.retry_max_ms: backoff ceiling
  std::uint32_t max_projects = 1024;  // sync.max_projects: membership proofs in one PROJECTS frame
  std::uint32_t compression_level = 3;  // sync.compression_level: zstd level of batches, 0 = off
  std::uint32_t write_chunk_bytes =
      256u << 10;  // sync.write_chunk_bytes: bytes handed to the transport per write
  // sync.trust_policy: "auto" syncs with any device that proves a project and is not removed
  // from it; "ask" holds a device that is neither a listed member nor approved as pending.
  std::string trust_policy = "auto";
  // blob.slow_link_policy: the most a device fetches by itself over a link that is not fast
  // (transports::LinkClass); none: no blob travels on it, not even on demand.
  storage::BlobPolicy slow_link_blobs = storage::BlobPolicy::none;
  // ble.batch_entries, ble.batch_bytes, ble.window_batches: the batches of a session over a
  // slow link (Bluetooth LE), small so that a new write is not queued behind megabytes.
  std::uint32_t slow_batch_entries = 64;
  std::uint64_t slow_batch_bytes = 16u << 10;
  std::uint32_t slow_window_batches = 2;
};

// Local-network discovery over mDNS / DNS-SD through the system's avahi-daemon
// (docs/operations.md "Discovery"). Per-project visibility and policy live in the project
// settings: {"discovery": {"visible": true, "policy": "manual" | "auto"}}.
struct DiscoveryOptions {
  bool enabled = true;              // discovery.enabled: announce and browse at all
  std::uint32_t refresh_ms = 5000;  // discovery.refresh_ms: re-check tags, visibility, auto peers
  std::uint32_t ttl_ms =
      120000;  // discovery.ttl_ms: drop a device unconfirmed this long (Avahi down)
  std::uint32_t max_devices = 256;  // discovery.max_devices: devices and service instances tracked
  std::uint32_t max_announced_projects =
      32;  // discovery.max_announced_projects: tags in our TXT record
  std::uint32_t avahi_retry_ms =
      5000;  // discovery.avahi_retry_ms: retry when the system bus is unreachable
};

// Bluetooth LE through BlueZ (docs/operations.md "Bluetooth LE"): finding and syncing with
// devices in radio range when there is no network. Off by default while it is new.
struct BleOptions {
  bool enabled = false;                        // ble.enabled
  std::string adapter = "hci0";                // ble.adapter: the BlueZ adapter to use
  bool advertise = true;                       // ble.advertise: let devices in range find this one
  bool scan = true;                            // ble.scan: look for devices in range
  std::uint32_t window = 8;                    // ble.window: unacknowledged frames in flight
  std::uint32_t retransmit_ms = 2000;          // ble.retransmit_ms
  std::uint32_t connect_timeout_ms = 20000;    // ble.connect_timeout_ms: GATT connect
  std::uint32_t handshake_timeout_ms = 30000;  // ble.handshake_timeout_ms: TLS over BLE
  std::uint32_t retry_ms = 5000;    // ble.retry_ms: re-check the bus, BlueZ and the adapter
  std::uint32_t max_links = 4;      // ble.max_links: BLE streams at once, both ways
  std::uint32_t refresh_ms = 5000;  // ble.refresh_ms: re-check tags, rotate the advertisement
  bool ip_hint = true;  // ble.ip_hint: put the TCP address (encrypted) in the advertisement
  // ble.tcp_retry_ms: a device synced over BLE that advertises a TCP address: how long
  // after a failed try that address is tried again
  std::uint32_t tcp_retry_ms = 30000;
};

// Bundle files: sync by USB stick (docs/protocol.md "Bundles").
struct BundleOptions {
  std::uint32_t chunk_bytes = 64u << 10;  // bundle.chunk_bytes: plaintext bytes per sealed chunk
  // bundle.max_record_bytes: the largest record written into a bundle or accepted from one
  std::uint32_t max_record_bytes = 4u << 20;
};

// The PostgreSQL mirror of a hub (docs/operations.md "PostgreSQL mirror"): every document of
// the mirrored projects as a row, kept current from the changes feed. Off while postgres is
// empty.
struct MirrorOptions {
  // mirror.postgres: a libpq connection string ("host=/run/postgresql dbname=fieldsync") or
  // URI; empty = no mirror. A password is better kept in mirror.password_file (or ~/.pgpass).
  std::string postgres;
  std::filesystem::path password_file;  // mirror.password_file: first line is the password
  std::string projects = "all";         // mirror.projects: "all" or project ids, comma separated
  std::string schema = "fieldsync";     // mirror.schema: the PostgreSQL schema of the tables
  std::uint32_t batch_changes = 1000;   // mirror.batch_changes: changes per transaction
  std::uint32_t retry_min_ms = 1000;    // mirror.retry_min_ms: first retry after a failure
  std::uint32_t retry_max_ms = 60000;   // mirror.retry_max_ms: retry backoff ceiling
  std::uint32_t connect_timeout_ms = 10000;    // mirror.connect_timeout_ms
  std::uint32_t statement_timeout_ms = 60000;  // mirror.statement_timeout_ms: one statement
};

// A destination (hub) of projects (docs/operations.md "Destinations and delivery receipts").
struct HubOptions {
  // hub.receipt_interval_ms: how often a device named a project's destination checks whether
  // it holds more than its last receipt says, and writes a new one if so.
  std::uint32_t receipt_interval_ms = 60000;
  // hub.cleanup_projects: the projects whose delivered documents this device removes by
  // itself (docs/operations.md "Clean-up after delivery"): "" none, "all", or project ids
  // separated by commas.
  std::string cleanup_projects;
  // hub.cleanup_min_age_ms: a delivered document is removed once its newest version is this
  // old...
  std::uint64_t cleanup_min_age_ms = 7ull * 24 * 3600 * 1000;
  // hub.cleanup_free_below: ...or at once while the data directory's file system has less
  // free space than this (0: never at once).
  std::uint64_t cleanup_free_below_bytes = 0;
};

// A peer from the config file: [peer.<name>] address = host:port, device = <device id>.
struct StaticPeer {
  std::string name;
  std::string address;
  std::string device_id;
};

struct Config {
  std::filesystem::path
      data_dir;  // daemon.data_dir; default /var/lib/fieldsync or ~/.local/share/fieldsync
  std::string log_level = "info";  // daemon.log_level: trace|debug|info|warn|error
  std::string device_name;         // daemon.device_name: shown to peers; default hostname
  ApiOptions api;
  SyncOptions sync;
  DiscoveryOptions discovery;
  BleOptions ble;
  BundleOptions bundle;
  MirrorOptions mirror;
  HubOptions hub;
  storage::StoreOptions storage;  // storage.*; storage.data_dir is set from daemon.data_dir
  std::vector<StaticPeer> peers;
};

}  // namespace fieldsync::config
