// bgmid review page: plain JavaScript, no build step, nothing fetched from outside this server.
// The token is asked once and kept in sessionStorage (gone when the tab closes); every API call sends it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { programme: null, selected: -1, tracks: new Map() };

// -- API ------------------------------------------------------------------------------------------------
function token() { return sessionStorage.getItem("bgmid-token") || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  const reviewer = $("reviewer").value.trim();
  if (reviewer) headers["X-Reviewer"] = reviewer;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) { signOut("The token was refused: enter it again."); throw new Error("unauthorised"); }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
    const text = typeof detail === "string" ? detail : JSON.stringify(detail);
    say(`${res.status}: ${text}`, true);
    throw new Error(text);
  }
  return res;
}

function say(text, error = false) {
  $("message").textContent = text || "";
  $("message").classList.toggle("error", error);
}

// -- time ----------------------------------------------------------------------------------------------
function tc(s) {  // seconds -> HH:MM:SS.mmm, as the cue sheet writes it
  const ms = Math.round(Math.max(0, s) * 1000);
  const p = (n, w) => String(n).padStart(w, "0");
  return `${p(Math.floor(ms / 3600000), 2)}:${p(Math.floor(ms / 60000) % 60, 2)}:` +
         `${p(Math.floor(ms / 1000) % 60, 2)}.${p(ms % 1000, 3)}`;
}

function seconds(text) {  // HH:MM:SS.mmm, MM:SS or seconds -> seconds
  return String(text).trim().split(":").reduce((acc, v) => acc * 60 + parseFloat(v), 0);
}

// -- sign in ---------------------------------------------------------------------------------------------
function signOut(why) {
  sessionStorage.removeItem("bgmid-token");
  $("app").hidden = true; $("who").hidden = true; $("login").hidden = false;
  say(why || "");
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("bgmid-token", $("token").value.trim());
  $("token").value = "";
  await start();
});
$("logout").addEventListener("click", () => signOut("Signed out."));
$("reviewer").value = sessionStorage.getItem("bgmid-reviewer") || "";
$("reviewer").addEventListener("change", () => sessionStorage.setItem("bgmid-reviewer", $("reviewer").value.trim()));

async function start() {
  if (!token()) { signOut(); return; }
  try { await loadProgrammes(); } catch (e) { return; }
  $("login").hidden = true; $("who").hidden = false; $("app").hidden = false; say("");
  loadTracks();
  loadJobs();
}

// -- programmes list and upload --------------------------------------------------------------------------
async function loadProgrammes() {
  const list = await (await api("/api/programmes")).json();
  const ul = $("programmes");
  ul.replaceChildren();
  for (const p of list) {
    const li = document.createElement("li");
    li.dataset.id = p.id;
    li.textContent = p.title;
    const small = document.createElement("small");
    small.textContent = `${tc(p.duration_s).slice(0, 8)} · ${p.cues} cues · ${p.pending} to review`;
    li.append(small);
    if (state.programme && state.programme.id === p.id) li.classList.add("current");
    li.addEventListener("click", () => openProgramme(p.id));
    ul.append(li);
  }
  return list;
}

async function loadJobs() {  // the latest jobs; polled while any is queued or running
  const jobs = await (await api("/api/jobs?limit=8")).json();
  const ul = $("jobs");
  ul.replaceChildren();
  for (const j of jobs) {
    const li = document.createElement("li");
    li.className = `job ${j.status}`;
    li.textContent = `${j.name}: ${j.status}${j.status === "running" ? ` ${Math.round(100 * j.progress)} %` : ""}`;
    if (j.error) li.title = j.error;
    if (j.programme_id) li.addEventListener("click", () => openProgramme(j.programme_id));
    ul.append(li);
  }
  clearTimeout(state.jobTimer);
  if (jobs.some((j) => j.status === "queued" || j.status === "running")) {
    state.jobTimer = setTimeout(() => loadJobs().then(loadProgrammes).catch(() => {}), 2000);
  }
}

async function loadTracks() {
  const tracks = await (await api("/api/tracks?limit=500")).json();
  const dl = $("track-list");
  dl.replaceChildren();
  for (const t of tracks) {
    state.tracks.set(trackLabel(t), t.track_id);
    const o = document.createElement("option");
    o.value = trackLabel(t);
    dl.append(o);
  }
}

function trackLabel(t) { return `${t.title} [${t.track_id}]`; }

function trackId(text) {  // "Title [12]" (from the list), a bare id, or a title only one track has
  const m = String(text).match(/\[(\d+)\]\s*$/) || String(text).trim().match(/^(\d+)$/);
  if (m) return parseInt(m[1], 10);
  const same = [...state.tracks].filter(([label]) => label.slice(0, label.lastIndexOf(" [")) === text.trim());
  if (same.length === 1) return same[0][1];  // a title, when only one track has it
  throw new Error(same.length ? `several tracks are called ${text}: pick one from the list` : `unknown track: ${text}`);
}

$("upload").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData();
  form.append("file", $("upload-file").files[0]);
  if ($("upload-truth").files[0]) form.append("truth", $("upload-truth").files[0]);
  form.append("separator", $("upload-separator").value);
  $("job-status").textContent = "uploading...";
  let job;
  try { job = await (await api("/api/monitor", { method: "POST", body: form })).json(); }
  catch (e) { $("job-status").textContent = ""; return; }
  const bar = $("job-progress");
  bar.hidden = false;
  loadJobs();
  for (;;) {
    const j = await (await api(`/api/jobs/${job.job}`)).json();
    bar.value = j.progress;
    $("job-status").textContent = `${j.status} ${Math.round(100 * j.progress)} %`;
    if (j.status === "done") { await loadProgrammes(); await openProgramme(j.programme_id); break; }
    if (j.status === "failed") { say(`job failed: ${j.error}`); break; }
    await new Promise((r) => setTimeout(r, 500));
  }
  bar.hidden = true;
  loadJobs();
});

// -- one programme ---------------------------------------------------------------------------------------
async function openProgramme(id, keepSelection = false) {
  const p = await (await api(`/api/programmes/${id}`)).json();
  const same = state.programme && state.programme.id === p.id;
  state.programme = p;
  if (!same) {
    $("prog-audio").src = p.audio_url;
    state.selected = p.cues.length ? 0 : -1;
  } else if (!keepSelection) {
    state.selected = Math.min(state.selected, p.cues.length - 1);
  }
  $("programme").hidden = false;
  $("prog-title").textContent = p.title;
  for (const li of $("programmes").children) li.classList.toggle("current", +li.dataset.id === p.id);
  drawTimeline();
  drawTable();
  showEditor();
  loadAudit();
}

function drawTable() {
  const tbody = $("cues").tBodies[0];
  tbody.replaceChildren();
  state.programme.cues.forEach((c, i) => {
    const tr = document.createElement("tr");
    tr.dataset.n = c.n;
    tr.classList.toggle("selected", i === state.selected);
    tr.classList.toggle("rejected", c.status === "rejected");
    const cells = [c.n, null, c.tc_in, c.tc_out, c.title, tc(c.track_start_s), c.usage,
                   c.origin === "reviewer" ? "reviewer" : c.confidence.toFixed(2)];
    for (const v of cells) {
      const td = document.createElement("td");
      if (v === null) {
        const b = document.createElement("span");
        b.className = `badge ${c.status}`;
        b.textContent = c.status;
        td.append(b);
      } else td.textContent = v;
      tr.append(td);
    }
    tr.children[4].className = "track";
    const act = document.createElement("td");
    for (const [label, status] of [["accept", "accepted"], ["reject", "rejected"]]) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = label; b.className = label;
      b.addEventListener("click", (ev) => { ev.stopPropagation(); setStatus(i, status); });
      act.append(b);
    }
    tr.append(act);
    tr.addEventListener("click", () => { select(i); playCue(i); });
    tbody.append(tr);
  });
}

// -- timeline (SVG) --------------------------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.append(e);
  return e;
}

function drawTimeline() {
  const p = state.programme, svg = $("timeline");
  const W = svg.clientWidth || 900, H = 150, top = 8, levelH = 70, cueY = 84, cueH = 22, truthY = 110, truthH = 12;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const x = (s) => (s / Math.max(p.duration_s, 1e-9)) * W;
  const y = (db) => top + levelH * (1 - (Math.max(-60, Math.min(0, db)) + 60) / 60);  // -60..0 dBFS
  for (const [key, cls] of [["level_db", "mix"], ["speech_db", "speech"], ["music_db", "music"]]) {
    const curve = p.levels[key];
    if (!curve || !curve.length) continue;
    const pts = curve.map((v, i) => `${x(i + 0.5).toFixed(1)},${y(v).toFixed(1)}`);
    if (cls === "mix") {  // the mix as a filled area under its level: the backdrop of the other curves
      pts.unshift(`${x(0.5)},${y(-60)}`);
      pts.push(`${x(curve.length - 0.5)},${y(-60)}`);
    }
    el(cls === "mix" ? "polygon" : "polyline", { class: cls, points: pts.join(" ") }, svg);
  }
  p.cues.forEach((c, i) => {
    const cls = `cue ${c.status}${i === state.selected ? " selected" : ""}`;
    const r = el("rect", { class: cls, x: x(c.programme_start_s), y: cueY, width: Math.max(2, x(c.duration_s)),
                           height: cueH, rx: 2 }, svg);
    el("title", {}, r).textContent = `${c.n}. ${c.title} ${c.tc_in}-${c.tc_out}`;
    r.addEventListener("click", (ev) => { ev.stopPropagation(); select(i); playCue(i); });
    const t = el("text", { x: x(c.programme_start_s) + 3, y: cueY + 15 }, svg);
    t.textContent = c.title;
    const clip = Math.max(0, x(c.duration_s) - 6);
    if (t.getComputedTextLength && t.getComputedTextLength() > clip) t.textContent = clip > 12 ? c.title.slice(0, Math.floor(clip / 6)) : "";
  });
  for (const t of p.truth || []) {
    const r = el("rect", { class: "truth", x: x(t.programme_start_s), y: truthY,
                           width: Math.max(2, x(t.programme_end_s - t.programme_start_s)), height: truthH }, svg);
    el("title", {}, r).textContent = `truth: ${t.title || t.track_id} ${tc(t.programme_start_s)}-${tc(t.programme_end_s)}`;
  }
  const step = niceStep(p.duration_s);
  for (let s = 0; s <= p.duration_s; s += step) {
    el("line", { x1: x(s), x2: x(s), y1: H - 14, y2: H - 10, stroke: "#889" }, svg);
    if (x(s) + 40 < W) el("text", { class: "axis", x: x(s) + 2, y: H - 2 }, svg).textContent = tc(s).slice(s >= 3600 ? 0 : 3, 8);
  }
  el("line", { id: "playhead", class: "playhead", x1: 0, x2: 0, y1: 0, y2: H }, svg);
  svg.onclick = (ev) => {  // click the timeline: play the programme from there
    const rect = svg.getBoundingClientRect();
    seek($("prog-audio"), ((ev.clientX - rect.left) / rect.width) * p.duration_s, true);
  };
  movePlayhead();
}

function niceStep(d) {
  for (const s of [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) if (d / s <= 12) return s;
  return 7200;
}

function movePlayhead() {
  const ph = $("playhead"), p = state.programme;
  if (!ph || !p) return;
  const W = $("timeline").viewBox.baseVal.width || 900;
  const xpos = ($("prog-audio").currentTime / Math.max(p.duration_s, 1e-9)) * W;
  ph.setAttribute("x1", xpos); ph.setAttribute("x2", xpos);
  $("prog-time").textContent = tc($("prog-audio").currentTime);
}
$("prog-audio").addEventListener("timeupdate", movePlayhead);
$("ref-audio").addEventListener("timeupdate", () => { $("ref-time").textContent = tc($("ref-audio").currentTime); });
window.addEventListener("resize", () => state.programme && drawTimeline());

// -- playing a cue: the programme at its in point, the reference track at the matched offset -------------
function seek(audio, t, play) {
  const go = () => { audio.currentTime = Math.max(0, t); if (play) audio.play().catch(() => {}); };
  if (audio.readyState >= 1) go(); else audio.addEventListener("loadedmetadata", go, { once: true });
}

function playCue(i) {
  const c = state.programme.cues[i];
  if (!c) return;
  const ref = $("ref-audio");
  if (ref.dataset.track !== String(c.track_id)) {
    ref.src = c.track_audio_url;
    ref.dataset.track = c.track_id;
  }
  $("ref-title").textContent = c.title;
  seek($("prog-audio"), c.programme_start_s, true);
  seek(ref, c.track_start_s, true);
}

function togglePlay() {
  const a = $("prog-audio"), r = $("ref-audio");
  if (a.paused) { a.play().catch(() => {}); if (r.src) r.play().catch(() => {}); }
  else { a.pause(); r.pause(); }
}

// -- review actions --------------------------------------------------------------------------------------
function select(i) {
  const cues = state.programme.cues;
  if (!cues.length) return;
  state.selected = Math.max(0, Math.min(cues.length - 1, i));
  for (const tr of $("cues").tBodies[0].rows) tr.classList.toggle("selected", tr.rowIndex - 1 === state.selected);
  const row = $("cues").tBodies[0].rows[state.selected];
  if (row && row.scrollIntoView) row.scrollIntoView({ block: "nearest" });
  drawTimeline();
  showEditor();
}

async function patch(i, body) {
  const c = state.programme.cues[i];
  await api(`/api/programmes/${state.programme.id}/cues/${c.n}`, { method: "PATCH", json: body });
  await openProgramme(state.programme.id, true);
  loadProgrammes();
}

async function setStatus(i, status) {
  const c = state.programme.cues[i];
  await patch(i, { status: c.status === status ? "pending" : status });  // pressing it again undoes it
  say(`cue ${c.n} ${c.status === status ? "back to pending" : status}`);
}

function showEditor() {
  const c = state.programme && state.programme.cues[state.selected];
  $("edit").hidden = !c;
  if (!c) return;
  $("edit-n").textContent = `${c.n} (${c.title})`;
  $("edit-in").value = c.tc_in;
  $("edit-out").value = c.tc_out;
  $("edit-track").value = trackLabel(c);
  $("edit-usage").value = c.usage;
}

$("edit-in-now").addEventListener("click", () => { $("edit-in").value = tc($("prog-audio").currentTime); });
$("edit-out-now").addEventListener("click", () => { $("edit-out").value = tc($("prog-audio").currentTime); });

$("edit").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const c = state.programme.cues[state.selected];
  const body = {};
  const a = seconds($("edit-in").value), b = seconds($("edit-out").value);
  if (Math.abs(a - c.programme_start_s) > 5e-4) body.programme_start_s = a;
  if (Math.abs(b - c.programme_end_s) > 5e-4) body.programme_end_s = b;
  try {
    const tid = trackId($("edit-track").value);
    if (tid !== c.track_id) body.track_id = tid;
  } catch (e) { say(e.message); return; }
  if ($("edit-usage").value !== c.usage) body.usage = $("edit-usage").value;
  if (!Object.keys(body).length) { say("nothing changed"); return; }
  try { await patch(state.selected, body); say(`cue ${c.n} saved`); } catch (e) { /* said */ }
});

$("add").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  let body;
  try {
    body = { track_id: trackId($("add-track").value), programme_start_s: seconds($("add-in").value),
             programme_end_s: seconds($("add-out").value), track_start_s: seconds($("add-track-in").value || 0) };
  } catch (e) { say(e.message); return; }
  try {
    const c = await (await api(`/api/programmes/${state.programme.id}/cues`, { method: "POST", json: body })).json();
    await openProgramme(state.programme.id, true);
    say(`cue ${c.n} added`);
    $("add").reset();
  } catch (e) { /* said */ }
});

async function loadAudit() {
  const rows = await (await api(`/api/programmes/${state.programme.id}/audit`)).json();
  const ol = $("audit");
  ol.replaceChildren();
  for (const r of rows.reverse()) {
    const li = document.createElement("li");
    const what = r.action === "edit" ? changes(r.before, r.after) : "";
    li.textContent = `${r.at} ${r.who}: ${r.action} cue ${r.cue_n}${what}`;
    ol.append(li);
  }
}

function changes(before, after) {
  const keys = ["status", "tc_in", "tc_out", "title", "usage"];
  const out = keys.filter((k) => before && before[k] !== after[k]).map((k) => `${k} ${before[k]} -> ${after[k]}`);
  return out.length ? ` (${out.join(", ")})` : "";
}

// -- export ----------------------------------------------------------------------------------------------
async function exportSheet(ext) {
  const res = await api(`/api/programmes/${state.programme.id}/cuesheet.${ext}`);
  const blob = await res.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${state.programme.title}.cues.${ext}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
$("export-csv").addEventListener("click", () => exportSheet("csv"));
$("export-json").addEventListener("click", () => exportSheet("json"));

// -- keyboard: a accept, r reject, j/k next/previous, p play/pause ----------------------------------------
document.addEventListener("keydown", (ev) => {
  if (!state.programme || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const tag = (ev.target.tagName || "").toLowerCase();
  if (tag === "input" || tag === "select" || tag === "textarea") return;
  const i = state.selected;
  if (ev.key === "j") { select(i + 1); playCue(state.selected); }
  else if (ev.key === "k") { select(i - 1); playCue(state.selected); }
  else if (ev.key === "a" && i >= 0) setStatus(i, "accepted");
  else if (ev.key === "r" && i >= 0) setStatus(i, "rejected");
  else if (ev.key === "p") togglePlay();
  else return;
  ev.preventDefault();
});

start();
