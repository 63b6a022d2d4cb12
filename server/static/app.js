// Strata demo page: progressive image decoding, a rate–distortion plot, and sound at a few layer counts.
// Plain JavaScript, no dependencies; it talks to the service's public /v1 API only.
"use strict";

const $ = (sel) => document.querySelector(sel);
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];
const PACE_BYTES = 2048; // slow-network mode: this many bytes …
const PACE_MS = 150; // … every this many milliseconds
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  imageModel: null, // {name, layers}
  audioModel: null,
  run: 0, // increments per image run: a newer run makes older ones stop updating the page
  layers: [], // per decoded layer count k (1-based index): {k, bytes, bpp, psnr, arrivedMs, shownMs, bitmap}
  original: null, // {bitmap, pixels (Uint8ClampedArray RGBA), width, height}
};

// ------------------------------------------------------------------ API helpers
function apiHeaders(extra) {
  const headers = new Headers(extra || {});
  const key = $("#api-key").value.trim();
  if (key) headers.set("X-API-Key", key);
  return headers;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function apiError(response) {
  let code = "http_" + response.status;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.message) ({ code, message } = { code: body.code || code, message: body.message });
  } catch (_) {
    // not JSON (e.g. a proxy's page): keep the status line
  }
  if (response.status === 401) $("#key-section").hidden = false;
  return new ApiError(response.status, code, message);
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = apiHeaders(opts.headers);
  const response = await fetch(path, opts);
  if (!response.ok) throw await apiError(response);
  return response;
}

function describeError(err) {
  if (err instanceof ApiError) return `${err.message} (HTTP ${err.status}, ${err.code})`;
  return String(err && err.message ? err.message : err);
}

function showError(which, err) {
  const box = $(`#${which}-error`);
  box.textContent = "Error: " + describeError(err);
  box.hidden = false;
  setStatus(which, "Stopped: see the error below.");
  document.body.dataset[which + "State"] = "error";
  if (which === "image" && !state.layers.length) $("#image-results").hidden = true; // nothing to show
}

function clearError(which) {
  const box = $(`#${which}-error`);
  box.hidden = true;
  box.textContent = "";
}

function setStatus(which, text) {
  $(`#${which}-status`).textContent = text;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const fmtInt = (n) => n.toLocaleString("en-US");
const fmtSeconds = (ms) => (ms / 1000).toFixed(2) + " s";

// ------------------------------------------------------------------ the stream header (docs/bitstream.md)
// Returns null while the header has not fully arrived; throws on a stream that is not Strata.
function parseHeader(bytes, length) {
  if (length < 7) return null;
  const magic = String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]);
  if (magic !== "STRA") throw new Error(`not a Strata stream (its first bytes are not "STRA")`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, length);
  const version = view.getUint8(4);
  const headerLength = view.getUint16(5, true);
  const end = 7 + headerLength;
  if (length < end) return null;
  let at = 7;
  const modality = view.getUint8(at);
  const nameLength = view.getUint8(at + 1);
  at += 2;
  const model = String.fromCharCode(...bytes.subarray(at, at + nameLength));
  at += nameLength + 8; // name, weights hash prefix
  const size = [view.getUint32(at, true), view.getUint32(at + 4, true)];
  at += 8 + 4 + 4; // size, grid, padding
  const layers = view.getUint8(at);
  at += 1;
  const chunks = [];
  for (let i = 0; i < layers; i++) chunks.push(view.getUint32(at + 8 * i, true));
  // Where each layer's chunk ends: a prefix up to ends[k-1] holds k complete layers.
  const ends = [];
  let offset = end;
  for (const n of chunks) {
    offset += n;
    ends.push(offset);
  }
  return { version, headerBytes: end, modality, model, size, layers, chunks, ends };
}

// Bytes of a stream holding only the first k layers (strata truncate): its header lists k chunks, not all.
function streamBytesFor(header, k) {
  return header.ends[k - 1] - 8 * (header.layers - k);
}

// ------------------------------------------------------------------ pixels
function canvasFor(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

async function decodeImage(blob) {
  return createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
}

function pixelsOf(bitmap) {
  const canvas = canvasFor(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  return ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
}

// PSNR over the R, G and B values of every pixel (alpha ignored), peak 255; as strata.eval.metrics.psnr.
function psnr(a, b) {
  if (a.length !== b.length) return NaN;
  let sum = 0;
  for (let i = 0; i < a.length; i += 4) {
    const dr = a[i] - b[i];
    const dg = a[i + 1] - b[i + 1];
    const db = a[i + 2] - b[i + 2];
    sum += dr * dr + dg * dg + db * db;
  }
  const mse = sum / ((a.length / 4) * 3);
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}

// ------------------------------------------------------------------ image: compress, receive, decode
async function runImage(file) {
  const run = ++state.run;
  const alive = () => run === state.run;
  clearError("image");
  document.body.dataset.imageState = "loading";
  state.layers = [];
  for (const side of ["left", "right"]) $(`#${side}-caption`).textContent = "";
  state.original = null;
  $("#image-results").hidden = true;
  $("#layer-table tbody").replaceChildren();
  $("#rd-table tbody").replaceChildren();
  $("#rd-plot").textContent = "The plot appears once every layer is shown (JPEG and WebP are encoded then).";
  delete document.body.dataset.rdState;

  const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
  const isStream = String.fromCharCode(...head) === "STRA";
  const t0 = performance.now();
  let response;
  if (isStream) {
    setStatus("image", `Reading the stream ${file.name}…`);
    response = new Response(file); // a local stream: the same reader, no compression
  } else {
    const layers = $("#layers").value;
    const type = IMAGE_TYPES.includes(file.type) ? file.type : "application/octet-stream";
    setStatus("image", `Compressing ${file.name} (${fmtInt(file.size)} bytes) with ${layers} layers…`);
    response = await api(`/v1/images:compress?layers=${encodeURIComponent(layers)}`, {
      method: "POST", body: file, headers: { "Content-Type": type },
    });
    // The server accepted the file, so the browser should be able to show it too: decode the original.
    try {
      const bitmap = await decodeImage(file);
      state.original = { bitmap, pixels: pixelsOf(bitmap), width: bitmap.width, height: bitmap.height };
    } catch (err) {
      state.original = null; // e.g. a format this browser does not decode: PSNR is then not shown
    }
  }
  if (!alive()) return;
  const total = Number(response.headers.get("X-Strata-Bytes")) || file.size || 0;
  // The clock of the progressive view starts when the stream starts to arrive (after the compression).
  state.compressMs = isStream ? null : performance.now() - t0;
  await receive(response.body.getReader(), total, performance.now(), alive);
}

async function receive(reader, total, t0, alive) {
  let buffer = new Uint8Array(Math.max(total, 1024));
  let length = 0;
  let header = null;
  let next = 1; // the next layer count to decode
  let decodes = Promise.resolve();
  let failure = null; // the first failed decode: stops the reading
  const throttled = () => $("#throttle").checked;
  $("#image-results").hidden = false;

  const append = (piece) => {
    if (length + piece.length > buffer.length) {
      const grown = new Uint8Array(Math.max(buffer.length * 2, length + piece.length));
      grown.set(buffer.subarray(0, length));
      buffer = grown;
    }
    buffer.set(piece, length);
    length += piece.length;
  };

  const progress = () => {
    const expected = header ? header.ends[header.layers - 1] : total;
    $("#arrival-bar").style.width = expected ? `${Math.min(100, (100 * length) / expected)}%` : "0";
    const what = header
      ? `${header.layers} layers, header ${header.headerBytes} bytes, model ${header.model}`
      : "waiting for the header";
    $("#arrival-text").textContent = `${fmtInt(length)} of ${fmtInt(expected)} bytes received (${what})` +
      (throttled() ? " · slow network" : "");
  };

  for (;;) {
    const { value, done } = await reader.read();
    if (!alive()) return reader.cancel();
    if (failure) {
      reader.cancel();
      throw failure;
    }
    if (done) break;
    const step = throttled() ? PACE_BYTES : value.length;
    for (let at = 0; at < value.length; at += step) {
      if (throttled() && at + length > 0) await sleep(PACE_MS);
      if (!alive()) return reader.cancel();
      append(value.subarray(at, at + step));
      if (!header) {
        header = parseHeader(buffer, length);
        if (header) onHeader(header);
      }
      while (header && next <= header.layers && length >= header.ends[next - 1]) {
        const k = next++;
        const arrivedMs = performance.now() - t0;
        const prefix = buffer.slice(0, header.ends[k - 1]); // exactly k complete chunks
        setStatus("image", `Layer ${k} of ${header.layers} arrived; decoding it…`);
        // Up to two decodes in flight (the server decodes them in parallel); pictures appear in layer order.
        const decoded = slots(() => (failure || !alive() ? null : requestDecode(prefix)));
        decoded.catch(() => {}); // reported through the chain below
        decodes = decodes.then(async () => {
          const result = await decoded;
          if (result && !failure && alive()) showLayer(header, k, prefix, result, arrivedMs, t0, alive);
        }).catch((err) => { failure = failure || err; });
      }
      progress();
    }
  }
  await decodes;
  if (failure) throw failure;
  if (!alive()) return;
  if (!header || next === 1) {
    // Not one complete layer: let the service say what is wrong with these bytes (bad_header, truncated_stream …).
    await api("/v1/images:decompress?partial=true&format=png", {
      method: "POST", body: buffer.slice(0, length), headers: { "Content-Type": "application/octet-stream" },
    });
    throw new Error(`the stream ended after ${length} bytes, before its first layer was complete`);
  }
  if (next <= header.layers) throw new Error(`the stream ended after ${length} bytes: only ${next - 1} of ` +
    `${header.layers} layers are complete`);
  const last = state.layers[header.layers];
  setStatus("image", `Done: ${header.layers} layers, ${fmtInt(length)} bytes, ${last.bpp} bpp` +
    (Number.isFinite(last.psnr) ? `, ${last.psnr.toFixed(2)} dB` : "") +
    (state.compressMs === null ? "" : `; compressed in ${fmtSeconds(state.compressMs)}`) +
    `, received and decoded in ${fmtSeconds(performance.now() - t0)}.`);
  document.body.dataset.imageState = "done";
  if (state.original) await drawRd(header, alive);
}

function onHeader(header) {
  if (header.modality !== 0) throw new Error("this is an audio stream: open it in the Sound section's API instead");
  const [h, w] = header.size;
  if (state.original && (state.original.height !== h || state.original.width !== w)) state.original = null;
  for (const id of ["#left-select", "#right-select"]) {
    const select = $(id);
    select.replaceChildren();
    if (state.original) select.append(new Option("original", "original"));
    for (let k = 1; k <= header.layers; k++) select.append(new Option(`${k} layer${k > 1 ? "s" : ""}`, String(k)));
  }
  delete $("#left-select").dataset.touched;
  $("#left-select").value = "1";
  $("#right-select").value = state.original ? "original" : String(header.layers);
  const slider = $("#layer-slider");
  slider.max = String(header.layers);
  slider.value = "1";
  $("#slider-value").textContent = "1";
  for (const side of ["left", "right"]) {
    const canvas = $(`#${side}-canvas`);
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").clearRect(0, 0, w, h);
  }
  showCompare();
}

// A limiter: at most `count` of the functions given to it run at once.
function limiter(count) {
  let running = 0;
  const waiting = [];
  const next = () => {
    if (running >= count || !waiting.length) return;
    running++;
    const { fn, resolve, reject } = waiting.shift();
    Promise.resolve().then(fn).then(resolve, reject).finally(() => {
      running--;
      next();
    });
  };
  return (fn) => new Promise((resolve, reject) => {
    waiting.push({ fn, resolve, reject });
    next();
  });
}
const slots = limiter(2);

// images:decompress?partial=true on a prefix of the stream; the decoded picture and its layer count.
async function requestDecode(prefix) {
  const response = await api("/v1/images:decompress?partial=true&format=png", {
    method: "POST", body: prefix, headers: { "Content-Type": "application/octet-stream" },
  });
  const decodedLayers = Number(response.headers.get("X-Strata-Layers"));
  return { decodedLayers, bitmap: await decodeImage(await response.blob()) };
}

function showLayer(header, k, prefix, { decodedLayers, bitmap }, arrivedMs, t0, alive) {
  if (!alive()) return;
  const [h, w] = header.size;
  const bytes = streamBytesFor(header, k);
  const entry = {
    k, received: prefix.length, bytes, bpp: ((8 * bytes) / (h * w)).toFixed(4),
    psnr: state.original ? psnr(state.original.pixels, pixelsOf(bitmap)) : NaN,
    arrivedMs, shownMs: performance.now() - t0, bitmap, decodedLayers,
  };
  state.layers[k] = entry;
  addRow(entry, header.layers);
  if (k < header.layers) setStatus("image", `Showing ${k} of ${header.layers} layers; the next one is on its way…`);
  // Follow the arrival: the left picture shows the newest layer until the reader picks another.
  if (!$("#left-select").dataset.touched) {
    $("#left-select").value = String(k);
    $("#layer-slider").value = String(k);
    $("#slider-value").textContent = String(k);
  }
  showCompare();
}

function addRow(entry, layers) {
  const row = document.createElement("tr");
  row.dataset.layers = String(entry.k);
  row.dataset.arrivedMs = entry.arrivedMs.toFixed(1);
  row.dataset.shownMs = entry.shownMs.toFixed(1);
  const cells = [
    ["layers", `${entry.k} of ${layers}`],
    ["bytes", fmtInt(entry.received)],
    ["bpp", entry.bpp],
    ["psnr", Number.isFinite(entry.psnr) ? entry.psnr.toFixed(2) : "—"],
    ["time", `arrived ${fmtSeconds(entry.arrivedMs)}, shown ${fmtSeconds(entry.shownMs)}`],
  ];
  for (const [name, text] of cells) {
    const cell = document.createElement(name === "layers" ? "th" : "td");
    if (name === "layers") cell.scope = "row";
    cell.className = name;
    cell.textContent = text;
    row.append(cell);
  }
  $("#layer-table tbody").append(row);
}

function showCompare() {
  for (const side of ["left", "right"]) {
    const choice = $(`#${side}-select`).value;
    const canvas = $(`#${side}-canvas`);
    const ctx = canvas.getContext("2d");
    const caption = $(`#${side}-caption`);
    if (choice === "original" && state.original) {
      ctx.drawImage(state.original.bitmap, 0, 0);
      caption.textContent = `original, ${state.original.width}×${state.original.height}`;
      continue;
    }
    const entry = state.layers[Number(choice)];
    if (entry) {
      ctx.drawImage(entry.bitmap, 0, 0);
      caption.textContent = `${entry.k} layer${entry.k > 1 ? "s" : ""}: ${entry.bpp} bpp` +
        (Number.isFinite(entry.psnr) ? `, ${entry.psnr.toFixed(2)} dB` : "");
    } else {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      caption.textContent = `${choice} layers: not arrived yet`;
    }
  }
}

// ------------------------------------------------------------------ rate–distortion
async function encodeWith(canvas, type, quality) {
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, type, quality));
  if (!blob || blob.type !== type) return null; // this browser cannot encode the type
  const bitmap = await decodeImage(blob);
  return { bytes: blob.size, pixels: pixelsOf(bitmap) };
}

async function drawRd(header, alive) {
  const { width, height, pixels, bitmap } = state.original;
  const pixelsCount = width * height;
  const strata = [];
  for (let k = 1; k <= header.layers; k++) {
    const e = state.layers[k];
    strata.push({ bpp: Number(e.bpp), psnr: e.psnr, label: `${k} layer${k > 1 ? "s" : ""}` });
  }
  const maxBpp = Math.max(...strata.map((p) => p.bpp));
  const source = canvasFor(width, height);
  source.getContext("2d").drawImage(bitmap, 0, 0);
  setStatus("image", $("#image-status").textContent + " Encoding JPEG and WebP for the comparison…");
  const series = [{ name: "Strata", cls: "s-strata", points: strata }];
  for (const [name, type, cls] of [["JPEG", "image/jpeg", "s-jpeg"], ["WebP", "image/webp", "s-webp"]]) {
    const points = [];
    for (const q of [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]) {
      const out = await encodeWith(source, type, q);
      if (!alive()) return;
      if (!out) break;
      const bpp = (8 * out.bytes) / pixelsCount;
      points.push({ bpp, psnr: psnr(pixels, out.pixels), label: `quality ${Math.round(q * 100)}` });
      if (bpp > 1.5 * maxBpp) break; // far past the Strata range: enough
    }
    if (points.length) series.push({ name, cls, points });
  }
  plot($("#rd-plot"), series);
  const body = $("#rd-table tbody");
  body.replaceChildren();
  for (const s of series) {
    for (const p of s.points) {
      const row = document.createElement("tr");
      for (const text of [s.name, p.label, p.bpp.toFixed(4), Number.isFinite(p.psnr) ? p.psnr.toFixed(2) : "∞"]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      body.append(row);
    }
  }
  setStatus("image", $("#image-status").textContent.replace(" Encoding JPEG and WebP for the comparison…", "") +
    " The rate–distortion plot is below.");
  document.body.dataset.rdState = "done";
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(Number(v.toFixed(6)));
  return ticks;
}

function plot(container, series) {
  const W = 640, H = 360, m = { l: 56, r: 16, t: 16, b: 48 };
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.psnr));
  const strataMax = Math.max(...series[0].points.map((p) => p.bpp));
  const xMax = Math.max(strataMax * 1.6, 0.05);
  const shown = all.filter((p) => p.bpp <= xMax);
  let yLo = Math.min(...shown.map((p) => p.psnr));
  let yHi = Math.max(...shown.map((p) => p.psnr));
  yLo = Math.floor(yLo - 1);
  yHi = Math.ceil(yHi + 1);
  const x = (v) => m.l + ((W - m.l - m.r) * v) / xMax;
  const y = (v) => H - m.b - ((H - m.t - m.b) * (v - yLo)) / (yHi - yLo);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "rd", "aria-hidden": "true" });
  const clipId = "rd-clip";
  const defs = svg("defs");
  const clip = svg("clipPath", { id: clipId });
  clip.append(svg("rect", { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b }));
  defs.append(clip);
  root.append(defs);
  for (const t of niceTicks(0, xMax, 6)) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: m.t, y2: H - m.b, class: "grid" }));
    root.append(svg("text", { x: x(t), y: H - m.b + 16, class: "tick", "text-anchor": "middle" }, String(t)));
  }
  for (const t of niceTicks(yLo, yHi, 6)) {
    root.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(t), y2: y(t), class: "grid" }));
    root.append(svg("text", { x: m.l - 6, y: y(t) + 4, class: "tick", "text-anchor": "end" }, String(t)));
  }
  root.append(svg("text", { x: (m.l + W - m.r) / 2, y: H - 8, class: "axis", "text-anchor": "middle" },
    "bits per pixel"));
  root.append(svg("text", { x: 14, y: (m.t + H - m.b) / 2, class: "axis", "text-anchor": "middle",
    transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})` }, "PSNR (dB)"));
  const plotArea = svg("g", { "clip-path": `url(#${clipId})` });
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p.psnr)).sort((a, b) => a.bpp - b.bpp);
    plotArea.append(svg("polyline", { points: pts.map((p) => `${x(p.bpp)},${y(p.psnr)}`).join(" "),
      class: `line ${s.cls}` }));
    for (const p of pts) {
      const dot = svg("circle", { cx: x(p.bpp), cy: y(p.psnr), r: 4, class: `dot ${s.cls}` });
      dot.append(svg("title", {}, `${s.name}, ${p.label}: ${p.bpp.toFixed(3)} bpp, ${p.psnr.toFixed(2)} dB`));
      plotArea.append(dot);
    }
    const lx = W - m.r - 110, ly = H - m.b - 16 - 20 * (series.length - 1 - i);
    root.append(svg("line", { x1: lx, x2: lx + 22, y1: ly, y2: ly, class: `line ${s.cls}` }));
    root.append(svg("circle", { cx: lx + 11, cy: ly, r: 4, class: `dot ${s.cls}` }));
    root.append(svg("text", { x: lx + 30, y: ly + 4, class: "legend" }, s.name));
  });
  root.append(plotArea);
  root.append(svg("rect", { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, class: "frame" }));
  container.replaceChildren(root);
}

// ------------------------------------------------------------------ sound
function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  if (String.fromCharCode(...bytes.subarray(1, 6)) !== "NUMPY") throw new Error("the mel is not a .npy file");
  const view = new DataView(buffer);
  const major = bytes[6];
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = (major === 1 ? 10 : 12) + headerLength;
  const text = new TextDecoder("latin1").decode(bytes.subarray(major === 1 ? 10 : 12, start));
  const descr = /'descr':\s*'([^']+)'/.exec(text)[1];
  const fortran = /'fortran_order':\s*True/.test(text);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(text)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (descr !== "<f4") throw new Error(`unexpected .npy dtype ${descr}`);
  const data = new Float32Array(buffer.slice(start));
  return { shape, fortran, data };
}

const COLORS = [[13, 8, 135], [84, 2, 163], [139, 10, 165], [185, 50, 137], [219, 92, 104], [244, 136, 73],
  [254, 188, 43], [240, 249, 33]]; // plasma, 8 stops

function drawMel(canvas, mel, lo, hi) {
  const [bands, frames] = mel.shape;
  canvas.width = frames;
  canvas.height = bands;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(frames, bands);
  for (let b = 0; b < bands; b++) {
    for (let f = 0; f < frames; f++) {
      const v = mel.fortran ? mel.data[f * bands + b] : mel.data[b * frames + f];
      const t = Math.min(1, Math.max(0, (v - lo) / (hi - lo || 1))) * (COLORS.length - 1);
      const i = Math.min(COLORS.length - 2, Math.floor(t));
      const w = t - i;
      const o = 4 * ((bands - 1 - b) * frames + f); // low frequencies at the bottom
      for (let c = 0; c < 3; c++) image.data[o + c] = COLORS[i][c] * (1 - w) + COLORS[i + 1][c] * w;
      image.data[o + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
}

async function runSound(file) {
  clearError("sound");
  document.body.dataset.soundState = "loading";
  $("#sound-results").hidden = true;
  $("#sound-players").replaceChildren();
  setStatus("sound", `Compressing ${file.name} (${fmtInt(file.size)} bytes)…`);
  const response = await api("/v1/audio:compress", {
    method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" },
  });
  const stream = new Uint8Array(await response.arrayBuffer());
  const header = parseHeader(stream, stream.length);
  const seconds = Number(response.headers.get("X-Strata-Samples")) / Number(response.headers.get("X-Strata-Sample-Rate"));
  const wanted = new Set();
  for (const part of $("#sound-layers").value.split(",")) {
    const s = part.trim().toLowerCase();
    if (!s) continue;
    const k = s === "all" ? header.layers : Number(s);
    if (!Number.isInteger(k) || k < 1 || k > header.layers) {
      throw new Error(`layer counts must be whole numbers from 1 to ${header.layers} or "all", got "${part.trim()}"`);
    }
    wanted.add(k);
  }
  const counts = [...wanted].sort((a, b) => a - b);
  if (!counts.length) counts.push(header.layers);
  const original = $("#sound-original");
  if (original.src) URL.revokeObjectURL(original.src);
  original.src = URL.createObjectURL(file);
  $("#sound-results").hidden = false;
  const originalMel = await api("/v1/audio:mel", {
    method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" },
  }).then((r) => r.arrayBuffer()).then(parseNpy);
  const mels = [{ canvas: $("#sound-original-mel"), mel: originalMel }];
  for (const k of counts) {
    setStatus("sound", `Decoding ${k} of ${header.layers} layers…`);
    const kbps = (streamBytesFor(header, k) * 8) / seconds / 1000;
    const [wav, mel] = await Promise.all([
      api(`/v1/audio:decompress?layers=${k}`, { method: "POST", body: stream,
        headers: { "Content-Type": "application/octet-stream" } }).then((r) => r.blob()),
      api(`/v1/audio:decompress?layers=${k}&output=mel`, { method: "POST", body: stream,
        headers: { "Content-Type": "application/octet-stream" } }).then((r) => r.arrayBuffer()).then(parseNpy),
    ]);
    const figure = document.createElement("figure");
    figure.className = "player";
    figure.dataset.layers = String(k);
    const caption = document.createElement("figcaption");
    caption.textContent = `${k} of ${header.layers} layers · ${kbps.toFixed(2)} kbps`;
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.src = URL.createObjectURL(wav);
    audio.setAttribute("aria-label", `decoded with ${k} layers`);
    const canvas = document.createElement("canvas");
    canvas.className = "mel";
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `log-mel spectrogram decoded with ${k} layers`);
    figure.append(caption, audio, canvas);
    $("#sound-players").append(figure);
    mels.push({ canvas, mel });
  }
  // One colour scale for every picture: that of the original.
  const ref = originalMel.data;
  let lo = Infinity, hi = -Infinity;
  for (const v of ref) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  for (const { canvas, mel } of mels) drawMel(canvas, mel, Math.max(lo, hi - 12), hi);
  setStatus("sound", `Done: ${seconds.toFixed(2)} s of sound, ${fmtInt(stream.length)} bytes with all ` +
    `${header.layers} layers (${(stream.length * 8 / seconds / 1000).toFixed(2)} kbps).`);
  document.body.dataset.soundState = "done";
}

// ------------------------------------------------------------------ wiring
async function loadModels() {
  try {
    const response = await api("/v1/models");
    const body = await response.json();
    const list = Array.isArray(body) ? body : body.models || [];
    state.imageModel = list.find((m) => m.modality === "image" && m.default) || list.find((m) => m.modality === "image");
    state.audioModel = list.find((m) => m.modality === "audio" && m.default) || list.find((m) => m.modality === "audio");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showError("image", err);
    else setStatus("image", "Enter the API key above, then choose an image.");
  }
  const select = $("#layers");
  const layers = state.imageModel ? state.imageModel.layers : 8;
  const current = select.value;
  select.replaceChildren();
  for (let k = 1; k <= layers; k++) select.append(new Option(String(k), String(k)));
  select.value = current && Number(current) <= layers ? current : String(layers);
  if (state.imageModel) {
    $("#layers").title = `model ${state.imageModel.name}`;
  }
  document.body.dataset.models = state.imageModel ? "loaded" : "missing";
  if (!state.audioModel && state.imageModel) {
    setStatus("sound", "This server has no audio model loaded: the sound section cannot work here.");
  }
}

function start(which, fn, file) {
  if (!file) {
    setStatus(which, `Choose a file first.`);
    return;
  }
  fn(file).catch((err) => showError(which, err));
}

function setup() {
  if (document.body.dataset.keyed === "true") $("#key-section").hidden = false;
  $("#api-key").addEventListener("change", loadModels);
  loadModels();

  const imageInput = $("#image-file");
  const runImageNow = () => start("image", runImage, imageInput.files[0]);
  imageInput.addEventListener("change", runImageNow);
  $("#image-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runImageNow();
  });
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) {
      imageInput.files = event.dataTransfer.files;
      runImageNow();
    }
  });

  const slider = $("#layer-slider");
  slider.addEventListener("input", () => {
    $("#slider-value").textContent = slider.value;
    $("#left-select").value = slider.value;
    $("#left-select").dataset.touched = "1";
    showCompare();
  });
  $("#left-select").addEventListener("change", () => {
    const v = $("#left-select").value;
    $("#left-select").dataset.touched = "1";
    if (v !== "original") {
      slider.value = v;
      $("#slider-value").textContent = v;
    }
    showCompare();
  });
  $("#right-select").addEventListener("change", showCompare);

  const soundInput = $("#sound-file");
  const runSoundNow = () => start("sound", runSound, soundInput.files[0]);
  soundInput.addEventListener("change", runSoundNow);
  $("#sound-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSoundNow();
  });
}

setup();
