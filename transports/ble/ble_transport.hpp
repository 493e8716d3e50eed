// BleTransport: the "ble" transport: fieldsync's byte stream over Bluetooth LE GATT, through
// BlueZ's D-Bus API on the system bus (DBUS_SYSTEM_BUS_ADDRESS selects the bus). Every device
// is both a peripheral (it registers a GATT service and an advertisement with BlueZ) and a
// central (it scans, connects and uses other devices' services). docs/protocol.md
// "Bluetooth LE" has the GATT layout, the framing (ble_framing.hpp) and the advertisement.
//
//   address: ble://<adapter>/<device address>     e.g. ble://hci0/C0:FF:EE:00:00:01
//
// Authentication and encryption are the tcp transport's: TLS 1.3 with the device keys'
// self-signed Ed25519 certificates (crypto/tls_context.hpp) runs over the GATT byte stream;
// the central is the TLS client and pins the expected device, the channel binding is the TLS
// exporter value. Bluetooth pairing is neither used nor needed.
//
// What this transport adds for discovery: set_advertisement() puts opaque bytes into the
// advertisement's manufacturer data (company id kManufacturerId) and an identity value
// into a readable characteristic; sightings of other devices' manufacturer data are
// reported to the sighting handler; read_identity() connects and reads the other device's
// identity value (discovery/ble_advert.hpp gives both their meaning).
//
// Without a system bus, without BlueZ or the adapter, or with the adapter powered off, the
// transport stays idle and says why in status(); it checks again every retry_ms and starts
// advertising and scanning once it can.
//
// stop() closes the streams still in their handshake and stops advertising, scanning and
// accepting links; the streams handed out keep the D-Bus connection until they closed (their
// sessions say goodbye over them), for at most twice shutdown_timeout_ms.
//
// Ownership: borrows the io_context; owns the D-Bus connection, its objects and the streams
// until they are handed out. Thread-safety: the io_context's thread only (transport.hpp).
// The D-Bus connection has no thread of its own: its file descriptor is watched on the
// io_context, so every D-Bus callback runs on that thread too.
// Errors: as transport.hpp; dial() and read_identity() fail with unavailable when the
// device is not in range or BlueZ refuses, invalid_argument for a bad address.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "crypto/crypto.hpp"
#include "crypto/renewal.hpp"
#include "transports/transport.hpp"

namespace boost::asio {
class io_context;
}

namespace fieldsync::transports {

// The manufacturer data key of fieldsync's advertisement: 0xFFFF, the company id the
// Bluetooth SIG reserves for tests and for products without an assigned one.
inline constexpr std::uint16_t kBleManufacturerId = 0xFFFF;

struct BleOptions {
  std::string adapter = "hci0";  // ble.adapter
  bool advertise = true;         // ble.advertise
  bool scan = true;              // ble.scan
  std::uint16_t window = 8;      // ble.window: unacknowledged frames in flight
  std::uint32_t ack_delay_ms = 20;
  std::uint32_t retransmit_ms = 2000;          // ble.retransmit_ms
  std::uint32_t connect_timeout_ms = 20000;    // ble.connect_timeout_ms: GATT connect
  std::uint32_t handshake_timeout_ms = 30000;  // ble.handshake_timeout_ms: TLS over the link
  std::uint32_t retry_ms = 5000;               // ble.retry_ms: re-check bus, BlueZ, adapter
  std::uint32_t max_links = 4;                 // ble.max_links: streams at once, both ways
  std::uint32_t shutdown_timeout_ms = 2000;
  std::vector<crypto::RenewalLink> renewals;  // as TcpTlsOptions::renewals
};
BleOptions ble_options(const config::BleOptions& ble);

enum class BleState : std::uint8_t {
  off,          // not started
  no_bus,       // the system bus cannot be reached
  no_adapter,   // BlueZ is not running, or has no such adapter
  powered_off,  // the adapter exists and is off
  running,      // advertising and scanning as configured
};
std::string_view ble_state_name(BleState s);

struct BleStatus {
  BleState state = BleState::off;
  std::string message;  // why it is idle
  std::string adapter;
  bool advertising = false;  // BlueZ accepted our advertisement
  bool scanning = false;     // discovery is on at the adapter
  bool gatt_registered = false;
  std::size_t links = 0;    // open streams
  std::size_t devices = 0;  // devices with a fieldsync advertisement seen
};

struct BleSighting {
  Address address;  // ble://<adapter>/<device address>
  Bytes data;       // the manufacturer data under kBleManufacturerId
  std::int16_t rssi = 0;
  // The first sighting since BlueZ found the device (anew: it had forgotten a device out of
  // range for a while, or the adapter or BlueZ itself came back).
  bool fresh = false;
};

class BleTransport final : public Transport {
 public:
  // Errors: internal when the TLS context cannot be made from `key`.
  static Result<std::unique_ptr<BleTransport>> create(boost::asio::io_context& io,
                                                      const crypto::SigningKey& key,
                                                      BleOptions options);
  ~BleTransport() override;

  std::string_view scheme() const override { return "ble"; }
  LinkClass link_class() const override { return LinkClass::slow; }
  // Starts talking to BlueZ: GATT service, advertisement (once set), scanning.
  Status listen(HandshakeBudget& budget, IncomingHandler incoming) override;
  // Empty: a BLE address is only meaningful to devices in range, which find it by scanning.
  std::vector<Address> listen_addresses() const override { return {}; }
  void dial(const Address& address, const DeviceId& expected, StreamHandler done) override;
  void stop() override;

  // What we advertise (empty `manufacturer_data`: no advertisement) and the value of the
  // identity characteristic. Re-registers the advertisement when it changed.
  void set_advertisement(Bytes manufacturer_data, Bytes identity);
  // Called for each advertisement of another device carrying kBleManufacturerId data.
  void set_sighting_handler(std::function<void(const BleSighting&)> handler);
  // Connects to the device (or uses the connection there is) and reads its identity value.
  void read_identity(const Address& address, std::function<void(Result<Bytes>)> done);
  BleStatus status() const;

  struct Impl;

 private:
  explicit BleTransport(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace fieldsync::transports
