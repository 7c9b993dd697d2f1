/* senseflosser page, the wiring: each concern is a module (config, api, transport, charts, envelope,
   damage, form, results, frames, visualiser); this one connects them, sends the form and follows the
   job. Plain ES modules, no dependencies, no build step. */

import { describeState, getJson, jobPage, jobUrl, refusal, upload, watch } from "./api.js";
import { config } from "./config.js";
import { applyAction, setupDamage, syncDisabled } from "./damage.js";
import { drawEnvelope, setupEnvelope } from "./envelope.js";
import {
  checkForm, chosenFile, fileKey, fillForm, jobData, loadModels, noteSource, setupForm, usableSource,
} from "./form.js";
import { foldForm, setupLayout } from "./layout.js";
import { setupLive, withLadder } from "./live.js";
import { hideResults, redrawMap, setupResults, showResults } from "./results.js";
import { setupSenses } from "./senses.js";
import { state } from "./state.js";
import { createTransport } from "./transport.js";
import { createVisualiser } from "./visualiser.js";
import { $, clearError, sentence, showError } from "./util.js";

const form = $("floss-form");
const submitButton = $("submit");
const statusBox = $("status");
const statusText = $("status-text");
const progressBar = $("progress");

const transport = createTransport({ sampleRate: config.sampleRate });
window.senseflosserTransport = transport;
const visualiser = createVisualiser({ transport });

let following = 0;  // the job the page follows; an older one's answers are dropped

function setBusy(busy) {
  submitButton.disabled = busy;
  submitButton.textContent = busy ? "Working…" : "Floss it";
}

function showStatus(text, fraction) {
  statusBox.hidden = false;
  statusText.textContent = text;
  if (fraction === null) {
    progressBar.removeAttribute("value");
  } else {
    progressBar.value = Math.max(0, Math.min(1, fraction));
  }
}

/* Follow a job to its end and show its results; ``key`` names the file it was made from. */
async function follow(url, key) {
  const mine = ++following;
  transport.warm();
  setBusy(true);
  showStatus("Waiting for the server…", 0);
  let early = false;
  const onUpdate = (body) => {
    showStatus(...describeState(body));
    // The audio is written first: it plays while the job measures it and writes the rest.
    if (!early && body && body.state === "running" && body.playable && body.outputs && mine === following) {
      early = true;
      state.source = { id: body.id, filename: body.filename, fileKey: key || null };
      showResults(body);
    }
  };
  let view;
  try {
    view = await watch(url, onUpdate, () => mine === following);
  } catch (e) {
    if (mine !== following) return;
    statusBox.hidden = true;
    setBusy(false);
    showError(e.message);
    return;
  }
  if (!view) return;
  setBusy(false);
  if (view.state !== "done") {
    showError(sentence(`The job failed: ${view.error || "no reason was given"}`));
    return;
  }
  state.source = { id: view.id, filename: view.filename, fileKey: key || null };
  noteSource(view.filename);
  showResults(view);
  foldForm(view);
}

async function submit(event) {
  event.preventDefault();
  clearError();
  const problem = checkForm();
  if (problem) {
    showError(problem[0]);
    problem[1].focus();
    return;
  }
  const reuse = usableSource();
  const file = chosenFile();
  const data = withLadder(jobData(reuse));
  setBusy(true);
  hideResults();
  showStatus(reuse ? "Sending the settings (the server has your audio already)…" : "Uploading…", null);
  const progress = (f) => showStatus(`Uploading: ${Math.round(100 * f)} %`, f);
  let answer;
  try {
    answer = await upload(config.jobsUrl, data, progress);
    if (reuse && answer.status === 400 && file && /source/.test(answer.body.error || "")) {
      data.delete("source");  // the earlier job has expired: send the file again
      data.set("audio", file, file.name);
      state.source = null;
      answer = await upload(config.jobsUrl, data, progress);
    }
  } catch (e) {
    statusBox.hidden = true;
    setBusy(false);
    showError("The upload failed: the server could not be reached. Check the connection and try again.");
    return;
  }
  if (answer.status !== 202) {
    statusBox.hidden = true;
    setBusy(false);
    showError(refusal(answer));
    return;
  }
  const key = reuse ? reuse.fileKey : fileKey(file);
  history.pushState({ job: answer.body.id }, "", jobPage(answer.body.id));
  follow(answer.body.status_url, key);
}

/* The job this address names: a job page (/jobs/<id>), or an old link's #job=<id>. */
function addressedJob() {
  if (config.jobId) return config.jobId;
  const legacy = /^#job=(.+)$/.exec(location.hash);
  return legacy && config.jobIdPattern.test(legacy[1]) ? legacy[1] : null;
}

async function start() {
  setupForm();
  setupSenses();
  setupDamage();
  setupEnvelope({ onToggle: syncDisabled });
  setupResults(transport, visualiser);
  setupLive(transport);
  setupLayout();
  form.addEventListener("submit", submit);
  window.addEventListener("popstate", () => location.reload());
  window.addEventListener("resize", () => {
    drawEnvelope();
    transport.draw();
    redrawMap();
  });

  applyAction(true);
  syncDisabled();
  await loadModels();
  applyAction(true);
  const id = addressedJob();
  if (!id) return;
  const url = jobUrl(id);
  if (config.jobId) {
    try {
      const { response, body } = await getJson(url);
      if (response.ok) fillForm(body);
    } catch (e) { /* follow() reports it */ }
  }
  follow(url, null);
}

start();
