#!/usr/bin/python3
"""Discovery between real fieldsyncd processes over real mDNS (run by netns_discovery_test.sh,
which creates the network namespaces A and B with a dbus-daemon each and removes them after).

Daemons (no peer configured anywhere):
  a  netns A  project P, policy auto
  b  netns B  project P (imported), policy auto
  c  netns A  project Q only, policy auto   -> discovered by b, never synced (no tag matches)
  d  netns A  project P, discovery.enabled = false -> never discovered
Checks: b starts before its avahi-daemon and registers once it runs; a and b find each other and sync P; b lists c as "discovered" with no shared project;
a's TXT update (a new project's tag) reaches b; a manual pick (POST /v1/peers without an address) takes the discovered address; avahi-daemon
in A restarted -> a registers again and b finds it again, sync goes on; c hides Q
(visible = false) -> c withdraws and leaves b's list; d never appears.
Every wait polls with a deadline. Python 3 standard library only.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from fieldsync_harness import Daemon, wait_until  # noqa: E402

V = "/v1/projects"
FAST = {"storage.durable": "false", "discovery.refresh_ms": 300, "sync.retry_min_ms": 200,
        "sync.retry_max_ms": 2000}


class Avahi:
    """avahi-daemon of one namespace, started by the script the shell part wrote."""

    def __init__(self, node_dir):
        self.dir = node_dir
        self.proc = None
        self.starts = 0

    def start(self, deadline_s=10):
        self.starts += 1
        self.log_path = os.path.join(self.dir, "avahi-%d.log" % self.starts)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([os.path.join(self.dir, "start-avahi.sh")],
                                     stdout=self.log, stderr=self.log)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError("avahi-daemon exited:\n" + open(self.log_path).read())
            return b"Server startup complete" in open(self.log_path, "rb").read()
        wait_until(up, deadline_s, 0.05, "avahi-daemon in %s to start" % self.dir)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None
        self.log.close()


class NetnsDaemon(Daemon):
    """A fieldsyncd inside a network namespace, on that namespace's system bus."""

    def __init__(self, netns, bus, **kw):
        super().__init__(env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=" + bus}, **kw)
        self.netns = netns

    def args(self):
        return ["ip", "netns", "exec", self.netns] + super().args()

    def status(self):
        return self.unix("GET", "/v1/status").json()

    def peers(self):
        r = self.unix("GET", "/v1/peers")
        assert r.status == 200, r
        return {p["device_id"]: p for p in r.json()["peers"]}


def check(cond, what, *daemons):
    if not cond:
        for d in daemons:
            print("---- log of %s\n%s" % (d.name, d.log()[-4000:]))
        raise AssertionError(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fieldsyncd", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--netns-a", required=True)
    ap.add_argument("--netns-b", required=True)
    o = ap.parse_args()
    bus_a = os.path.join(o.work, "A", "system_bus_socket")
    bus_b = os.path.join(o.work, "B", "system_bus_socket")
    t0 = time.monotonic()
    avahi_a, avahi_b = Avahi(os.path.join(o.work, "A")), Avahi(os.path.join(o.work, "B"))
    daemons = []

    def node(name, netns, bus, **settings):
        s = dict(FAST)
        s["daemon.device_name"] = "fs-" + name
        s.update(settings)
        workdir = os.path.join(o.work, "node-" + name)
        os.makedirs(workdir, exist_ok=True)
        d = NetnsDaemon(netns, bus, binary=o.fieldsyncd, name=name, settings=s, workdir=workdir)
        daemons.append(d)
        return d.start()

    try:
        avahi_a.start()
        a = node("a", o.netns_a, bus_a)
        # b starts while its avahi-daemon is absent: it runs, waits, and registers later.
        b = node("b", o.netns_b, bus_b)
        check(b.status()["discovery"]["avahi"] == "connecting", "b waits for avahi-daemon", b)
        avahi_b.start()
        c = node("c", o.netns_a, bus_a)
        d = node("d", o.netns_a, bus_a, **{"discovery.enabled": "false"})
        print("4 daemons up after %.1f s" % (time.monotonic() - t0))
        everyone = (a, b, c, d)
        for x in everyone:  # nothing is shared yet, so nothing can have been added either
            check(not x.status()["peers"]["known"], "no peer is configured at start", x)

        auto = {"discovery": {"policy": "auto"}}
        pid = a.create_project("survey", auto)
        secret = a.unix("GET", V + "/%s/secret" % pid)
        assert secret.status == 200, secret
        for other in (b, d):
            r = other.unix("POST", V + "/import", secret.json())
            assert r.status == 201, r
        r = b.unix("PATCH", V + "/" + pid, {"settings": auto})
        assert r.status == 200, r
        c.create_project("other team", auto)
        r = a.unix("POST", V + "/%s/docs/obs?id=first" % pid, {"note": "seen by the river"})
        assert r.status == 201, r

        # 1. a and b find each other over mDNS and sync P with no peer configured.
        def synced(doc):
            r = b.unix("GET", V + "/%s/docs/obs/%s" % (pid, doc))
            return r.status == 200
        t1 = time.monotonic()
        try:
            wait_until(lambda: synced("first"), 20, 0.1, "b to receive a's document")
        except TimeoutError:
            check(False, "a and b did not discover each other and sync", a, b)
        print("discovered + synced after %.1f s" % (time.monotonic() - t1))
        # Whoever found the other first dialed; both then list each other as auto peers.
        def member_of(x, y, pids):
            e = x.peers().get(y.device_id)
            return e if e and e["discovered"] and sorted(e["discovered"]["projects"]) == sorted(pids) \
                and e["discovered"]["auto"] and e["configured"] else None
        ea = wait_until(lambda: member_of(b, a, [pid]), 10, 0.05, "b to list a as an auto peer of P")
        check(ea["discovered"]["addresses"][0].startswith("tcp://169.254.77.1:"), "a's address: %r" % ea, b)
        wait_until(lambda: member_of(a, b, [pid]), 10, 0.05, "a to list b as an auto peer of P")

        # 2. c (another project) is discovered but not synced: its tag matches nothing.
        wait_until(lambda: c.device_id in b.peers(), 10, 0.1, "b to discover c")
        ec = b.peers()[c.device_id]
        check(ec["state"] == "discovered" and not ec["configured"] and not ec["connected"],
              "c is only discovered on b: %r" % ec, b)
        check(ec["discovered"]["projects"] == [], "c shares no project with b: %r" % ec, b)
        check(not any(p["connected"] for p in c.peers().values()), "nobody syncs with c", c)
        sc = b.syncctl("peers")
        check(sc.returncode == 0 and "discovered" in sc.stdout and "fs-c" in sc.stdout,
              "syncctl peers shows c as discovered:\n" + sc.stdout + sc.stderr, b)

        # 3. Avahi restarted in A: a (and c) register again and b finds a again; sync goes on.
        regs = a.status()["discovery"]["registrations"]
        check(regs >= 1 and a.status()["discovery"]["announced"], "a is announced", a)
        avahi_a.stop()
        wait_until(lambda: a.status()["discovery"]["avahi"] != "running", 10, 0.05,
                   "a to notice avahi-daemon left")
        wait_until(lambda: not b.peers()[a.device_id]["discovered"], 10, 0.05,
                   "b to see a's service go (goodbye)")
        check(b.peers()[a.device_id]["configured"], "b keeps a while the session lasts", b)
        t2 = time.monotonic()
        avahi_a.start()
        wait_until(lambda: a.status()["discovery"]["registrations"] > regs, 15, 0.05,
                   "a to register again after avahi-daemon came back")
        wait_until(lambda: b.peers()[a.device_id]["discovered"], 15, 0.05, "b to find a again")
        print("re-registered and rediscovered %.1f s after avahi-daemon restarted"
              % (time.monotonic() - t2))
        r = a.unix("POST", V + "/%s/docs/obs?id=second" % pid, {"note": "after the restart"})
        assert r.status == 201, r
        wait_until(lambda: synced("second"), 15, 0.05, "b to receive a write made after the restart")
        check("avahi-daemon" in a.log(), "a logged the Avahi outage", a)

        # A TXT change reaches b without the service going away (the hourly tag rotation
        # relies on this): a second project on a, known to b, shows up as shared.
        pid2 = a.create_project("second", auto)
        r = b.unix("POST", V + "/import", a.unix("GET", V + "/%s/secret" % pid2).json())
        assert r.status == 201, r
        wait_until(lambda: member_of(b, a, [pid, pid2]), 15, 0.05, "b to see a's new tag")

        # 4. Manual pick: POST /v1/peers with only the device id takes the discovered address.
        wait_until(lambda: c.device_id in b.peers(), 15, 0.05, "b to find c again")
        r = b.unix("POST", "/v1/peers", {"device_id": c.device_id})
        check(r.status == 201 and r.json()["address"] == b.peers()[c.device_id]["discovered"]["addresses"][0],
              "manual pick of c: %r" % r, b)
        r = b.unix("DELETE", "/v1/peers/" + c.device_id)
        assert r.status == 200, r
        r = b.unix("POST", "/v1/peers", {"device_id": d.device_id})
        check(r.status == 404, "an undiscovered device needs an address: %r" % r, b)

        # 5. Visibility off: c hides its only project -> withdraws -> leaves b's list.
        qid = c.unix("GET", V).json()["projects"][0]["id"]
        r = c.unix("PATCH", V + "/" + qid, {"settings": {"discovery": {"visible": False}}})
        assert r.status == 200, r
        wait_until(lambda: c.device_id not in b.peers(), 15, 0.05, "c to disappear from b's list")
        check(not c.status()["discovery"]["announced"], "c is not announced", c)

        # 6. d (discovery.enabled = false) never showed up anywhere, yet shares P.
        check(d.device_id not in b.peers() and d.device_id not in a.peers(), "d is never discovered", a, b)
        check(d.status()["discovery"]["enabled"] is False, "d reports discovery off", d)
        # No storm: b added a once and never failed to reach it.
        check(b.peers()[a.device_id]["failures"] <= 1, "b dialed a without a retry storm", b)
        print("PASS in %.1f s" % (time.monotonic() - t0))
        return 0
    except Exception:
        # Whatever failed (a daemon that went away answers with a reset), its log says why.
        for x in daemons:
            print("---- log of %s (exit %r)\n%s" % (x.name, x.proc.poll() if x.proc else None,
                                                    x.log()[-6000:]))
        raise
    finally:
        for x in daemons:
            x.close()
        for av in (avahi_a, avahi_b):
            try:
                av.stop()
            except Exception:  # noqa: BLE001 - the shell part kills what is left
                pass


if __name__ == "__main__":
    sys.exit(main())
