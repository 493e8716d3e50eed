// The status page (docs/api.md "Status page"). No data is in the files: it comes from the API
// with a session of this page's own, asked for once with the login ticket in the URL's
// fragment (#login=..., never sent to a server) and kept in this tab's sessionStorage.
"use strict";

const REFRESH_MS = 2000;
let session = sessionStorage.getItem("fieldsync-session");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function showError(text) {
  const p = document.getElementById("error");
  p.textContent = text;
  p.hidden = !text;
}

async function login() {
  const m = location.hash.match(/^#login=([0-9a-f]{64})$/);
  if (!m) return;
  history.replaceState(null, "", location.pathname);  // the ticket leaves the address bar
  const r = await fetch("/ui/session", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({login: m[1]}),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.message : "login failed: " + r.status);
  session = body.session;
  sessionStorage.setItem("fieldsync-session", session);
}

async function api(method, path, body) {
  const headers = {Authorization: "Bearer " + session};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  const j = await r.json();
  if (!r.ok) {
    const msg = j.error ? j.error.message : method + " " + path + ": " + r.status;
    throw new Error(r.status === 401 ? msg + " (open a new link: syncctl ui)" : msg);
  }
  return j;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "never";
}

function progress(peer) {
  const parts = [];
  for (const p of (peer.session && peer.session.projects) || []) {
    let t = p.in_sync ? "in sync" : `${p.to_send} to send, ${p.to_receive} to receive`;
    if (p.blobs && (p.blobs.to_receive || p.blobs.to_send))
      t += `; blobs ${p.blobs.to_receive} to receive (${p.blobs.bytes_to_receive} B), ${p.blobs.to_send} to send`;
    parts.push(t);
  }
  return parts.join("; ") || "-";
}

function renderPeers(peers) {
  const body = document.querySelector("#peers tbody");
  body.replaceChildren(...peers.map((p) => el("tr", {class: "peer", "data-device": p.device_id},
      el("td", {}, el("div", {class: "name"}, p.name || p.short_id), el("small", {}, p.short_id)),
      el("td", {class: "state state-" + p.state}, p.state),
      el("td", {class: "reason"}, p.reason ? p.reason.message
          : p.last_error ? p.last_error.message || p.last_error.code : ""),
      el("td", {class: "progress"}, progress(p)),
      el("td", {}, when(p.last_sync_ms)))));
  document.getElementById("no-peers").hidden = peers.length > 0;
}

async function createInvite(project) {
  try {
    const inv = await api("POST", `/v1/projects/${project.id}/invites?qr=svg`, {});
    document.getElementById("invite-project").textContent = project.name;
    document.getElementById("invite-expires").textContent = when(inv.expires_ms);
    document.getElementById("invite-code").textContent = inv.code;
    const img = document.getElementById("invite-qr");
    img.src = "data:image/svg+xml;base64," + btoa(inv.qr_svg);
    img.dataset.inviteId = inv.invite_id;
    document.getElementById("invite").hidden = false;
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

async function renderProject(project) {
  const [sync, conflicts, invites] = await Promise.all([
    api("GET", `/v1/projects/${project.id}/sync`).catch(() => null),
    api("GET", `/v1/projects/${project.id}/conflicts`),
    api("GET", `/v1/projects/${project.id}/invites`),
  ]);
  const syncText = !sync ? "sync is off"
      : sync.in_sync ? "in sync with every connected peer"
      : `${sync.to_send} to send, ${sync.to_receive} to receive`;
  const button = el("button", {class: "create-invite", type: "button"}, "Create invite");
  button.addEventListener("click", () => createInvite(project));
  const open = invites.invites.filter((i) => i.state === "open").length;
  return el("div", {class: "project", "data-project": project.id},
      el("h3", {}, project.name),
      el("p", {class: "sync"}, syncText),
      el("p", {}, `Conflicts: `, el("span", {class: "conflict-count"}, conflicts.docs.length)),
      el("ul", {class: "conflicts"}, ...conflicts.docs.map((d) =>
          el("li", {}, `${d.collection}/${d.id}: ${d.heads.length} versions`))),
      el("p", {}, `Invites: ${open} open of ${invites.invites.length}`, " ", button));
}

async function refresh() {
  try {
    const [status, peers, projects] = await Promise.all([
      api("GET", "/v1/status"), api("GET", "/v1/peers").catch(() => ({peers: []})),
      api("GET", "/v1/projects")]);
    document.getElementById("device").textContent =
        `${status.device_name} (${status.device_id_short}), fieldsync ${status.version}; ` +
        `${status.peers.connected || 0} of ${status.peers.known || 0} peers connected`;
    renderPeers(peers.peers);
    const cards = await Promise.all(projects.projects.filter((p) => !p.error).map(renderProject));
    document.getElementById("projects").replaceChildren(...cards);
    document.body.dataset.loaded = "1";
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

async function main() {
  try {
    await login();
  } catch (e) {
    showError(e.message);
    return;
  }
  if (!session) {
    showError("Not logged in: open the link that `syncctl ui` prints.");
    return;
  }
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

main();
