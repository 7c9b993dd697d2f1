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
    mapsUrl: main.dataset.mapsUrl,
    jobPageUrl: main.dataset.jobPageUrl,
    jobId: main.dataset.jobId || null,
  };
  const SVG_NS = "http://www.w3.org/2000/svg";
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
  const damage = $("damage");
  const damageValue = $("damage-value");
  const useEnvelope = $("use-envelope");
  const envelopeEditor = $("envelope-editor");
  const envelopeSvg = $("envelope-svg");
  const envelopeText = $("envelope");
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
  let shown = null;       // the job view in the results
  let source = null;      // {id, filename, fileKey}: the audio the server already has
  let scale = null;       // the damage slider's mapping (see makeScale)

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

  /* ---------------------------------------------------------------- the damage control */

  function selectedAction() {
    const checked = form.querySelector('input[name="action"]:checked');
    return checked ? checked.value : "";
  }

  function fmtMag(m) {
    if (!Number.isFinite(m)) return "–";
    if (m === 0) return "0";
    return String(Number(m.toPrecision(2)));
  }

  /* The slider runs over "damage" (0..1); a scale maps it to the action's raw magnitude and back.
     Calibrated: the model card's magnitudes at set SNR levels against normal, evenly spaced in dB, so
     equal steps sound like equal steps. Otherwise: logarithmic over the action's useful range. */
  function makeScale(radio, card) {
    const d = radio.dataset;
    const titration = d.titration.split(",").map(Number);
    const lowest = Number(d.min) > 0 ? Number(d.min) : titration[0] / 3;
    const highest = Math.min(Number(d.max), 3 * titration[titration.length - 1]);
    const cal = card && card.evaluation && card.evaluation.calibration;
    const levels = cal && Array.isArray(cal.levels_db) ? cal.levels_db.map(Number) : null;
    const mags = cal && cal.magnitudes && Array.isArray(cal.magnitudes[radio.value]) ? cal.magnitudes[radio.value] : null;
    let anchors = [];
    if (levels && mags && levels.length === mags.length && levels.length >= 2) {
      const top = levels[0];
      const span = levels[0] - levels[levels.length - 1];
      levels.forEach((level, i) => {
        const m = Number(mags[i]);
        if (mags[i] !== null && Number.isFinite(m) && m > 0 && span > 0) {
          anchors.push({ d: (top - level) / span, m, level });
        }
      });
      anchors = anchors.filter((a, i) => i === 0 || a.m > anchors[i - 1].m);
    }
    const lerpLog = (a, b, t) => Math.exp(Math.log(a) + (Math.log(b) - Math.log(a)) * t);
    if (anchors.length >= 2) {
      const first = anchors[0];
      const last = anchors[anchors.length - 1];
      return {
        calibrated: true,
        toMag(p) {
          const x = first.d + (last.d - first.d) * p;
          for (let i = 1; i < anchors.length; i++) {
            if (x <= anchors[i].d || i === anchors.length - 1) {
              const a = anchors[i - 1], b = anchors[i];
              return lerpLog(a.m, b.m, Math.min(1, Math.max(0, (x - a.d) / (b.d - a.d))));
            }
          }
          return last.m;
        },
        toPos(m) {
          if (!(m > first.m)) return 0;
          if (m >= last.m) return 1;
          for (let i = 1; i < anchors.length; i++) {
            const a = anchors[i - 1], b = anchors[i];
            if (m <= b.m) {
              const x = a.d + (b.d - a.d) * (Math.log(m / a.m) / Math.log(b.m / a.m));
              return (x - first.d) / (last.d - first.d);
            }
          }
          return 1;
        },
        snrAt(p) {
          return first.level + (last.level - first.level) * p;
        },
        top: last.m,
      };
    }
    return {
      calibrated: false,
      toMag: (p) => lerpLog(lowest, highest, p),
      toPos: (m) => (m > lowest ? Math.min(1, Math.log(m / lowest) / Math.log(highest / lowest)) : 0),
      top: highest,
    };
  }

  function showMagnitude() {
    const m = Number(magnitude.value);
    magnitudeValue.textContent = String(m);
    const action = selectedAction();
    const p = Number(damage.value) / Number(damage.max);
    let text;
    if (scale && scale.calibrated) {
      text = `damage ${Math.round(100 * p)} % = ${action} ${fmtMag(m)}`;
      damageValue.title = `about ${scale.snrAt(p).toFixed(0)} dB SNR against normal on held-out audio`;
    } else {
      text = `${action} ${fmtMag(m)} (log scale)`;
      damageValue.title = "";
    }
    damageValue.textContent = text;
    damage.setAttribute("aria-valuetext", text);
  }

  function sliderFromMagnitude() {
    const m = Number(magnitude.value);
    if (scale && Number.isFinite(m)) damage.value = String(Math.round(scale.toPos(m) * Number(damage.max)));
    showMagnitude();
  }

  damage.addEventListener("input", () => {
    const m = scale.toMag(Number(damage.value) / Number(damage.max));
    magnitude.value = String(Number(m.toPrecision(3)));
    showMagnitude();
    drawEnvelope();
  });
  magnitude.addEventListener("input", sliderFromMagnitude);

  /* Each action's range, default and titration come from the action registry (data-* of its radio). */
  function applyAction(keepValue) {
    const radio = form.querySelector('input[name="action"]:checked');
    if (!radio) return;
    const d = radio.dataset;
    const titration = d.titration.split(",").map(Number);
    scale = makeScale(radio, cards[modelSelect.value]);
    const old = Number(magnitude.value);
    magnitude.min = d.min;
    magnitude.max = d.max;
    if (!keepValue || !(old >= Number(d.min) && old <= Number(d.max))) magnitude.value = d.default;
    titrationText.textContent = d.titration;
    magnitudeHint.textContent = `${radio.value}: magnitude = ${d.meaning}. Most of its audible range lies ` +
      `between ${titration[0]} and ${titration[titration.length - 1]}.` +
      (scale.calibrated ? " The slider is calibrated on this model: equal steps, equal loss in dB against normal."
        : " This model's card has no calibration: the slider is logarithmic.");
    sliderFromMagnitude();
    drawEnvelope();
  }

  function syncDisabled() {
    const env = useEnvelope.checked;
    titrate.disabled = env;
    magnitude.disabled = titrate.checked || env;
    damage.disabled = titrate.checked || env;
  }

  titrate.addEventListener("change", syncDisabled);
  form.querySelectorAll('input[name="action"]').forEach((radio) => radio.addEventListener("change", () => {
    applyAction(false);
    const card = cards[modelSelect.value];
    if (card) modelSummary.textContent = describeCard(card);
  }));
  modelSelect.addEventListener("change", () => { showModel(); applyAction(true); });
  modelFile.addEventListener("change", () => {
    const file = modelFile.files[0];
    if (file && file.size > cfg.maxModelBytes) {
      showError(`${file.name} is larger than the limit of ${formatBytes(cfg.maxModelBytes)} for your own models.`);
      modelFile.value = "";
    }
    showModel();
  });

  /* ---------------------------------------------------------------- the envelope editor */

  let envPoints = [];
  let envFocus = -1;
  const ENV_H = 160;
  const ENV_PAD = 8;

  function segmentSeconds() {
    const d = Number(durationInput.value);
    if (durationInput.value !== "" && d > 0) return d;
    const offset = Number(offsetInput.value) || 0;
    if (offsetInput.max) return Math.max(0.1, Number(offsetInput.max) - offset);
    if (shown && shown.outputs && shown.outputs.duration) return shown.outputs.duration;
    return 60;
  }

  function envTop() {
    const radio = form.querySelector('input[name="action"]:checked');
    const fromScale = scale ? scale.top : 0.1;
    const highest = Math.max(fromScale, ...envPoints.map((p) => p[1]));
    return radio ? Math.min(Number(radio.dataset.max), highest) || highest : highest;
  }

  function envelopeToText() {
    envelopeText.value = envPoints.map(([t, m]) => `${Number(t.toFixed(2))}:${Number(m.toPrecision(3))}`).join(",");
  }

  function envelopeFromText() {
    const text = envelopeText.value.trim();
    const ramp = /^ramp:\s*([\d.eE+-]+)\s*,\s*([\d.eE+-]+)$/.exec(text);
    if (ramp) {
      envPoints = [[0, Number(ramp[1])], [segmentSeconds(), Number(ramp[2])]];
    } else if (/^\d/.test(text)) {
      const pts = text.split(",").map((pair) => pair.split(":").map(Number));
      if (pts.every((p) => p.length === 2 && p.every(Number.isFinite))) envPoints = pts;
    } else {
      envPoints = [];  // an lfo: the server draws it
    }
    drawEnvelope();
  }

  function svgEl(name, attrs, parent) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (parent) parent.append(el);
    return el;
  }

  function envGeometry() {
    const width = Math.max(200, Math.round(envelopeSvg.getBoundingClientRect().width) || 800);
    const T = segmentSeconds();
    const M = envTop() * 1.05 || 1;
    return {
      width, T, M,
      x: (t) => ENV_PAD + (width - 2 * ENV_PAD) * (t / T),
      y: (m) => ENV_H - ENV_PAD - (ENV_H - 2 * ENV_PAD) * (m / M),
      t: (x) => Math.min(T, Math.max(0, ((x - ENV_PAD) / (width - 2 * ENV_PAD)) * T)),
      m: (y) => Math.min(M, Math.max(0, ((ENV_H - ENV_PAD - y) / (ENV_H - 2 * ENV_PAD)) * M)),
    };
  }

  function drawEnvelope() {
    if (envelopeEditor.hidden) return;
    const g = envGeometry();
    envelopeSvg.setAttribute("viewBox", `0 0 ${g.width} ${ENV_H}`);
    const hadFocus = envelopeSvg.contains(document.activeElement);
    envelopeSvg.replaceChildren();
    // the waveform of this audio, when the server has drawn it already
    const original = shown && shown.outputs && shown.outputs.original;
    if (original && original.peaksData && source) {
      const pk = original.peaksData;
      const mid = ENV_H / 2;
      let d = "";
      for (let i = 0; i < pk.bins; i++) {
        const x = g.x((pk.duration * (i + 0.5)) / pk.bins);
        if (x > g.width) break;
        d += `M${x.toFixed(1)} ${(mid - pk.max[i] * (mid - ENV_PAD)).toFixed(1)}V${(mid - pk.min[i] * (mid - ENV_PAD)).toFixed(1)}`;
      }
      svgEl("path", { d, class: "env-wave" }, envelopeSvg);
    }
    svgEl("rect", { x: 0, y: 0, width: g.width, height: ENV_H, class: "env-bg" }, envelopeSvg);
    svgEl("text", { x: ENV_PAD + 2, y: ENV_PAD + 10, class: "env-label" }, envelopeSvg).textContent =
      `${fmtMag(g.M)} ${selectedAction()}`;
    svgEl("text", { x: g.width - ENV_PAD - 2, y: ENV_H - ENV_PAD - 4, class: "env-label end" }, envelopeSvg).textContent =
      `${g.T.toFixed(1)} s`;
    if (envPoints.length) {
      const pts = envPoints.map(([t, m]) => `${g.x(t).toFixed(1)},${g.y(m).toFixed(1)}`);
      pts.push(`${g.width - ENV_PAD},${g.y(envPoints[envPoints.length - 1][1]).toFixed(1)}`);  // held after the last
      svgEl("polyline", { points: pts.join(" "), class: "env-line" }, envelopeSvg);
    }
    envPoints.forEach(([t, m], i) => {
      const c = svgEl("circle", {
        cx: g.x(t), cy: g.y(m), r: 7, class: "env-point", tabindex: 0, role: "button", "data-index": i,
        "aria-label": `Point ${i + 1}: ${t.toFixed(2)} s, magnitude ${fmtMag(m)}`,
      }, envelopeSvg);
      if (i === envFocus) c.classList.add("focused");
    });
    if (envFocus >= 0) {
      const el = envelopeSvg.querySelector(`circle[data-index="${envFocus}"]`);
      if (el && hadFocus) el.focus();
    }
  }

  function envAt(t) {
    const pts = envPoints;
    if (t <= pts[0][0]) return pts[0][1];
    for (let k = 1; k < pts.length; k++) {
      if (t <= pts[k][0]) return pts[k - 1][1] + ((pts[k][1] - pts[k - 1][1]) * (t - pts[k - 1][0])) / (pts[k][0] - pts[k - 1][0]);
    }
    return pts[pts.length - 1][1];
  }

  function setPoint(i, t, m) {
    const lo = i > 0 ? envPoints[i - 1][0] + 0.01 : 0;
    const hi = i < envPoints.length - 1 ? envPoints[i + 1][0] - 0.01 : segmentSeconds();
    envPoints[i] = [Math.min(hi, Math.max(lo, t)), Math.max(0, m)];
  }

  function addPoint(t, m) {
    const i = envPoints.findIndex((p) => p[0] > t);
    const at = i < 0 ? envPoints.length : i;
    if (envPoints.some((p) => Math.abs(p[0] - t) < 0.01)) return -1;
    envPoints.splice(at, 0, [t, m]);
    return at;
  }

  function changed(focusIndex) {
    envFocus = focusIndex;
    envelopeToText();
    drawEnvelope();
  }

  let dragging = -1;
  envelopeSvg.addEventListener("pointerdown", (event) => {
    const g = envGeometry();
    const box = envelopeSvg.getBoundingClientRect();
    const x = ((event.clientX - box.left) / box.width) * g.width;
    const y = ((event.clientY - box.top) / box.height) * ENV_H;
    const target = event.target.closest ? event.target.closest("circle.env-point") : null;
    if (target) {
      dragging = Number(target.dataset.index);
    } else {
      dragging = addPoint(g.t(x), g.m(y));
      if (dragging < 0) return;
      changed(dragging);
    }
    envelopeSvg.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  envelopeSvg.addEventListener("pointermove", (event) => {
    if (dragging < 0) return;
    const g = envGeometry();
    const box = envelopeSvg.getBoundingClientRect();
    setPoint(dragging, g.t(((event.clientX - box.left) / box.width) * g.width),
      g.m(((event.clientY - box.top) / box.height) * ENV_H));
    changed(dragging);
  });
  ["pointerup", "pointercancel"].forEach((type) => envelopeSvg.addEventListener(type, () => { dragging = -1; }));
  envelopeSvg.addEventListener("dblclick", (event) => {
    const target = event.target.closest ? event.target.closest("circle.env-point") : null;
    if (!target) return;
    envPoints.splice(Number(target.dataset.index), 1);
    changed(-1);
  });
  envelopeSvg.addEventListener("keydown", (event) => {
    const target = event.target.closest ? event.target.closest("circle.env-point") : null;
    const g = envGeometry();
    if (event.key === "a" || event.key === "A" || event.key === "Insert") {
      // a new point in the middle of the widest gap, on the line (the shape does not change until it moves)
      const times = [0, ...envPoints.map((p) => p[0]), g.T];
      let best = 0;
      for (let k = 1; k < times.length - 1; k++) if (times[k + 1] - times[k] > times[best + 1] - times[best]) best = k;
      const t = envPoints.length ? (times[best] + times[best + 1]) / 2 : 0;
      const i = addPoint(t, envPoints.length ? envAt(t) : Number(magnitude.value) || 0);
      if (i >= 0) changed(i);
      event.preventDefault();
      return;
    }
    if (!target) return;
    const i = Number(target.dataset.index);
    const big = event.shiftKey ? 10 : 1;
    const [t, m] = envPoints[i];
    const dt = (g.T / 100) * big;
    const dm = (g.M / 50) * big;
    let handled = true;
    if (event.key === "ArrowLeft") setPoint(i, t - dt, m);
    else if (event.key === "ArrowRight") setPoint(i, t + dt, m);
    else if (event.key === "ArrowUp") setPoint(i, t, m + dm);
    else if (event.key === "ArrowDown") setPoint(i, t, m - dm);
    else if (event.key === "Delete" || event.key === "Backspace") {
      envPoints.splice(i, 1);
      changed(Math.min(i, envPoints.length - 1));
      event.preventDefault();
      return;
    } else handled = false;
    if (handled) {
      event.preventDefault();
      event.stopPropagation();
      changed(i);
    }
  });
  envelopeSvg.addEventListener("focusin", (event) => {
    const target = event.target.closest ? event.target.closest("circle.env-point") : null;
    envFocus = target ? Number(target.dataset.index) : envFocus;
  });
  envelopeSvg.tabIndex = 0;
  envelopeText.addEventListener("input", envelopeFromText);
  useEnvelope.addEventListener("change", () => {
    envelopeEditor.hidden = !useEnvelope.checked;
    if (useEnvelope.checked && !envelopeText.value.trim()) {
      envPoints = [[0, 0], [segmentSeconds(), Number(magnitude.value) || 0.05]];
      envelopeToText();
    }
    syncDisabled();
    drawEnvelope();
  });
  [durationInput, offsetInput].forEach((input) => input.addEventListener("change", drawEnvelope));
  window.addEventListener("resize", () => {
    drawEnvelope();
    transport.draw();
    if (mapShown && !mapPlot.hasAttribute("hidden")) drawMap(...mapShown);
  });

  /* ---------------------------------------------------------------- submitting */

  function fileKey(file) {
    return file ? `${file.name}|${file.size}|${file.lastModified}` : null;
  }

  /* The audio the server has already (an earlier job's upload) serves again unless another file is chosen. */
  function usableSource() {
    if (!source || modelFile.files.length > 0) return null;
    const file = fileInput.files[0];
    if (file && fileKey(file) !== source.fileKey) return null;
    return source;
  }

  function checkForm() {
    const file = fileInput.files[0];
    if (!file && !usableSource()) return ["Choose an audio file first.", fileInput];
    if (file && file.size > cfg.maxUploadBytes) {
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
    if (useEnvelope.checked && !envelopeText.value.trim()) return ["Draw or type an envelope, or untick it.", envelopeText];
    if (!useEnvelope.checked && !titrate.checked) {
      const m = Number(magnitude.value);
      if (magnitude.value === "" || !Number.isFinite(m) || m < Number(magnitude.min) || m > Number(magnitude.max)) {
        return [`The magnitude must be a number from ${magnitude.min} to ${magnitude.max}.`, magnitude];
      }
    }
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

  function upload(url, data, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.responseType = "text";
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
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

  function refusal(answer) {
    let message = sentence(answer.body.error || `The server answered ${answer.status}`);
    if (answer.status === 503 && answer.retryAfter) message += ` (Try again in ${answer.retryAfter} s.)`;
    return message;
  }

  function jobPage(id) {
    return cfg.jobPageUrl.replace("JOBID", encodeURIComponent(id));
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
    const reuse = usableSource();
    const file = fileInput.files[0];
    if (reuse) {
      data.delete("audio");
      data.set("source", reuse.id);
    }
    setBusy(true);
    results.hidden = true;
    showStatus(reuse ? "Sending the settings (the server has your audio already)…" : "Uploading…", null);
    const progress = (f) => showStatus(`Uploading: ${Math.round(100 * f)} %`, f);
    let answer;
    try {
      answer = await upload(cfg.jobsUrl, data, progress);
      if (reuse && answer.status === 400 && file && /source/.test(answer.body.error || "")) {
        data.delete("source");  // the earlier job has expired: send the file again
        data.set("audio", file, file.name);
        source = null;
        answer = await upload(cfg.jobsUrl, data, progress);
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
  });

  window.addEventListener("popstate", () => location.reload());

  /* ---------------------------------------------------------------- following a job */

  function follow(url, key) {
    if (pollTimer) clearTimeout(pollTimer);
    setBusy(true);
    showStatus("Waiting for the server…", 0);
    poll(url, 0, key);
  }

  /* ``GET`` a job until it is done; ``onUpdate(view)`` sees each state. Resolves with the final view. */
  async function watch(url, onUpdate) {
    let failures = 0;
    for (;;) {
      let response, body;
      try {
        response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
        body = await readJson(response);
      } catch (e) {
        if (++failures > 30) throw new Error("The server has not answered for a minute. Reload the page to look again.");
        onUpdate(null);
        await new Promise((r) => setTimeout(r, cfg.pollMs * 2));
        continue;
      }
      failures = 0;
      if (!response.ok) throw new Error(sentence(body.error || `The server answered ${response.status}`));
      onUpdate(body);
      if (body.state === "done" || body.state === "failed") return body;
      await new Promise((r) => { pollTimer = setTimeout(r, cfg.pollMs); });
    }
  }

  function describeState(body) {
    if (!body) return ["The connection was lost; trying again…", null];
    if (body.state === "queued") return [body.position ? `Waiting in the queue: position ${body.position}.` : "Waiting in the queue.", 0];
    if (body.state === "running") {
      return [`Working: ${Math.round(100 * body.progress)} %${body.message ? ` (${body.message})` : ""}.`, body.progress];
    }
    if (body.state === "done") return ["Done.", 1];
    return ["The job failed.", 0];
  }

  async function poll(url, failures, key) {
    let view;
    try {
      view = await watch(url, (body) => showStatus(...describeState(body)));
    } catch (e) {
      statusBox.hidden = true;
      setBusy(false);
      showError(e.message);
      return;
    }
    setBusy(false);
    if (view.state !== "done") {
      showError(sentence(`The job failed: ${view.error || "no reason was given"}`));
      return;
    }
    source = { id: view.id, filename: view.filename, fileKey: key || null };
    if (!fileInput.files[0]) {
      fileInfo.textContent = `Using ${view.filename} from this job again (the server keeps it while the results last). ` +
        "Choose a file to use another.";
    }
    showResults(view);
  }

  /* Fill the form from a job's settings (a job page opened afresh). */
  function fillForm(view) {
    const req = view.request || {};
    if (req.model && cards[req.model]) modelSelect.value = req.model;
    const radio = req.action && $(`action-${req.action}`);
    if (radio) radio.checked = true;
    applyAction(true);
    const mags = Array.isArray(req.magnitudes) ? req.magnitudes : [];
    if (req.envelope && req.envelope.length) {
      useEnvelope.checked = true;
      envelopeEditor.hidden = false;
      envelopeText.value = req.envelope.map((p) => `${p[0]}:${p[1]}`).join(",");
      envelopeFromText();
    } else if (mags.length > 1) {
      titrate.checked = true;
    } else if (mags.length === 1) {
      magnitude.value = String(mags[0]);
    }
    if (req.seed !== undefined && req.seed !== null) $("seed").value = String(req.seed);
    if (req.offset) offsetInput.value = String(req.offset);
    if (req.duration) durationInput.value = String(req.duration);
    $("save_model").checked = Boolean(req.save_model);
    syncDisabled();
    sliderFromMagnitude();
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

  /* ---------------------------------------------------------------- the transport */

  /* One playhead over every version of a job. With Web Audio, every version's buffer plays at once from
     the same start time, each through its own gain; picking a version moves the gains (a 3 ms crossfade),
     so the playhead never moves and nothing is silent in between. Without Web Audio (or if decoding
     fails), the <audio> elements are swapped at the same currentTime. Levels are as produced. */
  const transport = (() => {
    const box = $("transport");
    const versionsBox = $("versions");
    const playButton = $("play");
    const clock = $("clock");
    const stateText = $("transport-state");
    const seek = $("seek");
    const wave = $("waveform");
    let ctx = null;
    let versions = [];
    let current = 0;
    let playing = false;
    let startAt = 0;      // ctx time at which the sources play from startOffset
    let startOffset = 0;
    let pausedAt = 0;
    let duration = 0;
    let sources = [];
    let fallback = false;
    let ready = false;
    let generation = 0;
    let frame = null;

    function audioContext() {
      if (ctx) return ctx;
      const Ctor = window.AudioContext || window.webkitAudioContext;
      if (!Ctor) return null;
      try {
        ctx = new Ctor({ sampleRate: 22050, latencyHint: "interactive" });
      } catch (e) {
        try { ctx = new Ctor(); } catch (e2) { ctx = null; }
      }
      return ctx;
    }

    function position() {
      if (!playing) return pausedAt;
      if (fallback) return versions[current].el.currentTime;
      return Math.min(duration, Math.max(startOffset, startOffset + ctx.currentTime - startAt));
    }

    function fmt(t) {
      const m = Math.floor(t / 60);
      return `${m}:${(t - 60 * m).toFixed(1).padStart(4, "0")}`;
    }

    function stopSources() {
      for (const src of sources) {
        try { src.onended = null; src.stop(); } catch (e) { /* not started */ }
        src.disconnect();
      }
      sources = [];
    }

    function startSources(offset) {
      stopSources();
      const when = ctx.currentTime + 0.02;
      versions.forEach((v) => {
        if (!v.buffer || offset >= v.buffer.duration) return;
        const src = ctx.createBufferSource();
        src.buffer = v.buffer;
        src.connect(v.gain);
        src.start(when, offset);
        sources.push(src);
      });
      startAt = when;
      startOffset = offset;
    }

    async function play() {
      if (!ready || playing) return;
      let from = pausedAt >= duration - 0.01 ? 0 : pausedAt;
      if (fallback) {
        const el = versions[current].el;
        el.currentTime = from;
        playing = true;
        try { await el.play(); } catch (e) { playing = false; stateText.textContent = "The browser refused to play."; }
      } else {
        if (ctx.state !== "running") await ctx.resume();
        startSources(from);
        playing = true;
      }
      update();
    }

    function pause() {
      if (!playing) return;
      pausedAt = position();
      playing = false;
      if (fallback) versions.forEach((v) => v.el.pause());
      else stopSources();
      update();
    }

    function toggle() { if (playing) pause(); else play(); }

    function seekTo(t) {
      const to = Math.max(0, Math.min(duration, t));
      if (!playing) {
        pausedAt = to;
      } else if (fallback) {
        versions[current].el.currentTime = to;
      } else {
        startSources(to);
      }
      update();
    }

    function select(i) {
      if (i < 0 || i >= versions.length || i === current) {
        update();
        return;
      }
      const before = current;
      current = i;
      if (fallback) {
        const old = versions[before].el;
        const el = versions[i].el;
        el.currentTime = playing ? old.currentTime : pausedAt;
        if (playing) {
          el.play().catch(() => {});
          old.pause();
        }
      } else if (ctx && ready) {  // before the buffers are ready, load() sets the gains
        const t = ctx.currentTime;
        versions.forEach((v, k) => {
          if (!v.gain) return;
          v.gain.gain.cancelScheduledValues(t);
          v.gain.gain.setTargetAtTime(k === i ? 1 : 0, t, 0.003);
        });
      }
      drawWave();
      update();
    }

    function update() {
      const t = position();
      if (playing && t >= duration - 0.005 && duration > 0) {
        pause();
        pausedAt = duration;
      }
      playButton.textContent = playing ? "Pause" : "Play";
      playButton.setAttribute("aria-pressed", playing ? "true" : "false");
      clock.textContent = `${fmt(t)} / ${fmt(duration)}`;
      seek.setAttribute("aria-valuemax", duration.toFixed(3));
      seek.setAttribute("aria-valuenow", t.toFixed(3));
      seek.setAttribute("aria-valuetext", `${t.toFixed(1)} s of ${duration.toFixed(1)} s`);
      const head = wave.querySelector(".playhead");
      if (head && duration > 0) {
        const x = (800 * t) / duration;
        head.setAttribute("x1", x.toFixed(2));
        head.setAttribute("x2", x.toFixed(2));
      }
      versionsBox.querySelectorAll("button").forEach((b, k) => b.setAttribute("aria-checked", k === current ? "true" : "false"));
      box.dataset.current = String(current);
      box.dataset.playing = playing ? "1" : "0";
      if (playing && !frame) frame = requestAnimationFrame(tick);
    }

    function tick() {
      frame = null;
      update();
    }

    function drawWave() {
      wave.replaceChildren();
      const v = versions[current];
      const pk = v && v.peaks;
      if (pk && pk.bins > 0 && duration > 0) {
        let d = "";
        for (let i = 0; i < pk.bins; i++) {
          const x = (800 * pk.duration * (i + 0.5)) / pk.bins / duration;
          d += `M${x.toFixed(1)} ${(50 - 48 * pk.max[i]).toFixed(1)}V${(50 - 48 * pk.min[i] + 0.5).toFixed(1)}`;
        }
        svgEl("path", { d, class: "wave", "vector-effect": "non-scaling-stroke" }, wave);
      }
      svgEl("line", { x1: 0, x2: 0, y1: 0, y2: 100, class: "playhead", "vector-effect": "non-scaling-stroke" }, wave);
      update();
    }

    function button(v, k) {
      const b = document.createElement("button");
      b.type = "button";
      b.setAttribute("role", "radio");
      b.setAttribute("aria-keyshortcuts", k < 9 ? String(k + 1) : "");
      b.textContent = k < 9 ? `${k + 1} · ${v.label}` : v.label;
      b.title = v.help || "";
      b.addEventListener("click", () => select(k));
      versionsBox.append(b);
    }

    async function prepare(v, gen) {
      const peaks = v.peaksUrl ? fetch(v.peaksUrl).then((r) => (r.ok ? r.json() : null)).catch(() => null) : null;
      if (!fallback) {
        const response = await fetch(v.url);
        if (!response.ok) throw new Error(`${v.label}: ${response.status}`);
        const bytes = await response.arrayBuffer();
        if (gen !== generation) return;
        v.buffer = await ctx.decodeAudioData(bytes);
        v.gain = ctx.createGain();
        v.gain.gain.value = 0;
        v.gain.connect(ctx.destination);
      }
      v.peaks = await peaks;
      if (v.onPeaks && v.peaks) v.onPeaks(v.peaks);
    }

    function useElements() {
      fallback = true;
      stopSources();
      versions.forEach((v) => {
        if (!v.el) {
          v.el = new Audio();
          v.el.preload = "auto";
          v.el.src = v.url;
        }
      });
    }

    async function load(list, keep) {
      const gen = ++generation;
      pause();
      stopSources();
      versions.forEach((v) => { if (v.gain) v.gain.disconnect(); });
      versions = list.map((v) => ({ ...v }));
      current = keep !== undefined && keep < versions.length ? keep : Math.min(2, versions.length - 1);
      pausedAt = 0;
      duration = 0;
      ready = false;
      fallback = !audioContext();
      versionsBox.replaceChildren();
      versions.forEach(button);
      box.hidden = versions.length === 0;
      playButton.disabled = true;
      stateText.textContent = "Loading the audio…";
      drawWave();
      if (fallback) useElements();
      try {
        await Promise.all(versions.map((v) => prepare(v, gen)));
      } catch (e) {
        if (gen !== generation) return;
        useElements();  // decode failed: the elements can still play it
        await Promise.all(versions.map((v) => prepare(v, gen).catch(() => {})));
      }
      if (gen !== generation) return;
      duration = Math.max(...versions.map((v) => (v.buffer ? v.buffer.duration : v.peaks ? v.peaks.duration : 0)));
      if (!fallback) versions.forEach((v, k) => { v.gain.gain.value = k === current ? 1 : 0; });
      ready = true;
      playButton.disabled = false;
      stateText.textContent = fallback ? "Without Web Audio: switching may skip a moment." : "";
      box.dataset.ready = "1";
      box.dataset.engine = fallback ? "elements" : "webaudio";
      drawWave();
    }

    /* One more version (a map cell's render): it joins the others at the same playhead. */
    async function add(v) {
      const gen = generation;
      const item = { ...v };
      const wasPlaying = playing;
      const at = position();
      pause();
      versions.push(item);
      button(item, versions.length - 1);
      if (fallback) useElements();
      await prepare(item, gen).catch(() => { useElements(); });
      if (gen !== generation) return -1;
      if (!fallback) item.gain.gain.value = 0;
      pausedAt = at;
      if (wasPlaying) await play();
      return versions.length - 1;
    }

    playButton.addEventListener("click", toggle);
    seek.addEventListener("pointerdown", (event) => {
      const r = seek.getBoundingClientRect();
      seekTo(((event.clientX - r.left) / r.width) * duration);
    });
    seek.addEventListener("keydown", (event) => {
      if (event.key === "Home") seekTo(0);
      else if (event.key === "End") seekTo(duration);
      else return;
      event.preventDefault();
    });

    // Keys anywhere on the page except where typing or another control needs them.
    document.addEventListener("keydown", (event) => {
      if (box.hidden || event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
      const t = event.target;
      if (t.closest && (t.closest("input, textarea, select, [contenteditable]") || t.closest("#envelope-svg"))) return;
      const onControl = t.closest && t.closest("button, summary, a[href], [role=button]");
      if (event.key === " " && !onControl) {
        toggle();
      } else if (/^[1-9]$/.test(event.key)) {
        select(Number(event.key) - 1);
      } else if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
        seekTo(position() + (event.key === "ArrowRight" ? 5 : -5));
      } else {
        return;
      }
      event.preventDefault();
    });

    return {
      load, add, select, play, pause, seekTo, position, draw: drawWave,
      current: () => current, playing: () => playing, count: () => versions.length,
      engine: () => (fallback ? "elements" : "webaudio"),
      label: (i) => (versions[i] ? versions[i].label : null),
    };
  })();
  window.senseflosserTransport = transport;

  /* ---------------------------------------------------------------- dose-response */

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    const last = Math.ceil(hi / step - 1e-9) * step;  // the ticks cover every value
    for (let v = Math.floor(lo / step + 1e-9) * step; v <= last + 1e-9; v += step) ticks.push(Number(v.toFixed(10)));
    return ticks;
  }

  function drawDose(view, firstFlossed) {
    const svg = $("dose-plot");
    const section = $("dose");
    const recipe = view.recipe || {};
    const pts = view.outputs.flossed.map((f, i) => ({ i, m: Number(f.magnitude), metrics: f.metrics || {} }))
      .filter((p) => p.m > 0);
    section.hidden = pts.length < 2 || Boolean(recipe.envelope);
    svg.replaceChildren();
    if (section.hidden) return;
    const W = 640, left = 64, right = 20;
    const xs = pts.map((p) => Math.log10(p.m));
    const x0 = Math.min(...xs), x1 = Math.max(...xs);
    const pad = (x1 - x0) * 0.06 || 0.1;
    const x = (m) => left + ((Math.log10(m) - (x0 - pad)) / (x1 - x0 + 2 * pad)) * (W - left - right);
    const panels = [
      { key: "snr_db", title: "SNR against normal (dB)", top: 24, height: 100 },
      { key: "lsd_db", title: "log-spectral distance (dB)", top: 172, height: 100 },
    ];
    for (const panel of panels) {
      const values = pts.map((p) => p.metrics[panel.key]).filter((v) => typeof v === "number" && Number.isFinite(v));
      if (!values.length) continue;
      const ticks = niceTicks(Math.min(...values), Math.max(...values), 3);
      const lo = ticks[0], hi = ticks[ticks.length - 1] > ticks[0] ? ticks[ticks.length - 1] : ticks[0] + 1;
      const y = (v) => panel.top + panel.height - ((v - lo) / (hi - lo)) * panel.height;
      svgEl("text", { x: left, y: panel.top - 8, class: "plot-title" }, svg).textContent = panel.title;
      for (const t of ticks) {
        svgEl("line", { x1: left, x2: W - right, y1: y(t), y2: y(t), class: "grid" }, svg);
        svgEl("text", { x: left - 6, y: y(t) + 4, class: "tick end" }, svg).textContent = String(t);
      }
      svgEl("line", { x1: left, x2: left, y1: panel.top, y2: panel.top + panel.height, class: "axis" }, svg);
      const line = pts.filter((p) => Number.isFinite(p.metrics[panel.key]))
        .map((p) => `${x(p.m).toFixed(1)},${y(p.metrics[panel.key]).toFixed(1)}`);
      svgEl("polyline", { points: line.join(" "), class: `series ${panel.key}` }, svg);
      for (const p of pts) {
        const v = p.metrics[panel.key];
        if (typeof v !== "number" || !Number.isFinite(v)) continue;
        const snr = p.metrics.snr_db, lsd = p.metrics.lsd_db;
        const c = svgEl("circle", {
          cx: x(p.m), cy: y(v), r: 7, class: `dose-point ${panel.key}`, tabindex: panel.key === "snr_db" ? 0 : -1,
          role: "button", "data-index": p.i, "data-magnitude": p.m, "data-metric": panel.key, "data-value": v,
          "aria-label": `${recipe.action} ${p.m}: SNR ${number(snr, 1, " dB")}, log-spectral distance ${number(lsd, 1, " dB")}. Listen.`,
        }, svg);
        const pick = () => {
          transport.select(firstFlossed + p.i);
          svg.querySelectorAll(".dose-point").forEach((el) => el.classList.toggle("chosen", Number(el.dataset.index) === p.i));
        };
        c.addEventListener("click", pick);
        c.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") { event.preventDefault(); event.stopPropagation(); pick(); }
        });
      }
    }
    const bottom = panels[1].top + panels[1].height;
    svgEl("line", { x1: left, x2: W - right, y1: bottom, y2: bottom, class: "axis" }, svg);
    for (const p of pts) {
      svgEl("text", { x: x(p.m), y: bottom + 16, class: "tick middle" }, svg).textContent = String(p.m);
    }
    svgEl("text", { x: (left + W - right) / 2, y: bottom + 28, class: "plot-title middle" }, svg).textContent =
      `${recipe.action} magnitude (log scale)`;
  }

  function showResults(view) {
    const out = view.outputs;
    shown = view;
    players.replaceChildren();
    const recipe = view.recipe || {};
    resultsInfo.textContent = `${view.filename}: model ${recipe.model}, ${recipe.action}, seed ${recipe.seed}` +
      (out.seconds ? `; computed in ${out.seconds.toFixed(1)} s on ${out.device}` : "") +
      (out.normal_cached ? " (the normal output came from an earlier run on the same audio)." : ".");
    const versions = [];
    if (out.original) {
      addPlayer("Original", "Your segment as the model hears it: mono, 22050 Hz.", out.original, {});
      versions.push({ label: "Original", url: out.original.url, peaksUrl: out.original.peaks,
        onPeaks: (pk) => { out.original.peaksData = pk; drawEnvelope(); } });
    }
    addPlayer("Normal", "What the undamaged model makes of it (the clean reconstruction).", out.normal, {});
    versions.push({ label: "Normal", url: out.normal.url, peaksUrl: out.normal.peaks });
    const firstFlossed = versions.length;
    const enveloped = Array.isArray(recipe.envelope) && recipe.envelope.length;
    for (const f of out.flossed) {
      const title = enveloped ? `${recipe.action} envelope` : `${recipe.action} ${f.magnitude}`;
      addPlayer(title, enveloped ? `Damaged with ${recipe.action} following the envelope.`
        : `Damaged with ${recipe.action} at magnitude ${f.magnitude}.`, f,
        { flossed: true, model: f.model, recipe: f.recipe_url });
      versions.push({ label: title, url: f.url, peaksUrl: f.peaks });
    }
    transport.load(versions);
    drawDose(view, firstFlossed);
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
    results.focus();
  }

  /* ---------------------------------------------------------------- the sensitivity map */

  const mapButton = $("map-button");
  const mapStatus = $("map-status");
  const mapPlot = $("map-plot");
  const mapFiles = $("map-files");
  let mapGeneration = 0;
  let mapShown = null;  // the drawn map's (view, done), to lay it out again when the width changes
  const MAP_COLOURS = [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]];

  function colour(t) {
    const x = Math.max(0, Math.min(1, t)) * (MAP_COLOURS.length - 1);
    const i = Math.min(MAP_COLOURS.length - 2, Math.floor(x));
    const f = x - i;
    const c = MAP_COLOURS[i].map((v, k) => Math.round(v + (MAP_COLOURS[i + 1][k] - v) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  function resetMap(view) {
    mapGeneration++;
    mapPlot.setAttribute("hidden", "");  // an SVG element has no .hidden property
    mapPlot.replaceChildren();
    mapFiles.hidden = true;
    mapStatus.textContent = "";
    const own = Boolean(view.model_upload);
    mapButton.disabled = own;
    if (own) mapStatus.textContent = "Maps are made with the server's models only.";
  }

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

  mapButton.addEventListener("click", async () => {
    const view = shown;
    if (!view) return;
    const gen = ++mapGeneration;
    const req = view.request || {};
    const duration = req.duration && req.duration <= 30 ? req.duration : null;
    mapButton.disabled = true;
    mapStatus.textContent = "Sending…";
    let answer;
    try {
      answer = await upload(cfg.mapsUrl, jobFields(view, { duration, seed: (view.recipe || {}).seed }));
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
      });
    } catch (e) {
      if (gen === mapGeneration) mapStatus.textContent = e.message;
      mapButton.disabled = false;
      return;
    }
    if (gen !== mapGeneration) return;
    mapButton.disabled = false;
    if (done.state !== "done" || !done.map) {
      mapStatus.textContent = sentence(`The map failed: ${done.error || "no reason was given"}`);
      return;
    }
    const most = [].concat(done.map.most_sensitive || []);
    mapStatus.textContent = most.length ? `From the most sensitive layer to the least: ${most.join(", ")}.` : "Done.";
    drawMap(view, done);
  });

  function drawMap(view, done) {
    mapShown = [view, done];
    const map = done.map;
    const layers = map.layers || [];
    const mags = map.magnitudes || [];
    const action = done.action || (view.recipe || {}).action;
    const cells = [];
    layers.forEach((layer, r) => (map.cells[layer] || []).forEach((cell, c) => {
      const snr = cell && cell.snr_db ? cell.snr_db.median : null;
      if (typeof snr === "number" && Number.isFinite(snr)) cells.push(snr);
    }));
    const lo = cells.length ? Math.min(...cells) : 0;
    const hi = cells.length ? Math.max(...cells) : 1;
    // Laid out for the width it gets (the SVG scales to its box): text keeps its size on a phone.
    const avail = Math.floor(mapPlot.parentElement.getBoundingClientRect().width) || 640;
    const narrow = avail < 560;
    const left = narrow ? 92 : 130, top = narrow ? 50 : 34, cellH = 30;
    const cellW = Math.max(narrow ? 38 : 56, Math.floor((Math.min(avail, 640) - left - 20) / Math.max(1, mags.length)));
    const W = left + cellW * mags.length + 20;
    const H = top + cellH * layers.length + (narrow ? 86 : 70);
    mapPlot.setAttribute("viewBox", `0 0 ${W} ${H}`);
    mapPlot.replaceChildren();
    const title = [`SNR against normal (dB, median of ${done.seeds || 1} seed${done.seeds === 1 ? "" : "s"}):`,
      `${action} on one layer at a time`];
    (narrow ? title : [title.join(" ")]).forEach((line, k) => {
      svgEl("text", { x: narrow ? 4 : left, y: 14 + 16 * k, class: "plot-title" }, mapPlot).textContent = line;
    });
    mags.forEach((m, c) => {
      svgEl("text", { x: left + cellW * (c + 0.5), y: top - 6, class: "tick middle" }, mapPlot).textContent = String(m);
    });
    layers.forEach((layer, r) => {
      svgEl("text", { x: left - 8, y: top + cellH * (r + 0.5) + 4, class: "tick end" }, mapPlot).textContent = layer;
      (map.cells[layer] || []).forEach((cell, c) => {
        const snr = cell && cell.snr_db ? cell.snr_db.median : null;
        const ok = typeof snr === "number" && Number.isFinite(snr);
        const t = ok && hi > lo ? (hi - snr) / (hi - lo) : 0;
        const g = svgEl("g", {
          class: "map-cell", tabindex: 0, role: "button", "data-layer": layer, "data-magnitude": mags[c],
          "aria-label": `${layer}, ${action} ${mags[c]}: SNR ${ok ? snr.toFixed(1) : "–"} dB ` +
            `(${number(cell.snr_db && cell.snr_db.min, 1, "")} to ${number(cell.snr_db && cell.snr_db.max, 1, " dB")}), ` +
            `log-spectral distance ${number(cell.lsd_db && cell.lsd_db.median, 1, " dB")}. Listen to it on your clip.`,
        }, mapPlot);
        svgEl("rect", { x: left + cellW * c + 1, y: top + cellH * r + 1, width: cellW - 2, height: cellH - 2,
          fill: ok ? colour(t) : "#888" }, g);
        svgEl("text", { x: left + cellW * (c + 0.5), y: top + cellH * (r + 0.5) + 4,
          class: `cell-value middle${t > 0.6 ? " dark" : ""}` }, g).textContent = ok ? snr.toFixed(0) : "–";
        const pick = () => renderCell(view, layer, mags[c], g);
        g.addEventListener("click", pick);
        g.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") { event.preventDefault(); event.stopPropagation(); pick(); }
        });
      });
    });
    // the colour legend, in dB
    const ly = top + cellH * layers.length + 24;
    const defs = svgEl("defs", {}, mapPlot);
    const grad = svgEl("linearGradient", { id: "map-legend", x1: 0, x2: 1, y1: 0, y2: 0 }, defs);
    for (let k = 0; k <= 10; k++) {
      svgEl("stop", { offset: k / 10, "stop-color": colour(1 - k / 10) }, grad);
    }
    const lw = Math.min(300, W - left - 20);
    svgEl("rect", { x: left, y: ly, width: lw, height: 12, fill: "url(#map-legend)", class: "legend" }, mapPlot);
    niceTicks(lo, hi, 4).filter((v) => v >= lo - 1e-9 && v <= hi + 1e-9).forEach((v) => {
      const x = left + (hi > lo ? ((v - lo) / (hi - lo)) * lw : 0);
      svgEl("line", { x1: x, x2: x, y1: ly + 12, y2: ly + 16, class: "axis" }, mapPlot);
      svgEl("text", { x, y: ly + 28, class: "tick middle legend-tick" }, mapPlot).textContent = String(v);
    });
    svgEl("text", { x: left - 8, y: ly + 10, class: "tick end" }, mapPlot).textContent = "SNR, dB";
    svgEl("text", narrow ? { x: left, y: ly + 46, class: "tick" } : { x: left + lw + 6, y: ly + 10, class: "tick" },
      mapPlot).textContent = "(low = sensitive)";
    mapPlot.removeAttribute("hidden");
    mapFiles.replaceChildren();
    const names = { png: "Heat map (PNG)", json: "Map (JSON)", csv: "Map (CSV)" };
    for (const [kind, url] of Object.entries(done.files || {})) {
      if (!url) continue;
      const a = document.createElement("a");
      a.href = url;
      a.download = "";
      a.textContent = names[kind] || kind;
      mapFiles.append(a);
    }
    mapFiles.hidden = mapFiles.childElementCount === 0;
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
      answer = await upload(cfg.jobsUrl, jobFields(view, {
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
      });
    } catch (e) {
      done = { state: "failed", error: e.message };
    }
    cell.classList.remove("pending");
    if (done.state !== "done" || shown !== view) {
      if (done.state !== "done") mapStatus.textContent = sentence(`${label} failed: ${done.error || "no reason was given"}`);
      return;
    }
    const f = done.outputs.flossed[0];
    const i = await transport.add({ label, url: f.url, peaksUrl: f.peaks,
      help: `Only ${layer} damaged, ${action} ${m}: SNR ${number(f.metrics && f.metrics.snr_db, 1, " dB")}.` });
    mapStatus.textContent = `${label}: SNR ${number(f.metrics && f.metrics.snr_db, 1, " dB")} against normal; playing it.`;
    if (i >= 0) {
      transport.select(i);
      transport.play();
    }
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

  async function start() {
    applyAction(true);
    syncDisabled();
    await loadModels();
    applyAction(true);
    const legacy = /^#job=([A-Za-z0-9_-]{22})$/.exec(location.hash);
    const id = cfg.jobId || (legacy && legacy[1]);
    if (!id) return;
    const url = `${cfg.jobsUrl}/${id}`;
    if (cfg.jobId) {
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
        if (response.ok) fillForm(await response.json());
      } catch (e) { /* follow() reports it */ }
    }
    follow(url, null);
  }
  start();
})();
