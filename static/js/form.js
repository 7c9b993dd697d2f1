/* The form: the models and their cards, the chosen file, checks before sending, the fields sent, and
   filling it from a job's settings. The server checks everything again; these checks only say sooner. */

import { getJson } from "./api.js";
import { config } from "./config.js";
import { applyAction, sliderFromMagnitude, syncDisabled } from "./damage.js";
import { loadEnvelope } from "./envelope.js";
import { senseLayers, showSenses } from "./senses.js";
import { selectedAction, state } from "./state.js";
import { $, clearError, formatBytes, formatSeconds, sentence, showError } from "./util.js";

const form = $("floss-form");
const fileInput = $("audio");
const dropZone = $("drop-zone");
const fileInfo = $("file-info");
const offsetInput = $("offset");
const durationInput = $("duration");
const modelSelect = $("model");
const modelSummary = $("model-summary");
const modelFile = $("model-file");
const magnitude = $("magnitude");
const useEnvelope = $("use-envelope");
const envelopeText = $("envelope");
const titrate = $("titrate");
const seedInput = $("seed");
const layersFieldset = $("layers-fieldset");
const layersBox = $("layers");

/* ---------------------------------------------------------------- models */

function describeCard(card) {
  const parts = [card.summary || ""];
  const ev = card.evaluation;
  const normal = ev && typeof ev === "object" ? ev.normal : null;
  if (normal && typeof normal.si_snr_db_median === "number") {
    parts.push(`On held-out audio it reconstructs at ${normal.si_snr_db_median.toFixed(1)} dB SI-SNR ` +
               `(log-spectral distance ${Number(normal.lsd_db_median).toFixed(2)} dB).`);
  }
  const action = selectedAction();
  const curve = ev && ev.dose_response && ev.dose_response[action];
  const mags = curve && (curve.magnitudes || ev.magnitudes);
  if (curve && Array.isArray(mags) && Array.isArray(curve.snr_db_median)) {
    // null: the output equals normal (no channel or weight is hit at that magnitude on this model)
    const pts = mags.map((m, i) => `${m}: ${curve.snr_db_median[i] === null ? "no change"
      : `${Number(curve.snr_db_median[i]).toFixed(0)} dB`}`);
    parts.push(`${sentence(action).replace(/\.$/, "")} damage, SNR against normal: ${pts.join(", ")}.`);
  }
  return parts.filter(Boolean).join(" ");
}

/** "cluster0: 0,1; cluster1: 2,3": a layer's clusters from its card, for the hint under its field. */
function clusterHint(groups) {
  return groups.map((g, n) => `cluster${n}: ${g.join(",")}`).join("; ");
}

function layerChoice(name, i, count, groups) {
  const wrap = document.createElement("div");
  wrap.className = "choice layer-choice";
  const box = document.createElement("input");
  box.type = "checkbox";
  box.name = "layers";
  box.value = name;
  box.id = `layer-${i}`;
  const label = document.createElement("label");
  label.htmlFor = box.id;
  label.textContent = name;
  wrap.append(box, label);
  if (count > 0) {
    // Neuron targeting: channels of this layer only (sent as "name:0,5,9"), or a cluster of the card ("name:cluster2").
    const pick = document.createElement("input");
    pick.type = "text";
    pick.id = `layer-${i}-channels`;
    pick.className = "channels";
    pick.dataset.layer = name;
    pick.dataset.count = String(count);
    pick.dataset.clusters = String(groups.length);
    const clusters = groups.length ? ` or cluster0-${groups.length - 1}` : "";
    pick.placeholder = `channels 0-${count - 1}, e.g. 0,5,9${clusters} (empty = all)`;
    pick.setAttribute("aria-label", `Channels of ${name} (0 to ${count - 1}${clusters}; empty = all ${count})`);
    pick.addEventListener("input", () => { if (pick.value.trim()) box.checked = true; });
    wrap.append(pick);
    if (groups.length) {
      const hint = document.createElement("small");
      hint.className = "hint cluster-hint";
      hint.id = `layer-${i}-clusters`;
      hint.textContent = `Clusters (channels that move together): ${clusterHint(groups)}`;
      pick.setAttribute("aria-describedby", hint.id);
      wrap.append(hint);
    }
  }
  return wrap;
}

/** The problem with a layer's channel field (whole numbers in range, or clusterN of the card), or null. */
function channelProblem(pick) {
  const count = Number(pick.dataset.count);
  const clusters = Number(pick.dataset.clusters);
  for (const token of pick.value.split(",").map((t) => t.trim()).filter(Boolean)) {
    const cluster = /^cluster(\d+)$/.exec(token);
    if (cluster) {
      if (clusters === 0) return `${pick.dataset.layer} has no clusters on this model; give channel numbers.`;
      if (Number(cluster[1]) >= clusters) {
        return `${pick.dataset.layer} has clusters 0 to ${clusters - 1}; ${token} does not exist.`;
      }
    } else if (!/^\d+$/.test(token) || Number(token) >= count) {
      return `Channels of ${pick.dataset.layer} are whole numbers from 0 to ${count - 1}${
        clusters ? ` or cluster0 to cluster${clusters - 1}` : ""}; got ${token}.`;
    }
  }
  return null;
}

function showModel() {
  layersBox.replaceChildren();
  if (modelFile.files.length > 0) {
    // Your own model: its layers are unknown to the page (the server checks a typed selection).
    modelSelect.disabled = true;
    modelSummary.textContent = `Using your model ${modelFile.files[0].name}; it is checked when you start.`;
    layersFieldset.hidden = true;
    showSenses(null);
    return;
  }
  modelSelect.disabled = false;
  const card = state.cards[modelSelect.value];
  modelSummary.textContent = card ? describeCard(card) : "";
  showSenses(card);
  const layers = card && Array.isArray(card.conv_layers) ? card.conv_layers : [];
  const channels = card && card.conv_channels && typeof card.conv_channels === "object" ? card.conv_channels : {};
  const clusters = card && card.clusters && card.clusters.layers && typeof card.clusters.layers === "object"
    ? card.clusters.layers : {};
  layersFieldset.hidden = layers.length === 0;
  layers.forEach((name, i) => layersBox.append(layerChoice(name, i, Number(channels[name]),
    Array.isArray(clusters[name]) ? clusters[name].filter(Array.isArray) : [])));
}

export async function loadModels() {
  let answer;
  try {
    answer = await getJson(config.modelsUrl);
  } catch (e) {
    showError("The list of models could not be loaded: the server is not reachable. Reload the page to try again.");
    return;
  }
  const { response, body } = answer;
  if (!response.ok) {
    showError(sentence(`The list of models could not be loaded: ${body.error}`));
    return;
  }
  const previous = modelSelect.value;
  state.cards = {};
  modelSelect.replaceChildren();
  for (const card of body.models || []) {
    state.cards[card.name] = card;
    const option = document.createElement("option");
    option.value = card.name;
    option.textContent = card.name;
    modelSelect.append(option);
  }
  if (!body.models || body.models.length === 0) {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "no model is installed on this server";
    modelSelect.append(option);
  } else if (previous && state.cards[previous]) {
    modelSelect.value = previous;
  }
  showModel();
}

/* ---------------------------------------------------------------- the file */

function setFileDuration(file, seconds) {
  offsetInput.max = seconds.toFixed(2);
  durationInput.max = seconds.toFixed(2);
  let text = `${file.name}: ${formatSeconds(seconds)}, ${formatBytes(file.size)}.`;
  if (seconds > config.maxDuration) {
    text += ` Only ${config.maxDuration} s can be processed at once: set a length of at most ${config.maxDuration} s.`;
  }
  fileInfo.textContent = text;
}

function onFile(file) {
  clearError();
  offsetInput.removeAttribute("max");
  durationInput.removeAttribute("max");
  if (!file) {
    fileInfo.textContent = "No file chosen.";
    return;
  }
  fileInfo.textContent = `${file.name}: ${formatBytes(file.size)}, reading its length…`;
  if (file.size > config.maxUploadBytes) {
    showError(`${file.name} is ${formatBytes(file.size)}, more than the limit of ${formatBytes(config.maxUploadBytes)}. ` +
      "Choose a shorter excerpt or a compressed format (FLAC, OGG, MP3).");
  }
  const url = URL.createObjectURL(file);
  const probe = document.createElement("audio");
  probe.preload = "metadata";
  const done = () => URL.revokeObjectURL(url);
  probe.addEventListener("loadedmetadata", () => {
    done();
    if (Number.isFinite(probe.duration) && probe.duration > 0) {
      setFileDuration(file, probe.duration);
    } else {
      fileInfo.textContent = `${file.name}: ${formatBytes(file.size)}; its length is unknown until the server reads it.`;
    }
  }, { once: true });
  probe.addEventListener("error", () => {
    done();
    fileInfo.textContent = `${file.name}: ${formatBytes(file.size)}. This browser cannot play it, ` +
      "so its length is unknown; the server will check the file.";
  }, { once: true });
  probe.src = url;
}

export function fileKey(file) {
  return file ? `${file.name}|${file.size}|${file.lastModified}` : null;
}

/** The audio the server has already (an earlier job's upload) serves again unless another file is chosen. */
export function usableSource() {
  const source = state.source;
  if (!source || modelFile.files.length > 0) return null;
  const file = fileInput.files[0];
  if (file && fileKey(file) !== source.fileKey) return null;
  return source;
}

/** The audio file chosen in the form (or undefined). */
export const chosenFile = () => fileInput.files[0];

/** Say, when the job has just been taken up again, which file the server keeps using. */
export function noteSource(filename) {
  if (!fileInput.files[0]) {
    fileInfo.textContent = `Using ${filename} from this job again (the server keeps it while the results last). ` +
      "Choose a file to use another.";
  }
}

/* ---------------------------------------------------------------- checking and sending */

/** ``[message, field]`` for the first problem the page can see, or null. */
export function checkForm() {
  const file = fileInput.files[0];
  if (!file && !usableSource()) return ["Choose an audio file first.", fileInput];
  if (file && file.size > config.maxUploadBytes) {
    return [`${file.name} is larger than the limit of ${formatBytes(config.maxUploadBytes)}.`, fileInput];
  }
  if (!modelSelect.value && modelFile.files.length === 0) return ["Choose a model.", modelSelect];
  const offset = offsetInput.value === "" ? 0 : Number(offsetInput.value);
  if (!Number.isFinite(offset) || offset < 0) return ["The start must be 0 seconds or more.", offsetInput];
  if (offsetInput.max && offset >= Number(offsetInput.max)) {
    return [`The start (${offset} s) is past the end of the file (${offsetInput.max} s).`, offsetInput];
  }
  if (durationInput.value !== "") {
    const d = Number(durationInput.value);
    if (!Number.isFinite(d) || d < config.minDuration) {
      return [`The length must be at least ${config.minDuration} seconds (or empty).`, durationInput];
    }
    if (d > config.maxDuration) return [`The length may be at most ${config.maxDuration} seconds.`, durationInput];
  }
  const seed = seedInput.value;
  if (seed !== "" && !(/^\d+$/.test(seed) && Number(seed) <= config.maxSeed)) {
    return [`The seed must be a whole number from 0 to ${config.maxSeed} (or empty).`, seedInput];
  }
  for (const box of form.querySelectorAll('input[name="layers"]:checked')) {
    const pick = $(`${box.id}-channels`);
    const problem = pick && channelProblem(pick);
    if (problem) return [problem, pick];
  }
  if (useEnvelope.checked && !envelopeText.value.trim()) return ["Draw or type an envelope, or untick it.", envelopeText];
  if (!useEnvelope.checked && !titrate.checked) {
    const m = Number(magnitude.value);
    if (magnitude.value === "" || !Number.isFinite(m) || m < Number(magnitude.min) || m > Number(magnitude.max)) {
      return [`The magnitude must be a number from ${magnitude.min} to ${magnitude.max}.`, magnitude];
    }
  }
  return null;
}

/** The fields of a job, with ``source`` instead of the file when the server has the audio already. */
export function jobData(reuse) {
  const data = new FormData(form);
  if (titrate.checked || useEnvelope.checked) data.delete("magnitude");
  if (useEnvelope.checked) data.delete("titrate");
  else data.delete("envelope");
  if (modelFile.files.length > 0) data.delete("model");
  else data.delete("model_file");
  data.delete("layers");
  form.querySelectorAll('input[name="layers"]:checked').forEach((box) => {
    const pick = $(`${box.id}-channels`);
    const chosen = pick ? pick.value.trim().replace(/\s+/g, "") : "";
    data.append("layers", chosen ? `${box.value}:${chosen}` : box.value);
  });
  senseLayers().forEach((entry) => data.append("layers", entry));
  if (reuse) {
    data.delete("audio");
    data.set("source", reuse.id);
  }
  return data;
}

/** Fill the form from a job's settings (a job page opened afresh). */
export function fillForm(view) {
  const req = view.request || {};
  if (req.model && state.cards[req.model]) modelSelect.value = req.model;
  const radio = req.action && $(`action-${req.action}`);
  if (radio) radio.checked = true;
  applyAction(true);
  Object.entries(req.params || {}).forEach(([name, value]) => {
    const input = $(`param-${req.action}-${name}`);
    if (!input) return;
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = String(value);
  });
  const mags = Array.isArray(req.magnitudes) ? req.magnitudes : [];
  if (req.envelope && req.envelope.length) {
    loadEnvelope(req.envelope);
  } else if (req.ladder) {
    $("ladder").checked = true;  // a ladder job: its rungs, not a titration
  } else if (mags.length > 1) {
    titrate.checked = true;
  } else if (mags.length === 1) {
    magnitude.value = String(mags[0]);
  }
  if (req.seed !== undefined && req.seed !== null) seedInput.value = String(req.seed);
  if (req.offset) offsetInput.value = String(req.offset);
  if (req.duration) durationInput.value = String(req.duration);
  $("save_model").checked = Boolean(req.save_model);
  form.querySelectorAll('input[name="explain"]').forEach((box) => {
    box.checked = (req.explain || []).includes(box.value);
  });
  syncDisabled();
  sliderFromMagnitude();
}

export function setupForm() {
  fileInput.addEventListener("change", () => onFile(fileInput.files[0]));
  ["dragenter", "dragover"].forEach((type) => dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  }));
  ["dragleave", "dragend"].forEach((type) => dropZone.addEventListener(type, () => dropZone.classList.remove("dragging")));
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("dragging");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || files.length === 0) return;
    fileInput.files = files;
    onFile(files[0]);
  });
  form.querySelectorAll('input[name="action"]').forEach((radio) => radio.addEventListener("change", () => {
    applyAction(false);
    const card = state.cards[modelSelect.value];
    if (card) modelSummary.textContent = describeCard(card);
  }));
  modelSelect.addEventListener("change", () => { showModel(); applyAction(true); });
  modelFile.addEventListener("change", () => {
    const file = modelFile.files[0];
    if (file && file.size > config.maxModelBytes) {
      showError(`${file.name} is larger than the limit of ${formatBytes(config.maxModelBytes)} for your own models.`);
      modelFile.value = "";
    }
    showModel();
  });
}
