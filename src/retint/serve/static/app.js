// retint page: pick or drop photos, colorize them through /api/colorize, compare, download.
// No libraries and no network beyond this server: the zip writer below is ~30 lines.
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const state = { limits: null, results: [], queue: [], running: 0, maxParallel: 2 };
const IMAGE_EXT = /\.(jpe?g|png|webp|tiff?|bmp|gif)$/i;

function say(text) { $("#status").textContent = text; }

async function init() {
  try {
    const info = await (await fetch("/api/models")).json();
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
  state.results.push({ name, blob });
  $("#zip").disabled = false;
  say(`${state.results.length} photo(s) colorized.`);
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
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await zip(state.results));
  a.download = "retint-photos.zip";
  document.body.append(a);
  a.click();
  a.remove();
}

document.addEventListener("DOMContentLoaded", () => {
  init();
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
