/* The results of a job: the transport's versions, the players with spectrograms, metrics and
   downloads, the dose-response plot, the sensitivity map (and a map cell heard on the clip), and the
   command that reproduces it. */

import { describeState, refusal, upload, watch } from "./api.js";
import { drawDose, drawMap } from "./charts.js";
import { config } from "./config.js";
import { drawEnvelope } from "./envelope.js";
import { showLive } from "./live.js";
import { state } from "./state.js";
import { $, number, sentence } from "./util.js";

const results = $("results");
const resultsInfo = $("results-info");
const players = $("players");
const recipeLink = $("recipe-link");
const cliBox = $("cli");
const copyStatus = $("copy-status");
const mapButton = $("map-button");
const mapStatus = $("map-status");
const mapPlot = $("map-plot");
const mapFiles = $("map-files");
const dose = $("dose");

let transport = null;

/** What each explanation of a channel set is (the server's notes, rendered beside the form's boxes). */
const EXPLAINED = Object.fromEntries([...document.querySelectorAll('input[name="explain"]')].map(
  (box) => [box.value, box.parentElement.querySelector(".hint").textContent]));
let visualiser = null;
let mapGeneration = 0;
let mapShown = null;  // the drawn map's (view, done), to lay it out again when the width changes

/* While a job's view is partial the transport alone plays it: the separate players (downloads, metrics,
   spectrograms) come with the finished view. Their media controls are the costliest part of the page
   to lay out and paint, and drawing them twice kept the page from taking in the finished view at once. */
function addPlayer(title, help, output, extra) {
  if (state.view && state.view.outputs.complete === false) return;
  const node = $("player-template").content.firstElementChild.cloneNode(true);
  node.querySelector(".player-title").textContent = title;
  node.querySelector(".player-help").textContent = help;
  const audio = node.querySelector("audio");
  audio.src = output.url;
  audio.setAttribute("aria-label", title);
  const img = node.querySelector(".spectrogram");
  if (output.spectrogram) {
    img.src = output.spectrogram;
    img.alt = `Spectrogram of ${title}`;
  } else {
    img.remove();
  }
  const list = node.querySelector(".metrics");
  const m = output.metrics;
  const rows = [];
  if (m) {
    if ("snr_db" in m && extra.flossed) rows.push(["SNR against normal", number(m.snr_db, 1, " dB")]);
    if ("lsd_db" in m && extra.flossed) rows.push(["Log-spectral distance", number(m.lsd_db, 1, " dB")]);
    if ("rms_db" in m) rows.push(["Level (RMS)", number(m.rms_db, 1, " dBFS")]);
    if ("peak" in m) rows.push(["Peak", number(m.peak, 3, "")]);
    if ("gain" in m && m.gain !== 1) rows.push(["Scaled down to avoid clipping by", number(m.gain, 3, "×")]);
  }
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
  if (rows.length === 0) list.remove();
  const wav = node.querySelector(".download-wav");
  wav.href = output.download_url;
  wav.textContent = `Download WAV (${title})`;
  if (extra.model) {
    const a = node.querySelector(".download-model");
    a.href = extra.model;
    a.hidden = false;
  }
  if (extra.recipe) {
    const a = node.querySelector(".download-recipe");
    a.href = extra.recipe;
    a.hidden = false;
  }
  players.append(node);
}

/* Show a job's results. A running job's view whose audio is ready (``outputs.complete`` false) shows the
   transport at once; the finished view of the same job then fills in what came after (the players with
   their downloads and metrics, peaks, activation frames, the dose plot, live mode) without loading the
   transport's audio again. */
export function showResults(view) {
  const out = view.outputs;
  const partial = out.complete === false;
  const shown = state.view;
  const completing = !partial && shown && shown.id === view.id && shown.outputs && shown.outputs.complete === false;
  state.view = view;
  players.replaceChildren();
  const recipe = view.recipe || {};
  resultsInfo.textContent = `${view.filename}: model ${recipe.model}, ${recipe.action}, seed ${recipe.seed}` +
    (out.seconds ? `; computed in ${out.seconds.toFixed(1)} s on ${out.device}` : "") +
    (out.normal_cached ? " (the normal output came from an earlier run on the same audio)." : ".");
  const versions = [];
  if (out.original) {
    addPlayer("Original", `Your segment as the model hears it: mono, ${config.sampleRate} Hz.`, out.original, {});
    versions.push({ label: "Original", url: out.original.url, peaksUrl: out.original.peaks,
      framesUrl: out.original.activations,
      onPeaks: (pk) => { out.original.peaksData = pk; drawEnvelope(); } });
  }
  addPlayer("Normal", "What the undamaged model makes of it (the clean reconstruction).", out.normal, {});
  versions.push({ label: "Normal", url: out.normal.url, peaksUrl: out.normal.peaks, framesUrl: out.normal.activations,
    reference: true });
  const firstFlossed = versions.length;
  const enveloped = Array.isArray(recipe.envelope) && recipe.envelope.length;
  for (const f of out.flossed) {
    const title = enveloped ? `${recipe.action} envelope` : `${recipe.action} ${f.magnitude}`;
    addPlayer(title, enveloped ? `Damaged with ${recipe.action} following the envelope.`
      : `Damaged with ${recipe.action} at magnitude ${f.magnitude}.`, f,
      { flossed: true, model: f.model, recipe: f.recipe_url });
    versions.push({ label: title, url: f.url, peaksUrl: f.peaks, framesUrl: f.activations, rung: true });
  }
  if (out.performance) {  // a ladder job's performance: after the rungs, so their places stay
    addPlayer("Performance", "The knob's path rendered on the server: the crossfade of the rungs.", out.performance,
      { recipe: out.performance.recipe_url });
    versions.push({ label: "performance", url: out.performance.url, peaksUrl: out.performance.peaks });
    const cont = out.performance.continuous;
    if (cont) {
      addPlayer("Continuous envelope", `The same path as true per-frame magnitudes (the envelope renderer): ` +
        `${number(cont.metrics && cont.metrics.snr_db, 1, " dB")} SNR against the crossfade.`, cont, {});
      versions.push({ label: "continuous", url: cont.url });
    }
  }
  for (const e of out.explanations || []) {
    const title = `${e.explanation} of the chosen channels`;
    addPlayer(title, EXPLAINED[e.explanation] || "", e, { recipe: e.recipe_url });
    versions.push({ label: e.explanation, url: e.url, peaksUrl: e.peaks, framesUrl: e.activations });
  }
  const loading = completing ? transport.complete(versions) : transport.load(versions);
  // A partial view has no frames, ladder or metrics yet: these hide (the last job's go at once) until done.
  if (visualiser) visualiser.load(versions, { video: out.video });
  showLive(view, firstFlossed, loading);
  if (partial) dose.hidden = true;
  else drawDose(view, (i) => transport.select(firstFlossed + i));
  resetMap(view);
  if (out.recipe) {
    recipeLink.href = out.recipe;
    recipeLink.hidden = false;
  } else {
    recipeLink.hidden = true;
  }
  cliBox.value = view.cli || "";
  copyStatus.textContent = "";
  results.hidden = false;
  results.dataset.complete = partial ? "0" : "1";
  if (!completing) results.focus();
}

export function hideResults() {
  results.hidden = true;
  results.dataset.complete = "0";
}

/* ---------------------------------------------------------------- the sensitivity map */

function resetMap(view) {
  mapGeneration++;
  mapShown = null;
  mapPlot.setAttribute("hidden", "");  // an SVG element has no .hidden property
  mapPlot.replaceChildren();
  mapFiles.hidden = true;
  mapStatus.textContent = "";
  const own = Boolean(view.model_upload);
  mapButton.disabled = own;
  if (own) mapStatus.textContent = "Maps are made with the server's models only.";
}

/** The map as it is shown, laid out again (for a new width). */
export function redrawMap() {
  if (mapShown && !mapPlot.hasAttribute("hidden")) showMap(...mapShown);
}

function showMap(view, done) {
  mapShown = [view, done];
  drawMap(view, done, (layer, m, cell) => renderCell(view, layer, m, cell));
}

/** A job's fields for the same audio (``source``), model and action, with ``extra`` on top. */
function jobFields(view, extra) {
  const req = view.request || {};
  const recipe = view.recipe || {};
  const data = new FormData();
  data.set("source", view.id);
  data.set("model", recipe.model || req.model);
  data.set("action", recipe.action || req.action);
  if (req.offset) data.set("offset", String(req.offset));
  for (const [k, v] of Object.entries(extra)) if (v !== null && v !== undefined) data.set(k, String(v));
  return data;
}

async function requestMap() {
  const view = state.view;
  if (!view) return;
  const gen = ++mapGeneration;
  const req = view.request || {};
  // the job's segment when a map may measure it all; else the server's default excerpt
  const duration = req.duration && req.duration <= config.mapMaxSeconds ? req.duration : null;
  mapButton.disabled = true;
  mapStatus.textContent = "Sending…";
  let answer;
  try {
    answer = await upload(config.mapsUrl, jobFields(view, { duration, seed: (view.recipe || {}).seed }));
  } catch (e) {
    mapStatus.textContent = "The server could not be reached.";
    mapButton.disabled = false;
    return;
  }
  if (answer.status !== 202) {
    mapStatus.textContent = refusal(answer);
    mapButton.disabled = false;
    return;
  }
  let done;
  try {
    done = await watch(answer.body.status_url, (body) => {
      if (gen === mapGeneration) mapStatus.textContent = describeState(body)[0];
    }, () => gen === mapGeneration);
  } catch (e) {
    if (gen === mapGeneration) mapStatus.textContent = e.message;
    mapButton.disabled = false;
    return;
  }
  if (gen !== mapGeneration || !done) return;
  mapButton.disabled = false;
  if (done.state !== "done" || !done.map) {
    mapStatus.textContent = sentence(`The map failed: ${done.error || "no reason was given"}`);
    return;
  }
  const most = [].concat(done.map.most_sensitive || []);
  mapStatus.textContent = most.length ? `From the most sensitive layer to the least: ${most.join(", ")}.` : "Done.";
  showMap(view, done);
}

/* A map cell on the user's clip: that layer alone at that magnitude, added to the transport. */
async function renderCell(view, layer, m, cell) {
  const action = (view.recipe || {}).action;
  const label = `${layer} ${action} ${m}`;
  for (let i = 0; i < transport.count(); i++) {
    if (transport.label(i) === label) { transport.select(i); transport.play(); return; }
  }
  const req = view.request || {};
  cell.classList.add("pending");
  mapStatus.textContent = `Rendering ${label} on your clip…`;
  let answer;
  try {
    answer = await upload(config.jobsUrl, jobFields(view, {
      magnitude: m, layers: layer, seed: (view.recipe || {}).seed, duration: req.duration,
    }));
  } catch (e) {
    answer = { status: 0, body: { error: "the server could not be reached" } };
  }
  if (answer.status !== 202) {
    cell.classList.remove("pending");
    mapStatus.textContent = refusal(answer);
    return;
  }
  let done;
  try {
    done = await watch(answer.body.status_url, (body) => {
      mapStatus.textContent = `${label}: ${describeState(body)[0]}`;
    }, () => state.view === view);
  } catch (e) {
    done = { state: "failed", error: e.message };
  }
  cell.classList.remove("pending");
  if (!done || done.state !== "done" || state.view !== view) {
    if (done && done.state !== "done") mapStatus.textContent = sentence(`${label} failed: ${done.error || "no reason was given"}`);
    return;
  }
  const f = done.outputs.flossed[0];
  const i = await transport.add({ label, url: f.url, peaksUrl: f.peaks,
    help: `Only ${layer} damaged, ${action} ${m}: SNR ${number(f.metrics && f.metrics.snr_db, 1, " dB")}.` });
  mapStatus.textContent = `${label}: SNR ${number(f.metrics && f.metrics.snr_db, 1, " dB")} against normal; playing it.`;
  if (i >= 0 && visualiser) visualiser.add(i, { label, framesUrl: f.activations });
  if (i >= 0) {
    transport.select(i);
    transport.play();
  }
}

/** Wire the results to the page's transport. */
export function setupResults(pageTransport, pageVisualiser = null) {
  transport = pageTransport;
  visualiser = pageVisualiser;
  mapButton.addEventListener("click", requestMap);
  $("copy-cli").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(cliBox.value);
      copyStatus.textContent = "Copied.";
    } catch (e) {
      cliBox.focus();
      cliBox.select();
      copyStatus.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
    }
  });
}
