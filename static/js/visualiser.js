/* The visualiser: the network's own activations (one layer's activation frames per version), drawn on a
   canvas at the display's rate, normal on the left and the transport's current version on the right.
   Every animation frame reads the transport's playhead and current version, so what is drawn is never
   more than one model frame from the audio and switches with the version at the same instant.
   Views: "shapes" (a curve whose radius around the circle follows the frequency profile, its size, hue
   and lightness the first three principal components of the normal's channels) and "channels" (a
   scrolling strip, one row per channel). Both outputs are scaled by the normal's ranges, as in the
   video (senseflosser/visualiser.py). A live ladder knob (document event "senseflosser:live",
   detail.position: a fractional rung) blends the two adjacent rungs' frames until a version is picked. */

import { fetchFrames, frameAt, row } from "./frames.js";
import { $ } from "./util.js";

const STRIP_FRAMES = 96;
const PALETTE = [[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]];  // magma-like

function colour(v) {
  const x = Math.min(1, Math.max(0, v)) * (PALETTE.length - 1);
  const k = Math.min(PALETTE.length - 2, Math.floor(x));
  const f = x - k;
  return PALETTE[k].map((a, j) => Math.round(a + f * (PALETTE[k + 1][j] - a)));
}

function unit(v, lo, hi) { return hi > lo ? (v - lo) / (hi - lo) : 0; }

/* On the normal's scale ([0, 1] is its range), kept drawable beyond it (as visualiser.py's soft). */
function soft(u) {
  if (u > 1) return 2 - 1 / u;
  if (u < 0) return -0.5 * (1 - 1 / (1 - u));
  return u;
}

function stripLevel(u) {
  return Math.min(1, Math.max(0, u > 1 ? 0.75 + 0.25 * (soft(u) - 1) : 0.75 * u));
}

/** The visualiser of the page's #visualiser section, following ``transport``. */
export function createVisualiser({ transport }) {
  const box = $("visualiser");
  const canvas = $("visualiser-canvas");
  const info = $("visualiser-info");
  const videoLink = $("video-link");
  const g = canvas.getContext("2d");
  const strip = document.createElement("canvas");
  const sg = strip.getContext("2d");
  let items = [];
  let reference = null;
  let generation = 0;
  let live = null;        // {position, at: the version current when it came}
  let lastKey = "";
  let draws = 0;

  function chosenView() {
    const checked = box.querySelector("input[name=vis-view]:checked");
    return checked ? checked.value : "shapes";
  }

  /* The frames of the right panel at frame i: the current version's, or the live blend of two rungs. */
  function rightFrames(cur) {
    if (live && live.at === cur) {
      const rungs = items.filter((it) => it.rung && it.data);
      if (rungs.length) {
        const p = Math.min(rungs.length - 1, Math.max(0, live.position));
        const k = Math.min(rungs.length - 1, Math.floor(p));
        const f = p - k;
        const a = rungs[k];
        const b = rungs[Math.min(rungs.length - 1, k + 1)];
        return { label: `ladder ${p.toFixed(2)}`, blend: [a.data, b.data, f] };
      }
    }
    const it = items[cur];
    return it && it.data ? { label: it.label, blend: [it.data, it.data, 0] } : null;
  }

  function blended(blend, name, i) {
    const [a, b, f] = blend;
    const ra = row(a.blocks[name], Math.min(i, a.frames - 1));
    if (f === 0) return ra;
    const rb = row(b.blocks[name], Math.min(i, b.frames - 1));
    return ra.map((v, c) => v + f * (rb[c] - v));
  }

  function shapes(x0, w, h, blend, i) {
    const ref = reference.blocks;
    const prof = blended(blend, "profile", i);
    const pcs = blended(blend, "components", i);
    const bands = Math.max(1, prof.length);
    const p = (k) => (prof.length ? soft(unit(prof[k], ref.profile.lo[k], ref.profile.hi[k])) : 0);
    const pc = (k) => (k < pcs.length ? soft(unit(pcs[k], ref.components.lo[k], ref.components.hi[k])) : 0);
    const cx = x0 + w / 2;
    const cy = h / 2 + h * 0.03;
    const scale = Math.min(w, h) / 2 - 8;
    const size = 0.3 + 0.2 * pc(0);
    const hue = 360 * ((0.55 + 0.3 * pc(1) + 1) % 1);
    const light = 45 + 15 * pc(2);
    g.beginPath();
    const steps = 96;
    for (let s = 0; s <= steps; s++) {
      const a = (2 * Math.PI * s) / steps;
      const along = (Math.abs(Math.atan2(Math.sin(a), Math.cos(a))) / Math.PI) * (bands - 1);
      const k = Math.floor(along);
      const v = p(k) + (along - k) * (p(Math.min(bands - 1, k + 1)) - p(k));
      const r = scale * Math.min(1, Math.max(0.05, size + 0.15 * v));
      const x = cx + r * Math.cos(a);
      const y = cy - r * Math.sin(a);
      if (s === 0) g.moveTo(x, y); else g.lineTo(x, y);
    }
    g.closePath();
    g.fillStyle = `hsl(${hue.toFixed(1)}, 75%, ${light.toFixed(1)}%)`;
    g.shadowColor = g.fillStyle;
    g.shadowBlur = 14;
    g.fill();
    g.shadowBlur = 0;
  }

  function channels(x0, w, h, blend, i) {
    const ref = reference.blocks.channels;
    const c = ref.columns;
    if (strip.width !== STRIP_FRAMES || strip.height !== c) { strip.width = STRIP_FRAMES; strip.height = c; }
    const img = sg.createImageData(STRIP_FRAMES, c);
    for (let col = 0; col < STRIP_FRAMES; col++) {
      const j = i - STRIP_FRAMES + 1 + col;
      if (j < 0) continue;
      const values = blended(blend, "channels", j);
      for (let ch = 0; ch < c; ch++) {
        const [r, gg, b] = colour(stripLevel(unit(values[ch], ref.lo[ch], ref.hi[ch])));
        const o = 4 * (ch * STRIP_FRAMES + col);
        img.data[o] = r; img.data[o + 1] = gg; img.data[o + 2] = b; img.data[o + 3] = 255;
      }
    }
    sg.putImageData(img, 0, 0);
    g.imageSmoothingEnabled = false;
    g.drawImage(strip, x0, 0, w, h);
  }

  function draw() {
    requestAnimationFrame(draw);
    if (box.hidden || !reference) return;
    const t = transport.position();
    const cur = transport.current();
    if (live && live.at !== cur) live = null;  // a version was picked: the knob no longer leads
    const i = frameAt(reference, t);
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const height = Math.max(1, Math.round(canvas.clientHeight * dpr));
    const view = chosenView();
    const key = `${i}|${cur}|${view}|${width}x${height}|${live ? live.position : ""}`;
    const at = t.toFixed(4);
    if (canvas.dataset.time !== at) canvas.dataset.time = at;  // no attribute write (and style check) while still
    if (key === lastKey) return;
    lastKey = key;
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
    const w = Math.floor(width / 2);
    g.fillStyle = "#0c0c12";
    g.fillRect(0, 0, width, height);
    const right = rightFrames(cur);
    const panels = [{ label: "Normal", blend: [reference, reference, 0] }, right];
    panels.forEach((panel, k) => {
      const x0 = k * w;
      g.save();
      g.beginPath();
      g.rect(x0, 0, w, height);
      g.clip();
      if (panel) {
        if (view === "channels") channels(x0, w, height, panel.blend, i);
        else shapes(x0, w, height, panel.blend, i);
      }
      g.fillStyle = "#e6e6e6";
      g.font = `${Math.round(12 * dpr)}px sans-serif`;
      g.fillText(panel ? panel.label : `${transport.label(cur) || ""}: no activation frames`, x0 + 6 * dpr,
        16 * dpr);
      g.restore();
    });
    g.fillStyle = "#3c3c3c";
    g.fillRect(w - dpr, 0, 2 * dpr, height);
    draws++;
    canvas.dataset.frame = String(i);
    canvas.dataset.version = String(cur);
    canvas.dataset.draws = String(draws);
    canvas.dataset.drawnAt = t.toFixed(4);
  }

  async function fetchItem(it, gen) {
    try {
      it.data = await fetchFrames(it.framesUrl);
    } catch (e) {
      it.data = null;
    }
    if (gen !== generation) return;
    if (it.reference && it.data) reference = it.data;
  }

  /* The versions the transport plays, in its order: ``framesUrl``, ``reference`` (the normal), ``rung``. */
  async function load(versions, { video } = {}) {
    const gen = ++generation;
    canvas.dataset.ready = "0";
    reference = null;
    live = null;
    lastKey = "";
    items = versions.map((v) => ({ label: v.label, framesUrl: v.framesUrl, reference: v.reference, rung: v.rung,
      data: null }));
    videoLink.hidden = !video;
    if (video) videoLink.href = video;
    box.hidden = !items.some((it) => it.framesUrl);
    await Promise.all(items.map((it) => fetchItem(it, gen)));
    if (gen !== generation) return;
    box.hidden = !reference;
    info.textContent = reference ? `Layer ${reference.layer}: ${reference.blocks.channels.columns} channels at ` +
      `${reference.frameRate.toFixed(1)} frames per second.` : "";
    canvas.dataset.ready = reference ? "1" : "0";
  }

  /* One more version (a map cell's render), at transport index ``i``. */
  async function add(i, v) {
    const it = { label: v.label, framesUrl: v.framesUrl, data: null };
    items[i] = it;
    await fetchItem(it, generation);
    lastKey = "";
  }

  document.addEventListener("senseflosser:live", (event) => {
    const p = Number(event.detail && event.detail.position);
    if (Number.isFinite(p)) live = { position: p, at: transport.current() };
  });
  box.addEventListener("change", () => { lastKey = ""; });
  requestAnimationFrame(draw);
  return { load, add };
}
