// Corral's web console. Everything it shows comes from /api/*, which answers under the
// logged-in user's ZooKeeper identity. Text from the server is only ever set as textContent.
"use strict";

const PAGE = 100;
const $ = (id) => document.getElementById(id);
let csrf = "";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const j = await r.json();
  if (!r.ok) { const e = new Error(j.message || r.statusText); e.code = j.error; throw e; }
  return j;
}

const q = (params) => new URLSearchParams(params).toString();
const childPath = (parent, name) => (parent === "/" ? "" : parent) + "/" + name;
const parentOf = (p) => (p.lastIndexOf("/") <= 0 ? "/" : p.slice(0, p.lastIndexOf("/")));

// ---- the tree: lazily loaded, one page of children at a time --------------------------------

const expanded = new Map(); // path -> {ul, shown}: the children shown under an open node
let selected = null;

function treeItem(parent, child) {
  const path = childPath(parent, child.name);
  const li = el("li", { "data-path": path });
  const twisty = el("span", { class: "twisty" }, child.numChildren > 0 ? "▸" : "");
  const name = el("span", { class: "name", "data-path": path }, child.name);
  const row = el("div", { class: "row" }, twisty, name);
  if (child.numChildren > 0) row.append(el("span", { class: "badge" }, child.numChildren));
  if (child.ephemeral) row.append(el("span", { class: "eph" }, "ephemeral"));
  li.append(row);
  twisty.addEventListener("click", () => toggle(path, li, twisty));
  name.addEventListener("click", () => select(path));
  return li;
}

async function loadChildren(path, ul, offset) {
  const page = await api("GET", "/api/children?" + q({ path, offset, limit: PAGE }));
  // Nodes open under this one stay open when it is reloaded.
  const open = offset === 0
    ? Array.from(expanded.keys()).filter((p) => p !== path && parentOf(p) === path) : [];
  if (offset === 0) ul.replaceChildren();
  ul.querySelector(":scope > li.more-row")?.remove();
  for (const c of page.children) ul.append(treeItem(path, c));
  const shown = offset + page.children.length;
  if (shown < page.total) {
    const more = el("span", { class: "more" }, `show ${Math.min(PAGE, page.total - shown)} more of ${page.total - shown}…`);
    more.addEventListener("click", () => loadChildren(path, ul, shown));
    ul.append(el("li", { class: "more-row" }, more));
  }
  expanded.set(path, { ul, shown });
  for (const p of open) {
    expanded.delete(p);
    const li = ul.querySelector(`:scope > li[data-path="${CSS.escape(p)}"]`);
    if (li) await toggle(p, li, li.querySelector(".twisty")).catch(() => {});
  }
}

async function toggle(path, li, twisty) {
  if (expanded.has(path) && li.contains(expanded.get(path).ul)) {
    expanded.get(path).ul.remove();
    expanded.delete(path);
    twisty.textContent = "▸";
    return;
  }
  const ul = el("ul");
  li.append(ul);
  twisty.textContent = "▾";
  await loadChildren(path, ul, 0);
}

async function reloadExpanded(path) {
  const e = expanded.get(path);
  if (e && document.contains(e.ul)) await loadChildren(path, e.ul, 0);
}

async function expandTo(path) {
  const parts = path.split("/").filter(Boolean);
  let cur = "/";
  for (const part of parts.slice(0, -1)) {
    cur = childPath(cur, part);
    const li = document.querySelector(`#tree li[data-path="${CSS.escape(cur)}"]`);
    if (li && !(expanded.has(cur) && li.contains(expanded.get(cur).ul))) {
      await toggle(cur, li, li.querySelector(".twisty"));
    }
  }
}

// ---- one node: data, Stat, ACL, children, edits -------------------------------------------

let current = null; // the node as last loaded
let selectTicket = 0; // the latest select(): older answers are dropped
let editingVersion = null;
let childOffset = 0;

function showError(e) {
  const box = $("error");
  box.hidden = !e;
  box.textContent = e ? `${e.code || "Error"}: ${e.message}` : "";
}

function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text || "";
}

function bytesOf(b64) {
  const s = atob(b64 || "");
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

function renderData() {
  if (!current) return;
  const pre = $("data");
  if (current.dataError) { pre.textContent = "(cannot read: " + current.dataError + ")"; return; }
  const bytes = bytesOf(current.data);
  const text = new TextDecoder().decode(bytes);
  const view = document.querySelector("input[name=view]:checked").value;
  if (view === "json") {
    try { pre.textContent = JSON.stringify(JSON.parse(text), null, 2); }
    catch (_) { pre.textContent = "(not JSON)\n" + text; }
  } else if (view === "hex") {
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const row = Array.from(bytes.slice(i, i + 16));
      const hex = row.map((b) => b.toString(16).padStart(2, "0")).join(" ");
      const ascii = row.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
      lines.push(i.toString(16).padStart(8, "0") + "  " + hex.padEnd(48) + " " + ascii);
    }
    pre.textContent = lines.join("\n");
  } else {
    pre.textContent = text;
  }
}

function renderStat(stat) {
  const when = (ms) => (ms ? new Date(ms).toISOString() : "-");
  const rows = [
    ["czxid", stat.czxid], ["ctime", when(stat.ctime)], ["mzxid", stat.mzxid],
    ["mtime", when(stat.mtime)], ["pzxid", stat.pzxid], ["version", stat.version],
    ["cversion", stat.cversion], ["aversion", stat.aversion],
    ["ephemeralOwner", stat.ephemeralOwner], ["dataLength", stat.dataLength],
    ["numChildren", stat.numChildren],
  ];
  $("stat").replaceChildren(...rows.map(([k, v]) => el("tr", { id: "stat-" + k }, el("td", {}, k), el("td", {}, v))));
}

function renderAcl() {
  const t = $("acl");
  if (current.aclError) { t.replaceChildren(el("tr", {}, el("td", {}, "(cannot read: " + current.aclError + ")"))); return; }
  t.replaceChildren(el("tr", {}, el("th", {}, "scheme"), el("th", {}, "id"), el("th", {}, "permissions")),
    ...current.acl.map((a) => el("tr", {}, el("td", {}, a.scheme), el("td", {}, a.id), el("td", {}, a.perms))));
}

async function loadChildList() {
  if (!current) return;
  const path = current.path;
  const filter = $("child-filter").value;
  try {
    const page = await api("GET", "/api/children?" + q({ path, offset: childOffset, limit: PAGE, filter }));
    $("children").replaceChildren(...page.children.map((c) =>
      el("li", { onclick: () => select(childPath(path, c.name)) }, c.name)));
    $("child-count").textContent = `(${page.total}${filter ? " matching" : ""})`;
    $("page-info").textContent = page.total ? `${childOffset + 1}–${childOffset + page.children.length} of ${page.total}` : "";
    $("prev").disabled = childOffset === 0;
    $("next").disabled = childOffset + page.children.length >= page.total;
  } catch (e) {
    $("children").replaceChildren();
    $("child-count").textContent = "(" + e.message + ")";
  }
}

async function select(path, keepNotice) {
  document.querySelectorAll(".tree .name.selected").forEach((n) => n.classList.remove("selected"));
  document.querySelector(`.tree .name[data-path="${CSS.escape(path)}"]`)?.classList.add("selected");
  if (!selected || selected !== path) { childOffset = 0; $("child-filter").value = ""; closeEditor(); }
  selected = path;
  delete document.body.dataset.loaded;
  const ticket = ++selectTicket;
  history.replaceState(null, "", "#" + encodeURI(path));
  $("node").hidden = false;
  $("node-path").textContent = path;
  if (!keepNotice) notice("");
  showError(null);
  let node;
  try {
    node = await api("GET", "/api/node?" + q({ path }));
  } catch (e) {
    if (ticket !== selectTicket) return;
    current = null;
    $("data").textContent = "";
    showError(e);
    document.body.dataset.loaded = path;
    return;
  }
  if (ticket !== selectTicket) return; // another node was chosen meanwhile
  current = node;
  $("node-flags").textContent = current.ephemeral
    ? `ephemeral, owned by session ${current.stat.ephemeralOwner}` : "persistent";
  renderData();
  renderStat(current.stat);
  renderAcl();
  await loadChildList();
  if (ticket === selectTicket) document.body.dataset.loaded = path;
}

function closeEditor() {
  editingVersion = null;
  $("editor").hidden = true;
}

async function save(ev) {
  ev.preventDefault();
  try {
    await api("PUT", "/api/node", { path: current.path, data: $("edit-data").value, version: editingVersion });
    closeEditor();
    await select(current.path);
    notice("Saved.");
  } catch (e) { showError(e); }
}

async function remove() {
  if (!current) return;
  const recursive = $("recursive").checked;
  const what = recursive ? `${current.path} and everything under it` : current.path;
  if (!confirm(`Delete ${what}?`)) return;
  try {
    const r = await api("DELETE", "/api/node?" + q({ path: current.path, version: current.stat.version, recursive }));
    const parent = parentOf(current.path);
    notice(`Deleted ${r.deleted} node(s).`);
    await reloadExpanded(parent);
    await select(parent, true);
  } catch (e) { showError(e); }
}

async function create(ev) {
  ev.preventDefault();
  if (!current) return;
  const path = childPath(current.path, $("create-name").value);
  try {
    const r = await api("POST", "/api/node", {
      path, data: $("create-data").value, mode: $("create-mode").value, acl: $("create-acl").value,
    });
    $("create-name").value = ""; $("create-data").value = "";
    await reloadExpanded(current.path);
    await select(r.path);
  } catch (e) { showError(e); }
}

// ---- live updates: one persistent recursive watch, as server-sent events -------------------

const pendingReload = new Set();
let reloadTimer = null;

function onChange(change) {
  const parent = parentOf(change.path);
  if (change.type === "NodeCreated" || change.type === "NodeDeleted") {
    pendingReload.add(parent);
    // The parent's own row (its child count, whether it opens) is in the grandparent's list.
    if (parent !== "/") pendingReload.add(parentOf(parent));
  }
  if (current && (change.path === current.path || (parent === current.path && change.type !== "NodeDataChanged"))) {
    pendingReload.add("@node");
    if (editingVersion !== null && change.path === current.path) {
      notice(`${change.path} was changed by another client while you edit it (${change.type}).`);
    }
  }
  const name = document.querySelector(`.tree .name[data-path="${CSS.escape(change.path)}"]`);
  if (name) { name.classList.add("flash"); setTimeout(() => name.classList.remove("flash"), 1200); }
  scheduleReloads();
}

// At most one round of reloads every 300 ms however fast changes come: a busy tree is shown
// a little late, never starved.
function scheduleReloads() {
  if (reloadTimer) return;
  reloadTimer = setTimeout(() => { reloadTimer = null; flushReloads(); }, 300);
}

async function flushReloads() {
  const todo = Array.from(pendingReload);
  pendingReload.clear();
  // Parents first, so a reloaded parent re-opens its children before they reload.
  todo.sort((a, b) => a.length - b.length);
  for (const p of todo) {
    try {
      if (p === "@node") { if (selected) await select(selected, true); }
      else await reloadExpanded(p);
    } catch (_) { /* gone meanwhile: its parent's reload shows that */ }
  }
}

function live() {
  const source = new EventSource("/api/events");
  let opened = false;
  source.addEventListener("open", () => {
    $("live").className = "live on";
    // Reconnected: what changed while the view was away is reloaded.
    if (opened) resync();
    opened = true;
  });
  source.addEventListener("error", () => { $("live").className = "live off"; });
  source.addEventListener("change", (m) => onChange(JSON.parse(m.data)));
  source.addEventListener("resync", resync);
}

function resync() {
  for (const p of expanded.keys()) pendingReload.add(p);
  pendingReload.add("@node");
  scheduleReloads();
}

// ---- sessions, ensemble, metrics -----------------------------------------------------------

function table(t, head, rows) {
  t.replaceChildren(el("tr", {}, ...head.map((h) => el("th", {}, h))),
    ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c ?? "")))));
}

async function loadSessions() {
  const s = await api("GET", "/api/sessions");
  const ago = (ms) => (ms ? `${Math.max(0, Math.round((s.now_ms - ms) / 1000))} s ago` : "-");
  table($("sessions"), ["session", "client", "timeout", "last seen", "requests", "ephemerals", "watches"],
    s.connected.map((c) => [c.session, c.client, c.timeout_ms + " ms", ago(c.last_seen_ms), c.requests,
      c.ephemerals.join("\n"), c.watches.join("\n")]));
  table($("sessions-elsewhere"), ["session", "timeout", "ephemerals"],
    s.elsewhere.map((c) => [c.session, c.timeout_ms + " ms", c.ephemerals.join("\n")]));
}

async function loadEnsemble() {
  const e = await api("GET", "/api/ensemble");
  $("ensemble-title").textContent = e.standalone ? "Standalone server" : `Ensemble: member ${e.me} is ${e.mode}`;
  $("ensemble-note").textContent = e.leader_last_index != null
    ? `This member leads; its log ends at index ${e.leader_last_index}. Lag is in log entries.`
    : `This member (${e.mode}, last zxid ${e.last_zxid}) knows its own state; the leader (member ${e.leader ?? "none"}) knows every member's progress.`;
  const yes = (b) => (b == null ? "?" : b ? "yes" : "no");
  table($("members"), ["id", "role", "mode", "client address", "peer address", "serving", "zxid", "acknowledged index", "lag", "last contact"],
    e.members.map((m) => [m.id + (m.self ? " (this)" : ""), m.role, m.mode ?? (m.leader ? "leader" : ""),
      m.client || "-", m.peer, yes(m.serving), m.zxid ?? "", m.matched_index, m.lag,
      m.last_contact_ms == null ? "" : m.last_contact_ms + " ms ago"]));
}

const CHARTS = [
  ["requests/s", (m, p, dt) => (p ? (m.packets_received - p.packets_received) / dt : null)],
  ["read latency p50 (ms)", (m) => +m.p50_readlatency],
  ["read latency p99 (ms)", (m) => +m.p99_readlatency],
  ["write latency p50 (ms)", (m) => +m.p50_updatelatency],
  ["write latency p99 (ms)", (m) => +m.p99_updatelatency],
  ["fsync time, average (ms)", (m) => +m.avg_fsynctime],
  ["fsync time, max (ms)", (m) => +m.max_fsynctime],
  ["znodes", (m) => m.znode_count],
  ["watches", (m) => m.watch_count],
  ["connections", (m) => m.num_alive_connections],
];
const series = CHARTS.map(() => []);
let previous = null;

function drawChart(i, title, values) {
  let box = $("chart-" + i);
  if (!box) {
    box = el("div", { class: "chart", id: "chart-" + i }, el("h3", {}, title), el("div", { class: "value" }),
      document.createElementNS("http://www.w3.org/2000/svg", "svg"));
    $("charts").append(box);
  }
  const last = values.length ? values[values.length - 1] : null;
  box.querySelector(".value").textContent = last == null ? "–" : +last.toFixed(2);
  const svg = box.querySelector("svg");
  svg.setAttribute("viewBox", "0 0 300 80");
  svg.setAttribute("preserveAspectRatio", "none");
  const nums = values.filter((v) => v != null);
  const max = Math.max(1e-9, ...nums);
  const points = values.map((v, j) => `${(j * 300) / 59},${78 - ((v ?? 0) / max) * 74}`).join(" ");
  let line = svg.querySelector("polyline");
  if (!line) { line = document.createElementNS("http://www.w3.org/2000/svg", "polyline"); svg.append(line); }
  line.setAttribute("points", points);
}

async function loadMetrics() {
  const m = await api("GET", "/api/metrics");
  const dt = previous ? Math.max(0.001, (m.now_ms - previous.now_ms) / 1000) : 0;
  CHARTS.forEach(([title, f], i) => {
    const v = f(m, previous, dt);
    series[i].push(typeof v === "number" && isFinite(v) ? v : null);
    if (series[i].length > 60) series[i].shift();
    drawChart(i, title, series[i]);
  });
  previous = m;
}

// ---- pages and start-up ----------------------------------------------------------------------

// ---- mailroom jobs (the case study), from their znodes ----------------------------------------

async function childrenOf(path, limit) {
  try { return await api("GET", "/api/children?" + q({ path, limit: limit || 500 })); }
  catch (_) { return { total: 0, children: [] }; }
}

async function loadJobs() {
  const jobs = await childrenOf("/mailroom");
  const boxes = [];
  for (const j of jobs.children) {
    const base = "/mailroom/" + j.name;
    let manifest = {};
    try { manifest = JSON.parse(new TextDecoder().decode(bytesOf((await api("GET", "/api/node?" + q({ path: base }))).data))); }
    catch (_) { continue; } // not a job
    const [done, results, workers, claims] = await Promise.all([
      childrenOf(base + "/done", 1), childrenOf(base + "/results", 1),
      childrenOf(base + "/workers"), childrenOf(base + "/claims"),
    ]);
    // Batches being worked on: a claim directory with claims in it; its lowest claim holds it.
    const held = {};
    for (const c of claims.children.filter((c) => c.numChildren > 0)) {
      const inside = await childrenOf(base + "/claims/" + c.name, 50);
      const holder = inside.children.map((x) => x.name).sort()[0];
      if (!holder) continue;
      try {
        const node = await api("GET", "/api/node?" + q({ path: `${base}/claims/${c.name}/${holder}` }));
        const info = JSON.parse(new TextDecoder().decode(bytesOf(node.data)));
        (held[info.worker] = held[info.worker] || []).push(`${c.name} (${info.status})`);
      } catch (_) { /* released meanwhile */ }
    }
    const emails = manifest.emails || 0;
    const pct = emails ? Math.round((100 * results.total) / emails) : 0;
    // Through the CSSOM: the page's policy refuses style attributes.
    const fill = el("div", { class: "fill" });
    fill.style.width = pct + "%";
    const box = el("div", { class: "job", id: "job-" + j.name },
      el("h3", {}, `${j.name}: ${results.total} of ${emails} emails (${pct}%)`),
      el("div", { class: "bar" }, fill),
      el("p", {}, `${done.total} batches done of ${Math.ceil(emails / Math.max(1, manifest.batch || 1))}, ` +
        `${workers.total} workers present, ${Object.values(held).flat().length} batches held`));
    const t = el("table", { class: "grid" });
    table(t, ["worker", "present", "holds"], [...new Set([...workers.children.map((w) => w.name), ...Object.keys(held)])]
      .sort().map((w) => [w, workers.children.some((x) => x.name === w) ? "yes" : "no", (held[w] || []).join(", ")]));
    box.append(t);
    boxes.push(box);
  }
  $("jobs").replaceChildren(...(boxes.length ? boxes : [el("p", {}, "No mailroom job under /mailroom.")]));
}

const REFRESH = { sessions: loadSessions, ensemble: loadEnsemble, metrics: loadMetrics, jobs: loadJobs };
let page = "tree";

function show(name) {
  page = name;
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== "page-" + name; });
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.page === name));
  REFRESH[name]?.().catch(() => {});
}

async function main() {
  const me = await api("GET", "/api/me");
  csrf = me.csrf;
  $("whoami").textContent = me.user;
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => show(t.dataset.page)));
  $("logout").addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf } });
    location.href = "/login";
  });
  document.querySelectorAll("input[name=view]").forEach((r) => r.addEventListener("change", renderData));
  $("edit").addEventListener("click", () => {
    if (!current) return;
    let text;
    try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytesOf(current.data)); }
    catch (_) { showError({ code: "Binary", message: "this node's data is not text; the console edits text only" }); return; }
    editingVersion = current.stat.version;
    $("edit-version").textContent = editingVersion;
    $("edit-data").value = text;
    $("editor").hidden = false;
  });
  $("cancel").addEventListener("click", closeEditor);
  $("editor").addEventListener("submit", save);
  $("delete").addEventListener("click", remove);
  $("create").addEventListener("submit", create);
  $("prev").addEventListener("click", () => { childOffset = Math.max(0, childOffset - PAGE); loadChildList(); });
  $("next").addEventListener("click", () => { childOffset += PAGE; loadChildList(); });
  let filterTimer = null;
  $("child-filter").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => { childOffset = 0; loadChildList(); }, 200);
  });
  $("search-path").addEventListener("input", async () => {
    const v = $("search-path").value;
    if (!v.startsWith("/")) return;
    try {
      const page = await api("GET", "/api/children?" + q({ path: parentOf(v) || "/", limit: 20, filter: v.slice(v.lastIndexOf("/") + 1) }));
      $("search-hints").replaceChildren(...page.children.map((c) => el("option", { value: childPath(page.path, c.name) })));
    } catch (_) { /* a path that does not exist yet has no hints */ }
  });
  $("search").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const path = $("search-path").value.replace(/\/+$/, "") || "/";
    await expandTo(path);
    await select(path);
  });
  const root = el("li", { "data-path": "/" });
  const rootUl = el("ul");
  const rootName = el("span", { class: "name", "data-path": "/" }, "/");
  rootName.addEventListener("click", () => select("/"));
  root.append(el("div", { class: "row" }, el("span", { class: "twisty" }, "▾"), rootName), rootUl);
  $("tree").append(root);
  await loadChildren("/", rootUl, 0);
  let start = "/";
  try { start = decodeURI(location.hash.slice(1)) || "/"; } catch (_) { /* a mangled link */ }
  await expandTo(start);
  await select(start);
  live();
  setInterval(() => { if (REFRESH[page]) REFRESH[page]().catch(() => {}); }, 2000);
}

main().catch((e) => { if (e.message !== "logged out") showError(e); });
