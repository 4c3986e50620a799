// The refine page: paint like / dislike / colour on the image, apply K PXPO updates, browse versions.
// The painting lives at the image's own resolution (one cell per image pixel) and is sent as an
// RGBA PNG: transparent = unpainted, opaque green = like, opaque red = dislike, any other opaque
// colour = "make this pixel this colour" (pure red or green picked as a colour is nudged by one level).
"use strict";

const $ = (id) => document.getElementById(id);
const LIKE = [0, 255, 0], DISLIKE = [255, 0, 0];
const NONE = 0, LIKED = 1, DISLIKED = 2, COLOURED = 3;
const state = { info: null, ws: null, width: 0, height: 0, labels: null, colours: null, painting: false, polling: null };

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function imageUrl(version, scale = 1) {
  return `/api/workspaces/${state.ws.id}/versions/${version}.png?scale=${scale}`;
}

async function loadInfo() {
  state.info = await api("GET", "/api/info");
  [state.height, state.width] = state.info.image_size;
  $("model-line").textContent =
    `model ${state.info.model}: ${state.width}x${state.height} images, ${state.info.group_size} samples per update`;
  const select = $("context");
  state.info.contexts.forEach((name, i) => select.add(new Option(name, String(i))));
  $("updates").max = state.info.max_updates;
  $("updates").value = state.info.default_updates;
  $("steps").max = state.info.num_inference_steps;
  $("steps").value = state.info.default_steps;
  showSteps();
  const canvas = $("paint");
  canvas.width = state.width;
  canvas.height = state.height;
  clearPainting();
}

function clearPainting() {
  state.labels = new Uint8Array(state.width * state.height);
  state.colours = new Uint8Array(state.width * state.height * 3);
  drawOverlay();
}

function showSteps() {
  $("steps-label").textContent = `last ${$("steps").value} of ${$("steps").max} steps`;
}

function showOverlay() {
  $("overlay-label").textContent = `${$("overlay").value}%`;
  $("paint").style.opacity = String(Number($("overlay").value) / 100);
}

function brushColour() {
  const hex = $("colour").value;
  const rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const same = (a, b) => a.every((v, i) => v === b[i]);
  if (same(rgb, LIKE) || same(rgb, DISLIKE)) rgb[rgb.indexOf(255)] = 254; // reserved codes
  return rgb;
}

function stamp(event) {
  const canvas = $("paint");
  const rect = canvas.getBoundingClientRect();
  const cx = ((event.clientX - rect.left) / rect.width) * state.width;
  const cy = ((event.clientY - rect.top) / rect.height) * state.height;
  const radius = Number($("brush-size").value) / 2;
  const brush = document.querySelector("input[name=brush]:checked").value;
  const label = { like: LIKED, dislike: DISLIKED, colour: COLOURED, eraser: NONE }[brush];
  const colour = brushColour();
  for (let y = 0; y < state.height; y++) {
    for (let x = 0; x < state.width; x++) {
      if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 > radius * radius + 1e-6) continue; // edge pixels included
      const i = y * state.width + x;
      state.labels[i] = label;
      if (label === COLOURED) state.colours.set(colour, 3 * i);
    }
  }
  drawOverlay();
}

function pixelColour(i) {
  const label = state.labels[i];
  if (label === LIKED) return LIKE;
  if (label === DISLIKED) return DISLIKE;
  return Array.from(state.colours.slice(3 * i, 3 * i + 3));
}

function drawOverlay() {
  const canvas = $("paint");
  const ctx = canvas.getContext("2d");
  const overlay = ctx.createImageData(state.width, state.height);
  for (let i = 0; i < state.labels.length; i++) {
    if (state.labels[i] === NONE) continue;
    overlay.data.set([...pixelColour(i), 255], 4 * i); // shown at the "painting shown" opacity
  }
  ctx.putImageData(overlay, 0, 0);
}

function feedbackPng() {
  const canvas = document.createElement("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(state.width, state.height);
  for (let i = 0; i < state.labels.length; i++) {
    if (state.labels[i] === NONE) continue;
    pixels.data.set([...pixelColour(i), 255], 4 * i); // opaque: exact colours survive the PNG
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas.toDataURL("image/png").split(",")[1];
}

function showWorkspace(ws) {
  state.ws = ws;
  const current = ws.versions[ws.current];
  $("image").src = imageUrl(ws.current);
  $("feedback-download").href = `/api/workspaces/${ws.id}/feedback.zip`;
  $("steps").value = current.steps;
  showSteps();
  $("current-label").textContent = `(version ${ws.current} of ${ws.versions.length - 1}, ${ws.context_name}, seed ${ws.seed})`;
  const list = $("history");
  list.replaceChildren();
  for (const v of ws.versions) {
    const item = document.createElement("li");
    item.className = v.index === ws.current ? "current" : "";
    const thumb = document.createElement("img");
    thumb.src = imageUrl(v.index);
    thumb.alt = `version ${v.index}`;
    const text = v.parent === null ? " start " : ` from ${v.parent}, K=${v.updates}, last ${v.steps} steps `;
    const go = document.createElement("button");
    go.textContent = "go to";
    go.dataset.version = String(v.index);
    go.onclick = () => checkout(v.index);
    const download = document.createElement("a");
    download.href = imageUrl(v.index, Math.min(16, state.info.max_scale));  // the server caps the PNG's side
    download.download = `refine-${ws.id}-v${v.index}.png`;
    download.textContent = "PNG";
    item.append(thumb, `version ${v.index}:${text}`, go, " ", download);
    list.append(item);
  }
  if (current.parent !== null) {
    $("before").src = imageUrl(current.parent);
    $("after").src = imageUrl(current.index);
  }
}

async function newImage() {
  setStatus("drawing...");
  try {
    if (state.ws) await api("DELETE", `/api/workspaces/${state.ws.id}`).catch(() => null);
    const ws = await api("POST", "/api/workspaces", { context: Number($("context").value), seed: Number($("seed").value) });
    clearPainting();
    $("before").removeAttribute("src");
    $("after").removeAttribute("src");
    showWorkspace(ws);
    setStatus("ready");
  } catch (err) {
    setStatus(err.message, true);
  }
}

function setBusy(busy) {
  $("apply").disabled = busy;
  $("cancel").disabled = !busy;
  $("reset").disabled = busy;
  $("new-image").disabled = busy;
}

async function apply() {
  const updates = Number($("updates").value);
  const steps = Number($("steps").value);
  $("progress-text").className = "";
  try {
    const job = await api("POST", `/api/workspaces/${state.ws.id}/apply`, { feedback: feedbackPng(), updates, steps });
    setBusy(true);
    showJob(job);
    state.polling = setInterval(poll, 300);
  } catch (err) {
    $("progress-text").textContent = err.message;
    $("progress-text").className = "error";
  }
}

function showJob(job) {
  $("progress").max = job.updates;
  $("progress").value = job.done_updates;
  const reward = job.rewards.length ? `, reward under the painting ${job.rewards[job.rewards.length - 1].toFixed(4)}` : "";
  $("progress-text").textContent = `${job.state}: update ${job.done_updates} of ${job.updates}${reward}`;
  $("progress-text").dataset.state = job.state;
}

async function poll() {
  try {
    const ws = await api("GET", `/api/workspaces/${state.ws.id}`);
    showJob(ws.job);
    if (ws.job.state === "queued" || ws.job.state === "running") return;
    clearInterval(state.polling);
    setBusy(false);
    if (ws.job.state === "failed") {
      $("progress-text").textContent = `failed: ${ws.job.error}`;
      $("progress-text").className = "error";
    }
    showWorkspace(ws);
  } catch (err) {
    clearInterval(state.polling);
    setBusy(false);
    $("progress-text").textContent = err.message;
    $("progress-text").className = "error";
  }
}

async function cancel() {
  await api("POST", `/api/workspaces/${state.ws.id}/cancel`).catch((err) => setStatus(err.message, true));
}

async function checkout(version) {
  try {
    showWorkspace(await api("POST", `/api/workspaces/${state.ws.id}/checkout`, { version }));
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function reset() {
  try {
    showWorkspace(await api("POST", `/api/workspaces/${state.ws.id}/reset`));
    $("before").removeAttribute("src");
    $("after").removeAttribute("src");
  } catch (err) {
    setStatus(err.message, true);
  }
}

function wire() {
  const canvas = $("paint");
  canvas.addEventListener("mousedown", (e) => { state.painting = true; stamp(e); });
  canvas.addEventListener("mousemove", (e) => { if (state.painting) stamp(e); });
  window.addEventListener("mouseup", () => { state.painting = false; });
  $("brush-size").addEventListener("input", () => { $("brush-size-label").textContent = $("brush-size").value; });
  $("steps").addEventListener("input", showSteps);
  $("overlay").addEventListener("input", showOverlay);
  showOverlay();
  $("clear").onclick = clearPainting;
  $("new-image").onclick = newImage;
  $("apply").onclick = apply;
  $("cancel").onclick = cancel;
  $("reset").onclick = reset;
}

wire();
loadInfo().then(newImage).catch((err) => setStatus(err.message, true));
