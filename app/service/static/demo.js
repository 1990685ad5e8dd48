// The demo page: draw or upload a digit, send it to /encode, decode the 24 bytes with /decode.
"use strict";

const SIDE = 28; // MNIST's frame
const FIT = 20; // MNIST scaled each digit to fit a 20x20 box inside it
const STROKE = 22; // pen width on the 280x280 pad: about 2 pixels at 28x28, like MNIST's strokes

const pad = document.getElementById("pad");
const padCtx = pad.getContext("2d", { willReadFrequently: true });
const input28 = document.getElementById("input28");
const recon = document.getElementById("recon");
const statusLine = document.getElementById("status");
const modelSelect = document.getElementById("model");

function clearPad() {
  padCtx.fillStyle = "#000";
  padCtx.fillRect(0, 0, pad.width, pad.height);
}

function setStatus(state, text) {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
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
let lastInput = null; // the PNG blob sent, to re-run with another model

function withModel(path) {
  const model = modelSelect.value;
  return model ? `${path}?model=${encodeURIComponent(model)}` : path;
}

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

function psnrDb(a, b) {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += ((a[i] - b[i]) / 255) ** 2;
  return 10 * Math.log10(1 / Math.max(sum / a.length, 1e-10));
}

async function decodedPixels(blob) {
  const bitmap = await createImageBitmap(blob);
  const canvas = document.createElement("canvas");
  canvas.width = SIDE;
  canvas.height = SIDE;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  return Uint8Array.from(grayOf(ctx.getImageData(0, 0, SIDE, SIDE)), Math.round);
}

async function run(png) {
  lastInput = png;
  setStatus("busy", "Encoding...");
  try {
    const form = new FormData();
    form.append("img", png, "digit.png");
    const encoded = await fetch(withModel("/encode"), { method: "POST", body: form });
    if (!encoded.ok) throw new Error(`/encode answered ${await errorText(encoded)}`);
    const latent = new Uint8Array(await encoded.arrayBuffer());
    const decoded = await fetch(withModel("/decode"), {
      method: "POST",
      body: latent,
      headers: { "Content-Type": "application/octet-stream" },
    });
    if (!decoded.ok) throw new Error(`/decode answered ${await errorText(decoded)}`);
    const blob = await decoded.blob();
    const view = new DataView(latent.buffer);
    const floats = Array.from({ length: latent.length / 4 }, (_, i) => view.getFloat32(4 * i, true).toFixed(4));
    document.getElementById("hex").textContent = hexOf(latent);
    document.getElementById("hex").dataset.bytes = String(latent.length);
    document.getElementById("floats").textContent = floats.join("  ");
    document.getElementById("model-id").textContent = encoded.headers.get("X-Model-Id") || "?";
    document.getElementById("psnr").textContent = `${psnrDb(inputPixels, await decodedPixels(blob)).toFixed(2)} dB`;
    URL.revokeObjectURL(recon.src);
    recon.src = URL.createObjectURL(blob);
    await recon.decode();
    setStatus("done", `${png.size} bytes of PNG in, ${latent.length} bytes out.`);
  } catch (error) {
    setStatus("error", error.message);
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
  // GET /models exists on servers with several models; without it the picker stays hidden.
  try {
    const response = await fetch("/models");
    if (!response.ok) return;
    const body = await response.json();
    const list = Array.isArray(body) ? body : body.models || [];
    const names = list.map((m) => (typeof m === "string" ? m : m.name || m.id || m.model_id)).filter(Boolean);
    if (names.length < 2) return;
    for (const name of names) modelSelect.add(new Option(name, name));
    document.getElementById("model-picker").hidden = false;
  } catch {
    // no picker
  }
}

document.getElementById("clear").addEventListener("click", () => {
  clearPad();
  setStatus("idle", "Draw a digit to start.");
});
document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) encodeUpload(file).catch((error) => setStatus("error", `cannot read ${file.name}: ${error.message}`));
});
modelSelect.addEventListener("change", () => {
  if (lastInput) run(lastInput);
});

window.mnistDemo = { toMnist, SIDE, FIT }; // for the browser test
clearPad();
loadModels();
