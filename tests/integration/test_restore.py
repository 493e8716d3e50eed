#!/usr/bin/python3
"""A device must never fork its own history (docs/storage.md "One identity, one history"):
a data directory put back from an old copy, or restored with `syncctl backup`, keeps syncing,
and nothing written on either side of the restore is lost. Real fieldsyncd processes on
127.0.0.1. Run by ctest, or by hand: /usr/bin/python3 tests/integration/test_restore.py -v
"""
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import (  # noqa: E402
    V, add_peer, free_port, share, start_daemon as start, status, wait_until)


def put(d, pid, doc_id, tag):
    r = d.unix("PUT", V + "/%s/docs/obs/%s" % (pid, doc_id), {"tag": tag})
    assert r.status in (200, 201), r


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
        backup = os.path.join(self.tmp, "backup")
        out = a.syncctl("backup", backup)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("backup of device", out.stdout)
        self.assertEqual(os.stat(backup).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(backup, "device.key")).st_mode & 0o777, 0o600)
        # An existing, non-empty directory is refused.
        again = a.syncctl("backup", backup)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("not an empty directory", again.stderr)

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


if __name__ == "__main__":
    unittest.main()
