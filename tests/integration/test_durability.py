#!/usr/bin/python3
"""Power-cut durability of a real fieldsyncd (storage.durable = true) written to over its API.

The daemon runs under the fault-injection shim (tests/fault: libfs_fault_fs.so), which keeps
an undo journal of every write to its LMDB files that was not synced yet. Each round: writers
put, update, delete and batch over the Unix socket; the daemon is killed with SIGKILL while
writes are in flight; fs_power_cut undoes every unsynced write (what losing the page cache
does); the daemon restarts. Rounds alternate between two kinds of kill: the test's SIGKILL at
a random moment (syncs wait SYNC_DELAY_MS first, a slow card, so most land while a commit is in
flight), and the shim's own SIGKILL right after the daemon's Nth write that no sync covers
(FIELDSYNC_FAULT_KILL_AFTER_WRITES), which is sure to land inside a commit whatever the
machine's timing. Every acknowledged write must still be there, and at the end a
fresh daemon syncs the whole project from it (sync verifies every log from genesis: hashes,
chain, signatures) and must hold exactly the same versions.

Negative control: with storage.durable = false, or with a disk that ignores flushes
(FIELDSYNC_FAULT_IGNORE_SYNC=1), the same check must detect lost acknowledged writes.

Env: FIELDSYNC_FAULT_SHIM, FIELDSYNC_POWER_CUT (set by ctest), FIELDSYNC_DURABILITY_SEED.
Run by ctest, or by hand: /usr/bin/python3 tests/integration/test_durability.py -v
"""
import os
import random
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import Daemon, find_binary, wait_until  # noqa: E402
import workload  # noqa: E402

V = "/v1/projects"
SHIM = find_binary("FIELDSYNC_FAULT_SHIM", "tests/fault/libfs_fault_fs.so")
POWER_CUT = find_binary("FIELDSYNC_POWER_CUT", "tests/fault/fs_power_cut")
SEED = int(os.environ.get("FIELDSYNC_DURABILITY_SEED", str(random.SystemRandom().randrange(1 << 31))))
ROUNDS = 6  # even rounds: killed by the test; odd rounds: by the shim inside a commit
WRITERS = 3
SYNC_DELAY_MS = 5


def shim_env(d, ignore_sync=False, kill_after_writes=0):
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {"LD_PRELOAD": SHIM,
            # > 0: the daemon kills itself right after its Nth write that no sync covers yet.
            "FIELDSYNC_FAULT_KILL_AFTER_WRITES": str(kill_after_writes),
            "FIELDSYNC_FAULT_DIR": os.path.join(d.data_dir, "db"),
            "FIELDSYNC_FAULT_JOURNAL": journal_dir(d),
            "FIELDSYNC_FAULT_IGNORE_SYNC": "1" if ignore_sync else "0",
            # A slow card: each sync waits first, so a kill usually lands while a commit's
            # writes are not durable yet (on a fast disk, with writes grouped into one commit,
            # most kills would land between commits and test little).
            "FIELDSYNC_FAULT_SYNC_DELAY_MS": str(SYNC_DELAY_MS),
            # Under ASan the preloaded shim comes before the ASan runtime.
            "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}


def journal_dir(d):
    return os.path.join(d.workdir, "undo-journal")


def power_cut(d):
    """kill -9, then undo every unsynced write. Returns how many files the cut changed."""
    d.kill()
    p = subprocess.run([POWER_CUT, journal_dir(d)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    # "power cut: F files, R records, B bytes restored, C files changed"
    last = p.stdout.strip().splitlines()[-1]
    return int(last.split(",")[3].split()[0])


def write_until_killed(d, pid, rng, acked, kill_after):
    """WRITERS threads write until kill_after writes are acknowledged, then the power is cut
    while they are still writing; kill_after None: until the daemon kills itself (the shim's
    FIELDSYNC_FAULT_KILL_AFTER_WRITES), then the power is cut. Returns how many files the cut
    changed."""
    stop = threading.Event()
    seeds = [rng.randrange(1 << 30) for _ in range(WRITERS)]

    def writer(i):
        wrng = random.Random(seeds[i])
        conn = d.unix_connection(timeout=10)
        try:
            while not stop.is_set():
                workload.random_write(conn, pid, wrng, acked, d.name)
        except OSError:
            pass  # the daemon died: whatever was not answered was not acknowledged
        except Exception:  # noqa: BLE001 - http.client raises its own on a dead peer
            pass
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(WRITERS)]
    start = len(acked)
    for t in threads:
        t.start()
    if kill_after is None:
        wait_until(lambda: d.proc.poll() is not None, 60, 0.005, "the shim to kill the daemon")
        assert d.proc.returncode == -9, d.proc.returncode
    else:
        wait_until(lambda: len(acked) - start >= kill_after, 60, 0.005, "acknowledged writes")
    changed = power_cut(d)
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a writer did not stop"
    return changed


def missing_writes(d, pid, acked):
    held = {c["version"] for c in workload.changes(d, pid)}
    return [w for w in acked.snapshot() if w[3] not in held]


class PowerCut(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        print("durability seed %d (FIELDSYNC_DURABILITY_SEED=%d reproduces the schedule)"
              % (SEED, SEED), file=sys.stderr)

    def daemon(self, name, durable=True, ignore_sync=False, fault=True):
        d = Daemon(name=name, settings={"storage.durable": "true" if durable else "false",
                                        "sync.listen_address": "127.0.0.1",
                                        "sync.retry_min_ms": 100, "sync.retry_max_ms": 1000,
                                        "daemon.device_name": name})
        if fault:
            os.makedirs(journal_dir(d), exist_ok=True)
            d.env = shim_env(d, ignore_sync)
        self.addCleanup(d.close)
        return d

    def test_power_cuts_keep_every_acknowledged_write(self):
        rng = random.Random(SEED)
        a = self.daemon("power").start()
        pid = a.create_project("durable")
        acked = workload.Acked()
        random_cuts_unsynced = 0
        for rnd in range(ROUNDS):
            by_shim = rnd % 2 == 1
            if by_shim:
                # Restarted with a count of unsynced writes after which it kills itself: a
                # single durable write is a few, so this lands after tens of acknowledged ones.
                a.stop()
                a.env = shim_env(a, kill_after_writes=rng.randrange(30, 300))
                a.start()
            changed = write_until_killed(a, pid, rng, acked,
                                         None if by_shim else rng.randrange(20, 150))
            if by_shim:
                # The shim killed it right after a write no sync covered: the cut undid it.
                self.assertGreater(changed, 0, "round %d (seed %d)" % (rnd, SEED))
                a.env = shim_env(a)
            else:
                random_cuts_unsynced += changed > 0
            a.start()
            missing = missing_writes(a, pid, acked)
            self.assertEqual(missing, [], "round %d (seed %d): %d of %d acknowledged writes lost"
                             % (rnd, SEED, len(missing), len(acked)))
        print("power cut: %d rounds, %d acknowledged writes kept, %d of %d cuts at a random "
              "moment undid unsynced writes" % (ROUNDS, len(acked), random_cuts_unsynced,
                                                (ROUNDS + 1) // 2), file=sys.stderr)
        # Every log verifies from genesis: a fresh daemon syncs all of it and holds the same.
        sec = a.unix("GET", V + "/%s/secret" % pid)
        self.assertEqual(sec.status, 200, sec)
        b = self.daemon("fresh", fault=False).start()
        self.assertEqual(b.unix("POST", V + "/import", sec.json()).status, 201)
        st = a.unix("GET", "/v1/status").json()
        r = b.unix("POST", "/v1/peers", {"address": "127.0.0.1:%d" % st["peers"]["listen_port"],
                                         "device_id": a.device_id, "name": "power"})
        self.assertEqual(r.status, 201, r)
        want = workload.snapshot(a, pid)
        wait_until(lambda: workload.snapshot(b, pid)["versions"] == want["versions"], 60,
                   0.2, "the fresh daemon to sync every log")
        self.assertEqual(workload.snapshot(b, pid), want)
        self.assertTrue(acked.versions() <= want["versions"])

    def negative_control(self, name, durable, ignore_sync):
        rng = random.Random(SEED + 1)
        a = self.daemon(name, durable=durable, ignore_sync=ignore_sync).start()
        pid = a.create_project("lossy")
        acked = workload.Acked()
        changed = write_until_killed(a, pid, rng, acked, 40)
        self.assertGreater(changed, 0)
        a.start()  # the store is still consistent: it opens
        missing = missing_writes(a, pid, acked)
        print("negative control (%s): %d of %d acknowledged writes lost"
              % (name, len(missing), len(acked)), file=sys.stderr)
        self.assertGreater(len(missing), 0, "the power cut lost nothing: the check cannot fail")

    def test_negative_control_durable_false_loses_writes(self):
        self.negative_control("nosync", durable=False, ignore_sync=False)

    def test_negative_control_ignored_flushes_lose_writes(self):
        self.negative_control("noflush", durable=True, ignore_sync=True)


if __name__ == "__main__":
    unittest.main()
