// The demo page: draw or upload a digit; every served model encodes it (/encode) and decodes its
// 24 bytes (/decode), side by side, each latent shown in its model's own format. Each model has an
// effort selector (its levels from GET /models): the level is sent as ?effort=N and shown by the result.
// One card per model name, the version the name means (what ?model=NAME encodes with); older versions
// are there for stored latents, by id in the API, not for a new digit.
"use strict";

const SIDE = 28; // MNIST's frame
const FIT = 20; // MNIST scaled each digit to fit a 20x20 box inside it
const STROKE = 22; // pen width on the 280x280 pad: about 2 pixels at 28x28, like MNIST's strokes

const pad = document.getElementById("pad");
const padCtx = pad.getContext("2d", { willReadFrequently: true });
const input28 = document.getElementById("input28");
const statusLine = document.getElementById("status");
const strip = document.getElementById("strip");
const latentsBox = document.getElementById("latents");
const upload = document.getElementById("upload");
const inputError = document.getElementById("input-error");

function clearPad() {
  padCtx.fillStyle = "#000";
  padCtx.fillRect(0, 0, pad.width, pad.height);
}

function setStatus(state, text) {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
}

// An error is shown next to the input too (the status line can be below the fold), and the
// results of an earlier digit are cleared, so they are not taken for this one's.
function showError(text) {
  clearResults();
  inputError.textContent = text;
  inputError.hidden = false;
  setStatus("error", text);
}

function hideError() {
  inputError.hidden = true;
  inputError.textContent = "";
}

// --- drawing -------------------------------------------------------------------------------

let drawing = false;

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = padPoint(event);
  padCtx.strokeStyle = "#fff";
  padCtx.fillStyle = "#fff";
  padCtx.lineWidth = STROKE;
  padCtx.lineCap = "round";
  padCtx.lineJoin = "round";
  padCtx.beginPath();
  padCtx.arc(x, y, STROKE / 2, 0, 2 * Math.PI); // a dot for a click without movement
  padCtx.fill();
  padCtx.beginPath();
  padCtx.moveTo(x, y);
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = padPoint(event);
  padCtx.lineTo(x, y);
  padCtx.stroke();
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  encodeDrawing();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

// --- sampling to 28x28, the MNIST way --------------------------------------------------------

function grayOf(imageData) {
  // Canvas pixels over a black background: ITU-R 601 luma, as the server converts RGB.
  const d = imageData.data;
  const gray = new Float64Array(imageData.width * imageData.height);
  for (let i = 0; i < gray.length; i++) {
    gray[i] = (0.299 * d[4 * i] + 0.587 * d[4 * i + 1] + 0.114 * d[4 * i + 2]) * (d[4 * i + 3] / 255);
  }
  return gray;
}

// Crop to the ink, scale (box filter, keeping the aspect ratio) to fit FIT x FIT, then place it
// in a SIDE x SIDE frame so that its centre of mass is the frame's centre. Returns 784 bytes, or
// null when there is no ink.
function toMnist(gray, width, height) {
  let x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (gray[y * width + x] > 8) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x);
        y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return null;
  const w = x1 - x0 + 1, h = y1 - y0 + 1;
  const scale = FIT / Math.max(w, h);
  const tw = Math.max(1, Math.round(w * scale)), th = Math.max(1, Math.round(h * scale));
  // Box filter: each target pixel is the mean of the source pixels whose centres fall in it.
  const small = new Float64Array(tw * th), counts = new Float64Array(tw * th);
  for (let y = y0; y <= y1; y++) {
    const ty = Math.min(th - 1, Math.floor(((y - y0 + 0.5) * th) / h));
    for (let x = x0; x <= x1; x++) {
      const tx = Math.min(tw - 1, Math.floor(((x - x0 + 0.5) * tw) / w));
      small[ty * tw + tx] += gray[y * width + x];
      counts[ty * tw + tx] += 1;
    }
  }
  let mass = 0, mx = 0, my = 0;
  for (let i = 0; i < small.length; i++) {
    small[i] = counts[i] ? small[i] / counts[i] : 0;
    mass += small[i];
    mx += small[i] * (i % tw);
    my += small[i] * Math.floor(i / tw);
  }
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const left = clamp(Math.round((SIDE - 1) / 2 - mx / mass), 0, SIDE - tw);
  const top = clamp(Math.round((SIDE - 1) / 2 - my / mass), 0, SIDE - th);
  const pixels = new Uint8Array(SIDE * SIDE);
  for (let y = 0; y < th; y++) {
    for (let x = 0; x < tw; x++) {
      pixels[(top + y) * SIDE + left + x] = Math.round(clamp(small[y * tw + x], 0, 255));
    }
  }
  return pixels;
}

function showInput(pixels) {
  const ctx = input28.getContext("2d");
  const image = ctx.createImageData(SIDE, SIDE);
  for (let i = 0; i < pixels.length; i++) {
    image.data.set([pixels[i], pixels[i], pixels[i], 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
}

function canvasPng(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// --- talking to the service -------------------------------------------------------------------

let inputPixels = null; // the 784 bytes sent, for the PSNR
let lastPng = null; // the PNG sent, encoded again when an effort is changed
let models = []; // from GET /models, the current version of each name: {name, id, latent_format: {name, ...}, efforts, default_effort}; [{name: ""}] without it
let cards = []; // per model: {figure, details, effort (its <select>, or null), shown (the last request's number)}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.detail}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function hexOf(bytes) {
  const groups = [];
  for (let i = 0; i < bytes.length; i += 4) {
    groups.push(Array.from(bytes.slice(i, i + 4), (b) => b.toString(16).padStart(2, "0")).join(""));
  }
  return groups.join(" ");
}

// How a latent reads in its model's format (the name GET /models reports). A format this page does
// not know (an entropy-coded model's, say) is shown as what it is: coded bytes, in hex.
function latentView(bytes, formatName) {
  if (formatName === "6xf32le" && bytes.length === 24) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const values = Array.from({ length: 6 }, (_, i) => view.getFloat32(4 * i, true));
    return { label: "as 6 float32 (6xf32le)", text: values.map((v) => v.toFixed(4)).join("  ") };
  }
  if (formatName === "24xu8" && bytes.length === 24) {
    return { label: "as 24 uint8 (24xu8)", text: Array.from(bytes).join(" ") };
  }
  return { label: `${formatName || "unknown format"}: coded bytes`, text: hexOf(bytes), coded: true };
}

function duration(us) {
  return us >= 1000 ? `${(us / 1000).toPrecision(3)} ms` : `${Math.round(us)} us`;
}

// One option per level GET /models lists: its number, its test-set PSNR and its cost per digit.
function effortOptions(model) {
  const efforts = Array.isArray(model.efforts) ? model.efforts.filter((e) => e && Number.isInteger(e.level)) : [];
  return efforts.map((e) => {
    const option = document.createElement("option");
    option.value = String(e.level);
    option.textContent = typeof e.psnr_db === "number" ? `${e.level} · ${e.psnr_db.toFixed(2)} dB` : String(e.level);
    const about = [`effort ${e.level}`];
    if (typeof e.psnr_db === "number") about.push(`${e.psnr_db.toFixed(2)} dB mean PSNR on the 10,000 test digits`);
    if (typeof e.us_per_digit === "number") about.push(`${duration(e.us_per_digit)} per digit`);
    if (e.level === model.default_effort) about.push("the default");
    option.title = about.join(", ");
    option.selected = e.level === model.default_effort;
    return option;
  });
}

function psnrDb(a, b) {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += ((a[i] - b[i]) / 255) ** 2;
  return 10 * Math.log10(1 / Math.max(sum / a.length, 1e-10));
}

async function drawPng(blob, canvas) {
  // Onto a canvas, not an <img>: before the first result the slot is black, never a broken image.
  const bitmap = await createImageBitmap(blob);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  return Uint8Array.from(grayOf(ctx.getImageData(0, 0, SIDE, SIDE)), Math.round);
}

// Per model: its reconstruction beside the input (with bytes and PSNR), and its latent below.
function card(model) {
  const format = (model.latent_format && model.latent_format.name) || "";
  const figure = document.createElement("figure");
  figure.className = "model";
  figure.dataset.model = model.name;
  figure.innerHTML = `
    <canvas class="recon" width="${SIDE}" height="${SIDE}"></canvas>
    <figcaption><strong class="name"></strong><br><span class="size">&nbsp;</span> <span class="psnr"></span><br><span class="effort-used"></span><br></figcaption>`;
  const details = document.createElement("section");
  details.className = "latent";
  details.dataset.model = model.name;
  details.dataset.format = format;
  details.innerHTML = `
    <h3 class="name"></h3>
    <dl>
      <dt class="values-label">latent</dt><dd><code class="values">&nbsp;</code></dd>
      <dt class="hex-label">hex</dt><dd><code class="hex">&nbsp;</code></dd>
      <dt>model id</dt><dd><code class="model-id">&nbsp;</code></dd>
    </dl>`;
  for (const name of [figure, details].map((el) => el.querySelector(".name"))) {
    name.textContent = model.name || "default model";
  }
  let effort = null; // a server that lists no levels gets no selector, and no ?effort=
  const options = effortOptions(model);
  if (options.length) {
    // Under the result it changes: the select is the level to ask for, the bold line the level shown.
    effort = document.createElement("select");
    effort.className = "effort";
    effort.title = "encode effort: level · mean PSNR on the 10,000 test digits";
    effort.setAttribute("aria-label", `encode effort of ${model.name}`);
    effort.append(...options);
    figure.querySelector("figcaption").append(effort);
  }
  strip.append(figure);
  latentsBox.append(details);
  const slot = { figure, details, effort, shown: 0 };
  if (effort) effort.addEventListener("change", () => again(model, slot));
  return slot;
}

function withQuery(path, params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== ""));
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

function withModel(path, name) {
  return withQuery(path, { model: name });
}

let requests = 0; // numbers each round trip, so that a slower, older answer never overwrites a newer one

async function roundTrip(png, model, slot) {
  const { figure, details } = slot;
  const number = ++requests;
  slot.shown = number;
  const level = slot.effort ? slot.effort.value : null;
  const form = new FormData();
  form.append("img", png, "digit.png");
  const url = withQuery("/encode", { model: model.name, effort: level });
  const encoded = await fetch(url, { method: "POST", body: form });
  if (!encoded.ok) throw new Error(`/encode (${model.name}) answered ${await errorText(encoded)}`);
  const latent = new Uint8Array(await encoded.arrayBuffer());
  const modelId = encoded.headers.get("X-Model-Id") || "";
  const headers = { "Content-Type": "application/octet-stream" };
  // Decoded by the very weights that encoded it: a name with several versions refuses bare bytes (409).
  if (modelId) headers["X-Model-Id"] = modelId;
  const decoded = await fetch(withModel("/decode", model.name), { method: "POST", body: latent, headers });
  if (!decoded.ok) throw new Error(`/decode (${model.name}) answered ${await errorText(decoded)}`);
  const reconstruction = await decoded.blob();
  if (slot.shown !== number) return latent.length; // the effort was changed meanwhile: the newer answer shows
  const pixels = await drawPng(reconstruction, figure.querySelector(".recon"));
  const view = latentView(latent, details.dataset.format);
  // Coded bytes have no values to show but their hex: one line, labelled as such, not the hex twice.
  details.querySelector(".values-label").textContent = view.label;
  details.querySelector(".values").textContent = view.text;
  details.querySelector(".values-label").hidden = details.querySelector(".values").parentElement.hidden = !!view.coded;
  details.querySelector(".hex-label").textContent = view.coded ? view.label.replace(": coded bytes", " coded bytes, hex") : "hex";
  details.querySelector(".hex").textContent = hexOf(latent);
  details.querySelector(".model-id").textContent = modelId || "?";
  figure.querySelector(".size").textContent = `${latent.length} bytes`;
  figure.querySelector(".psnr").textContent = `${psnrDb(inputPixels, pixels).toFixed(2)} dB`;
  figure.querySelector(".effort-used").textContent = level === null ? "" : `effort ${level}`;
  figure.dataset.effort = level === null ? "" : level;
  return latent.length;
}

async function again(model, slot) {
  // A new level for one model: its round trip again, on the digit already sent.
  if (!lastPng) return;
  const level = slot.effort.value;
  setStatus("busy", `Encoding with ${model.name} at effort ${level}...`);
  try {
    const size = await roundTrip(lastPng, model, slot);
    setStatus("done", `${model.name} at effort ${level}: ${size} bytes out.`);
  } catch (error) {
    showError(error.message);
  }
}

async function run(png) {
  lastPng = png;
  hideError();
  setStatus("busy", "Encoding...");
  try {
    await modelsReady;
    const sizes = await Promise.all(models.map((model, i) => roundTrip(png, model, cards[i])));
    setStatus("done", `${png.size} bytes of PNG in; ${sizes.join(" / ")} bytes out (${models.length} models).`);
  } catch (error) {
    showError(error.message);
  }
}

async function encodeDrawing() {
  const pixels = toMnist(grayOf(padCtx.getImageData(0, 0, pad.width, pad.height)), pad.width, pad.height);
  if (!pixels) {
    setStatus("idle", "Draw a digit to start.");
    return;
  }
  inputPixels = pixels;
  showInput(pixels);
  await run(await canvasPng(input28));
}

async function encodeUpload(file) {
  const bitmap = await createImageBitmap(file);
  if (bitmap.width === SIDE && bitmap.height === SIDE) {
    // Already MNIST-sized: send the file itself, so the bytes shown are the file's latent.
    const ctx = input28.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, SIDE, SIDE);
    ctx.drawImage(bitmap, 0, 0);
    inputPixels = Uint8Array.from(grayOf(ctx.getImageData(0, 0, SIDE, SIDE)), Math.round);
    clearPad();
    await run(file);
    return;
  }
  // Any other size: put it on the pad (white ink on black expected) and sample it like a drawing.
  clearPad();
  const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
  const w = bitmap.width * scale, h = bitmap.height * scale;
  padCtx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  await encodeDrawing();
}

async function loadModels() {
  // One card per served model name (GET /models lists every version: the one marked `current` is what
  // the name means; a server from before versions marks none and lists one per name); a server without
  // that list gets one card, its default.
  try {
    const response = await fetch("/models");
    const body = response.ok ? await response.json() : {};
    const listed = (Array.isArray(body.models) ? body.models : []).filter((m) => m && typeof m.name === "string");
    const current = listed.filter((m) => m.current !== false);
    models = current.filter((m, i) => current.findIndex((other) => other.name === m.name) === i);
  } catch {
    models = [];
  }
  if (!models.length) models = [{ name: "" }];
  cards = models.map(card);
}

// Back to the page as it loads: a black input, black reconstructions, no latents, no error. Answers
// still on their way are dropped (each card's `shown` no longer matches their number).
function clearResults() {
  for (const canvas of [input28, ...cards.map((slot) => slot.figure.querySelector(".recon"))]) {
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, SIDE, SIDE);
  }
  for (const slot of cards) {
    slot.shown = ++requests;
    for (const key of ["values", "hex", "model-id"]) slot.details.querySelector(`.${key}`).innerHTML = "&nbsp;";
    slot.figure.querySelector(".size").innerHTML = "&nbsp;";
    slot.figure.querySelector(".psnr").textContent = "";
    slot.figure.querySelector(".effort-used").textContent = "";
    slot.figure.dataset.effort = "";
  }
  inputPixels = null;
  lastPng = null;
}

document.getElementById("clear").addEventListener("click", () => {
  clearPad();
  clearResults();
  hideError();
  upload.value = ""; // so that choosing the same file again is a change, and is sent again
  setStatus("idle", "Draw a digit to start.");
});
upload.addEventListener("change", (event) => {
  const file = event.target.files[0];
  upload.value = ""; // the same file chosen next time fires a change too
  if (file) encodeUpload(file).catch((error) => showError(`cannot read ${file.name}: ${error.message}`));
});
window.mnistDemo = { toMnist, latentView, SIDE, FIT }; // for the browser test
clearPad();
const modelsReady = loadModels();
