// The admin panel (/hub/admin): plain DOM code over JupyterHub's REST API and the hub's own
// additions (docs/admin-api.md), no build step. Everything goes through the API with the
// admin's cookie and XSRF token; a control is only shown when the admin's scopes
// (window.jhdata.scopes, expanded by the hub) allow what it does, so nothing offered answers 403.
// The page state (search, filter, sort, page) lives in the URL, so a reload keeps it.
"use strict";

const jh = window.jhdata;
const BASE = jh.base_url; // the hub's: /hub/ (upstream's jhdata.base_url)
const PREFIX = jh.prefix; // the whole hub's: /
const POLL_MS = 5000;
const LIMITS = [25, 50, 100, 200];

// ---------------------------------------------------------------------------------------------
// Scopes: the hub's expanded scope strings, with `!user=`, `!server=`, `!group=` filters.

const scopes = new Set(jh.scopes || []);

function can(scope, target) {
  if (scopes.has(scope)) return true;
  if (!target) return false;
  if (target.group !== undefined) return scopes.has(`${scope}!group=${target.group}`);
  if (target.service !== undefined) return scopes.has(`${scope}!service=${target.service}`);
  if (target.user !== undefined) {
    if (scopes.has(`${scope}!user=${target.user}`)) return true;
    if (target.server !== undefined && scopes.has(`${scope}!server=${target.user}/${target.server}`)) return true;
    for (const g of target.groups || []) if (scopes.has(`${scope}!group=${g}`)) return true;
  }
  return false;
}

// Held in any form (filtered or not): whether a control for some users makes sense at all.
function canSome(scope) {
  for (const s of scopes) if (s === scope || s.startsWith(scope + "!")) return true;
  return false;
}

// Held for someone besides oneself (every user holds `servers` for their own through `self`).
function canOthers(scope) {
  for (const s of scopes) if ((s === scope || s.startsWith(scope + "!")) && s !== `${scope}!user=${jh.user}`) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// Small helpers: elements without innerHTML (names are user data), the API, formatting.

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function btn(label, cls, onclick, attrs) {
  return h("button", Object.assign({ type: "button", class: "btn btn-sm " + (cls || ""), onclick }, attrs || {}), label);
}

const enc = encodeURIComponent;

async function api(method, path, body) {
  const r = await hubApi(method, path, body);
  if (!r.ok) {
    let message = `${r.status}`;
    try { message = (await r.json()).message || message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = r.status;
    throw error;
  }
  return r.status === 204 ? null : r.headers.get("content-type")?.includes("json") ? r.json() : r.text();
}

function serverPath(user, server) {
  return server ? `/users/${enc(user)}/servers/${enc(server)}` : `/users/${enc(user)}/server`;
}

function timeSince(time) {
  if (!time) return "Never";
  const elapsed = Date.now() - Date.parse(time);
  const units = [["year", 365 * 86400e3], ["month", 30 * 86400e3], ["day", 86400e3], ["hour", 3600e3], ["minute", 60e3]];
  for (const [name, ms] of units) {
    if (elapsed >= ms) {
      const n = Math.round(elapsed / ms);
      return `${n} ${name}${n === 1 ? "" : "s"} ago`;
    }
  }
  const s = Math.max(0, Math.round(elapsed / 1000));
  return s < 5 ? "just now" : `${s} seconds ago`;
}

function when(time) {
  return h("time", { datetime: time || null, title: time ? new Date(time).toLocaleString() + ` (${time})` : null }, timeSince(time));
}

function bytes(n) {
  if (n === null || n === undefined) return null;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

function showError(message) {
  const box = document.getElementById("admin-error");
  box.textContent = message;
  box.hidden = !message;
}

function showNotice(message) {
  const box = document.getElementById("admin-notice");
  box.textContent = message;
  box.hidden = !message;
}

// ---------------------------------------------------------------------------------------------
// Page state in the URL.

const state = (() => {
  const q = new URLSearchParams(location.search);
  const limit = parseInt(q.get("limit"), 10);
  const offset = parseInt(q.get("offset"), 10);
  return {
    name_filter: q.get("name_filter") || "",
    state: q.get("state") || "",
    sort: q.get("sort") || "",
    limit: LIMITS.includes(limit) ? limit : 50,
    offset: offset > 0 ? offset : 0,
  };
})();

function saveState() {
  const q = new URLSearchParams();
  if (state.name_filter) q.set("name_filter", state.name_filter);
  if (state.state) q.set("state", state.state);
  if (state.sort) q.set("sort", state.sort);
  if (state.limit !== 50) q.set("limit", state.limit);
  if (state.offset) q.set("offset", state.offset);
  const search = q.toString();
  history.replaceState(null, "", location.pathname + (search ? "?" + search : ""));
}

function listParams(offset, limit) {
  const q = new URLSearchParams({ offset, limit, include_stopped_servers: "1" });
  if (state.name_filter) q.set("name_filter", state.name_filter);
  if (state.state) q.set("state", state.state);
  if (state.sort) q.set("sort", state.sort);
  return q;
}

async function fetchUsers(offset, limit) {
  const r = await fetch(`${BASE}api/users?${listParams(offset, limit)}`, {
    headers: { Accept: "application/jupyterhub-pagination+json", "X-XSRFToken": jh.xsrf_token },
    credentials: "same-origin",
  });
  if (!r.ok) throw new Error(`listing users: ${r.status} ${(await r.json().catch(() => ({}))).message || ""}`);
  return r.json();
}

// ---------------------------------------------------------------------------------------------
// The users table.

let users = [];
const expanded = new Set();
const usage = new Map(); // "user/server" -> the last usage sample
const cpuRate = new Map(); // "user/server" -> CPUs in use over the last interval

function serversOf(u) {
  // The default server first (upstream's `server` is its URL when running; `servers[""]` its
  // model), then named ones by name.
  const all = Object.assign({}, u.servers || {});
  if (!all[""]) all[""] = { name: "", ready: !!u.server, pending: u.pending || null, stopped: !u.server, url: u.server || null };
  return Object.values(all).sort((a, b) => (a.name === "" ? -1 : b.name === "" ? 1 : a.name.localeCompare(b.name)));
}

function serverStatus(s) {
  if (s.pending) return s.pending === "spawn" ? "starting" : s.pending === "stop" ? "stopping" : s.pending;
  // Frozen (freeze_idle_after): still running, resumed by the next request to it.
  if (s.ready && s.frozen) return ["running ", h("span", { class: "badge frozen", title: "Frozen while idle; the next request resumes it" }, "frozen")];
  if (s.ready) return "running";
  return "stopped";
}

function usageCells(user, server) {
  const key = `${user}/${server}`;
  return [
    h("td", { class: "memory", dataset: { key } }),
    h("td", { class: "cpu", dataset: { key } }),
  ];
}

function failureBox(user, server) {
  return h("div", { class: "failure", dataset: { key: `${user}/${server}` }, hidden: true });
}

// A named server by its name, and its 6.x display name when that says something else.
function serverLabel(s) {
  if (!s.name) return "(default)";
  return s.display_name && s.display_name !== s.name ? `${s.name} (${s.display_name})` : s.name;
}

function serverActions(u, s) {
  const target = { user: u.name, server: s.name, groups: u.groups };
  const path = serverPath(u.name, s.name);
  const label = s.name ? `${u.name}/${s.name}` : u.name;
  const actions = [];
  const act = (name, fn) => async (event) => {
    event.target.disabled = true;
    try { await fn(); } catch (e) { showError(`Failed to ${name.toLowerCase()} (${label}): ${e.message}`); }
    await loadUsers();
  };
  if (!s.ready && (can("servers", target) || can("start:servers", target))) {
    actions.push(btn(s.pending ? "Server is pending" : "Start Server", "btn-success start-server",
      act("Start Server", () => api("POST", path)), { disabled: !!s.pending, "aria-label": `Start Server ${label}` }));
  }
  if (s.ready && (can("servers", target) || can("delete:servers", target))) {
    actions.push(btn("Stop Server", "btn-danger stop-server", act("Stop Server", () => api("DELETE", path)),
      { "aria-label": `Stop Server ${label}` }));
  }
  if (s.name && !s.ready && !s.pending && (can("servers", target) || can("delete:servers", target))) {
    actions.push(btn("Delete Server", "btn-danger delete-server", act("Delete Server", () => {
      if (!confirm(`Delete server ${label}?`)) return null;
      return api("DELETE", path, { remove: true });
    }), { "aria-label": `Delete Server ${label}` }));
  }
  if (s.ready && can("access:servers", target)) {
    actions.push(h("a", { class: "btn btn-sm btn-primary access-server", href: s.url || `${PREFIX}user/${enc(u.name)}/${s.name ? enc(s.name) + "/" : ""}`, "aria-label": `Access Server ${label}` }, "Access Server"));
  }
  if (!s.ready && !s.pending && (can("servers", target) || can("start:servers", target))) {
    actions.push(h("a", { class: "btn btn-sm spawn-page", href: `${BASE}spawn/${enc(u.name)}${s.name ? "/" + enc(s.name) : ""}`, "aria-label": `Spawn Page ${label}` }, "Spawn Page"));
  }
  if (can("servers", target)) {
    actions.push(btn("View Log", "view-log", () => openLog(`${path}/log`, `Log of ${label}`), { "aria-label": `View Log ${label}` }));
  }
  return actions;
}

function jsonTable(title, model) {
  return h("details", { class: "model" }, h("summary", {}, title), h("pre", {}, JSON.stringify(model, null, 2)));
}

function renderUsers(page) {
  const body = document.querySelector("#users-table tbody");
  body.replaceChildren();
  for (const u of users) {
    const servers = serversOf(u);
    const def = servers[0];
    const rowId = `user-${u.name}`;
    const detailId = `details-${u.name}`;
    const open = expanded.has(u.name);
    const toggle = btn(open ? "▾" : "▸", "expand", () => {
      if (expanded.has(u.name)) expanded.delete(u.name); else expanded.add(u.name);
      renderUsers(page);
      pollUsage();
    }, { "aria-expanded": open ? "true" : "false", "aria-controls": detailId, "aria-label": `Details of ${u.name}` });
    const actions = serverActions(u, def);
    if (can("admin:users", { user: u.name, groups: u.groups })) {
      actions.push(btn("Edit User", "edit-user", () => openEditUser(u), { "aria-label": `Edit User ${u.name}` }));
    }
    const named = servers.length - 1;
    body.append(h("tr", { class: "user-row", id: rowId, dataset: { user: u.name } },
      h("td", { class: "name" }, toggle, " ", h("span", { class: "user-name" }, u.name)),
      h("td", { class: "admin" }, u.admin ? "admin" : ""),
      h("td", { class: "server-state" }, serverStatus(def), named ? h("span", { class: "muted" }, ` (+${named} named)`) : null, failureBox(u.name, "")),
      h("td", { class: "last-activity" }, when(u.last_activity)),
      ...usageCells(u.name, ""),
      h("td", { class: "actions" }, actions)));
    const detail = h("tr", { class: "detail-row", id: detailId, hidden: !open },
      h("td", { colspan: 7 },
        h("table", { class: "servers-table" },
          h("thead", {}, h("tr", {}, ["Server", "Status", "Last Activity", "Started", "Memory", "CPU", "Actions"].map((t) => h("th", {}, t)))),
          h("tbody", {}, servers.map((s) => h("tr", { class: "server-row", dataset: { user: u.name, server: s.name } },
            h("td", {}, serverLabel(s)),
            h("td", {}, serverStatus(s), failureBox(u.name, s.name)),
            h("td", {}, when(s.last_activity)),
            h("td", {}, when(s.started)),
            ...usageCells(u.name, s.name),
            h("td", { class: "actions" }, s.name ? serverActions(u, s) : [])))),
        ),
        h("div", { class: "models" },
          jsonTable("User", Object.fromEntries(Object.entries(u).filter(([k]) => k !== "servers" && k !== "server"))),
          servers.map((s) => jsonTable(`Server ${s.name || "(default)"}`, s)))));
    body.append(detail);
  }
  const p = page;
  const from = users.length ? p.offset + 1 : p.offset;
  document.getElementById("page-info").textContent = `Displaying ${from}-${p.offset + users.length} of ${p.total}`;
  document.getElementById("prev-page").disabled = p.offset === 0;
  document.getElementById("next-page").disabled = !p.next;
  for (const th of document.querySelectorAll("#users-table th[data-sort]")) {
    const key = th.dataset.sort;
    const dir = state.sort === key ? "ascending" : state.sort === "-" + key ? "descending" : "none";
    th.setAttribute("aria-sort", dir);
    th.querySelector("button").textContent = dir === "ascending" ? "▲" : dir === "descending" ? "▼" : "↕";
  }
  renderUsage();
}

let loading = 0;
async function loadUsers() {
  const ticket = ++loading;
  try {
    const data = await fetchUsers(state.offset, state.limit);
    if (ticket !== loading) return; // a newer load is under way
    const p = data._pagination;
    if (p.offset && p.total <= p.offset) {
      state.offset = 0;
      saveState();
      return loadUsers();
    }
    users = data.items;
    renderUsers(p);
    pollUsage();
  } catch (e) {
    showError(e.message);
  }
}

// ---------------------------------------------------------------------------------------------
// Live use, failures and the hub's figures, every few seconds while the page is visible.

async function pollUsage() {
  if (!canSome("read:servers")) return;
  const q = new URLSearchParams();
  for (const u of users) q.append("user", u.name);
  let data;
  try {
    data = await api("GET", `/usage?${q}`);
  } catch (e) {
    return; // figures are a bonus: the table works without them
  }
  const now = Date.parse(data.time);
  for (const s of data.servers) {
    const key = `${s.user}/${s.server_name}`;
    const before = usage.get(key);
    if (before && before.cpu_seconds !== null && s.cpu_seconds !== null && now > before.t) {
      cpuRate.set(key, Math.max(0, (s.cpu_seconds - before.cpu_seconds) / ((now - before.t) / 1000)));
    } else if (!s.running) {
      cpuRate.delete(key);
    }
    usage.set(key, Object.assign({ t: now }, s));
  }
  renderUsage();
  renderHubFigures(data.hub);
  // A server started, stopped or failed since the table was drawn: draw it again.
  const shown = (s) => (s.ready ? "ready" : s.pending ? "pending" : "stopped");
  const changed = data.servers.some((s) => {
    const u = users.find((x) => x.name === s.user);
    const m = u && serversOf(u).find((x) => x.name === s.server_name);
    return !m || shown(m) !== shown(s);
  });
  if (changed && !document.querySelector("dialog[open]")) loadUsers();
}

function renderUsage() {
  for (const cell of document.querySelectorAll("td.memory")) {
    const u = usage.get(cell.dataset.key);
    if (!u || !u.running) { cell.textContent = ""; continue; }
    const used = bytes(u.memory_bytes) ?? "n/a";
    cell.textContent = u.mem_limit ? `${used} / ${bytes(u.mem_limit)}` : used;
    cell.title = u.memory_bytes === null ? "not available from this spawner" : `${u.memory_bytes} bytes`;
  }
  for (const cell of document.querySelectorAll("td.cpu")) {
    const u = usage.get(cell.dataset.key);
    if (!u || !u.running) { cell.textContent = ""; continue; }
    const rate = cpuRate.get(cell.dataset.key);
    if (u.cpu_seconds === null) { cell.textContent = "n/a"; cell.title = "not available"; continue; }
    if (rate === undefined) { cell.textContent = "…"; cell.title = `${u.cpu_seconds.toFixed(1)} s used`; continue; }
    cell.textContent = u.cpu_limit
      ? `${Math.round((100 * rate) / u.cpu_limit)}% of ${u.cpu_limit} CPU${u.cpu_limit === 1 ? "" : "s"}`
      : `${rate.toFixed(2)} CPUs`;
    cell.title = `${u.cpu_seconds.toFixed(1)} s of CPU since start`;
  }
  for (const box of document.querySelectorAll("div.failure")) {
    const u = usage.get(box.dataset.key);
    const f = u && !u.running && !u.pending ? u.last_failure : null;
    box.hidden = !f;
    if (!f) { box.replaceChildren(); continue; }
    box.replaceChildren(h("details", {},
      h("summary", {}, `Last failure: ${f.reason || "unknown"}`),
      (f.log_tail || []).length ? h("pre", { class: "log" }, f.log_tail.join("\n")) : h("p", {}, "No log lines were kept.")));
  }
}

function renderHubFigures(hub) {
  const box = document.getElementById("hub-figures");
  if (!hub) { box.hidden = true; return; }
  box.hidden = false;
  const memory = hub.memory_bytes === null ? "n/a" : bytes(hub.memory_bytes);
  const figures = [
    ["Users", hub.users],
    ["Running servers", hub.running_servers],
    ["Pending spawns", hub.pending_spawns],
    ["Memory in use", hub.memory_limit ? `${memory} of ${bytes(hub.memory_limit)}` : memory],
  ];
  if (hub.group) figures.push(["Slice", hub.group]);
  box.replaceChildren(...figures.map(([k, v]) => h("div", { class: "figure" }, h("span", { class: "figure-label" }, k), h("span", { class: "figure-value", dataset: { figure: k } }, String(v)))));
}

// ---------------------------------------------------------------------------------------------
// Start All / Stop All over every user the filter matches, page by page, with progress.

async function everyMatchingUser() {
  const all = [];
  for (let offset = 0; ; offset += 200) {
    const data = await fetchUsers(offset, 200);
    all.push(...data.items);
    if (!data._pagination.next) return all;
  }
}

async function bulk(verb) {
  const progress = document.getElementById("bulk-progress");
  showError("");
  progress.hidden = false;
  progress.textContent = "Listing users…";
  let matching;
  try { matching = await everyMatchingUser(); } catch (e) { showError(e.message); progress.hidden = true; return; }
  const work = [];
  for (const u of matching) {
    for (const s of serversOf(u)) {
      const target = { user: u.name, server: s.name, groups: u.groups };
      if (verb === "start" && s.name === "" && !s.ready && !s.pending && (can("servers", target) || can("start:servers", target))) {
        work.push(() => api("POST", serverPath(u.name, "")));
      }
      if (verb === "stop" && (s.ready || s.pending === "spawn") && (can("servers", target) || can("delete:servers", target))) {
        work.push(() => api("DELETE", serverPath(u.name, s.name)));
      }
    }
  }
  let done = 0, failed = 0;
  const label = verb === "start" ? "Starting" : "Stopping";
  const report = () => { progress.textContent = `${label}: ${done} of ${work.length} done${failed ? `, ${failed} failed` : ""}`; };
  report();
  // A few at a time: the hub queues spawns itself, and this keeps the browser responsive.
  const queue = work.slice();
  await Promise.all(Array.from({ length: Math.min(8, queue.length) }, async () => {
    while (queue.length) {
      const job = queue.shift();
      try { await job(); } catch (e) { failed++; }
      done++;
      report();
    }
  }));
  if (failed) showError(`Failed to ${verb} ${failed} server${failed === 1 ? "" : "s"}.`);
  await loadUsers();
}

// ---------------------------------------------------------------------------------------------
// Dialogs: Edit User, Add Users, groups, logs.

function dialog(id, title, ...content) {
  let d = document.getElementById(id);
  if (d) d.remove();
  d = h("dialog", { id, "aria-labelledby": id + "-title", class: "card" },
    h("h2", { id: id + "-title" }, title), ...content);
  d.addEventListener("close", () => d.remove());
  document.body.append(d);
  d.showModal();
  return d;
}

function errorLine() {
  return h("p", { class: "alert alert-danger dialog-error", hidden: true });
}

function fail(d, e) {
  const line = d.querySelector(".dialog-error");
  line.textContent = e.message;
  line.hidden = false;
}

function openEditUser(u) {
  const name = h("input", { type: "text", id: "edit-username", value: u.name, "data-testid": "edit-username-input" });
  const admin = h("input", { type: "checkbox", id: "edit-admin", checked: u.admin });
  const d = dialog("edit-user-dialog", `Edit User ${u.name}`,
    h("label", { for: "edit-username" }, "Username"), name,
    h("label", {}, admin, " Admin"),
    errorLine(),
    h("p", { class: "buttons" },
      btn("Apply", "btn-primary", async () => {
        const change = {};
        if (name.value.trim() && name.value.trim() !== u.name) change.name = name.value.trim();
        if (admin.checked !== u.admin) change.admin = admin.checked;
        try {
          if (Object.keys(change).length) await api("PATCH", `/users/${enc(u.name)}`, change);
          d.close();
          loadUsers();
        } catch (e) { fail(d, e); }
      }, { id: "edit-apply" }),
      btn("Delete user", "btn-danger", async () => {
        if (!confirm(`Delete user ${u.name}? Their servers are stopped.`)) return;
        try { await api("DELETE", `/users/${enc(u.name)}`); d.close(); loadUsers(); } catch (e) { fail(d, e); }
      }, { id: "edit-delete" }),
      btn("Cancel", "", () => d.close())));
  name.focus();
}

function openAddUsers() {
  const names = h("textarea", { id: "add-usernames", rows: 5, placeholder: "usernames separated by line", "data-testid": "user-textarea" });
  const admin = h("input", { type: "checkbox", id: "add-admin" });
  const d = dialog("add-users-dialog", "Add Users",
    h("label", { for: "add-usernames" }, "Usernames"), names,
    h("label", {}, admin, " Admin"),
    errorLine(),
    h("p", { class: "buttons" },
      btn("Add Users", "btn-primary", async () => {
        const usernames = names.value.split("\n").map((s) => s.trim()).filter(Boolean);
        try {
          await api("POST", "/users", { usernames, admin: admin.checked });
          d.close();
          showNotice(`Added ${usernames.length} user${usernames.length === 1 ? "" : "s"}.`);
          loadUsers();
        } catch (e) { fail(d, e); }
      }, { id: "add-users-submit" }),
      btn("Cancel", "", () => d.close())));
  names.focus();
}

async function openGroups() {
  const list = h("tbody");
  const newName = h("input", { type: "text", id: "new-group-name", placeholder: "group name...", "data-testid": "group-input" });
  const d = dialog("groups-dialog", "Manage Groups",
    h("table", { id: "groups-table" }, h("thead", {}, h("tr", {}, h("th", {}, "Group"), h("th", {}, "Members"), h("th", {}, "Properties"), h("th", {}, ""))), list),
    can("admin:groups") ? h("p", {}, h("label", { for: "new-group-name" }, "Create Group"), newName, " ",
      btn("Create", "btn-primary", async () => {
        try { await api("POST", `/groups/${enc(newName.value.trim())}`); newName.value = ""; await refresh(); } catch (e) { fail(d, e); }
      }, { id: "create-group" })) : null,
    errorLine(),
    h("p", { class: "buttons" }, btn("Close", "", () => d.close())));
  async function refresh() {
    let groups;
    try { groups = await api("GET", "/groups"); } catch (e) { fail(d, e); return; }
    list.replaceChildren(...groups.map((g) => h("tr", { dataset: { group: g.name } },
      h("td", {}, g.name),
      h("td", {}, (g.users || []).join(", ")),
      h("td", {}, Object.entries(g.properties || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ")),
      h("td", {}, can("groups", { group: g.name }) ? btn("Edit", "edit-group", () => openGroup(g, refresh), { "aria-label": `Edit group ${g.name}` }) : null))));
  }
  await refresh();
}

function openGroup(g, done) {
  const members = new Set(g.users || []);
  const props = Object.entries(g.properties || {});
  const memberList = h("ul", { id: "group-members" });
  const renderMembers = () => memberList.replaceChildren(...[...members].sort().map((m) => h("li", {}, m, " ",
    btn("Remove", "btn-danger", () => { members.delete(m); renderMembers(); }, { "aria-label": `Remove ${m}` }))));
  renderMembers();
  const addName = h("input", { type: "text", id: "add-member", placeholder: "Add by username" });
  const propRows = h("tbody", { id: "group-properties" });
  const propRow = (k, v) => {
    const row = h("tr", {},
      h("td", {}, h("input", { type: "text", class: "prop-key", value: k, "aria-label": "Key" })),
      h("td", {}, h("input", { type: "text", class: "prop-value", value: typeof v === "string" ? v : JSON.stringify(v), "aria-label": "Value" })),
      h("td", {}, btn("Remove", "btn-danger", () => row.remove(), { "aria-label": "Remove property" })));
    propRows.append(row);
  };
  props.forEach(([k, v]) => propRow(k, v));
  const d = dialog("group-dialog", `Group ${g.name}`,
    h("h3", {}, "Manage group members"), memberList,
    h("p", {}, addName, " ", btn("Add", "", () => {
      const n = addName.value.trim();
      if (n) { members.add(n); addName.value = ""; renderMembers(); }
    }, { id: "add-member-button" })),
    h("h3", {}, "Manage group properties"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {}, "Value"), h("th", {}))), propRows),
    h("p", {}, btn("Add Item", "", () => propRow("", ""), { id: "add-property" })),
    errorLine(),
    h("p", { class: "buttons" },
      btn("Apply", "btn-primary", async () => {
        const before = new Set(g.users || []);
        const add = [...members].filter((m) => !before.has(m));
        const remove = [...before].filter((m) => !members.has(m));
        const properties = {};
        for (const row of propRows.querySelectorAll("tr")) {
          const k = row.querySelector(".prop-key").value.trim();
          if (k) properties[k] = row.querySelector(".prop-value").value;
        }
        try {
          if (add.length) await api("POST", `/groups/${enc(g.name)}/users`, { users: add });
          if (remove.length) await api("DELETE", `/groups/${enc(g.name)}/users`, { users: remove });
          if (JSON.stringify(properties) !== JSON.stringify(g.properties || {})) {
            await api("PUT", `/groups/${enc(g.name)}/properties`, properties);
          }
          d.close();
          await done();
          loadUsers();
        } catch (e) { fail(d, e); }
      }, { id: "group-apply" }),
      can("admin:groups", { group: g.name }) ? btn("Delete Group", "btn-danger", async () => {
        if (!confirm(`Delete group ${g.name}?`)) return;
        try { await api("DELETE", `/groups/${enc(g.name)}`); d.close(); await done(); loadUsers(); } catch (e) { fail(d, e); }
      }, { id: "delete-group" }) : null,
      btn("Cancel", "", () => d.close())));
  addName.focus();
}

// A log: its last lines, and with "Follow" each new line as it comes (an event stream).
async function openLog(path, title) {
  const pre = h("pre", { class: "log", id: "log-lines", tabindex: 0 });
  const follow = h("input", { type: "checkbox", id: "log-follow" });
  const status = h("p", { class: "muted", id: "log-status" });
  let source = null;
  const d = dialog("log-dialog", title,
    h("label", {}, follow, " Follow"), status, pre,
    h("p", { class: "buttons" }, btn("Close", "", () => d.close())));
  d.addEventListener("close", () => source && source.close());
  const scroll = () => { pre.scrollTop = pre.scrollHeight; };
  try {
    const data = await api("GET", `${path}?lines=200`);
    if (!data.available) {
      status.textContent = "This server's output goes to the hub's own log (journalctl -u jupyterhub).";
      follow.disabled = true;
    } else {
      status.textContent = data.lines.length ? `Last ${data.lines.length} lines` : "No lines yet.";
    }
    pre.textContent = data.lines.join("\n");
    if (data.last_failure && data.last_failure.reason) status.textContent += ` · last failure: ${data.last_failure.reason}`;
    scroll();
  } catch (e) {
    status.textContent = e.message;
  }
  follow.addEventListener("change", () => {
    if (source) { source.close(); source = null; }
    if (!follow.checked) return;
    pre.textContent = "";
    source = new EventSource(`${BASE}api${path}?follow=1&lines=200&_xsrf=${enc(jh.xsrf_token)}`, { withCredentials: true });
    source.onmessage = (event) => {
      pre.textContent += (pre.textContent ? "\n" : "") + JSON.parse(event.data).line;
      scroll();
    };
    source.onerror = () => { status.textContent = "Following… (reconnecting)"; };
    source.onopen = () => { status.textContent = "Following"; };
  });
}

// ---------------------------------------------------------------------------------------------
// Services: state, pid, restarts and log of each managed service.

async function loadServices() {
  const section = document.getElementById("services");
  if (!canSome("list:services")) { section.hidden = true; return; }
  let services;
  try { services = await api("GET", "/services"); } catch (e) { section.hidden = true; return; }
  const rows = [];
  for (const s of Object.values(services)) {
    const managed = s.command && s.command.length;
    let detail = null;
    if (managed && can("admin:services", { service: s.name })) {
      try { detail = await api("GET", `/services/${enc(s.name)}/log?lines=0`); } catch (e) { detail = null; }
    }
    const state = !managed ? "external" : s.pid ? `running (pid ${s.pid})` : "not running";
    const failure = s.last_failure && !s.pid ? h("details", {}, h("summary", {}, `Last failure: ${s.last_failure.reason}`), h("pre", { class: "log" }, (s.last_failure.log_tail || []).join("\n"))) : null;
    rows.push(h("tr", { dataset: { service: s.name } },
      h("td", {}, s.name),
      h("td", {}, s.prefix ? h("a", { href: s.prefix }, s.prefix) : ""),
      h("td", { class: "service-state" }, state, failure),
      h("td", { class: "restarts" }, detail ? String(detail.restarts) : ""),
      h("td", {}, detail ? btn("View Log", "view-log", () => openLog(`/services/${enc(s.name)}/log`, `Log of service ${s.name}`), { "aria-label": `View Log service ${s.name}` }) : null)));
  }
  section.hidden = rows.length === 0;
  document.querySelector("#services-table tbody").replaceChildren(...rows);
}

// ---------------------------------------------------------------------------------------------
// Controls.

function setup() {
  const search = document.getElementById("user-search");
  search.value = state.name_filter;
  let debounce = null;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { state.name_filter = search.value.trim(); state.offset = 0; saveState(); loadUsers(); }, 300);
  });
  const filter = document.getElementById("state-filter");
  filter.value = state.state;
  filter.addEventListener("change", () => { state.state = filter.value; state.offset = 0; saveState(); loadUsers(); });
  const limit = document.getElementById("page-limit");
  limit.value = String(state.limit);
  limit.addEventListener("change", () => { state.limit = parseInt(limit.value, 10); state.offset = 0; saveState(); loadUsers(); });
  document.getElementById("prev-page").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); saveState(); loadUsers(); });
  document.getElementById("next-page").addEventListener("click", () => { state.offset += state.limit; saveState(); loadUsers(); });
  for (const th of document.querySelectorAll("#users-table th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sort = state.sort === key ? "-" + key : key;
      saveState();
      loadUsers();
    });
  }
  const show = (id, visible) => { document.getElementById(id).hidden = !visible; };
  show("start-all", canOthers("servers") || canOthers("start:servers"));
  show("stop-all", canOthers("servers") || canOthers("delete:servers"));
  show("shutdown-hub", scopes.has("shutdown"));
  show("add-users", scopes.has("admin:users"));
  show("manage-groups", canSome("list:groups") || canSome("read:groups"));
  document.getElementById("start-all").addEventListener("click", () => bulk("start"));
  document.getElementById("stop-all").addEventListener("click", () => bulk("stop"));
  document.getElementById("add-users").addEventListener("click", openAddUsers);
  document.getElementById("manage-groups").addEventListener("click", openGroups);
  document.getElementById("shutdown-hub").addEventListener("click", async () => {
    if (!confirm("Shut down the hub? Users' servers keep running.")) return;
    try { await api("POST", "/shutdown", {}); showNotice("The hub is shutting down."); } catch (e) { showError(`Failed to shut down the hub: ${e.message}`); }
  });
  setInterval(() => { if (!document.hidden) pollUsage(); }, POLL_MS);
  // Times as words go stale: refresh them with the figures.
  setInterval(() => { for (const t of document.querySelectorAll("time[datetime]")) t.textContent = timeSince(t.getAttribute("datetime")); }, 30000);
  loadUsers();
  loadServices();
}

setup();
