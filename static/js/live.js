/* Live mode of a ladder job: every rung plays in sync through the transport and a knob (a range input: mouse,
   touch, keys; a MIDI controller's knob where the browser has Web MIDI) crossfades the two rungs beside its
   position with Web Audio gain automation, at once (no re-rendering). The knob's path over the audio's time
   can be recorded, played back, edited in the envelope editor, saved and loaded as recipe JSON, and rendered
   by the server ("Render this"), which mixes the same rung files by the same rule. The position is told to
   the page as a "senseflosser:live" event (the visualiser follows it). */

import { describeState, refusal, upload, watch } from "./api.js";
import { config } from "./config.js";
import {
  gainEvents, magnitudeAt, moveTo, pathText, performanceRecord, positionAt, positionOf, readPerformance,
} from "./crossfade.js";
import { loadEnvelope } from "./envelope.js";
import { selectedActionRadio } from "./state.js";
import { $, number, sentence } from "./util.js";

const RAMP_S = 0.005;  // a knob move sounds as a 5 ms linear ramp: no click, and well inside 30 ms
const box = $("live");
const knob = $("knob");
const knobValue = $("knob-value");
const meter = $("live-meter");
const levelText = $("live-level");
const recordButton = $("live-record");
const follow = $("live-follow");
const status = $("live-status");
const files = $("live-files");
const continuous = $("live-continuous");
const ladderBox = $("ladder");

let transport = null;
let view = null;
let rungs = [];      // the rungs' magnitudes, lowest first
let first = 0;       // the transport's index of rung 0
let points = [];     // the recorded path: [seconds, position]
let lastMove = [[0, 0]];  // the knob's own path (what sounds when the recording is not played back)
let recording = false;
let analyser = null;
let frame = null;
let shown = null;
const log = [];      // each input: the context time it came and the time its automation starts

const round = (x, digits) => Number(x.toFixed(digits));

function ctx() { return transport ? transport.context() : null; }

function params() {
  return rungs.map((_, k) => transport.gainNode(first + k)).map((node) => (node ? node.gain : null));
}

/* Play ``path`` from audio time ``from`` (at context time ``at``) on every rung; the other versions fall silent. */
function schedule(path, from, at) {
  const events = gainEvents(path, from, rungs.length);
  params().forEach((param, k) => {
    if (!param) return;
    param.cancelScheduledValues(at);
    events[k].forEach(([t, g], n) => {
      const when = Math.max(at, at + (t - from));
      if (n === 0) param.setValueAtTime(g, when); else param.linearRampToValueAtTime(g, when);
    });
  });
  for (let i = 0; i < transport.count(); i++) {
    if (i >= first && i < first + rungs.length) continue;
    const node = transport.gainNode(i);
    if (node) { node.gain.cancelScheduledValues(at); node.gain.setValueAtTime(0, at); }
  }
}

function sounding(t) {
  return follow.checked && points.length ? positionAt(points, t) : positionAt(lastMove, t);
}

/* The knob moved to ``p`` (from the range input, its keys or MIDI). */
function input(p) {
  const c = ctx();
  if (!view || !c) return;
  p = round(Math.max(0, Math.min(rungs.length - 1, p)), 4);
  const now = c.currentTime;
  const tau = round(transport.position(), 4);
  const playing = transport.playing();
  const at = playing ? Math.max(now, now + (tau - transport.position())) : now;
  if (recording && playing && points.length >= config.performanceMaxPoints - 2) {
    stopRecording(`The recording is full (${config.performanceMaxPoints} points); it stops here.`);
  }
  if (recording && playing) {
    // What plays from here on is the path, and the path is what sounded until now: the move replaces its rest.
    moveTo(points, tau, p, RAMP_S, sounding(tau));
    schedule(points, tau, at);
  } else {
    const from = sounding(tau);
    lastMove = playing ? [[tau, from], [tau + RAMP_S, p]] : [[tau, p]];
    schedule(lastMove, tau, at);
    if (!recording) follow.checked = false;  // the hand takes over from the recording
  }
  log.push({ input: now, at, position: p, time: tau });
  show(p, tau);
  if (playing && !frame) frame = requestAnimationFrame(tick);
}

function show(p, t) {
  if (shown === p) return;
  shown = p;
  const i = Math.min(Math.floor(p), rungs.length - 2);
  const m = magnitudeAt(p, rungs);
  const text = `rung ${number(p, 2, "")}: ${view.recipe.action} ≈ ${number(m, 4, "")} (${i + 1} and ${i + 2} of ${rungs.length})`;
  knobValue.textContent = text;
  knob.setAttribute("aria-valuetext", text);
  document.dispatchEvent(new CustomEvent("senseflosser:live", { detail: { position: p, time: t, magnitude: m } }));
}

function tick() {
  frame = null;
  if (!view || box.hidden) return;
  const t = transport.position();
  const p = sounding(t);
  if (follow.checked && points.length) knob.value = String(p);
  show(round(p, 4), t);
  if (analyser) {
    const data = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const x of data) sum += x * x;
    const db = 10 * Math.log10(sum / data.length || 1e-12);
    meter.value = Math.max(-60, db);
    levelText.textContent = db > -120 ? `${db.toFixed(1)} dBFS` : "-∞ dBFS";
  }
  if (transport.playing()) frame = requestAnimationFrame(tick);
}

function onStart(when, offset) {
  if (!view || box.hidden) return;
  if (follow.checked && points.length) {
    schedule(points, offset, when);
  } else {
    lastMove = [[offset, positionAt(lastMove, Infinity)]];
    schedule(lastMove, offset, when);
  }
  if (!frame) frame = requestAnimationFrame(tick);
}

function stopRecording(message) {
  recording = false;
  recordButton.setAttribute("aria-pressed", "false");
  recordButton.textContent = "Record the knob";
  status.textContent = message || `Recorded ${points.length} points; render it, save it, or play it back.`;
}

function toggleRecording() {
  if (recording) { stopRecording(); return; }
  recording = true;
  follow.checked = true;  // while recording, the path plays and each move replaces it from the playhead on
  const c = ctx();
  if (c && points.length && transport.playing()) schedule(points, transport.position(), c.currentTime);
  recordButton.setAttribute("aria-pressed", "true");
  recordButton.textContent = "Stop recording";
  status.textContent = "Recording: each move replaces the path from the playhead on. Press play and turn the knob.";
}

/** The form's fields for a job on this job's audio, with the ladder and the recorded path. */
function renderFields() {
  const req = view.request || {};
  const recipe = view.recipe || {};
  const data = new FormData();
  data.set("source", view.id);
  data.set("model", recipe.model || req.model);
  data.set("action", recipe.action || req.action);
  data.set("seed", String(recipe.seed));
  data.set("ladder", String(rungs.length));
  data.set("performance", pathText(points.length ? points : [[0, positionAt(lastMove, Infinity)]]));
  if (continuous.checked) data.set("performance_envelope", "1");
  if (req.offset) data.set("offset", String(req.offset));
  if (req.duration) data.set("duration", String(req.duration));
  (recipe.layers || req.layers || []).forEach((entry) => data.append("layers", entry));
  Object.entries(req.params || {}).forEach(([k, v]) => data.set(k, typeof v === "boolean" ? (v ? "1" : "0") : String(v)));
  return data;
}

async function renderThis() {
  const mine = view;
  status.textContent = "Sending the performance…";
  let answer;
  try {
    answer = await upload(config.jobsUrl, renderFields());
  } catch (e) {
    status.textContent = "The server could not be reached.";
    return;
  }
  if (answer.status !== 202) { status.textContent = refusal(answer); return; }
  let done;
  try {
    done = await watch(answer.body.status_url, (body) => { status.textContent = describeState(body)[0]; },
      () => view === mine);
  } catch (e) {
    status.textContent = e.message;
    return;
  }
  if (!done || view !== mine) return;
  if (done.state !== "done" || !done.outputs.performance) {
    status.textContent = sentence(`The render failed: ${done.error || "no reason was given"}`);
    return;
  }
  const perf = done.outputs.performance;
  const links = [[perf.download_url, "Download the performance (WAV)"], [perf.recipe_url, "its recipe (JSON)"]];
  let text = "Rendered on the server from the same rung files: the download is what you heard.";
  if (perf.continuous) {
    links.push([perf.continuous.download_url, "the continuous-envelope render (WAV)"]);
    text += ` The continuous envelope is ${number(perf.continuous.metrics.snr_db, 1, " dB")} SNR from it.`;
  }
  files.replaceChildren(...links.map(([href, label]) => {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = label;
    a.setAttribute("download", "");
    return a;
  }));
  files.hidden = false;
  status.textContent = text;
  box.dataset.rendered = done.id;
  await transport.add({ label: "performance", url: perf.url, peaksUrl: perf.peaks, help: "The server's render of the knob's path." });
  if (perf.continuous) await transport.add({ label: "continuous", url: perf.continuous.url, help: "The path as an envelope." });
}

function save() {
  const recipe = { ...view.recipe, ladder: true,
    performance: performanceRecord(points, rungs, config.crossfadeRule, continuous.checked) };
  const blob = new Blob([JSON.stringify(recipe, null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${(view.filename || "audio").replace(/\.[^.]*$/, "")}_performance.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 30000);
  status.textContent = "Saved: load it here again, or give it to the CLI as --recipe.";
}

async function load(file) {
  let record;
  try {
    const data = JSON.parse(await file.text());
    record = (data.recipe || data).performance;
  } catch (e) {
    status.textContent = "That file is not JSON.";
    return;
  }
  const got = readPerformance(record, rungs);
  if (got.error) { status.textContent = got.error; return; }
  points = got.points;
  continuous.checked = Boolean(record.continuous);
  follow.checked = true;
  status.textContent = `Loaded ${points.length} points; press play to hear them.`;
}

function editAsEnvelope() {
  if (!points.length) { status.textContent = "Record a path first."; return; }
  loadEnvelope(points.map(([t, p]) => [round(t, 2), Number(magnitudeAt(p, rungs).toPrecision(3))]));
  document.dispatchEvent(new CustomEvent("senseflosser:open-form"));
  status.textContent = "The path is in the form's envelope editor (as magnitudes); edit it, then use it here.";
}

function useEdited() {
  const text = $("envelope").value.trim();
  const pairs = text.split(",").map((pair) => pair.split(":").map(Number));
  if (!text || !pairs.every((p) => p.length === 2 && p.every(Number.isFinite))) {
    status.textContent = "The envelope editor holds no points to use.";
    return;
  }
  const next = [];
  for (const [t, m] of pairs) if (!next.length || t > next[next.length - 1][0]) next.push([t, round(positionOf(m, rungs), 4)]);
  points = next;
  follow.checked = true;
  status.textContent = `The edited envelope is the performance now (${points.length} points).`;
}

async function useMidi() {
  try {
    const access = await navigator.requestMIDIAccess();
    const listen = () => access.inputs.forEach((port) => {
      port.onmidimessage = (event) => {
        const [st, , value] = event.data;
        if ((st & 0xf0) !== 0xb0) return;  // control change only
        const p = (value / 127) * (rungs.length - 1);
        knob.value = String(p);
        input(p);
      };
    });
    listen();
    access.onstatechange = listen;
    status.textContent = `MIDI: ${access.inputs.size} input(s); any control change turns the knob.`;
  } catch (e) {
    status.textContent = "The browser did not allow MIDI.";
  }
}

/** Show live mode for a finished ladder job whose rungs start at transport index ``firstRung``. */
export async function showLive(job, firstRung, loading) {
  const ladder = job.outputs && job.outputs.ladder;
  view = null;
  box.hidden = true;
  if (!ladder) return;
  await loading;
  if (!transport.context()) {
    box.hidden = false;
    status.textContent = "Live mode needs Web Audio, which this browser does not offer.";
    return;
  }
  view = job;
  rungs = ladder.magnitudes.slice();
  first = firstRung;
  const perf = job.outputs.performance;
  points = perf ? perf.points.map((p) => p.slice()) : [];
  follow.checked = Boolean(perf);
  lastMove = [[0, 0]];
  shown = null;
  knob.max = String(rungs.length - 1);
  knob.value = "0";
  const c = transport.context();
  analyser = c.createAnalyser();
  analyser.fftSize = 1024;
  params().forEach((_, k) => transport.gainNode(first + k).connect(analyser));
  schedule(lastMove, 0, c.currentTime);
  box.hidden = false;
  files.hidden = true;
  status.textContent = perf ? "This job's performance is loaded; press play to hear it." : "";
  show(0, 0);
}

/** Wire live mode to the page's transport. */
export function setupLive(pageTransport) {
  transport = pageTransport;
  transport.onStart(onStart);
  transport.onSelect(() => { if (view) status.textContent = "A single version is playing; move the knob to crossfade again."; });
  knob.addEventListener("input", () => input(Number(knob.value)));
  recordButton.addEventListener("click", toggleRecording);
  $("live-clear").addEventListener("click", () => { points = []; follow.checked = false; status.textContent = "Cleared."; });
  $("live-render").addEventListener("click", renderThis);
  $("live-save").addEventListener("click", save);
  $("live-load").addEventListener("change", (event) => { if (event.target.files[0]) load(event.target.files[0]); });
  $("live-edit").addEventListener("click", editAsEnvelope);
  $("live-use-edit").addEventListener("click", useEdited);
  const midi = $("live-midi");
  midi.hidden = typeof navigator.requestMIDIAccess !== "function";
  midi.addEventListener("click", useMidi);
  const nests = () => {
    const radio = selectedActionRadio();
    ladderBox.disabled = !radio || radio.dataset.nests !== "1";
    if (ladderBox.disabled) ladderBox.checked = false;
  };
  document.querySelectorAll('#floss-form input[name="action"]').forEach((r) => r.addEventListener("change", nests));
  nests();
  window.senseflosserLive = { points: () => points.map((p) => p.slice()), log: () => log.slice(),
    position: () => sounding(transport.position()), gains: () => params().map((g) => (g ? g.value : null)) };
}

/** A job's form fields for a ladder: the magnitude, titration and envelope give way to the rungs. */
export function withLadder(data) {
  if (!ladderBox.checked) { data.delete("ladder"); return data; }
  ["magnitude", "titrate", "envelope"].forEach((k) => data.delete(k));
  return data;
}
