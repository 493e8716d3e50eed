#!/usr/bin/python3
"""fieldsyncd on a full disk: writes get 503 resource_exhausted from the first failed write on,
reads keep working, and a daemon restarted on the full disk (where it cannot write api.port)
still serves. Needs a small tmpfs of its own: mounted here as root; where that is not possible
the test exits 77, which ctest reports as skipped (never as passed).
"""
import base64
import os
import random
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import Daemon  # noqa: E402

SKIP = 77
V = "/v1/projects"


def mount_tmpfs(path, size):
    if os.geteuid() != 0:
        return "not root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", path],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or "mount failed")


class DiskFullTest(unittest.TestCase):
    mnt = None

    def test_full_disk_gives_503_and_a_restart_still_serves(self):
        workdir = tempfile.mkdtemp(prefix="fsi-full-", dir="/tmp")
        d = Daemon(name="full", workdir=workdir,
                   settings={"storage.map_size": "64M", "discovery.enabled": "false"})
        d.data_dir = self.mnt
        with d:
            pid = d.create_project("full")
            # Large documents: LMDB's write of many pages at once comes up short on the full
            # disk (which it reports as EIO); that too is a full disk, not an internal error.
            # Random (base64) so that compression at rest cannot shrink them to nothing.
            body = {"pad": base64.b64encode(random.Random(1).randbytes(150000)).decode()}
            first_failure = None
            written = []
            for i in range(4000):
                r = d.unix("PUT", "%s/%s/docs/obs/d%d" % (V, pid, i), body)
                if r.status not in (200, 201):
                    first_failure = r
                    break
                written.append(i)
            self.assertIsNotNone(first_failure, "the disk never filled up")
            self.assertEqual(first_failure.status, 503, first_failure)
            self.assertEqual(first_failure.json()["error"], "resource_exhausted", first_failure)
            self.assertIn("disk full", first_failure.json()["message"])
            # Further writes, large or small, say the same; reads still work.
            for size in (200000, 30000, 100):
                for i in range(30):
                    r = d.unix("PUT", "%s/%s/docs/obs/again%d-%d" % (V, pid, size, i), {"pad": "y" * size})
                    if r.status not in (200, 201):
                        self.assertEqual((r.status, r.json()["error"]), (503, "resource_exhausted"), r)
            self.assertEqual(d.unix("GET", "%s/%s/docs/obs/d%d" % (V, pid, written[-1])).status, 200)
            self.assertEqual(d.stop(), 0, d.log())
            # Take every byte left, then restart: api.port cannot be written.
            fd = os.open(os.path.join(self.mnt, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError:
                pass
            finally:
                os.close(fd)
            d.start()
            self.assertFalse(os.path.exists(os.path.join(self.mnt, "api.port")),
                             "a stale api.port was left behind")
            self.assertIn("api.port", d.log())
            status = d.unix("GET", "/v1/status")
            self.assertEqual(status.status, 200, status)
            self.assertEqual(d.unix("GET", "%s/%s/docs/obs/d0" % (V, pid)).status, 200)
            # TCP works on the port the status reports.
            self.assertEqual(d.http("GET", "/v1/status").status, 200)
            self.assertEqual(d.stop(), 0, d.log())


def main():
    mnt = tempfile.mkdtemp(prefix="fsi-tmpfs-", dir="/tmp")
    why = mount_tmpfs(mnt, "3m")
    if why:
        os.rmdir(mnt)
        print("SKIP: cannot mount a small tmpfs for the full-disk test (%s)" % why, file=sys.stderr)
        sys.exit(SKIP)
    DiskFullTest.mnt = mnt
    try:
        result = unittest.main(exit=False, verbosity=2).result
    finally:
        subprocess.run(["umount", "-l", mnt])
        os.rmdir(mnt)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
