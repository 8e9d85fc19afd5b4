// Hummel's player page. Plain JS, no framework: the state lives in `state`, `render*` draw it.
// Every API call carries the run's secret (from the URL's fragment) in X-Hummel-Secret.
"use strict";

const SECRET_KEY = "hummel-secret";
const PROFILE_KEY = "hummel-profile";

const secret = (() => {
  const fromUrl = location.hash.replace(/^#/, "");
  if (fromUrl) {
    sessionStorage.setItem(SECRET_KEY, fromUrl);
    // Out of the address bar (and the history) once kept.
    history.replaceState(null, "", location.pathname);
    return fromUrl;
  }
  return sessionStorage.getItem(SECRET_KEY) || "";
})();

const state = {
  profiles: [],
  current: null, // profile name
  view: null, // RepoView of the current profile
  sync: null, // SyncStatus of the sync under way or the last one
  lastSync: null, // the finished sync whose changes are shown
  adding: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function show(id, on) { $(id).hidden = !on; }

function setError(id, err) {
  const box = $(id);
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.message || String(err);
  box.hidden = false;
}

async function api(method, path, body) {
  const opts = { method, headers: { "X-Hummel-Secret": secret } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch("/api" + path, opts);
  } catch (e) {
    throw new Error("Hummel is not running any more: start it again (hummel ui).");
  }
  if (resp.status === 204) return null;
  let data = null;
  try { data = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) throw new Error((data && data.message) || `HTTP ${resp.status}`);
  return data;
}

const enc = encodeURIComponent;

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = n, i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)) + " " + units[i];
}

function duration(secs) {
  if (secs == null) return "–";
  if (secs < 60) return `${secs} s`;
  const m = Math.floor(secs / 60), s = secs % 60;
  if (m < 60) return `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function ago(unix) {
  const secs = Math.max(0, Math.round(Date.now() / 1000 - unix));
  if (secs < 60) return "just now";
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
  const days = Math.floor(secs / 86400);
  return days < 30 ? plural(days, "day") + " ago" : new Date(unix * 1000).toLocaleDateString();
}

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function profile() { return state.profiles.find((p) => p.name === state.current) || null; }

// ---- loading -----------------------------------------------------------------------------

async function loadProfiles(select) {
  const data = await api("GET", "/profiles");
  state.profiles = data.profiles;
  if (data.sync) onSync(data.sync, true);
  $("footer").textContent = `Profiles are saved in ${data.config_dir}`;
  const wanted = select || state.current || localStorage.getItem(PROFILE_KEY);
  state.current = state.profiles.some((p) => p.name === wanted)
    ? wanted
    : (state.profiles[0] && state.profiles[0].name) || null;
  if (state.current) localStorage.setItem(PROFILE_KEY, state.current);
  renderFrame();
  if (state.current) await loadView();
}

async function loadView() {
  const name = state.current;
  setError("repo-error", null);
  $("refresh-button").disabled = true;
  $("repo-state").className = "pill";
  $("repo-state").textContent = "Checking…";
  try {
    const view = await api("GET", `/profiles/${enc(name)}/repository`);
    if (name !== state.current) return;
    const p = profile();
    // A picked set brings its mods as the repository defines them now.
    const set = p && p.set ? view.sets.find((s) => s.name === p.set) : null;
    if (set) p.mods = [...set.mods].sort();
    if (p) for (const m of view.mods) m.selected = p.mods.includes(m.name);
    state.view = view;
  } catch (e) {
    if (name !== state.current) return;
    state.view = null;
    setError("repo-error", e);
  } finally {
    $("refresh-button").disabled = false;
  }
  renderView();
}

// ---- rendering ---------------------------------------------------------------------------

function renderFrame() {
  const have = state.profiles.length > 0;
  show("profile-bar", have);
  show("add-view", !have || state.adding);
  show("add-cancel", have);
  show("profile-view", have && !state.adding);
  const sel = $("profile-select");
  sel.replaceChildren(...state.profiles.map((p) => el("option", { value: p.name, text: p.name })));
  if (state.current) sel.value = state.current;
  const p = profile();
  if (!p) return;
  $("repo-name").textContent = p.name;
  $("repo-url").textContent = p.repository;
  $("folder-input").value = p.folder || "";
  $("server-input").value = p.server || "";
  $("launcher-select").value = p.launch && p.launch.with === "executable" ? "executable" : "steam";
  $("exe-input").value = p.launch && p.launch.path ? p.launch.path : "";
  show("exe-input", $("launcher-select").value === "executable");
}

const STATUS = {
  no_folder: ["Choose a folder", ""],
  not_installed: ["Not installed", ""],
  not_managed: ["In folder, not synced", "warn"],
  update_available: ["Update available", "warn"],
  up_to_date: ["Up to date", "ok"],
};

function renderView() {
  const v = state.view;
  const p = profile();
  const body = $("mods-body");
  if (!v || !p) {
    body.replaceChildren();
    $("repo-state").textContent = v ? "" : "Unavailable";
    $("repo-state").className = v ? "pill" : "pill bad";
    ["repo-revision", "repo-date", "repo-size", "repo-mods"].forEach((id) => { $(id).textContent = "–"; });
    renderChanges();
    renderSyncSummary();
    return;
  }
  // The repository's own name and description, as its admin published them.
  $("repo-name").textContent = v.name || p.name;
  $("repo-description").textContent = v.description || "";
  show("repo-description", !!v.description);
  $("repo-revision").textContent = v.revision;
  $("repo-date").textContent = v.created_unix ? ago(v.created_unix) : "–";
  $("repo-date").title = v.created_unix ? new Date(v.created_unix * 1000).toLocaleString() : "";
  $("repo-size").textContent = bytes(v.bytes);
  $("repo-mods").textContent = v.mods.length;

  const ticked = v.mods.filter((m) => m.selected);
  const pending = ticked.filter((m) => m.status !== "up_to_date");
  const rs = $("repo-state");
  if (!p.folder) { rs.textContent = "Choose a folder"; rs.className = "pill"; }
  else if (ticked.length === 0) { rs.textContent = "No mods ticked"; rs.className = "pill"; }
  else if (pending.length === 0) { rs.textContent = "Up to date"; rs.className = "pill ok"; }
  else { rs.textContent = `${plural(pending.length, "mod")} to sync`; rs.className = "pill warn"; }

  body.replaceChildren(...v.mods.map((m) => {
    const [label, cls] = STATUS[m.status] || [m.status, ""];
    const box = el("input", { type: "checkbox", checked: m.selected, title: `Sync ${m.name}` });
    box.addEventListener("change", () => toggleMod(m.name, box.checked));
    const row = el("tr", { class: "mod-row" + (m.selected ? " selected" : ""), "data-mod": m.name },
      el("td", { class: "check" }, box),
      el("td", { class: "mod-name", text: m.name }),
      el("td", { class: "num", text: bytes(m.bytes) }),
      el("td", { class: "num files-col", text: String(m.files) }),
      el("td", {}, el("span", { class: "pill status " + cls, "data-status": m.status, text: label })));
    row.addEventListener("click", (ev) => {
      if (ev.target !== box) { box.checked = !box.checked; toggleMod(m.name, box.checked); }
    });
    return row;
  }));
  show("mods-empty", v.mods.length === 0);
  const gone = $("gone-note");
  gone.textContent = v.gone.length
    ? `No longer in the repository: ${v.gone.join(", ")} (left as it is in your folder).`
    : "";
  gone.hidden = v.gone.length === 0;

  show("sets-card", v.sets.length > 0);
  $("sets-list").replaceChildren(...v.sets.map((s) => {
    const [label, cls] = STATUS[s.status] || [s.status, ""];
    const b = el("button", { type: "button", class: "set" + (s.picked ? " picked" : ""), "data-set": s.name },
      el("strong", { text: s.name }),
      el("span", { class: "muted", text: s.description || `${plural(s.mods.length, "mod")}` }),
      el("span", { class: "set-mods", text: `${s.mods.join(", ")} · ${bytes(s.bytes)}` + (s.server ? ` · ${s.server}` : "") }),
      el("span", { class: "pill status " + cls, "data-status": s.status, text: label }));
    b.addEventListener("click", () => pickSet(s));
    return b;
  }));
  renderChanges();
  renderSyncSummary();
}

function renderSyncSummary() {
  const v = state.view, p = profile();
  const running = state.sync && state.sync.state === "running";
  const btn = $("sync-button");
  const summary = $("sync-summary");
  if (!v || !p) { summary.textContent = ""; btn.disabled = true; return; }
  const ticked = v.mods.filter((m) => m.selected);
  const pending = ticked.filter((m) => m.status !== "up_to_date");
  const size = v.changes.mods.reduce((a, m) => a + m.bytes_changed, 0);
  if (!p.folder) summary.textContent = "Choose the game's mod folder first.";
  else if (ticked.length === 0) summary.textContent = "Tick the mods you want.";
  else if (pending.length === 0) summary.textContent = `${plural(ticked.length, "mod")}, all up to date.`;
  else summary.textContent = `${plural(pending.length, "mod")} of ${ticked.length} to sync, up to ${bytes(size)} to write.`;
  btn.textContent = running ? "Syncing…" : pending.length ? `Sync ${plural(ticked.length, "mod")}` : "Check again";
  btn.disabled = running || !p.folder || ticked.length === 0;
  $("launch-button").disabled = running || !p.folder || ticked.length === 0;
}

function renderChanges() {
  const box = $("changes");
  const title = $("changes-title");
  const v = state.view;
  let log = null;
  const last = state.lastSync;
  if (last && last.profile === state.current && last.changes && !last.changes_seen) {
    log = last.changes;
    title.textContent = `What the last sync changed (revision ${last.revision})`;
  } else if (v) {
    log = v.changes;
    title.textContent = log.from != null
      ? `Changes since your revision ${log.from}`
      : `What a sync brings (revision ${v.revision})`;
  } else {
    title.textContent = "Changes";
  }
  if (!log || (log.mods.length === 0 && log.files.length === 0)) {
    box.replaceChildren(el("div", { class: "muted empty", text: v && v.mods.some((m) => m.selected) ? "Nothing has changed." : "Tick mods to see what a sync brings." }));
    return;
  }
  const parts = [];
  const LIMIT = 200;
  let shown = 0;
  for (const m of log.mods) {
    const counts = [];
    if (m.files_added) counts.push(`${m.files_added} added`);
    if (m.files_updated) counts.push(`${m.files_updated} updated`);
    if (m.files_removed) counts.push(`${m.files_removed} removed`);
    parts.push(el("div", { class: "change-mod", "data-mod": m.name, "data-change": m.change },
      el("span", { class: "tag " + m.change, text: m.change }),
      el("span", { text: m.name + (m.renamed_from ? ` (renamed from ${m.renamed_from})` : "") }),
      el("span", { class: "muted small", text: counts.length ? `files: ${counts.join(", ")}` : "" })));
    const files = log.files.filter((f) => f.path === m.name || f.path.startsWith(m.name + "/"));
    const list = el("ul");
    for (const f of files) {
      if (shown >= LIMIT) break;
      shown++;
      list.append(el("li", { class: "change-file", "data-path": f.path, "data-change": f.change },
        el("span", { class: "tag " + f.change, text: f.change }),
        el("span", { class: "path", text: (f.path.slice(m.name.length + 1) || f.path) + (f.renamed_from ? ` (renamed from ${f.renamed_from})` : "") }),
        el("span", { class: "size", text: bytes(f.size) })));
    }
    parts.push(list);
  }
  if (log.files.length > shown) parts.push(el("div", { class: "muted small", text: `… and ${log.files.length - shown} more files` }));
  box.replaceChildren(...parts);
}

function renderProgress() {
  const s = state.sync;
  const mine = s && s.profile === state.current;
  show("progress", !!mine);
  if (!mine) return;
  const pct = s.state === "done" ? 100 : Math.floor(s.percent);
  $("progress-fill").style.width = pct + "%";
  $("progress-bar").setAttribute("aria-valuenow", String(pct));
  $("progress-bar").className = "bar" + (s.state === "done" ? " done" : s.state === "failed" ? " failed" : "");
  $("progress-percent").textContent = `${pct} %`;
  if (s.state === "running") {
    $("progress-mod").textContent = s.current_mod ? `Syncing ${plural(s.mods, "mod")}: ${s.current_mod}` : "Starting…";
    const phase = { checking: "checking", transferring: "downloading", applying: "putting in place", finished: "done" }[s.phase] || s.phase;
    const rate = s.rate > 0 ? `${bytes(s.rate)}/s` : "–";
    $("progress-text").textContent =
      `${bytes(s.bytes_done)} of ${bytes(s.bytes_total)} · ${rate} · ${s.eta_secs != null ? duration(s.eta_secs) + " left" : "estimating"} · ${phase}`;
  } else if (s.state === "done") {
    $("progress-mod").textContent = "Done";
    $("progress-text").textContent = `${bytes(s.bytes_total)} in place · ${bytes(s.bytes_downloaded)} downloaded`;
  } else {
    $("progress-mod").textContent = "Stopped";
    $("progress-text").textContent = s.current_mod ? `at ${s.current_mod}` : "";
  }
}

// ---- events ------------------------------------------------------------------------------

function onSync(s, initial) {
  const was = state.sync;
  state.sync = s;
  renderProgress();
  if (s.profile !== state.current) return;
  if (s.state === "failed") setError("sync-error", new Error(s.error || "the sync failed"));
  if (s.state === "running") { setError("sync-error", null); show("sync-result", false); }
  renderSyncSummary();
  const finished = s.state !== "running" && (!was || was.state === "running");
  if (finished && !initial) {
    if (s.state === "done") {
      state.lastSync = s;
      const r = $("sync-result");
      r.textContent = `Synced: ${plural(s.files_written, "file")} written, ${plural(s.files_deleted, "file")} removed, ${bytes(s.bytes_downloaded)} downloaded.`;
      r.hidden = false;
    }
    loadView();
  }
}

// Server-sent events, read with fetch (which can send the secret's header; EventSource cannot).
async function listen() {
  for (;;) {
    try {
      const resp = await fetch("/api/events", { headers: { "X-Hummel-Secret": secret } });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      setError("page-error", null);
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let event = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (event === "sync" && data.length) {
            const s = JSON.parse(data.join("\n"));
            if (s) onSync(s, false);
          }
        }
      }
    } catch (e) {
      setError("page-error", new Error("Lost the connection to Hummel; retrying…"));
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// ---- actions -----------------------------------------------------------------------------

function settingsBody(p, mods) {
  const launcher = $("launcher-select").value === "executable"
    ? { with: "executable", path: $("exe-input").value.trim() }
    : { with: "steam" };
  return {
    folder: $("folder-input").value.trim(),
    mods: mods || p.mods,
    server: $("server-input").value.trim() || null,
    set: p.set || null,
    launch: launcher,
    parameters: p.parameters || [],
  };
}

// The saved profile with other mods (the form's unsaved edits stay out).
function modsBody(p, mods) {
  return {
    folder: p.folder || "",
    mods,
    server: p.server || null,
    set: p.set || null,
    launch: p.launch || { with: "steam" },
    parameters: p.parameters || [],
  };
}

async function saveProfile(body, errorId) {
  const p = profile();
  setError(errorId, null);
  const saved = await api("PUT", `/profiles/${enc(p.name)}`, body);
  // The ticks made meanwhile stay: the next save in the queue sends them.
  const mods = p.mods;
  Object.assign(p, saved);
  p.mods = mods;
  return saved;
}

// Saves run one after another, each with the profile as it is then: quick clicks never
// overwrite each other.
let saving = Promise.resolve();
function queueSave(fn) {
  const next = saving.then(fn, fn);
  saving = next.catch(() => {});
  return next;
}

async function setMods(mods) {
  const p = profile();
  if (!p) return;
  p.mods = [...new Set(mods)].sort();
  if (state.view) for (const m of state.view.mods) m.selected = p.mods.includes(m.name);
  if (state.lastSync) state.lastSync.changes_seen = true;
  renderView();
  try {
    await queueSave(() => saveProfile(modsBody(p, p.mods), "mods-error"));
    await loadView();
  } catch (e) {
    setError("mods-error", e);
  }
}

function toggleMod(name, on) {
  const p = profile();
  if (!p) return;
  p.set = null; // ticked by hand: no longer the set
  const mods = p.mods.filter((m) => m !== name);
  if (on) mods.push(name);
  return setMods(mods);
}

function pickSet(set) {
  const p = profile();
  if (!p) return;
  p.set = set.name;
  if (set.server) {
    p.server = set.server;
    $("server-input").value = set.server;
  }
  return setMods(set.mods);
}

// The picked set's server wants a password: asked at each launch, never saved.
function askPassword(p) {
  const v = state.view;
  const set = v && p.set ? v.sets.find((s) => s.name === p.set) : null;
  if (!set || !set.password || (p.server || "") !== (set.server || "")) return { ok: true };
  const pw = window.prompt(`Password for the server of ${set.name} (${set.server})`, "");
  return pw === null ? { ok: false } : { ok: true, password: pw };
}

async function addRepository(ev) {
  ev.preventDefault();
  const link = $("link-input").value.trim();
  const btn = $("add-button");
  setError("add-error", null);
  btn.disabled = true;
  btn.textContent = "Adding…";
  try {
    const p = await api("POST", "/profiles", { link });
    state.adding = false;
    $("link-input").value = "";
    await loadProfiles(p.name);
  } catch (e) {
    setError("add-error", e);
  } finally {
    btn.disabled = false;
    btn.textContent = "Add";
  }
}

async function saveSettings(ev) {
  ev.preventDefault();
  const p = profile();
  if (!p) return;
  const btn = $("save-settings");
  btn.disabled = true;
  try {
    await queueSave(() => saveProfile(settingsBody(p), "settings-error"));
    const saved = $("settings-saved");
    saved.hidden = false;
    setTimeout(() => { saved.hidden = true; }, 2000);
    renderFrame();
    await loadView();
  } catch (e) {
    setError("settings-error", e);
  } finally {
    btn.disabled = false;
  }
}

async function startSync() {
  const p = profile();
  if (!p) return;
  setError("sync-error", null);
  show("sync-result", false);
  if (state.lastSync) state.lastSync.changes_seen = true;
  $("sync-button").disabled = true;
  try {
    const s = await api("POST", `/profiles/${enc(p.name)}/sync`);
    if (!state.sync || state.sync.state !== "running" || s.state !== "running") onSync(s, false);
  } catch (e) {
    setError("sync-error", e);
    renderSyncSummary();
  }
}

async function launchGame() {
  const p = profile();
  if (!p) return;
  setError("launch-error", null);
  show("launch-result", false);
  const asked = askPassword(p);
  if (!asked.ok) return;
  const btn = $("launch-button");
  btn.disabled = true;
  try {
    const l = await api("POST", `/profiles/${enc(p.name)}/launch`, asked.password != null ? { password: asked.password } : undefined);
    const r = $("launch-result");
    r.textContent = `Started: ${[l.program, ...l.args].join(" ")}`;
    r.hidden = false;
  } catch (e) {
    setError("launch-error", e);
  } finally {
    btn.disabled = false;
    renderSyncSummary();
  }
}

async function deleteProfile() {
  const p = profile();
  if (!p || !confirm(`Remove the profile "${p.name}"? The files in its folder stay.`)) return;
  try {
    await api("DELETE", `/profiles/${enc(p.name)}`);
    state.current = null;
    state.view = null;
    await loadProfiles();
  } catch (e) {
    setError("settings-error", e);
  }
}

function init() {
  $("add-form").addEventListener("submit", addRepository);
  $("add-cancel").addEventListener("click", () => { state.adding = false; renderFrame(); });
  $("new-profile-button").addEventListener("click", () => { state.adding = true; renderFrame(); $("link-input").focus(); });
  $("profile-select").addEventListener("change", (ev) => {
    state.current = ev.target.value;
    state.view = null;
    localStorage.setItem(PROFILE_KEY, state.current);
    renderFrame();
    renderProgress();
    loadView();
  });
  $("settings-form").addEventListener("submit", saveSettings);
  $("launcher-select").addEventListener("change", () => show("exe-input", $("launcher-select").value === "executable"));
  $("refresh-button").addEventListener("click", () => { if (state.lastSync) state.lastSync.changes_seen = true; loadView(); });
  $("select-all").addEventListener("click", () => setAll(true));
  $("select-none").addEventListener("click", () => setAll(false));
  $("sync-button").addEventListener("click", startSync);
  $("launch-button").addEventListener("click", launchGame);
  $("delete-profile").addEventListener("click", deleteProfile);
  if (!secret) {
    setError("page-error", new Error("Open this page with the link `hummel ui` printed (it carries a key)."));
    show("add-view", true);
    return;
  }
  loadProfiles().catch((e) => { setError("page-error", e); show("add-view", true); });
  listen();
}

function setAll(on) {
  if (!state.view) return;
  const p = profile();
  if (p) p.set = null;
  return setMods(on ? state.view.mods.map((m) => m.name) : []);
}

document.addEventListener("DOMContentLoaded", init);
