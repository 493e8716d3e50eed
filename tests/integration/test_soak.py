#!/usr/bin/python3
"""Convergence soak: six fieldsyncd on 127.0.0.1 under a seeded random schedule of writes
(puts, updates, deletes, creates, batches) through the API, partitions and heals (removing and
adding peers), kill -9 (and clean stops) of random daemons with later restarts, and restores of
a daemon from a backup taken while it ran (`syncctl backup`; the restored daemon continues
under a new identity). At the end everything is healed and every daemon must hold every
acknowledged write that must survive (see Soak.restore_from_backup) and the same versions,
version vector and document heads.

Reproducible from its seed (printed at the start): FIELDSYNC_SOAK_SEED=N. Bounded in time:
FIELDSYNC_SOAK_STEPS (default 300) schedule steps, cut short after FIELDSYNC_SOAK_SECONDS
(default 40) of chaos; then up to 90 s to converge. Run by ctest, or by hand:
/usr/bin/python3 tests/integration/test_soak.py -v
"""
import os
import random
import shutil
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
        self.old_ids = [[] for _ in range(N)]
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
        for dev in self.ids(j):
            r = self.ds[i].unix("DELETE", "/v1/peers/%s" % dev)
            self.assertIn(r.status, (200, 404), r)

    def ids(self, j):
        """Every device id j had: a restored daemon continues under a new one, and peers may
        still remember it under an earlier one (they follow the new one by themselves)."""
        return self.old_ids[j] + [self.ds[j].device_id]

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
            elif (i, j) not in self.links and peers.intersection(self.ids(j)):
                self.cut(i, j)

    def restore_from_backup(self, i, acked, counts):
        """Backs i up while it runs (`syncctl backup`), writes more on it, stops it (kill -9 or
        a clean stop), replaces its data directory with the backup and starts it again: it
        renews its identity (checked) and gets back from its peers what they hold of what it
        wrote after the backup.

        Which writes must survive: a write i acknowledged after the backup exists only on i
        until a peer receives it; the restore throws i's copy away. So once i is stopped, the
        soak asks every running daemon which of those versions it holds: those held somewhere
        must survive (the final check wants them on every daemon), the others are forgotten
        (lost as docs/operations.md says a restore loses them; a daemon that is down may still
        hold some, then they come back too, which the check allows). The schedule does not wait
        for sync before the restore, so runs see both kinds."""
        d = self.ds[i]
        backup = os.path.join(d.workdir, "backup")
        out = d.syncctl("backup", backup, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        before = len(acked.snapshot())
        for _ in range(self.rng.randrange(0, 3)):
            self.write_burst(i, acked)
        after_backup = {w[3] for w in acked.snapshot()[before:]}
        if self.rng.random() < 0.5:
            d.kill()
        else:
            self.assertEqual(d.stop(), 0, d.log()[-3000:])
        held = set()
        for j in range(N):
            if j != i and self.up(j):
                held |= {c["version"] for c in workload.changes(self.ds[j], self.pid)}
        lost = after_backup - held
        acked.forget(lost)
        counts["restore_writes_kept"] += len(after_backup) - len(lost)
        counts["restore_writes_lost"] += len(lost)
        shutil.rmtree(d.data_dir)
        os.rename(backup, d.data_dir)
        old = d.device_id
        self.old_ids[i].append(old)
        self.restart(i)
        st = d.unix("GET", "/v1/status").json()
        self.assertNotEqual(st["device_id"], old)
        self.assertEqual(st["identity"]["renewed_from"], old)
        self.assertEqual(st["identity"]["reason"], "restored from a backup")
        # Its own links are restored with it; peers that dial it follow its new identity.

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
                  "restores": 0, "restore_writes_kept": 0, "restore_writes_lost": 0}
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
            elif x < 0.98 and down:
                self.restart(rng.choice(down))
                counts["restarts"] += 1
            elif up:
                self.restore_from_backup(rng.choice(up), acked, counts)
                counts["restores"] += 1
        if counts["restores"] == 0:  # every run restores at least once
            self.restore_from_backup(rng.choice([i for i in range(N) if self.up(i)]), acked, counts)
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
            for d in self.ds:  # what each daemon said about its peers lately
                lines = [x for x in d.log().splitlines() if " sync: " in x or "error" in x]
                print("--- %s (%s), last sync log lines:\n%s" % (
                    d.name, d.device_id, "\n".join(lines[-25:])), file=sys.stderr)
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
