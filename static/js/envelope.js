/* The envelope editor: magnitude against the output's time, drawn over the clip's waveform. Points are
   added with a click (or A), dragged (or moved with the arrow keys) and removed with a double click (or
   Delete); the text field holds them as the API's ``seconds:magnitude`` list. */

import { config } from "./config.js";
import { selectedAction, selectedActionRadio, state } from "./state.js";
import { $, fmtMag, svgEl } from "./util.js";

const ENV_H = 160;
const ENV_PAD = 8;
const MIN_GAP_S = 0.01;  // the text keeps times to 0.01 s: closer points would print the same (refused) time

const editor = $("envelope-editor");
const svg = $("envelope-svg");
const field = $("envelope");
const useEnvelope = $("use-envelope");
const magnitude = $("magnitude");
const offsetInput = $("offset");
const durationInput = $("duration");

let points = [];
let focus = -1;
let dragging = -1;

/** The length of the output in seconds, as far as the page knows it. */
export function segmentSeconds() {
  const d = Number(durationInput.value);
  if (durationInput.value !== "" && d > 0) return d;
  const offset = Number(offsetInput.value) || 0;
  if (offsetInput.max) return Math.max(config.minDuration, Number(offsetInput.max) - offset);
  const view = state.view;
  if (view && view.outputs && view.outputs.duration) return view.outputs.duration;
  return 60;  // unknown until a file is chosen: a scale to draw on
}

function top() {
  const radio = selectedActionRadio();
  const fromScale = state.scale ? state.scale.top : Number(radio && radio.dataset.default);
  const highest = Math.max(fromScale, ...points.map((p) => p[1]));
  return radio ? Math.min(Number(radio.dataset.max), highest) || highest : highest;
}

function toText() {
  field.value = points.map(([t, m]) => `${Number(t.toFixed(2))}:${Number(m.toPrecision(3))}`).join(",");
}

/** Read the points from the text field (a ramp becomes its two points; an lfo is drawn by the server). */
export function envelopeFromText() {
  const text = field.value.trim();
  const ramp = /^ramp:\s*([\d.eE+-]+)\s*,\s*([\d.eE+-]+)$/.exec(text);
  if (ramp) {
    points = [[0, Number(ramp[1])], [segmentSeconds(), Number(ramp[2])]];
  } else if (/^\d/.test(text)) {
    const pts = text.split(",").map((pair) => pair.split(":").map(Number));
    if (pts.every((p) => p.length === 2 && p.every(Number.isFinite))) points = pts;
  } else {
    points = [];  // an lfo: the server draws it
  }
  drawEnvelope();
}

/** Show a job's envelope points in the editor (a job page opened afresh). */
export function loadEnvelope(pairs) {
  useEnvelope.checked = true;
  editor.hidden = false;
  field.value = pairs.map((p) => `${p[0]}:${p[1]}`).join(",");
  envelopeFromText();
}

function geometry() {
  const width = Math.max(200, Math.round(svg.getBoundingClientRect().width) || 800);
  const T = segmentSeconds();
  const M = top() * 1.05 || 1;
  return {
    width, T, M,
    x: (t) => ENV_PAD + (width - 2 * ENV_PAD) * (t / T),
    y: (m) => ENV_H - ENV_PAD - (ENV_H - 2 * ENV_PAD) * (m / M),
    t: (x) => Math.min(T, Math.max(0, ((x - ENV_PAD) / (width - 2 * ENV_PAD)) * T)),
    m: (y) => Math.min(M, Math.max(0, ((ENV_H - ENV_PAD - y) / (ENV_H - 2 * ENV_PAD)) * M)),
  };
}

export function drawEnvelope() {
  if (editor.hidden) return;
  const g = geometry();
  svg.setAttribute("viewBox", `0 0 ${g.width} ${ENV_H}`);
  const hadFocus = svg.contains(document.activeElement);
  svg.replaceChildren();
  // the waveform of this audio, when the server has drawn it already
  const view = state.view;
  const original = view && view.outputs && view.outputs.original;
  if (original && original.peaksData && state.source) {
    const pk = original.peaksData;
    const mid = ENV_H / 2;
    let d = "";
    for (let i = 0; i < pk.bins; i++) {
      const x = g.x((pk.duration * (i + 0.5)) / pk.bins);
      if (x > g.width) break;
      d += `M${x.toFixed(1)} ${(mid - pk.max[i] * (mid - ENV_PAD)).toFixed(1)}V${(mid - pk.min[i] * (mid - ENV_PAD)).toFixed(1)}`;
    }
    svgEl("path", { d, class: "env-wave" }, svg);
  }
  svgEl("rect", { x: 0, y: 0, width: g.width, height: ENV_H, class: "env-bg" }, svg);
  svgEl("text", { x: ENV_PAD + 2, y: ENV_PAD + 10, class: "env-label" }, svg).textContent =
    `${fmtMag(g.M)} ${selectedAction()}`;
  svgEl("text", { x: g.width - ENV_PAD - 2, y: ENV_H - ENV_PAD - 4, class: "env-label end" }, svg).textContent =
    `${g.T.toFixed(1)} s`;
  if (points.length) {
    const pts = points.map(([t, m]) => `${g.x(t).toFixed(1)},${g.y(m).toFixed(1)}`);
    pts.push(`${g.width - ENV_PAD},${g.y(points[points.length - 1][1]).toFixed(1)}`);  // held after the last
    svgEl("polyline", { points: pts.join(" "), class: "env-line" }, svg);
  }
  points.forEach(([t, m], i) => {
    const c = svgEl("circle", {
      cx: g.x(t), cy: g.y(m), r: 7, class: "env-point", tabindex: 0, role: "button", "data-index": i,
      "aria-label": `Point ${i + 1}: ${t.toFixed(2)} s, magnitude ${fmtMag(m)}`,
    }, svg);
    if (i === focus) c.classList.add("focused");
  });
  if (focus >= 0) {
    const el = svg.querySelector(`circle[data-index="${focus}"]`);
    if (el && hadFocus) el.focus();
  }
}

function valueAt(t) {
  if (t <= points[0][0]) return points[0][1];
  for (let k = 1; k < points.length; k++) {
    if (t <= points[k][0]) {
      return points[k - 1][1] + ((points[k][1] - points[k - 1][1]) * (t - points[k - 1][0])) / (points[k][0] - points[k - 1][0]);
    }
  }
  return points[points.length - 1][1];
}

function setPoint(i, t, m) {
  const lo = i > 0 ? points[i - 1][0] + MIN_GAP_S : 0;
  const hi = i < points.length - 1 ? points[i + 1][0] - MIN_GAP_S : segmentSeconds();
  points[i] = [Math.min(hi, Math.max(lo, t)), Math.max(0, m)];
}

/** Insert a point; its index, or -1 when it is too close to another or the envelope is full. */
function addPoint(t, m) {
  if (points.length >= config.envelopeMaxPoints) return -1;
  const i = points.findIndex((p) => p[0] > t);
  const at = i < 0 ? points.length : i;
  if (points.some((p) => Math.abs(p[0] - t) < MIN_GAP_S)) return -1;
  points.splice(at, 0, [t, m]);
  return at;
}

function changed(focusIndex) {
  focus = focusIndex;
  toText();
  drawEnvelope();
}

const pointOf = (event) => (event.target.closest ? event.target.closest("circle.env-point") : null);

function onKey(event) {
  const target = pointOf(event);
  const g = geometry();
  if (event.key === "a" || event.key === "A" || event.key === "Insert") {
    // a new point in the middle of the widest gap, on the line (the shape does not change until it moves)
    const times = [0, ...points.map((p) => p[0]), g.T];
    let best = 0;
    for (let k = 1; k < times.length - 1; k++) if (times[k + 1] - times[k] > times[best + 1] - times[best]) best = k;
    const t = points.length ? (times[best] + times[best + 1]) / 2 : 0;
    const i = addPoint(t, points.length ? valueAt(t) : Number(magnitude.value) || 0);
    if (i >= 0) changed(i);
    event.preventDefault();
    return;
  }
  if (!target) return;
  const i = Number(target.dataset.index);
  const big = event.shiftKey ? 10 : 1;
  const [t, m] = points[i];
  const dt = (g.T / 100) * big;
  const dm = (g.M / 50) * big;
  let handled = true;
  if (event.key === "ArrowLeft") setPoint(i, t - dt, m);
  else if (event.key === "ArrowRight") setPoint(i, t + dt, m);
  else if (event.key === "ArrowUp") setPoint(i, t, m + dm);
  else if (event.key === "ArrowDown") setPoint(i, t, m - dm);
  else if (event.key === "Delete" || event.key === "Backspace") {
    points.splice(i, 1);
    changed(Math.min(i, points.length - 1));
    event.preventDefault();
    return;
  } else handled = false;
  if (handled) {
    event.preventDefault();
    event.stopPropagation();
    changed(i);
  }
}

/** Wire the editor; ``onToggle()`` runs when "let the damage change over time" is switched. */
export function setupEnvelope({ onToggle }) {
  svg.addEventListener("pointerdown", (event) => {
    const g = geometry();
    const box = svg.getBoundingClientRect();
    const x = ((event.clientX - box.left) / box.width) * g.width;
    const y = ((event.clientY - box.top) / box.height) * ENV_H;
    const target = pointOf(event);
    if (target) {
      dragging = Number(target.dataset.index);
    } else {
      dragging = addPoint(g.t(x), g.m(y));
      if (dragging < 0) return;
      changed(dragging);
    }
    svg.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  svg.addEventListener("pointermove", (event) => {
    if (dragging < 0) return;
    const g = geometry();
    const box = svg.getBoundingClientRect();
    setPoint(dragging, g.t(((event.clientX - box.left) / box.width) * g.width),
      g.m(((event.clientY - box.top) / box.height) * ENV_H));
    changed(dragging);
  });
  ["pointerup", "pointercancel"].forEach((type) => svg.addEventListener(type, () => { dragging = -1; }));
  svg.addEventListener("dblclick", (event) => {
    const target = pointOf(event);
    if (!target) return;
    points.splice(Number(target.dataset.index), 1);
    changed(-1);
  });
  svg.addEventListener("keydown", onKey);
  svg.addEventListener("focusin", (event) => {
    const target = pointOf(event);
    focus = target ? Number(target.dataset.index) : focus;
  });
  svg.tabIndex = 0;
  field.addEventListener("input", envelopeFromText);
  useEnvelope.addEventListener("change", () => {
    editor.hidden = !useEnvelope.checked;
    if (useEnvelope.checked && !field.value.trim()) {
      const radio = selectedActionRadio();
      points = [[0, 0], [segmentSeconds(), Number(magnitude.value) || Number(radio && radio.dataset.default)]];
      toText();
    }
    onToggle();
    drawEnvelope();
  });
  [durationInput, offsetInput].forEach((input) => input.addEventListener("change", drawEnvelope));
}
