/* senseflosser page: upload, follow the job, show the players. Plain JS, no dependencies. */
(function () {
  "use strict";

  const main = document.getElementById("main");
  const cfg = {
    modelsUrl: main.dataset.modelsUrl,
    jobsUrl: main.dataset.jobsUrl,
    maxUploadBytes: parseFloat(main.dataset.maxUploadMb) * 1024 * 1024,
    maxModelBytes: parseFloat(main.dataset.maxModelMb) * 1024 * 1024,
    maxDuration: parseFloat(main.dataset.maxDuration),
    pollMs: parseInt(main.dataset.pollMs, 10) || 1000,
  };
  const $ = (id) => document.getElementById(id);
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
  const magnitudeValue = $("magnitude-value");
  const magnitudeHint = $("magnitude-hint");
  const titrate = $("titrate");
  const layersFieldset = $("layers-fieldset");
  const layersBox = $("layers");
  const submitButton = $("submit");
  const errorBox = $("error");
  const statusBox = $("status");
  const statusText = $("status-text");
  const progressBar = $("progress");
  const results = $("results");
  const resultsInfo = $("results-info");
  const players = $("players");
  const recipeLink = $("recipe-link");
  const cliBox = $("cli");
  const copyStatus = $("copy-status");

  const titrationText = $("titration");
  let cards = {};
  let pollTimer = null;

  /* ---------------------------------------------------------------- messages */

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    errorBox.focus();
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  function sentence(text) {
    const t = String(text || "").trim();
    if (!t) return "";
    const s = t.charAt(0).toUpperCase() + t.slice(1);
    return /[.!?]$/.test(s) ? s : s + ".";
  }

  function formatSeconds(s) {
    const m = Math.floor(s / 60);
    const rest = s - m * 60;
    return m > 0 ? `${m} min ${rest.toFixed(1)} s` : `${rest.toFixed(1)} s`;
  }

  function formatBytes(n) {
    if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
    if (n >= 1024) return `${(n / 1024).toFixed(0)} kB`;
    return `${n} bytes`;
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (e) {
      return { error: `the server answered ${response.status} ${response.statusText}` };
    }
  }

  /* ---------------------------------------------------------------- models */

  function describeCard(card) {
    const parts = [card.summary || ""];
    const ev = card.evaluation;
    const normal = ev && typeof ev === "object" ? ev.normal : null;
    if (normal && typeof normal.si_snr_db_median === "number") {
      parts.push(`On held-out music it reconstructs at ${normal.si_snr_db_median.toFixed(1)} dB SI-SNR ` +
                 `(log-spectral distance ${Number(normal.lsd_db_median).toFixed(2)} dB).`);
    }
    const action = selectedAction();
    const curve = ev && ev.dose_response && ev.dose_response[action];
    const mags = curve && (curve.magnitudes || ev.magnitudes);
    if (curve && Array.isArray(mags) && Array.isArray(curve.snr_db_median)) {
      const pts = mags.map((m, i) => `${m}: ${Number(curve.snr_db_median[i]).toFixed(0)} dB`);
      parts.push(`${sentence(action).replace(/\.$/, "")} damage, SNR against normal: ${pts.join(", ")}.`);
    }
    return parts.filter(Boolean).join(" ");
  }

  function showModel() {
    if (modelFile.files.length > 0) {
      // Your own model: its layers are unknown to the page (the server checks a typed selection).
      modelSelect.disabled = true;
      modelSummary.textContent = `Using your model ${modelFile.files[0].name}; it is checked when you start.`;
      layersBox.replaceChildren();
      layersFieldset.hidden = true;
      return;
    }
    modelSelect.disabled = false;
    const card = cards[modelSelect.value];
    modelSummary.textContent = card ? describeCard(card) : "";
    layersBox.replaceChildren();
    const layers = card && Array.isArray(card.conv_layers) ? card.conv_layers : [];
    const channels = card && card.conv_channels && typeof card.conv_channels === "object" ? card.conv_channels : {};
    layersFieldset.hidden = layers.length === 0;
    layers.forEach((name, i) => {
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
      const count = Number(channels[name]);
      if (count > 0) {
        // Neuron targeting: channels of this layer only (sent as "name:0,5,9").
        const pick = document.createElement("input");
        pick.type = "text";
        pick.id = `layer-${i}-channels`;
        pick.className = "channels";
        pick.dataset.layer = name;
        pick.inputMode = "numeric";
        pick.placeholder = `channels 0-${count - 1}, e.g. 0,5,9 (empty = all)`;
        pick.setAttribute("aria-label", `Channels of ${name} (0 to ${count - 1}; empty = all ${count})`);
        pick.addEventListener("input", () => { if (pick.value.trim()) box.checked = true; });
        wrap.append(pick);
      }
      layersBox.append(wrap);
    });
  }

  async function loadModels() {
    let response, body;
    try {
      response = await fetch(cfg.modelsUrl, { headers: { Accept: "application/json" } });
      body = await readJson(response);
    } catch (e) {
      showError("The list of models could not be loaded: the server is not reachable. Reload the page to try again.");
      return;
    }
    if (!response.ok) {
      showError(sentence(`The list of models could not be loaded: ${body.error}`));
      return;
    }
    const previous = modelSelect.value;
    cards = {};
    modelSelect.replaceChildren();
    for (const card of body.models || []) {
      cards[card.name] = card;
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
    } else if (previous && cards[previous]) {
      modelSelect.value = previous;
    }
    showModel();
  }

  /* ---------------------------------------------------------------- the file */

  function setFileDuration(file, seconds) {
    offsetInput.max = seconds.toFixed(2);
    durationInput.max = seconds.toFixed(2);
    let text = `${file.name}: ${formatSeconds(seconds)}, ${formatBytes(file.size)}.`;
    if (seconds > cfg.maxDuration) {
      text += ` Only ${cfg.maxDuration} s can be processed at once: set a length of at most ${cfg.maxDuration} s.`;
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
    if (file.size > cfg.maxUploadBytes) {
      showError(`${file.name} is ${formatBytes(file.size)}, more than the limit of ${formatBytes(cfg.maxUploadBytes)}. ` +
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

  /* ---------------------------------------------------------------- controls */

  function showMagnitude() {
    magnitudeValue.textContent = String(Number(magnitude.value));
  }

  function selectedAction() {
    const checked = form.querySelector('input[name="action"]:checked');
    return checked ? checked.value : "";
  }

  /* Each action's range, default and titration come from the action registry (data-* of its radio). */
  function applyAction(keepValue) {
    const radio = form.querySelector('input[name="action"]:checked');
    if (!radio) return;
    const d = radio.dataset;
    const titration = d.titration.split(",").map(Number);
    const top = Math.min(Number(d.max), 2 * titration[titration.length - 1]);
    const step = Math.pow(10, Math.floor(Math.log10(titration[0])));
    const old = Number(magnitude.value);
    magnitude.min = d.min;
    magnitude.max = String(top);
    magnitude.step = String(step);
    if (!keepValue || !(old >= Number(d.min) && old <= top)) magnitude.value = d.default;
    titrationText.textContent = d.titration;
    magnitudeHint.textContent = `${radio.value}: magnitude = ${d.meaning}. Most of its audible range lies ` +
      `between ${titration[0]} and ${titration[titration.length - 1]}.`;
    showMagnitude();
  }

  magnitude.addEventListener("input", showMagnitude);
  titrate.addEventListener("change", () => { magnitude.disabled = titrate.checked; });
  form.querySelectorAll('input[name="action"]').forEach((radio) => radio.addEventListener("change", () => {
    applyAction(false);
    const card = cards[modelSelect.value];
    if (card) modelSummary.textContent = describeCard(card);
  }));
  modelSelect.addEventListener("change", showModel);
  modelFile.addEventListener("change", () => {
    const file = modelFile.files[0];
    if (file && file.size > cfg.maxModelBytes) {
      showError(`${file.name} is larger than the limit of ${formatBytes(cfg.maxModelBytes)} for your own models.`);
      modelFile.value = "";
    }
    showModel();
  });

  /* ---------------------------------------------------------------- submitting */

  function checkForm() {
    const file = fileInput.files[0];
    if (!file) return ["Choose an audio file first.", fileInput];
    if (file.size > cfg.maxUploadBytes) {
      return [`${file.name} is larger than the limit of ${formatBytes(cfg.maxUploadBytes)}.`, fileInput];
    }
    if (!modelSelect.value && modelFile.files.length === 0) return ["Choose a model.", modelSelect];
    const offset = offsetInput.value === "" ? 0 : Number(offsetInput.value);
    if (!Number.isFinite(offset) || offset < 0) return ["The start must be 0 seconds or more.", offsetInput];
    if (offsetInput.max && offset >= Number(offsetInput.max)) {
      return [`The start (${offset} s) is past the end of the file (${offsetInput.max} s).`, offsetInput];
    }
    if (durationInput.value !== "") {
      const d = Number(durationInput.value);
      if (!Number.isFinite(d) || d <= 0) return ["The length must be more than 0 seconds (or empty).", durationInput];
    }
    const seed = $("seed").value;
    if (seed !== "" && !/^\d+$/.test(seed)) return ["The seed must be a whole number of 0 or more (or empty).", $("seed")];
    return null;
  }

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

  function upload(data) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", cfg.jobsUrl);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.responseType = "text";
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) {
          showStatus(`Uploading: ${Math.round((100 * event.loaded) / event.total)} %`, event.loaded / event.total);
        }
      });
      xhr.addEventListener("load", () => {
        let body;
        try {
          body = JSON.parse(xhr.responseText);
        } catch (e) {
          body = { error: `the server answered ${xhr.status} ${xhr.statusText}` };
        }
        resolve({ status: xhr.status, body, retryAfter: xhr.getResponseHeader("Retry-After") });
      });
      xhr.addEventListener("error", () => reject(new Error("network")));
      xhr.addEventListener("abort", () => reject(new Error("aborted")));
      xhr.send(data);
    });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    const problem = checkForm();
    if (problem) {
      showError(problem[0]);
      problem[1].focus();
      return;
    }
    const data = new FormData(form);
    if (titrate.checked) data.delete("magnitude");
    if (modelFile.files.length > 0) data.delete("model");
    else data.delete("model_file");
    data.delete("layers");
    form.querySelectorAll('input[name="layers"]:checked').forEach((box) => {
      const pick = $(`${box.id}-channels`);
      const chosen = pick ? pick.value.trim().replace(/\s+/g, "") : "";
      data.append("layers", chosen ? `${box.value}:${chosen}` : box.value);
    });
    setBusy(true);
    results.hidden = true;
    showStatus("Uploading…", null);
    let answer;
    try {
      answer = await upload(data);
    } catch (e) {
      statusBox.hidden = true;
      setBusy(false);
      showError("The upload failed: the server could not be reached. Check the connection and try again.");
      return;
    }
    if (answer.status !== 202) {
      statusBox.hidden = true;
      setBusy(false);
      let message = sentence(answer.body.error || `The server answered ${answer.status}`);
      if (answer.status === 503 && answer.retryAfter) message += ` (Try again in ${answer.retryAfter} s.)`;
      showError(message);
      return;
    }
    history.replaceState(null, "", `#job=${encodeURIComponent(answer.body.id)}`);
    follow(answer.body.status_url);
  });

  /* ---------------------------------------------------------------- following a job */

  function follow(url) {
    if (pollTimer) clearTimeout(pollTimer);
    setBusy(true);
    showStatus("Waiting for the server…", 0);
    poll(url, 0);
  }

  async function poll(url, failures) {
    let response, body;
    try {
      response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
      body = await readJson(response);
    } catch (e) {
      if (failures < 30) {
        showStatus("The connection was lost; trying again…", null);
        pollTimer = setTimeout(() => poll(url, failures + 1), cfg.pollMs * 2);
      } else {
        setBusy(false);
        showError("The server has not answered for a minute. Reload the page to look at the job again.");
      }
      return;
    }
    if (!response.ok) {
      statusBox.hidden = true;
      setBusy(false);
      history.replaceState(null, "", location.pathname);
      showError(sentence(body.error || `The server answered ${response.status}`));
      return;
    }
    if (body.state === "queued") {
      showStatus(body.position ? `Waiting in the queue: position ${body.position}.` : "Waiting in the queue.", 0);
    } else if (body.state === "running") {
      showStatus(`Working: ${Math.round(100 * body.progress)} %${body.message ? ` (${body.message})` : ""}.`, body.progress);
    } else if (body.state === "done") {
      showStatus("Done.", 1);
      setBusy(false);
      showResults(body);
      return;
    } else {
      showStatus("The job failed.", 0);
      setBusy(false);
      showError(sentence(`The job failed: ${body.error || "no reason was given"}`));
      return;
    }
    pollTimer = setTimeout(() => poll(url, 0), cfg.pollMs);
  }

  /* ---------------------------------------------------------------- results */

  function number(value, digits, unit) {
    return typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(digits)}${unit}` : "–";
  }

  function addPlayer(title, help, output, extra) {
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

  function showResults(view) {
    const out = view.outputs;
    players.replaceChildren();
    const recipe = view.recipe || {};
    resultsInfo.textContent = `${view.filename}: model ${recipe.model}, ${recipe.action}, seed ${recipe.seed}` +
      (out.seconds ? `; computed in ${out.seconds.toFixed(1)} s on ${out.device}.` : ".");
    if (out.original) {
      addPlayer("Original", "Your segment as the model hears it: mono, 22050 Hz.", out.original, {});
    }
    addPlayer("Normal", "What the undamaged model makes of it (the clean reconstruction).", out.normal, {});
    for (const f of out.flossed) {
      addPlayer(`${recipe.action} ${f.magnitude}`, `Damaged with ${recipe.action} at magnitude ${f.magnitude}.`, f,
        { flossed: true, model: f.model, recipe: f.recipe_url });
    }
    if (out.recipe) {
      recipeLink.href = out.recipe;
      recipeLink.hidden = false;
    } else {
      recipeLink.hidden = true;
    }
    cliBox.value = view.cli || "";
    copyStatus.textContent = "";
    results.hidden = false;
    results.focus();
  }

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

  /* ---------------------------------------------------------------- start */

  showMagnitude();
  applyAction(true);
  magnitude.disabled = titrate.checked;
  loadModels();
  const match = /^#job=([A-Za-z0-9_-]{22})$/.exec(location.hash);
  if (match) follow(`${cfg.jobsUrl}/${match[1]}`);
})();
