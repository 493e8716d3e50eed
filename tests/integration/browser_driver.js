// Drives Debian's chromium (headless, through puppeteer-core) for tests/integration/test_browser.py.
// node browser_driver.js '<json config>' runs config.mode ("status_page" or "web_app") and prints
// one JSON object of what the browser saw; the Python test asserts on it. Nothing here downloads
// a browser: config.chromium is the system's.
"use strict";
const path = require("path");
const puppeteer = require(path.join(process.env.PUPPETEER_DIR, "node_modules", "puppeteer-core"));

const cfg = JSON.parse(process.argv[2]);
const WAIT_MS = 15000;

async function launch() {
  // Root cannot run chromium's sandbox (it refuses to start without --no-sandbox); the GPU is
  // not there in a container.
  const args = ["--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-dev-shm-usage", "--lang=en-US"];
  if (process.getuid() === 0) args.push("--no-sandbox");
  return puppeteer.launch({executablePath: cfg.chromium, headless: true, args,
                           userDataDir: cfg.profile, timeout: WAIT_MS,
                           defaultViewport: {width: 1000, height: 1000, deviceScaleFactor: 1}});
}

async function statusPage(browser) {
  const out = {console: []};
  const page = await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") out.console.push(m.text()); });
  page.on("pageerror", (e) => out.console.push("pageerror: " + e.message));
  const resp = await page.goto(cfg.url, {waitUntil: "load"});
  out.csp = resp.headers()["content-security-policy"] || null;
  await page.waitForSelector("body[data-loaded]", {timeout: WAIT_MS});
  out.location = await page.evaluate(() => location.href);
  // Both peers in the states the test brought them to (the page refreshes every 2 s).
  await page.waitForFunction((want) => Object.entries(want).every(([id, state]) => {
    const row = document.querySelector(`tr.peer[data-device="${id}"] .state`);
    return row && row.textContent === state;
  }), {timeout: WAIT_MS}, cfg.peer_states);
  out.device = await page.$eval("#device", (e) => e.textContent);
  out.peers = await page.$$eval("tr.peer", (rows) => rows.map((r) => ({
    device: r.dataset.device, state: r.querySelector(".state").textContent,
    reason: r.querySelector(".reason").textContent,
    progress: r.querySelector(".progress").textContent})));
  const project = `.project[data-project="${cfg.pid}"]`;
  out.conflicts = await page.$$eval(`${project} .conflicts li`, (ls) => ls.map((l) => l.textContent));
  await page.click(`${project} .create-invite`);
  await page.waitForFunction(() => {
    const img = document.getElementById("invite-qr");
    return !document.getElementById("invite").hidden && img.complete && img.naturalWidth > 0;
  }, {timeout: WAIT_MS});
  out.invite_code = await page.$eval("#invite-code", (e) => e.textContent);
  out.qr = await page.$eval("#invite-qr", (img) => {
    img.scrollIntoView();
    const r = img.getBoundingClientRect();
    const svg = atob(img.src.split(",")[1]);
    const box = /viewBox="0 0 (\d+) (\d+)"/.exec(svg);
    return {x: r.x, y: r.y, width: r.width, height: r.height, modules: Number(box[1])};
  });
  await page.screenshot({path: cfg.screenshot});
  await (await page.$("#invite-qr")).screenshot({path: cfg.qr_screenshot});
  const errorsSoFar = out.console.slice();
  // The page's session does what the page shows, nothing more.
  out.session_may_not = await page.evaluate(async () => (await fetch("/v1/projects", {
    method: "POST", body: JSON.stringify({name: "x"}),
    headers: {"Content-Type": "application/json",
              Authorization: "Bearer " + sessionStorage.getItem("fieldsync-session")}})).status);
  out.console = errorsSoFar;
  // A reload keeps the session (this tab's sessionStorage). (That the login link works once is
  // checked by test_http.py StatusPageTest.)
  await page.reload({waitUntil: "load"});
  await page.waitForSelector("body[data-loaded]", {timeout: WAIT_MS});
  out.reloaded = true;
  return out;
}

async function webApp(browser) {
  const out = {};
  const page = await browser.newPage();
  await page.goto(cfg.allowed_page, {waitUntil: "load"});
  out.allowed = await page.evaluate(async (api, token, pid) => {
    const auth = {Authorization: "Bearer " + token};
    const status = await (await fetch(api + "/v1/status", {headers: auth})).json();
    const t = await (await fetch(api + "/v1/tickets", {method: "POST", headers: auth})).json();
    window.received = [];
    const feed = new EventSource(`${api}/v1/projects/${pid}/changes?feed=sse&since=now&ticket=${t.ticket}`);
    feed.addEventListener("change", (e) => window.received.push(JSON.parse(e.data)));
    await new Promise((ok, bad) => {
      feed.onopen = ok;
      feed.onerror = () => bad(new Error("the EventSource did not open"));
    });
    return {device_id: status.device_id, origin: location.origin};
  }, cfg.api, cfg.token, cfg.pid);
  // A change written afterwards, outside the browser, reaches the page's stream.
  const w = await fetch(`${cfg.api}/v1/projects/${cfg.pid}/docs/obs?id=after`, {
    method: "POST", body: JSON.stringify({n: 7}),
    headers: {Authorization: "Bearer " + cfg.token, "Content-Type": "application/json"}});
  out.write_status = w.status;
  await page.waitForFunction(() => window.received.some((c) => c.id === "after"), {timeout: WAIT_MS});
  out.received = await page.evaluate(() => window.received);
  // Another origin: the browser lets the page read nothing, with or without the token.
  const other = await browser.newPage();
  await other.goto(cfg.blocked_page, {waitUntil: "load"});
  out.blocked = await other.evaluate(async (api, token) => {
    const r = {origin: location.origin};
    for (const [name, init] of [["with_token", {headers: {Authorization: "Bearer " + token}}],
                                ["simple", {}]]) {
      try {
        const resp = await fetch(api + "/v1/status", init);
        r[name] = "read " + resp.status;
      } catch (e) {
        r[name] = e.name + ": " + e.message;
      }
    }
    return r;
  }, cfg.api, cfg.token);
  return out;
}

(async () => {
  const browser = await launch();
  let code = 0;
  try {
    const out = cfg.mode === "status_page" ? await statusPage(browser) : await webApp(browser);
    out.browser = await browser.version();
    process.stdout.write(JSON.stringify(out) + "\n");
  } catch (e) {
    process.stderr.write((e && e.stack) || String(e));
    code = 1;
  } finally {
    await browser.close();
  }
  process.exit(code);
})();
