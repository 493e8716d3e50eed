// Starts a real fieldsyncd on a temporary data directory for the tests, with the flags of
// tests/integration/fieldsync_harness.py (Daemon.args()): the API on <tmp>/api.sock and an
// ephemeral 127.0.0.1 port, sync on an ephemeral port. FIELDSYNCD names the binary (ctest sets it).
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { FieldSync } from "../fieldsync.mjs";

const here = dirname(fileURLToPath(import.meta.url));
export const FIELDSYNCD = process.env.FIELDSYNCD || resolve(here, "../../../build/daemon/fieldsyncd");

// Daemons that sync with each other on 127.0.0.1: quick redials, no fsync per commit.
const FAST = { "storage.durable": "false", "sync.retry_min_ms": 100, "sync.retry_max_ms": 1000,
               "sync.listen_address": "127.0.0.1" };

/** Polls `predicate` (async) until it returns a truthy value; throws at the deadline. */
export async function waitUntil(predicate, { deadlineMs = 15000, intervalMs = 20, what = "a condition" } = {}) {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() >= end) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export class Daemon {
  constructor(name = "d", settings = {}) {
    this.name = name;
    this.workdir = mkdtempSync(`/tmp/fsc-${name}-`);
    this.dataDir = join(this.workdir, "data");
    this.socketPath = join(this.workdir, "api.sock");
    this.configPath = join(this.workdir, "empty.conf");
    this.logPath = join(this.workdir, "daemon.log");
    this.settings = { ...FAST, "daemon.device_name": name, ...settings };
    writeFileSync(this.configPath, "");
  }

  args() {
    const a = ["--config", this.configPath, "--data-dir", this.dataDir,
               "--set", `api.socket_path=${this.socketPath}`, "--set", "api.http_port=0",
               "--set", "sync.listen_port=0"];
    for (const [k, v] of Object.entries(this.settings)) a.push("--set", `${k}=${v}`);
    return a;
  }

  async start() {
    const log = openSync(this.logPath, "a");
    const env = { ...process.env };
    delete env.NOTIFY_SOCKET;
    this.proc = spawn(FIELDSYNCD, this.args(), { stdio: ["ignore", log, log], env });
    closeSync(log);
    this.exited = new Promise((r) => this.proc.once("exit", (code, signal) => r({ code, signal })));
    let exitedEarly = null;
    this.exited.then((e) => { exitedEarly = e; });
    this.unix = new FieldSync({ socketPath: this.socketPath, timeoutMs: 2000 });
    const status = await waitUntil(async () => {
      if (exitedEarly) throw new Error(`fieldsyncd ${this.name} exited during start: ${JSON.stringify(exitedEarly)}\n${this.log()}`);
      try {
        return await this.unix.status();
      } catch {
        return null;
      }
    }, { deadlineMs: 30000, what: `fieldsyncd ${this.name} to answer` });
    this.deviceId = status.device_id;
    this.syncPort = status.peers.listen_port;
    this.port = Number(readFileSync(join(this.dataDir, "api.port"), "utf8").trim());
    this.token = readFileSync(join(this.dataDir, "api.token"), "utf8").trim();
    this.url = `http://127.0.0.1:${this.port}`;
    return this;
  }

  log() {
    try {
      return readFileSync(this.logPath, "utf8");
    } catch {
      return "";
    }
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill("SIGTERM");
      const timer = setTimeout(() => this.proc.kill("SIGKILL"), 10000);
      await this.exited;
      clearTimeout(timer);
    }
    if (!process.env.FIELDSYNC_KEEP_TMP) rmSync(this.workdir, { recursive: true, force: true });
  }
}
