"""Bluetooth LE: two real fieldsyncd processes that cannot reach each other over IP find each
other through a fake BlueZ (tests/integration/fake_bluez.py: one private D-Bus bus per daemon
and a link between the two fake adapters at 20 KB/s, MTU 185) and sync a project both ways.

These tests exercise fieldsync's use of BlueZ over D-Bus against a fake BlueZ, not BlueZ and
not a radio.
"""
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (DaemonTestCase, FakeBle, V, status, sync_address,  # noqa: E402
                               wait_until)
import workload  # noqa: E402

# Auto policy: a device in range that shares the project is synced with.
AUTO = {"discovery": {"visible": True, "policy": "auto"}}
# No mDNS and no static peers: the only way the daemons can find each other is BLE.
# No TCP address in the advertisement either (class BleAndTcp has it).
BLE = {"ble.enabled": "true", "discovery.enabled": "false", "ble.refresh_ms": 200,
       "ble.retry_ms": 500, "ble.ip_hint": "false"}


class BleTestCase(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.ble = FakeBle(self.path("fake_bluez.log"))
        self.bus, self.fake_bluez, self.ctl = self.ble.bus, self.ble.start, self.ble.ctl

    def tearDown(self):
        for d in self.daemons:
            d.close()
        self.ble.stop()
        super().tearDown()

    def pair(self, fake_args=(), **settings):
        """Two daemons on their own buses, one fake BlueZ between them, sharing a project with
        policy auto (and nothing else: no mDNS, no static peer). Returns
        (fake, alpha, beta, pid, (bus_a, bus_b))."""
        buses = (self.bus(), self.bus())
        fake = self.fake_bluez(list(buses), *fake_args)
        s = dict(BLE)
        s.update(settings)
        alpha = self.daemon("alpha", env={"DBUS_SYSTEM_BUS_ADDRESS": buses[0]}, **s)
        beta = self.daemon("beta", env={"DBUS_SYSTEM_BUS_ADDRESS": buses[1]}, **s)
        pid = alpha.create_project("survey", settings=AUTO)
        return fake, alpha, beta, pid, buses

    def share(self, alpha, beta, pid):
        r = beta.unix("POST", V + "/import", alpha.unix("GET", V + "/%s/secret" % pid).json())
        self.assertEqual(r.status, 201, r)
        self.assertIn(beta.unix("PATCH", V + "/%s" % pid, {"settings": AUTO}).status, (200, 204))

    def running(self, d):
        """d's BLE status once it runs, advertises, scans and has its GATT service registered."""
        b = self.ble_status(d)
        ok = (b["state"] == "running" and b["advertising"] and b["scanning"] and
              b["gatt_registered"])
        return b if ok else None

    def put(self, d, pid, doc_id, body):
        r = d.unix("PUT", V + "/%s/docs/obs/%s" % (pid, doc_id), body)
        self.assertIn(r.status, (200, 201), r)

    def has(self, d, pid, doc_id, body):
        r = d.unix("GET", V + "/%s/docs/obs/%s" % (pid, doc_id))
        if r.status != 200:
            return False
        self.assertEqual(r.json()["body"], body)
        return True

    def converged(self, a, b, pid):
        """Both hold the same version vector (and it is not empty)."""
        va, vb = workload.snapshot(a, pid)["vv"], workload.snapshot(b, pid)["vv"]
        return va if va and va == vb else None

    def alive(self, *ds):
        for d in ds:
            self.assertIsNone(d.proc.poll(), d.log()[-3000:])
            self.assertEqual(d.unix("GET", "/v1/health").status, 200)

    def peer(self, d, other):
        peers = d.unix("GET", "/v1/peers").json()["peers"]
        mine = [p for p in peers if p["device_id"] == other.device_id]
        return mine[0] if mine else None

    def metric(self, d, name, transport="ble"):
        text = d.unix("GET", "/metrics").text
        m = re.search(r'^%s\{transport="%s"\} (\S+)$' % (re.escape(name), transport), text,
                      re.M)
        return float(m.group(1)) if m else 0.0

    def ble_daemon(self, name, bus, **settings):
        s = dict(BLE)
        s.update(settings)
        d = self.daemon(name, **s)
        return d

    def daemon(self, name="alpha", env=None, prefix=(), **settings):
        # DaemonTestCase.daemon without an environment: start it here with one.
        from fieldsync_harness import FAST, Daemon
        s = dict(FAST)
        s["daemon.device_name"] = name
        s.update(self.DEFAULTS)
        s.update(settings)
        d = Daemon(name=name, settings=s, env=env, prefix=prefix)
        self.daemons.append(d)
        return d.start()

    def ble_status(self, d):
        return status(d)["ble"]


class BleSync(BleTestCase):
    def test_two_daemons_without_ip_route_sync_over_ble_both_ways(self):
        bus_a, bus_b = self.bus(), self.bus()
        self.fake_bluez([bus_a, bus_b])
        s = dict(BLE)
        alpha = self.daemon("alpha", env={"DBUS_SYSTEM_BUS_ADDRESS": bus_a}, **s)
        beta = self.daemon("beta", env={"DBUS_SYSTEM_BUS_ADDRESS": bus_b}, **s)

        pid = alpha.create_project("field survey", settings=AUTO)
        sec = alpha.unix("GET", V + "/%s/secret" % pid)
        self.assertEqual(sec.status, 200, sec)
        r = beta.unix("POST", V + "/import", sec.json())
        self.assertEqual(r.status, 201, r)
        r = beta.unix("PATCH", V + "/%s" % pid, {"settings": AUTO})
        self.assertIn(r.status, (200, 204), r)

        for d in (alpha, beta):
            st = wait_until(lambda d=d: (lambda b: b if b["advertising"] and b["scanning"]
                                         else None)(self.ble_status(d)),
                            20, what="%s to advertise and scan" % d.name)
            self.assertEqual(st["state"], "running")
            self.assertTrue(st["gatt_registered"])

        # About 40 KB each way, incompressible: many windows of frames over the 20 KB/s link.
        bodies = {}
        for i in range(20):
            for d in (alpha, beta):
                body = {"site": d.name, "n": i, "note": os.urandom(1000).hex()}
                bodies["%s-%d" % (d.name, i)] = body
                r = d.unix("PUT", V + "/%s/docs/obs/%s-%d" % (pid, d.name, i), body)
                self.assertIn(r.status, (200, 201), r)

        def has_all(d, other):
            for i in range(20):
                r = d.unix("GET", V + "/%s/docs/obs/%s-%d" % (pid, other.name, i))
                if r.status != 200:
                    return False
                self.assertEqual(r.json()["body"], bodies["%s-%d" % (other.name, i)])
            return True
        wait_until(lambda: has_all(beta, alpha) and has_all(alpha, beta), 120,
                   what="every document on both daemons over BLE")
        # Nothing was lost or reordered on the way: TLS never failed.
        self.assertNotRegex(alpha.log() + beta.log(), "(?i)bad record mac|decrypt")

        # They met over BLE, not TCP: the peers' live (or last) transport is "ble".
        for d, other in ((alpha, beta), (beta, alpha)):
            peers = d.unix("GET", "/v1/peers").json()["peers"]
            mine = [p for p in peers if p["device_id"] == other.device_id]
            self.assertTrue(mine, peers)
            self.assertEqual(mine[0]["transport"], "ble", mine[0])
            self.assertTrue(mine[0]["remote"].startswith("ble://hci0/"), mine[0])
        self.assertGreaterEqual(self.ble_status(alpha)["peers_added"] +
                                self.ble_status(beta)["peers_added"], 1)

    def test_a_chunk_changed_on_the_way_fails_tls_not_the_data(self):
        bus_a, bus_b = self.bus(), self.bus()
        # Well into the TLS session (the handshake is about 2 KB each way).
        self.fake_bluez([bus_a, bus_b], "--tamper-after-bytes", "8000")
        alpha = self.daemon("alpha", env={"DBUS_SYSTEM_BUS_ADDRESS": bus_a}, **BLE)
        beta = self.daemon("beta", env={"DBUS_SYSTEM_BUS_ADDRESS": bus_b}, **BLE)
        pid = alpha.create_project("survey", settings=AUTO)
        r = beta.unix("POST", V + "/import", alpha.unix("GET", V + "/%s/secret" % pid).json())
        self.assertEqual(r.status, 201, r)
        self.assertIn(beta.unix("PATCH", V + "/%s" % pid, {"settings": AUTO}).status, (200, 204))
        # Incompressible bodies: the batches are zstd-compressed.
        bodies = {}
        for i in range(4):
            for d in (alpha, beta):
                body = {"note": os.urandom(1500).hex()}
                bodies[(d.name, i)] = body
                r = d.unix("PUT", V + "/%s/docs/obs/%s-%d" % (pid, d.name, i), body)
                self.assertIn(r.status, (200, 201), r)

        def complete(d, other):
            for i in range(4):
                r = d.unix("GET", V + "/%s/docs/obs/%s-%d" % (pid, other.name, i))
                if r.status != 200:
                    return False
                self.assertEqual(r.json()["body"], bodies[(other.name, i)])
            return True
        wait_until(lambda: complete(alpha, beta) and complete(beta, alpha), 120,
                   what="every document, intact, on both daemons")
        with open(self.path("fake_bluez.log")) as f:
            self.assertIn("tampering with", f.read())
        logs = alpha.log() + beta.log()
        self.assertRegex(logs, "(?i)bad record mac|decrypt")

    def test_advertisement_carries_no_project_or_device_id(self):
        bus_a, bus_b = self.bus(), self.bus()
        self.fake_bluez([bus_a, bus_b])
        alpha = self.daemon("alpha", env={"DBUS_SYSTEM_BUS_ADDRESS": bus_a},
                            **dict(BLE, **{"ble.ip_hint": "true"}))
        pid = alpha.create_project("secret project", settings=AUTO)
        wait_until(lambda: self.ble_status(alpha)["advertising"], 20, what="advertising")
        import base64
        import dbus
        conn = dbus.bus.BusConnection(bus_b)
        om = conn.get_object("org.bluez", "/")
        conn.get_object("org.bluez", "/org/bluez/hci0").StartDiscovery(
            dbus_interface="org.bluez.Adapter1")

        def adv():
            objs = om.GetManagedObjects(dbus_interface="org.freedesktop.DBus.ObjectManager")
            for ifs in objs.values():
                md = ifs.get("org.bluez.Device1", {}).get("ManufacturerData")
                if md and 0xFFFF in md:
                    return bytes(md[0xFFFF])
            return None
        data = wait_until(adv, 20, what="alpha's advertisement on the other adapter")
        self.assertLessEqual(len(data), 24)
        self.assertEqual(data[0], 0xF5)
        self.assertEqual(data[1] >> 4, 2)  # format 2
        self.assertTrue(data[1] & 0x08)  # with a TCP address hint
        self.assertEqual(len(data), 6 + 6 + 6)  # header, hint, one project (tag and digest)
        self.assertEqual(self.ble_status(alpha)["ip_hint"], "tcp://" + sync_address(alpha))
        device = base64.b32decode(alpha.device_id.upper() + "====")[:32]
        project = bytes.fromhex(pid)
        for secret_thing in (device, project):
            for i in range(len(secret_thing) - 3):
                self.assertNotIn(secret_thing[i:i + 4], data)
        self.assertNotIn(b"alpha", data)
        # The address it listens on is not in the clear either.
        port = status(alpha)["peers"]["listen_port"]
        self.assertNotIn(bytes([127, 0, 0, 1]), data)
        self.assertNotIn(port.to_bytes(2, "big"), data)
        # A write changes what it holds: a new advertisement with a new nonce, nothing in it
        # related to the last one.
        r = alpha.unix("PUT", V + "/%s/docs/obs/one" % pid, {"n": 1})
        self.assertIn(r.status, (200, 201), r)
        new = wait_until(lambda: (lambda d: d if d and d[2:6] != data[2:6] else None)(adv()), 20,
                         what="a new advertisement after a write")
        self.assertEqual(len(new), len(data))
        for i in range(6, len(data) - 1):
            self.assertNotIn(data[i:i + 2], new[6:], (data.hex(), new.hex()))


    def test_devices_holding_the_same_data_do_not_connect_until_one_changes(self):
        fake, alpha, beta, pid, _ = self.pair()
        self.share(alpha, beta, pid)
        self.put(alpha, pid, "a1", {"n": 1})
        wait_until(lambda: self.converged(alpha, beta, pid), 60, what="the first sync")
        # Both restart: nothing remembers the other, and each advertisement's digest says the
        # device holds what the other holds.
        for d in (alpha, beta):
            d.restart()
        for d in (alpha, beta):
            wait_until(lambda d=d: self.ble_status(d)["skipped_in_sync"] >= 1, 30,
                       what="%s to see the other and skip it" % d.name)
        for d, other in ((alpha, beta), (beta, alpha)):
            b = self.ble_status(d)
            self.assertEqual(b["peers_added"], 0, b)
            self.assertEqual(b["links"], 0, b)
            p = self.peer(d, other)
            self.assertFalse(p and p["connected"], p)
        # A write changes alpha's digest: beta connects and gets it.
        self.put(alpha, pid, "a2", {"n": 2})
        wait_until(lambda: self.has(beta, pid, "a2", {"n": 2}), 60,
                   what="the new document after the digest changed")
        self.assertGreaterEqual(self.ble_status(alpha)["peers_added"] +
                                self.ble_status(beta)["peers_added"], 1)


class BleResilience(BleTestCase):
    def start_transfer(self, alpha, beta, pid, n):
        """alpha writes n documents of about 350 bytes (incompressible), then shares the
        project with beta: the transfer starts. Returns the writes."""
        writes = [{"collection": "obs", "id": "d%03d" % i,
                   "body": {"n": i, "note": os.urandom(150).hex()}} for i in range(n)]
        r = alpha.unix("POST", V + "/%s/batch" % pid, {"writes": writes})
        self.assertIn(r.status, (200, 201), r)
        self.share(alpha, beta, pid)
        return writes

    def applied(self, d, other):
        """Versions d applied from other in their live session."""
        p = self.peer(d, other)
        if not p or not p["session"]:
            return 0
        return sum(x["applied"] for x in p["session"]["projects"])

    def received_once(self, alpha, beta, vv):
        """Every version of alpha's reached beta over BLE exactly once, whatever sessions it
        took: none of the batches applied before a break came again."""
        received = self.metric(beta, "fieldsync_sync_versions_received_total")
        self.assertEqual(received, vv[alpha.device_id], (received, vv))

    def test_peer_walking_out_of_range_mid_batch_resumes_without_resending(self):
        # Small batches: the transfer is many batches, so the cut falls between two of them
        # with some applied and some not. A long reconnect backoff: a device back in range is
        # dialed at once all the same.
        fake, alpha, beta, pid, _ = self.pair(**{"ble.batch_entries": 20,
                                                 "sync.retry_min_ms": 20000,
                                                 "sync.retry_max_ms": 300000})
        n = 400
        writes = self.start_transfer(alpha, beta, pid, n)
        # Well into the transfer (at 20 KB/s it takes several seconds), then out of range.
        wait_until(lambda: self.applied(beta, alpha) >= 240, 60,
                   what="beta to apply most of alpha's batches")
        logs = alpha.log() + beta.log()
        self.ctl(fake, "out-of-range")
        held_at_cut = len(workload.changes(beta, pid))
        self.assertLess(held_at_cut, n, "the whole transfer went before the cut")
        # Until then the one session ran undisturbed: no session of the two failed (the two
        # devices dialing each other at once may refuse a link before its session starts).
        self.assertNotRegex(logs, r"session with [a-z0-9]{4}-\S+ failed")

        # Neither daemon stops, and beta says why alpha is not syncing.
        def explained():
            p = self.peer(beta, alpha)
            if not p or p["connected"]:
                return None
            why = p["reason"] or p["last_error"]
            return p if why and why["message"] else None
        p = wait_until(explained, 30, what="beta to say why alpha is gone")
        self.alive(alpha, beta)
        self.assertEqual(p["transport"], "ble", p)
        self.assertRegex((p["reason"] or p["last_error"])["message"],
                         r"Bluetooth LE link with ble://hci0/\S+ closed: the device "
                         r"(disconnected|is gone)")
        # Out of range it stays unreachable: redials fail, and say so.
        wait_until(lambda: self.ble_status(beta)["links"] == 0, 30, what="beta's links closed")
        self.assertEqual(self.ble_status(beta)["state"], "running")

        self.ctl(fake, "in-range")
        # Back in range, it is dialed at once (not after the backoff of 16 s or more); the rest
        # of the transfer then takes what the link (and a sanitizer build) needs.
        wait_until(lambda: (self.peer(beta, alpha) or {}).get("connected"), 12,
                   what="beta to reach alpha again after the walk back")
        vv = wait_until(lambda: self.converged(alpha, beta, pid), 120,
                        what="the same version vector on both daemons after the walk back")
        self.assertEqual(len(workload.changes(beta, pid)), len(workload.changes(alpha, pid)))
        for w in writes[::37] + writes[-1:]:
            self.assertTrue(self.has(beta, pid, w["id"], w["body"]), w["id"])
        # The second session resumed from what beta held.
        self.received_once(alpha, beta, vv)
        self.alive(alpha, beta)

    def test_adapter_removed_and_added_again(self):
        fake, alpha, beta, pid, _ = self.pair()
        self.share(alpha, beta, pid)
        body = {"site": "well 1"}
        self.put(beta, pid, "first", body)
        wait_until(lambda: self.has(alpha, pid, "first", body), 60, what="a first sync over BLE")

        self.ctl(fake, "remove-adapter 0")
        st = wait_until(lambda: (lambda b: b if b["state"] == "no_adapter" else None)(
            self.ble_status(alpha)), 15, what="alpha to notice its adapter is gone")
        self.assertIn("hci0", st["message"])
        self.assertFalse(st["advertising"] or st["scanning"] or st["gatt_registered"], st)
        self.assertEqual(st["links"], 0, st)
        out = alpha.syncctl("status")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"(?m)^bluetooth +no adapter hci0: .*hci0")
        self.alive(alpha, beta)

        # Its peer says why it is not syncing: the link ended with the adapter, and dialing
        # while it is gone fails.
        def explained():
            p = self.peer(alpha, beta)
            why = p and not p["connected"] and (p["reason"] or p["last_error"])
            return why["message"] if why else None
        self.assertRegex(wait_until(explained, 15, what="alpha to say why beta is gone"),
                         r"gone|disconnected|no adapter hci0")
        # Written while alpha cannot hear it.
        body2 = {"site": "well 2", "note": os.urandom(500).hex()}
        self.put(beta, pid, "second", body2)

        self.ctl(fake, "add-adapter 0")
        wait_until(lambda: self.running(alpha), 20, what="alpha to advertise and scan again")
        wait_until(lambda: self.has(alpha, pid, "second", body2), 60,
                   what="alpha to sync over the re-added adapter")
        wait_until(lambda: self.converged(alpha, beta, pid), 30, what="the same version vector")
        out = alpha.syncctl("status")
        self.assertRegex(out.stdout, r"(?m)^bluetooth +running on hci0: advertising, scanning")

    def test_adapter_powered_off_and_on_again(self):
        fake, alpha, beta, pid, _ = self.pair()
        self.share(alpha, beta, pid)
        body = {"site": "well 1"}
        self.put(beta, pid, "first", body)
        wait_until(lambda: self.has(alpha, pid, "first", body), 60, what="a first sync over BLE")

        self.ctl(fake, "power-off 0")
        st = wait_until(lambda: (lambda b: b if b["state"] == "powered_off" else None)(
            self.ble_status(alpha)), 15, what="alpha to notice its adapter is off")
        self.assertIn("powered off", st["message"])
        wait_until(lambda: self.ble_status(alpha)["links"] == 0, 15, what="alpha's links closed")
        out = alpha.syncctl("status")
        self.assertRegex(out.stdout, r"(?m)^bluetooth +adapter hci0 powered off")
        body2 = {"site": "well 2"}
        self.put(beta, pid, "second", body2)

        # BlueZ kept the GATT service and the advertisement registered while the adapter was
        # off: they count as registered, not as failures to retry for ever.
        self.ctl(fake, "power-on 0")
        wait_until(lambda: self.running(alpha), 15, what="alpha to advertise and scan again")
        wait_until(lambda: self.has(alpha, pid, "second", body2), 60,
                   what="alpha to sync once powered on")
        self.assertNotRegex(alpha.log(), "Register(Application|Advertisement) failed")

    def test_a_daemon_that_stops_says_so_to_its_ble_peer(self):
        fake, alpha, beta, pid, _ = self.pair()
        self.share(alpha, beta, pid)
        body = {"site": "well 1"}
        self.put(beta, pid, "first", body)
        wait_until(lambda: self.has(alpha, pid, "first", body), 60, what="a first sync over BLE")
        wait_until(lambda: (self.peer(beta, alpha) or {}).get("connected"), 15,
                   what="beta's session with alpha")

        # A clean stop ends the session over the BLE link before leaving the bus: beta learns
        # that alpha shut down, not that the link broke, and reports no error (as over TCP,
        # test_peer_reasons). Its redials while alpha is away may count as attempts: how many
        # depends on how long the stop takes.
        self.assertEqual(alpha.stop(), 0)
        p = wait_until(lambda: (lambda p: p if p and not p["connected"] else None)(
            self.peer(beta, alpha)), 15, what="beta to see alpha leave")
        self.assertIsNotNone(p["reason"], p)
        self.assertEqual(p["reason"]["code"], "peer_shut_down", p)
        self.assertIsNone(p["last_error"], p)

    def test_bluez_restart_registers_again_and_syncs(self):
        fake, alpha, beta, pid, buses = self.pair(**{"ble.batch_entries": 20})
        n = 600
        writes = self.start_transfer(alpha, beta, pid, n)
        wait_until(lambda: self.applied(beta, alpha) >= 100, 60,
                   what="beta to apply some of alpha's batches")

        # bluetoothd dies mid-transfer: its objects vanish and org.bluez has no owner.
        fake.kill()
        fake.wait()
        self.assertLess(len(workload.changes(beta, pid)), n, "the whole transfer went first")
        for d in (alpha, beta):
            st = wait_until(lambda d=d: (lambda b: b if b["state"] != "running" else None)(
                self.ble_status(d)), 15, what="%s to notice BlueZ is gone" % d.name)
            self.assertEqual(st["state"], "no_adapter", st)
            self.assertIn("BlueZ is not running", st["message"])
            self.assertFalse(st["advertising"] or st["gatt_registered"], st)
            self.assertEqual(st["links"], 0, st)
        out = alpha.syncctl("status")
        self.assertRegex(out.stdout, r"(?m)^bluetooth +no adapter hci0: BlueZ is not running")
        self.alive(alpha, beta)
        body2 = {"site": "well 2", "note": os.urandom(500).hex()}
        self.put(alpha, pid, "second", body2)

        # bluetoothd starts again on the same buses, with nothing registered.
        self.fake_bluez(list(buses))
        for d in (alpha, beta):
            wait_until(lambda d=d: self.running(d), 20,
                       what="%s to register with the new BlueZ" % d.name)
        wait_until(lambda: self.has(beta, pid, "second", body2), 60,
                   what="a sync after BlueZ restarted")
        vv = wait_until(lambda: self.converged(alpha, beta, pid), 30,
                        what="the same version vector")
        for w in writes[::29] + writes[-1:]:
            self.assertTrue(self.has(beta, pid, w["id"], w["body"]), w["id"])
        self.received_once(alpha, beta, vv)


class BleAndTcp(BleTestCase):
    """Devices found over BLE that can also reach each other over TCP sync there: the TCP
    address in the advertisement is dialed first, and a BLE session moves to TCP once TCP
    answers."""

    def test_a_device_found_over_ble_is_synced_over_tcp_first(self):
        fake, alpha, beta, pid, _ = self.pair(**{"ble.ip_hint": "true"})
        self.share(alpha, beta, pid)
        self.put(alpha, pid, "a1", {"n": 1})
        self.put(beta, pid, "b1", {"n": 2})
        wait_until(lambda: self.has(beta, pid, "a1", {"n": 1}) and
                   self.has(alpha, pid, "b1", {"n": 2}), 60, what="both documents both ways")
        for d, other in ((alpha, beta), (beta, alpha)):
            p = wait_until(lambda d=d, other=other: (lambda p: p if p and p["connected"] else None)(
                self.peer(d, other)), 30, what="%s connected to %s" % (d.name, other.name))
            self.assertEqual(p["transport"], "tcp", p)
            self.assertEqual(p["link"], "fast", p)
        # Found over BLE (no mDNS, no static peer), and no BLE session was needed.
        st = [self.ble_status(d) for d in (alpha, beta)]
        self.assertGreaterEqual(st[0]["peers_added"] + st[1]["peers_added"], 1, st)
        self.assertEqual(st[0]["links"] + st[1]["links"], 0, st)
        self.assertEqual(self.metric(alpha, "fieldsync_sync_connections_closed_total") +
                         self.metric(beta, "fieldsync_sync_connections_closed_total"), 0)

    def netns(self, name):
        """A new network namespace with only loopback up (removed after the test)."""
        import subprocess
        if os.geteuid() != 0:
            self.skipTest("network namespaces need root")
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("cannot make a network namespace: " + r.stderr.strip())
        self.addCleanup(subprocess.run, ["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    def test_tcp_unreachable_falls_back_to_ble_then_the_session_moves_to_tcp(self):
        import subprocess
        tag = "fsb%d" % (os.getpid() % 100000)
        ns = (self.netns(tag + "a"), self.netns(tag + "b"))
        buses = (self.bus(), self.bus())
        self.fake_bluez(list(buses))
        s = dict(BLE)
        # Every interface, so an address that appears later is advertised too; TCP is tried
        # again soon after a failure.
        s.update({"ble.ip_hint": "true", "sync.listen_address": "0.0.0.0",
                  "ble.tcp_retry_ms": 1000})
        alpha = self.daemon("alpha", env={"DBUS_SYSTEM_BUS_ADDRESS": buses[0]},
                            prefix=("ip", "netns", "exec", ns[0]), **s)
        beta = self.daemon("beta", env={"DBUS_SYSTEM_BUS_ADDRESS": buses[1]},
                           prefix=("ip", "netns", "exec", ns[1]), **s)
        pid = alpha.create_project("survey", settings=AUTO)
        self.share(alpha, beta, pid)
        # Each advertises the only address it has, loopback in its own namespace: the other
        # cannot reach it there, and syncs over BLE instead.
        for d in (alpha, beta):
            hint = wait_until(lambda d=d: self.ble_status(d)["ip_hint"], 20, what="a hint")
            self.assertTrue(hint.startswith("tcp://127.0.0.1:"), hint)
        self.put(alpha, pid, "before", {"n": 1})
        wait_until(lambda: self.has(beta, pid, "before", {"n": 1}), 90,
                   what="a document over BLE")
        p = self.peer(beta, alpha)
        self.assertEqual((p["transport"], p["link"]), ("ble", "slow"), p)
        self.assertGreaterEqual(self.ble_status(alpha)["tcp_fallbacks"] +
                                self.ble_status(beta)["tcp_fallbacks"], 1)

        # A cable between the two: each gets a LAN address, advertises it, and the session
        # moves to TCP.
        va, vb = tag + "va", tag + "vb"
        for cmd in (["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
                    ["ip", "link", "set", va, "netns", ns[0]],
                    ["ip", "link", "set", vb, "netns", ns[1]],
                    ["ip", "-n", ns[0], "addr", "add", "169.254.77.1/24", "dev", va],
                    ["ip", "-n", ns[1], "addr", "add", "169.254.77.2/24", "dev", vb],
                    ["ip", "-n", ns[0], "link", "set", va, "up"],
                    ["ip", "-n", ns[1], "link", "set", vb, "up"]):
            subprocess.run(cmd, check=True)

        def on_tcp(d, other):
            p = self.peer(d, other)
            return p if (p and p["connected"] and p["transport"] == "tcp" and
                         p["state"] == "in_sync") else None
        for d, other in ((alpha, beta), (beta, alpha)):
            p = wait_until(lambda d=d, other=other: on_tcp(d, other), 60,
                           what="%s's session with %s on TCP" % (d.name, other.name))
            self.assertEqual(p["link"], "fast", p)
            self.assertTrue(p["remote"].startswith("tcp://169.254.77."), p)
            # Moving was not a failure.
            self.assertIsNone(p["reason"], p)
            self.assertIsNone(p["last_error"], p)
        self.assertGreaterEqual(self.ble_status(alpha)["handovers"] +
                                self.ble_status(beta)["handovers"], 1)
        wait_until(lambda: self.ble_status(alpha)["links"] + self.ble_status(beta)["links"] == 0,
                   30, what="the BLE links closed")
        self.put(alpha, pid, "after", {"n": 2})
        wait_until(lambda: self.has(beta, pid, "after", {"n": 2}), 30,
                   what="a document over TCP")
        self.alive(alpha, beta)


class BleIdle(BleTestCase):
    def test_status_says_why_ble_is_idle(self):
        # No system bus at all.
        d = self.daemon("nobus", env={"DBUS_SYSTEM_BUS_ADDRESS":
                                      "unix:path=" + self.path("no-such-bus")}, **BLE)
        st = wait_until(lambda: (lambda b: b if b["state"] == "no_bus" else None)(
            self.ble_status(d)), 10, what="no_bus")
        self.assertIn("system bus", st["message"])
        # A bus without BlueZ.
        empty = self.bus()
        d2 = self.daemon("nobluez", env={"DBUS_SYSTEM_BUS_ADDRESS": empty}, **BLE)
        wait_until(lambda: self.ble_status(d2)["state"] == "no_adapter", 15, what="no_adapter")
        # BlueZ with the adapter powered off.
        off = self.bus()
        self.fake_bluez([off], "--powered-off", "0")
        d3 = self.daemon("off", env={"DBUS_SYSTEM_BUS_ADDRESS": off}, **BLE)
        st = wait_until(lambda: (lambda b: b if b["state"] == "powered_off" else None)(
            self.ble_status(d3)), 15, what="powered_off")
        self.assertFalse(st["advertising"])
        # Off by default.
        d4 = self.daemon("default")
        self.assertEqual(self.ble_status(d4)["state"], "off")
        self.assertFalse(self.ble_status(d4)["enabled"])


if __name__ == "__main__":
    unittest.main()
