#!/usr/bin/python3
"""Integration tests of the sync port against hostile clients, on a real fieldsyncd:
strangers with fresh TLS keys leave no peers behind and keep GET /v1/peers valid JSON,
their device names never reach syncctl raw, and connections that never start TLS neither
lock real peers out nor flood the log. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_sync_port.py -v
"""
import datetime
import json
import os
import socket
import ssl
import struct
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    FAST, V, Daemon, add_peer, share, start_daemon as start, sync_address, wait_until)
from test_sync import has_doc, write_docs  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

EVIL_NAME = b"\x1b]0;owned\x07\x1b[2J\xff\xfe\xc2\x9b31mevil"


class Stranger:
    """A device nobody knows: a fresh Ed25519 key in a self-signed certificate."""

    def __init__(self, workdir):
        key = Ed25519PrivateKey.generate()
        self.device = key.public_key().public_bytes(serialization.Encoding.Raw,
                                                     serialization.PublicFormat.Raw)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1)).sign(key, None))
        fd, self.pem = tempfile.mkstemp(suffix=".pem", dir=workdir)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_cert_chain(self.pem)

    def hello(self, name):
        payload = (b"FSYN" + struct.pack(">HH", 1, 1) + self.device + struct.pack(">H", len(name)) +
                   name + struct.pack(">QI", 0, 0))
        return struct.pack(">IB", len(payload) + 1, 0x01) + payload

    @staticmethod
    def projects(n):
        payload = struct.pack(">I", n) + os.urandom(32 * n)
        return struct.pack(">IB", len(payload) + 1, 0x02) + payload

    def visit(self, port, name=EVIL_NAME):
        """Connects, says HELLO with `name`, proves nothing; returns what came back."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with self.ctx.wrap_socket(raw) as s:
                s.sendall(self.hello(name) + self.projects(3))
                got = b""
                try:
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        got += chunk
                except (ssl.SSLError, ConnectionError, socket.timeout):
                    pass
                return got


def frames(data):
    out = []
    while len(data) >= 5:
        n, t = struct.unpack(">IB", data[:5])
        out.append((t, data[5:4 + n]))
        data = data[4 + n:]
    return out


class SyncPort(unittest.TestCase):
    def setUp(self):
        self.ds = []
        self.tmp = tempfile.mkdtemp(prefix="fsi-strangers-", dir="/tmp")

    def tearDown(self):
        for d in self.ds:
            rc = d.stop() if d.proc else 0
            log = d.log()
            d.close()
            self.assertIn(rc, (0, None), log)

    def daemon(self, name, **settings):
        d = start(name, **settings)
        self.ds.append(d)
        return d

    def test_strangers_leave_no_peers_and_no_raw_names(self):
        a = self.daemon("alpha")
        share(a, name="hidden")
        port = a.unix("GET", "/v1/status").json()["peers"]["listen_port"]
        log_before = len(a.log().splitlines())
        for _ in range(150):
            got = Stranger(self.tmp).visit(port)
            errors = [p for t, p in frames(got) if t == 0x09]
            self.assertTrue(errors, "no ERROR for a stranger")
            self.assertEqual(struct.unpack(">H", errors[0][:2])[0], 8)  # permission_denied
            # PROJECTS is padded: a stranger cannot count a's projects.
            proj = [p for t, p in frames(got) if t == 0x02]
            self.assertEqual(struct.unpack(">I", proj[0][:4])[0], 8)  # one bucket of 8
        r = a.unix("GET", "/v1/peers")
        self.assertEqual(r.status, 200)
        body = r.json()  # valid JSON whatever the strangers sent
        self.assertEqual(body["peers"], [])
        self.assertLess(len(r.body), 1000)
        out = a.syncctl("peers")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("\x1b", out.stdout)
        # The log holds a bounded number of lines, not several per stranger.
        lines = len(a.log().splitlines()) - log_before
        sys.stderr.write("(150 strangers: %d log lines) " % lines)
        self.assertLess(lines, 120)
        self.assertNotIn("\x1b", a.log())

    def test_idle_connections_do_not_lock_out_a_real_peer(self):
        a = self.daemon("alpha")
        b = self.daemon("beta")
        pid = share(a, b)
        write_docs(a, pid, 0, 50)
        port = a.unix("GET", "/v1/status").json()["peers"]["listen_port"]
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(80)]
        try:
            time.sleep(0.2)  # let a accept them all (not a synchronisation: the check below polls)
            t0 = time.monotonic()
            add_peer(b, a)
            wait_until(lambda: has_doc(b, pid, "d49"), 3, interval_s=0.02,
                       what="sync with 80 idle connections open")
            sys.stderr.write("(synced %.2f s after adding the peer) " % (time.monotonic() - t0))
            refusals = sum(1 for line in a.log().splitlines() if "sync.max_handshakes" in line)
            self.assertLessEqual(refusals, 2 * 10)
            # The idle connections are closed at sync.tls_handshake_timeout_ms (3 s).
            def all_closed():
                for s in idle:
                    s.settimeout(0.01)
                    try:
                        if s.recv(1) != b"":
                            return False
                    except socket.timeout:
                        return False
                    except OSError:
                        pass
                return True
            wait_until(all_closed, 10, what="idle connections closed")
        finally:
            for s in idle:
                s.close()


if __name__ == "__main__":
    unittest.main()
