#!/usr/bin/python3
"""Convergence soak: six fieldsyncd on 127.0.0.1 under a seeded random schedule of writes
(puts, updates, deletes, creates, batches) through the API, partitions and heals (removing and
adding peers), kill -9 (and clean stops) of random daemons with later restarts. At the end everything is
healed and every daemon must hold every acknowledged write and the same versions, version
vector and document heads.

Reproducible from its seed (printed at the start): FIELDSYNC_SOAK_SEED=N. Bounded in time:
FIELDSYNC_SOAK_STEPS (default 300) schedule steps, cut short after FIELDSYNC_SOAK_SECONDS
(default 40) of chaos; then up to 90 s to converge. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_soak.py -v
"""
import os
import random
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fieldsync_harness import Daemon, free_port, wait_until  # noqa: E402
import workload  # noqa: E402

V = "/v1/projects"
N = 6
SEED = int(os.environ.get("FIELDSYNC_SOAK_SEED", str(random.SystemRandom().randrange(1 << 31))))
STEPS = int(os.environ.get("FIELDSYNC_SOAK_STEPS", "300"))
CHAOS_S = float(os.environ.get("FIELDSYNC_SOAK_SECONDS", "40"))
CONVERGE_S = 90


def restore_from_backup(d, rng):
    """Hook: replace d's data with a restored backup (`syncctl backup` + restore) and restart.

    TODO(backup): not wired yet; `syncctl backup` and its restore procedure are not on main.
    When they land: take a backup of d while it runs, write more, stop d, restore the backup
    into its data directory, start it again, and let sync bring back what came after. Returns
    False while not available (the schedule then skips the step)."""
    del d, rng
    return False


class Soak(unittest.TestCase):
    def setUp(self):
        print("soak seed %d (FIELDSYNC_SOAK_SEED=%d reproduces the schedule)" % (SEED, SEED),
              file=sys.stderr)
        self.rng = random.Random(SEED)
        self.ds = []
        for i in range(N):
            d = Daemon(name="s%d" % i, settings={
                "storage.durable": "false", "daemon.device_name": "s%d" % i,
                "sync.listen_address": "127.0.0.1", "sync.listen_port": free_port(),
                "sync.retry_min_ms": 50, "sync.retry_max_ms": 500})
            self.addCleanup(d.close)
            self.ds.append(d.start())
        pid = self.ds[0].create_project("soak")
        sec = self.ds[0].unix("GET", V + "/%s/secret" % pid)
        self.assertEqual(sec.status, 200, sec)
        for d in self.ds[1:]:
            r = d.unix("POST", V + "/import", sec.json())
            self.assertEqual(r.status, 201, r)
        self.pid = pid
        # Link (i, j), i < j: i dials j. Every pair starts linked.
        self.links = set()
        for i in range(N):
            for j in range(i + 1, N):
                self.link(i, j)

    def up(self, i):
        return self.ds[i].proc is not None

    def link(self, i, j):
        self.links.add((i, j))
        if not self.up(i):
            return  # added when i restarts
        d, other = self.ds[i], self.ds[j]
        r = d.unix("POST", "/v1/peers", {"address": "127.0.0.1:%d" % other.settings["sync.listen_port"],
                                         "device_id": other.device_id, "name": other.name})
        self.assertIn(r.status, (201, 409), r)

    def cut(self, i, j):
        self.links.discard((i, j))
        if not self.up(i):
            return  # removed when i restarts
        r = self.ds[i].unix("DELETE", "/v1/peers/%s" % self.ds[j].device_id)
        self.assertIn(r.status, (200, 404), r)

    def restart(self, i):
        """Starts i again and makes its remembered peers match the links."""
        d = self.ds[i]
        d.start()
        peers = {p["device_id"] for p in d.unix("GET", "/v1/peers").json()["peers"]
                 if p.get("configured")}
        for j in range(N):
            dev = self.ds[j].device_id
            if (i, j) in self.links and dev not in peers:
                self.link(i, j)
            elif (i, j) not in self.links and dev in peers:
                self.cut(i, j)

    def write_burst(self, i, acked):
        d = self.ds[i]
        conn = d.unix_connection(timeout=30)
        try:
            for _ in range(self.rng.randrange(1, 12)):
                status = workload.random_write(conn, self.pid, self.rng, acked, d.name)
                # 404/409: deleting a document that is not there; never a server error.
                self.assertLess(status, 500, "write to %s" % d.name)
        finally:
            conn.close()

    def test_random_writes_partitions_and_kills_converge(self):
        rng = self.rng
        acked = workload.Acked()
        counts = {"writes": 0, "cuts": 0, "heals": 0, "kills": 0, "stops": 0, "restarts": 0,
                  "restores": 0}
        started = time.monotonic()
        steps = 0
        for steps in range(1, STEPS + 1):
            if time.monotonic() - started > CHAOS_S:
                break
            x = rng.random()
            up = [i for i in range(N) if self.up(i)]
            down = [i for i in range(N) if not self.up(i)]
            if x < 0.70 and up:
                self.write_burst(rng.choice(up), acked)
                counts["writes"] += 1
            elif x < 0.78 and self.links:
                self.cut(*rng.choice(sorted(self.links)))
                counts["cuts"] += 1
            elif x < 0.86:
                missing = [(i, j) for i in range(N) for j in range(i + 1, N)
                           if (i, j) not in self.links]
                if missing:
                    self.link(*rng.choice(missing))
                    counts["heals"] += 1
            elif x < 0.93 and len(up) > 2:
                i = rng.choice(up)
                if rng.random() < 0.75:
                    self.ds[i].kill()  # SIGKILL, mid-sync
                    counts["kills"] += 1
                else:
                    self.assertEqual(self.ds[i].stop(), 0, self.ds[i].log()[-3000:])
                    counts["stops"] += 1
            elif x < 0.99 and down:
                self.restart(rng.choice(down))
                counts["restarts"] += 1
            elif up:
                if restore_from_backup(self.ds[rng.choice(up)], rng):
                    counts["restores"] += 1
        print("soak: %d steps in %.1f s: %s; %d acknowledged writes"
              % (steps, time.monotonic() - started, counts, len(acked)), file=sys.stderr)
        self.assertGreater(len(acked), 0)

        # Heal everything: every daemon up, every pair linked.
        for i in range(N):
            if not self.up(i):
                self.restart(i)
        for i in range(N):
            for j in range(i + 1, N):
                if (i, j) not in self.links:
                    self.link(i, j)
        want = acked.versions()
        began = time.monotonic()

        def converged():
            snaps = [workload.snapshot(d, self.pid) for d in self.ds]
            if not want <= snaps[0]["versions"]:
                return None
            return snaps if all(s == snaps[0] for s in snaps[1:]) else None
        try:
            snaps = wait_until(converged, CONVERGE_S, 0.5, "all six daemons to converge")
        except TimeoutError:
            for d in self.ds:
                s = workload.snapshot(d, self.pid)
                print("%s: %d versions, %d acknowledged missing, vv %s" % (
                    d.name, len(s["versions"]), len(want - s["versions"]), s["vv"]),
                    file=sys.stderr)
            raise AssertionError("no convergence (seed %d)" % SEED)
        print("soak: converged in %.1f s: %d versions, %d documents on each of %d daemons"
              % (time.monotonic() - began, len(snaps[0]["versions"]), len(snaps[0]["heads"]), N),
              file=sys.stderr)
        for d, s in zip(self.ds, snaps):
            self.assertTrue(want <= s["versions"], d.name)
            self.assertEqual(s["vv"], snaps[0]["vv"], d.name)
            self.assertEqual(s["heads"], snaps[0]["heads"], d.name)


if __name__ == "__main__":
    unittest.main()
