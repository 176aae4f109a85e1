// retint page: pick or drop photos, colorize them through /api/colorize, compare, download;
// colour hints on a result, re-rendered as they change.
// No libraries and no network beyond this server: the zip writer below is ~30 lines.
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const state = { limits: null, models: [], results: [], queue: [], running: 0, maxParallel: 2 };
const IMAGE_EXT = /\.(jpe?g|png|webp|tiff?|bmp|gif)$/i;

function say(text) { $("#status").textContent = text; }

async function init() {
  try {
    const info = await (await fetch("/api/models")).json();
    state.models = info.models;
    for (const m of info.models) $("#model").add(new Option(`${m.id} (${m.name}, ${m.arch})`, m.id, m.default, m.default));
    for (const s of info.sizes.suggested) $("#size").add(new Option(`${s} px`, s, s === info.sizes.default, s === info.sizes.default));
    state.limits = info.limits;
    $("#limits").textContent = `up to ${(info.limits.max_upload_bytes / 2 ** 20).toFixed(0)} MB and ${(info.limits.max_pixels / 1e6).toFixed(0)} megapixels each.`;
  } catch (err) {
    say("Could not reach the retint server: is it still running?");
  }
}

function addFiles(files) {
  const list = [...files];
  if (!list.length) return;
  for (const file of list) {
    const card = makeCard(file);
    const problem = check(file);
    if (problem) { fail(card, problem); continue; }
    state.queue.push({ file, card, opts: options(), tries: 0 });
  }
  say(`${list.length} photo(s) added.`);
  pump();
}

function check(file) {
  const looksImage = file.type.startsWith("image/") || IMAGE_EXT.test(file.name);
  if (!looksImage) return "This is not a photo (expected JPEG, PNG, WebP, TIFF or BMP).";
  if (file.size === 0) return "This file is empty.";
  if (state.limits && file.size > state.limits.max_upload_bytes)
    return `Too large: ${(file.size / 2 ** 20).toFixed(1)} MB (limit ${(state.limits.max_upload_bytes / 2 ** 20).toFixed(0)} MB).`;
  return null;
}

function options() {
  return { model: $("#model").value, size: $("#size").value, format: $("#format").value };
}

function makeCard(file) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  $(".name", card).textContent = file.name;
  $(".state", card).textContent = "waiting…";
  const slider = $(".slider", card);
  slider.setAttribute("aria-label", `Before and after for ${file.name}: lower shows more colour, higher more original`);
  slider.addEventListener("input", () => setPos(card, slider.value));
  setPos(card, slider.value);
  $("#results").append(card);
  return card;
}

function setPos(card, value) {
  $(".compare", card).style.setProperty("--pos", `${value}%`);
  $(".slider", card).setAttribute("aria-valuetext", `${value}% original, ${100 - value}% colorized`);
}

function fail(card, message) {
  card.classList.add("error");
  $(".state", card).textContent = message;
}

function pump() {
  while (state.running < state.maxParallel && state.queue.length) {
    const job = state.queue.shift();
    state.running++;
    run(job).finally(() => { state.running--; pump(); });
  }
}

async function run(job) {
  const { file, card, opts } = job;
  $(".state", card).textContent = "colorizing…";
  const body = new FormData();
  body.append("file", file, file.name);
  const query = new URLSearchParams(Object.entries(opts).filter(([, v]) => v));
  let res;
  try {
    res = await fetch(`/api/colorize?${query}`, { method: "POST", body });
  } catch (err) {
    return fail(card, "The server could not be reached; is it still running?");
  }
  if ((res.status === 503 || res.status === 429) && job.tries < 20) {  // busy: wait as told, retry
    job.tries++;
    const wait = Number(res.headers.get("Retry-After") || 1) * 1000;
    $(".state", card).textContent = "server busy, retrying…";
    await new Promise((r) => setTimeout(r, wait));
    return run(job);
  }
  if (!res.ok) {
    let message = `Failed (${res.status}).`;
    try { message = (await res.json()).error || message; } catch (_) { /* not JSON */ }
    return fail(card, message);
  }
  const blob = await res.blob();
  const name = (/filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "") || [])[1] || `retint-${file.name}`;
  card.job = job;
  show(card, file, blob, name, res.headers.get("X-Retint-Seconds"));
}

function show(card, file, blob, name, seconds) {
  const url = URL.createObjectURL(blob);
  const after = $(".after", card), before = $(".before", card);
  after.alt = `${file.name}, colorized`;
  before.alt = `${file.name}, original`;
  before.onerror = () => { before.hidden = true; $(".state", card).textContent += " (this browser cannot preview the original)"; };
  after.onload = () => card.classList.add("done");
  after.src = url;
  before.src = URL.createObjectURL(file);
  $(".compare", card).hidden = false;
  const link = $(".download", card);
  link.href = url;
  link.download = name;
  link.textContent = `Download ${name}`;
  $(".actions", card).hidden = false;
  $(".state", card).textContent = seconds ? `done in ${Number(seconds).toFixed(1)} s` : "done";
  const open = $(".hint-open", card), model = hintModel(card.job.opts.model);
  open.disabled = !model;
  open.title = model ? `Colour hints with the ${model} model` : "No model that takes colour hints is served";
  open.onclick = () => openHints(card);
  card.entry = { name, blob };
  state.results.push(card.entry);
  $("#zip").disabled = false;
  say(`${state.results.length} photo(s) colorized.`);
}

// ---- colour hints: points {x, y, colour, radius} (x, y relative 0-1), the format of the API
const hint = { card: null, points: [], history: [], selected: -1, lastKey: null, timer: null,
  ctrl: null, url: null, sampling: false, drag: null, renders: 0 };
const RENDER_DELAY_MS = 250;

function hintModel(selected) {
  const takes = state.models.filter((m) => m.hints);
  const same = takes.find((m) => m.id === selected);
  return (same || takes[0] || {}).id || null;
}

function openHints(card) {
  hint.card = card;
  hint.points = [];
  hint.history = [];
  hint.selected = -1;
  hint.lastKey = null;
  $("#hint-name").textContent = card.job.file.name;
  $("#hint-img").alt = `${card.job.file.name}, colorized with hints`;
  $("#hint-img").src = $(".after", card).src;
  $("#hints").hidden = false;
  $("#hints").scrollIntoView({ block: "start" });
  drawPoints();
  render();
}

function closeHints() {
  if (hint.ctrl) hint.ctrl.abort();
  clearTimeout(hint.timer);
  hint.card = null;
  $("#hints").hidden = true;
}

function change(mutate, key = null) {
  // one undo step per action; repeated edits of one kind (a drag, a colour being picked) merge
  if (key === null || key !== hint.lastKey) hint.history.push(JSON.stringify(hint.points));
  hint.lastKey = key;
  mutate();
  drawPoints();
  schedule();
}

function undo() {
  if (!hint.history.length) return;
  hint.points = JSON.parse(hint.history.pop());
  hint.selected = Math.min(hint.selected, hint.points.length - 1);
  hint.lastKey = null;
  drawPoints();
  schedule();
}

function select(i) {
  hint.selected = i;
  hint.lastKey = null;
  if (i >= 0) {
    $("#hint-colour").value = hint.points[i].colour;
    $("#hint-radius").value = hint.points[i].radius;
  }
  drawPoints();
}

function drawPoints() {
  const layer = $("#hint-points");
  const focused = document.activeElement && document.activeElement.closest(".hint-point");
  const refocus = focused ? Number(focused.dataset.index) : -1;
  layer.replaceChildren(...hint.points.map((p, i) => {
    const dot = document.createElement("button");
    dot.type = "button";
    dot.className = "hint-point" + (i === hint.selected ? " selected" : "");
    dot.style.setProperty("--x", `${p.x * 100}%`);
    dot.style.setProperty("--y", `${p.y * 100}%`);
    dot.style.setProperty("--c", p.colour);
    dot.dataset.index = i;
    dot.setAttribute("aria-label", `Hint ${i + 1}: ${p.colour} at ${Math.round(p.x * 100)}% across, ${Math.round(p.y * 100)}% down`);
    return dot;
  }));
  const again = $(`.hint-point[data-index="${refocus}"]`);
  if (again) again.focus();
  $("#hint-delete").disabled = hint.selected < 0;
  $("#hint-undo").disabled = !hint.history.length;
  $("#hint-clear").disabled = !hint.points.length;
}

function schedule() {
  clearTimeout(hint.timer);
  hint.timer = setTimeout(render, RENDER_DELAY_MS);
}

function hintsJson() {
  const round = (v) => Math.round(v * 1e4) / 1e4;
  return JSON.stringify(hint.points.map((p) => ({ x: round(p.x), y: round(p.y), colour: p.colour, radius: round(p.radius) })), null, 1);
}

async function render() {
  const card = hint.card;
  if (!card) return;
  if (hint.ctrl) hint.ctrl.abort();
  const ctrl = (hint.ctrl = new AbortController());
  const { file, opts } = card.job, model = hintModel(opts.model);
  const body = new FormData();
  body.append("file", file, file.name);
  body.append("hints", hintsJson());
  body.append("model", model);
  body.append("size", opts.size);
  // a preview the browser can show: the chosen format, else JPEG for JPEG photos, else PNG
  body.append("format", opts.format || (/jpe?g$/i.test(file.type || file.name) ? "jpeg" : "png"));
  $("#hint-state").textContent = "colorizing…";
  let res;
  try {
    res = await fetch("/api/colorize", { method: "POST", body, signal: ctrl.signal });
  } catch (err) {
    if (err.name !== "AbortError") $("#hint-state").textContent = "The server could not be reached.";
    return;
  }
  if (ctrl !== hint.ctrl || hint.card !== card) return;  // a newer render is on its way
  if (res.status === 503 || res.status === 429) {
    hint.timer = setTimeout(render, Number(res.headers.get("Retry-After") || 1) * 1000);
    $("#hint-state").textContent = "server busy, retrying…";
    return;
  }
  if (!res.ok) {
    let message = `Failed (${res.status}).`;
    try { message = (await res.json()).error || message; } catch (_) { /* not JSON */ }
    $("#hint-state").textContent = message;
    return;
  }
  const blob = await res.blob();
  if (ctrl !== hint.ctrl) return;
  const url = URL.createObjectURL(blob);
  const name = (/filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "") || [])[1] || `retint-${file.name}`;
  $("#hint-img").src = url;
  $(".after", card).src = url;  // the card and its download follow the hinted result
  const link = $(".download", card);
  link.href = url;
  link.download = name;
  card.entry.blob = blob;
  card.entry.name = name;
  hint.renders++;
  const n = Number(res.headers.get("X-Retint-Hints") || 0);
  $("#hint-state").textContent = `${n} hint${n === 1 ? "" : "s"} · model ${res.headers.get("X-Retint-Model")} · ${Number(res.headers.get("X-Retint-Seconds") || 0).toFixed(1)} s`;
  $("#hint-state").dataset.renders = hint.renders;
}

function at(e) {
  const r = $("#hint-img").getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return { x: clamp((e.clientX - r.left) / r.width), y: clamp((e.clientY - r.top) / r.height) };
}

function sampleColour(pos) {
  const img = $("#hint-img"), canvas = document.createElement("canvas");
  canvas.width = canvas.height = 1;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const sx = Math.min(img.naturalWidth - 1, Math.floor(pos.x * img.naturalWidth));
  const sy = Math.min(img.naturalHeight - 1, Math.floor(pos.y * img.naturalHeight));
  ctx.drawImage(img, sx, sy, 1, 1, 0, 0, 1, 1);
  const [r, g, b] = ctx.getImageData(0, 0, 1, 1).data;
  return "#" + [r, g, b].map((v) => v.toString(16).padStart(2, "0")).join("");
}

function setSampling(on) {
  hint.sampling = on;
  $("#hint-sample").setAttribute("aria-pressed", String(on));
  $("#hint-stage").classList.toggle("sampling", on);
}

function onStageDown(e) {
  if (e.button !== 0 || !hint.card) return;
  const dot = e.target.closest(".hint-point");
  const pos = at(e);
  if (hint.sampling) {
    e.preventDefault();
    const colour = sampleColour(pos);
    $("#hint-colour").value = colour;
    setSampling(false);
    if (hint.selected >= 0) change(() => { hint.points[hint.selected].colour = colour; });
    return;
  }
  if (dot) {
    const i = Number(dot.dataset.index);
    select(i);
    hint.drag = { i, id: e.pointerId, moved: false, key: `drag${Date.now()}` };
    $("#hint-stage").setPointerCapture(e.pointerId);
    e.preventDefault();
    return;
  }
  e.preventDefault();
  const point = { ...pos, colour: $("#hint-colour").value, radius: Number($("#hint-radius").value) };
  change(() => { hint.points.push(point); hint.selected = hint.points.length - 1; });
}

function onStageMove(e) {
  const d = hint.drag;
  if (!d || d.id !== e.pointerId) return;
  const pos = at(e);
  change(() => { Object.assign(hint.points[d.i], pos); }, d.key);
  d.moved = true;
}

function onStageUp(e) {
  if (hint.drag && hint.drag.id === e.pointerId) {
    hint.drag = null;
    hint.lastKey = null;
    drawPoints();
  }
}

function deleteSelected() {
  if (hint.selected < 0) return;
  const i = hint.selected;
  change(() => { hint.points.splice(i, 1); hint.selected = -1; });
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

function saveHints() {
  const stem = hint.card.job.file.name.replace(/\.[^.]*$/, "");
  download(new Blob([hintsJson() + "\n"], { type: "application/json" }), `${stem}.hints.json`);
}

async function loadHints(file) {
  let points;
  try {
    points = JSON.parse(await file.text());
    if (!Array.isArray(points)) throw new Error("not a list");
    points = points.map((p) => ({ x: Number(p.x), y: Number(p.y), colour: String(p.colour || p.color), radius: p.radius === undefined ? 0.008 : Number(p.radius) }));
  } catch (err) {
    $("#hint-state").textContent = `${file.name}: not a hints file (a JSON list of {x, y, colour}).`;
    return;
  }
  change(() => { hint.points = points; hint.selected = -1; });
}

function initHints() {
  const stage = $("#hint-stage");
  stage.addEventListener("pointerdown", onStageDown);
  stage.addEventListener("pointermove", onStageMove);
  stage.addEventListener("pointerup", onStageUp);
  stage.addEventListener("pointercancel", onStageUp);
  stage.addEventListener("keydown", (e) => {
    const dot = e.target.closest(".hint-point");
    if (!dot) return;
    const i = Number(dot.dataset.index), step = e.shiftKey ? 0.05 : 0.01;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (e.key === "Delete" || e.key === "Backspace") { select(i); deleteSelected(); e.preventDefault(); }
    else if (moves[e.key]) {
      const [dx, dy] = moves[e.key], p = hint.points[i];
      hint.selected = i;
      change(() => { p.x = Math.min(1, Math.max(0, p.x + dx)); p.y = Math.min(1, Math.max(0, p.y + dy)); }, `key${i}`);
      e.preventDefault();
    }
  });
  $("#hint-colour").addEventListener("input", (e) => {
    if (hint.selected >= 0) change(() => { hint.points[hint.selected].colour = e.target.value; }, `colour${hint.selected}`);
  });
  $("#hint-radius").addEventListener("input", (e) => {
    if (hint.selected >= 0) change(() => { hint.points[hint.selected].radius = Number(e.target.value); }, `radius${hint.selected}`);
  });
  $("#hint-sample").addEventListener("click", () => setSampling(!hint.sampling));
  $("#hint-delete").addEventListener("click", deleteSelected);
  $("#hint-undo").addEventListener("click", undo);
  $("#hint-clear").addEventListener("click", () => change(() => { hint.points = []; hint.selected = -1; }));
  $("#hint-save").addEventListener("click", saveHints);
  $("#hint-load-pick").addEventListener("click", () => $("#hint-load").click());
  $("#hint-load").addEventListener("change", (e) => { if (e.target.files[0]) loadHints(e.target.files[0]); e.target.value = ""; });
  $("#hint-close").addEventListener("click", closeHints);
  document.addEventListener("keydown", (e) => {
    if (!hint.card || e.target.matches("input, textarea, select")) return;
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
    else if ((e.key === "Delete" || e.key === "Backspace") && hint.selected >= 0
             && !e.target.closest(".hint-point")) { e.preventDefault(); deleteSelected(); }  // a point's own keys: above
  });
}

// ---- a minimal zip writer (stored, no compression: photos are compressed already)
const CRC = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
async function zip(files) {
  const enc = new TextEncoder(), parts = [], central = [];
  let offset = 0;
  const used = new Set();
  for (const { name, blob } of files) {
    let unique = name, n = 2;
    while (used.has(unique)) unique = name.replace(/(\.[^.]*)?$/, `-${n++}$1`);
    used.add(unique);
    const data = new Uint8Array(await blob.arrayBuffer()), fname = enc.encode(unique), crc = crc32(data);
    const header = (sig, extra) => {
      const h = new DataView(new ArrayBuffer(extra ? 46 : 30));
      h.setUint32(0, sig, true);
      let p = 4;
      if (extra) { h.setUint16(p, 20, true); p += 2; }
      h.setUint16(p, 20, true); h.setUint16(p + 2, 0x0800, true);  // version, UTF-8 names
      h.setUint32(p + 10, crc, true); h.setUint32(p + 14, data.length, true); h.setUint32(p + 18, data.length, true);
      h.setUint16(p + 22, fname.length, true);
      if (extra) h.setUint32(42, offset, true);
      return new Uint8Array(h.buffer);
    };
    const local = header(0x04034b50, false);
    parts.push(local, fname, data);
    central.push(header(0x02014b50, true), fname);
    offset += local.length + fname.length + data.length;
  }
  const size = central.reduce((s, a) => s + a.length, 0), end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, files.length, true); end.setUint16(10, files.length, true);
  end.setUint32(12, size, true); end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

async function downloadZip() {
  download(await zip(state.results), "retint-photos.zip");
}

document.addEventListener("DOMContentLoaded", () => {
  init();
  initHints();
  $("#pick").addEventListener("click", () => $("#file").click());
  $("#file").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
  $("#zip").addEventListener("click", downloadZip);
  let depth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; document.body.classList.remove("dragging"); } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault(); depth = 0; document.body.classList.remove("dragging");
    addFiles(e.dataTransfer.files);
  });
});
