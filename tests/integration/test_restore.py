#!/usr/bin/python3
"""A device must never fork its own history (docs/storage.md "One identity, one history"):
a data directory put back from an old copy, or restored with `syncctl backup`, keeps syncing,
and nothing written on either side of the restore is lost. Real fieldsyncd processes on
127.0.0.1. Run by ctest, or by hand: /usr/bin/python3 tests/integration/test_restore.py -v
"""
import base64
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    SYNCCTL, V, add_peer, free_port, share, start_daemon as start, status, wait_until)


def put(d, pid, doc_id, tag):
    put_body(d, pid, doc_id, {"tag": tag})


def put_body(d, pid, doc_id, body):
    r = d.unix("PUT", V + "/%s/docs/obs/%s" % (pid, doc_id), body)
    assert r.status in (200, 201), r


def run_syncctl(d, *args, umask=-1, sock=None):
    """syncctl against `d` (or the socket `sock`), optionally under a umask."""
    cmd = [SYNCCTL, "--socket", sock or d.socket_path] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, umask=umask)


def tag_of(d, pid, doc_id):
    try:
        r = d.unix("GET", V + "/%s/docs/obs/%s" % (pid, doc_id))
    except OSError:  # the daemon is reopening its store (identity renewal)
        return None
    return (r.json().get("body") or {}).get("tag") if r.status == 200 else None


def has_all(d, pid, expected):
    return all(tag_of(d, pid, k) == v for k, v in expected.items())


def in_sync(d, pid):
    try:
        r = d.unix("GET", V + "/%s/sync" % pid).json()
    except OSError:
        return False
    return r["in_sync"] and r["to_receive"] == 0 and r["to_send"] == 0


class RestoreTests(unittest.TestCase):
    def setUp(self):
        self.daemons = []
        self.tmp = tempfile.mkdtemp(prefix="fsi-restore-", dir="/tmp")

    def tearDown(self):
        for d in self.daemons:
            rc = d.stop() if d.proc else 0
            log = d.log()
            d.close()
            self.assertIn(rc, (0, None), log)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, name, **settings):
        d = start(name, **settings)
        self.daemons.append(d)
        return d

    def restart_with(self, d, **settings):
        d.stop()
        d.settings.update(settings)
        d.start()

    def test_data_dir_put_back_from_an_old_copy_and_written_before_reconnecting(self):
        a, b = self.start("alpha"), self.start("beta")
        pid = share(a, b)
        add_peer(a, b)
        add_peer(b, a)
        expected = {}
        for i in range(5):
            put(a, pid, "early%d" % i, "a")
            expected["early%d" % i] = "a"
        wait_until(lambda: has_all(b, pid, expected), 20, what="first sync")

        # A copy of alpha's data directory, as an administrator would take it.
        a.stop()
        snapshot = os.path.join(self.tmp, "copy")
        shutil.copytree(a.data_dir, snapshot, symlinks=True)
        a.start()
        for i in range(5):
            put(a, pid, "late%d" % i, "a")
            expected["late%d" % i] = "a"
        wait_until(lambda: has_all(b, pid, expected), 20, what="sync after the copy")
        old_id = a.device_id

        # Put the copy back and write before meeting any peer (sync off), then reconnect.
        a.stop()
        shutil.rmtree(a.data_dir)
        shutil.copytree(snapshot, a.data_dir, symlinks=True)
        a.settings["sync.enabled"] = "false"
        a.start()
        self.assertEqual(a.device_id, old_id)  # nothing tells it yet that it was rolled back
        put(a, pid, "after-restore", "restored")
        expected["after-restore"] = "restored"
        self.restart_with(a, **{"sync.enabled": "true"})

        # alpha notices that beta holds more of its log, renews its identity, gets back what
        # the lost copy wrote and re-publishes its own new write; beta gets that write.
        wait_until(lambda: has_all(a, pid, expected) and has_all(b, pid, expected), 30,
                   what="both sides of the restore on both devices")
        st = status(a)
        self.assertNotEqual(st["device_id"], old_id)
        self.assertEqual(st["identity"]["renewed_from"], old_id)
        self.assertIn(old_id, st["identity"]["previous"])
        self.assertIn("another copy", st["identity"]["reason"])
        self.assertIn("renewing", a.log())
        wait_until(lambda: in_sync(a, pid) and in_sync(b, pid), 20, what="in sync again")
        # beta saw two histories of the old identity; it reports them as repaired by the new one.
        forks = {f["device"]: f for f in status(b)["diverged_logs"]}
        self.assertIn(old_id, forks)
        self.assertTrue(forks[old_id]["resolved"])
        self.assertEqual(forks[old_id]["successor"], st["device_id"])

        # The new identity keeps the old one's role and its writes flow as usual.
        members = {m["device_id"]: m for m in a.unix("GET", V + "/%s/members" % pid).json()["members"]}
        self.assertEqual(members[st["device_id"]]["role"], members[old_id]["role"])
        self.assertEqual(members[st["device_id"]]["successor_of"], old_id)
        put(a, pid, "later", "new-identity")
        wait_until(lambda: tag_of(b, pid, "later") == "new-identity", 20, what="a write after renewal")
        expected["later"] = "new-identity"

        # A third device that only ever meets beta gets everything from both sides.
        c = self.start("gamma")
        r = c.unix("POST", V + "/import", a.unix("GET", V + "/%s/secret" % pid).json())
        self.assertEqual(r.status, 201, r)
        add_peer(c, b)
        wait_until(lambda: has_all(c, pid, expected), 30, what="relay of both sides to a third device")
        # And a restart does not renew again.
        a.restart()
        self.assertEqual(status(a)["device_id"], st["device_id"])

    def test_syncctl_backup_restore_renews_the_identity_and_loses_nothing(self):
        # alpha keeps its sync port across restarts: beta dials it by address.
        a, b = self.start("alpha", **{"sync.listen_port": free_port()}), self.start("beta")
        pid = share(a, b)
        add_peer(a, b)
        add_peer(b, a)
        expected = {"before": "a"}
        put(a, pid, "before", "a")
        blob = os.urandom(300000)
        r = a.unix("POST", V + "/%s/blobs" % pid, blob,
                   headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.status, 201, r)
        blob_id = r.json()["id"]
        put_body(a, pid, "photo", {"tag": "a", "photo": r.json()["ref"]})
        expected["photo"] = "a"

        # The backup is taken by syncctl while a writer keeps writing to alpha.
        backup = os.path.join(self.tmp, "backup")
        acked, stop = {}, threading.Event()

        def writer():
            i = 0
            while not stop.is_set():
                put(a, pid, "inflight%d" % i, "w")
                acked["inflight%d" % i] = "w"
                i += 1
        t = threading.Thread(target=writer)
        t.start()
        try:
            wait_until(lambda: len(acked) >= 5, 20, what="writes in flight")
            out = run_syncctl(a, "backup", backup, umask=0)
        finally:
            stop.set()
            t.join()
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("backup of device " + a.device_id, out.stdout)
        self.assertGreater(len(acked), 5)
        expected.update(acked)
        # Written by syncctl, not the daemon: the directory 0700, every file 0600 (even under
        # umask 0), no .partial left.
        self.assertFalse(os.path.exists(backup + ".partial"))
        self.assertEqual(os.stat(backup).st_mode & 0o777, 0o700)
        names = set()
        for root, dirs, files in os.walk(backup):
            for n in dirs:
                self.assertEqual(os.stat(os.path.join(root, n)).st_mode & 0o777, 0o700, n)
            for n in files:
                self.assertEqual(os.stat(os.path.join(root, n)).st_mode & 0o777, 0o600, n)
                names.add(os.path.relpath(os.path.join(root, n), backup))
        self.assertEqual(names, {"RESTORED", "device.key", "db/data.mdb",
                                 "blobs/%s/%s" % (blob_id[:2], blob_id)})
        with open(os.path.join(backup, "device.key")) as f:
            self.assertIn("PRIVATE KEY", f.read())
        # An existing, non-empty directory is refused and left alone.
        again = a.syncctl("backup", backup)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("not an empty directory", again.stderr)
        self.assertFalse(os.path.exists(backup + ".partial"))
        # The keys never reach the log.
        with open(os.path.join(a.data_dir, "device.key")) as f:
            key_lines = [ln for ln in f.read().splitlines() if ln and "-----" not in ln]
        self.assertTrue(key_lines)
        self.assertFalse(any(ln in a.log() for ln in key_lines))
        self.assertIn("backup of device", a.log())

        for i in range(3):
            put(a, pid, "after-backup%d" % i, "a")
            expected["after-backup%d" % i] = "a"
        wait_until(lambda: has_all(b, pid, expected), 20, what="sync after the backup")
        old_id = a.device_id

        # The documented restore: stop, replace the data directory with the backup, start.
        a.stop()
        shutil.rmtree(a.data_dir)
        shutil.copytree(backup, a.data_dir, symlinks=True)
        a.settings["sync.enabled"] = "false"
        a.start()
        st = status(a)
        self.assertNotEqual(st["device_id"], old_id)  # renewed before anything was written
        self.assertEqual(st["identity"]["reason"], "restored from a backup")
        self.assertFalse(os.path.exists(os.path.join(a.data_dir, "RESTORED")))
        # What the backup holds is there before any peer is met: the writes acknowledged
        # before it began, and the blob's bytes.
        self.assertEqual(tag_of(a, pid, "photo"), "a")
        r = a.unix("GET", V + "/%s/blobs/%s" % (pid, blob_id))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, blob)
        put(a, pid, "restored-write", "r")
        expected["restored-write"] = "r"
        self.restart_with(a, **{"sync.enabled": "true"})
        self.assertEqual(status(a)["device_id"], st["device_id"])
        wait_until(lambda: has_all(a, pid, expected) and has_all(b, pid, expected), 30,
                   what="the backup's later writes back on the restored device, its new write on beta")
        wait_until(lambda: in_sync(a, pid) and in_sync(b, pid), 20, what="in sync")
        self.assertEqual(status(b)["diverged_logs"], [])
        self.assertEqual(status(a)["diverged_logs"], [])

        # beta dialed alpha by address and pinned its old key: it follows the new identity (its
        # old key vouched for it), remembered across a restart; alpha no longer dials beta.
        new_id = st["device_id"]

        def configured(d):
            return {p["device_id"] for p in d.unix("GET", "/v1/peers").json()["peers"]
                    if p["configured"]}
        wait_until(lambda: new_id in configured(b) and old_id not in configured(b), 20,
                   what="beta to follow alpha's new identity")
        self.assertIn("renewed its identity", b.log())
        r = a.unix("DELETE", "/v1/peers/" + b.device_id)
        self.assertEqual(r.status, 200, r)
        b.restart()
        self.assertIn(new_id, configured(b))
        put(a, pid, "dialed-by-beta", "b-dials")
        try:
            wait_until(lambda: tag_of(b, pid, "dialed-by-beta") == "b-dials", 20,
                       what="beta dialing alpha's new identity")
        except TimeoutError:
            print(b.unix("GET", "/v1/peers").json(), file=sys.stderr)
            print(b.log()[-3000:], file=sys.stderr)
            print(a.log()[-3000:], file=sys.stderr)
            raise


def serve_once(sock_path, head, body, close_early):
    """A stand-in for fieldsyncd on `sock_path`: answers one request with `body` (chunked), then
    the terminating chunk unless close_early (the connection just closes, as fieldsyncd does
    when it cannot finish a body)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(head)
            for at in range(0, len(body), 65536):
                piece = body[at:at + 65536]
                conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            if not close_early:
                conn.sendall(b"0\r\n\r\n")
        srv.close()
    t = threading.Thread(target=run)
    t.start()
    return t


class BackupStreamTests(unittest.TestCase):
    """syncctl backup against cut and damaged streams, and the daemon when a reader goes away."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fsi-backup-", dir="/tmp")
        cls.d = start("alpha")
        pid = cls.d.create_project("p")
        # A database larger than the pipe and socket buffers (~3 MB), of random (base64) bodies
        # that compression at rest does not shrink much.
        rng = random.Random(15)
        for n in range(15):
            r = cls.d.unix("POST", V + "/%s/batch" % pid, {"writes": [
                {"collection": "obs", "id": "d%d-%d" % (n, i),
                 "body": {"pad": base64.b64encode(rng.randbytes(1500)).decode()}}
                for i in range(100)]})
            assert r.status == 200, r
        cls.pid = pid
        r = cls.d.unix("GET", "/v1/backup")
        assert r.status == 200, r
        cls.archive = r.body
        cls.head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.fieldsync.backup\r\n"
                    b"X-Fieldsync-Device: " + cls.d.device_id.encode() +
                    b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        log = cls.d.log()
        cls.d.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert rc == 0, log

    def backup_from(self, body, close_early=False, dest=None):
        sock = os.path.join(self.tmp, "fake.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        dest = dest or os.path.join(self.tmp, "backup")
        t = serve_once(sock, self.head, body, close_early)
        try:
            out = run_syncctl(None, "backup", dest, sock=sock)
        finally:
            t.join(10)
        self.assertFalse(os.path.exists(dest + ".partial"), "a .partial was left")
        return out, dest

    def test_the_whole_archive_from_a_stand_in_is_accepted(self):
        out, dest = self.backup_from(self.archive, dest=os.path.join(self.tmp, "whole"))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(os.path.isfile(os.path.join(dest, "db", "data.mdb")))
        self.assertGreater(os.path.getsize(os.path.join(dest, "db", "data.mdb")), 2000000)

    def test_a_stream_cut_anywhere_leaves_no_backup(self):
        n = len(self.archive)
        for cut in (5, 100, n // 3, n - 60, n - 1):
            for close_early in (False, True):
                out, dest = self.backup_from(self.archive[:cut], close_early)
                self.assertEqual(out.returncode, 1, (cut, close_early, out.stderr))
                self.assertIn("backup failed", out.stderr)
                self.assertIn("incomplete" if close_early else "not a complete fieldsync backup",
                              out.stderr)
                self.assertIn("nothing was written to " + dest, out.stderr)
                self.assertFalse(os.path.exists(dest), (cut, close_early))

    def test_a_damaged_stream_leaves_no_backup_and_an_empty_target_empty(self):
        dest = os.path.join(self.tmp, "empty-target")
        os.mkdir(dest, 0o755)
        damaged = bytearray(self.archive)
        damaged[len(damaged) // 2] ^= 0x40
        out, _ = self.backup_from(bytes(damaged), dest=dest)
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn("does not match its content", out.stderr)
        self.assertEqual(os.listdir(dest), [])
        out, _ = self.backup_from(b"HTTP/1.1 200 but not a backup", dest=dest)
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertEqual(os.listdir(dest), [])

    def test_a_reader_that_goes_away_stops_the_copy_and_the_daemon_serves_on(self):
        d = self.d
        for _ in range(3):
            conn = d.unix_connection(timeout=30)
            conn.request("GET", "/v1/backup")
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            self.assertEqual(len(resp.read(200000)), 200000)  # into the database copy
            conn.close()
        wait_until(lambda: d.log().count("not streamed whole") >= 3, 20,
                   what="the daemon to notice the readers went away")
        r = d.unix("PUT", V + "/%s/docs/obs/after" % self.pid, {"ok": 1})
        self.assertIn(r.status, (200, 201), r)
        dest = os.path.join(self.tmp, "after-abort")
        out = run_syncctl(d, "--json", "backup", dest)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertGreater(json.loads(out.stdout)["db_bytes"], 2000000)
        self.assertEqual(json.loads(out.stdout)["device_id"], d.device_id)


if __name__ == "__main__":
    unittest.main()
