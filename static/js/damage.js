/* The damage control: the action's radio buttons, a slider over "damage" (0..1) and the exact magnitude.
   Each action's range, default and titration come from the action registry (data-* of its radio). */

import { drawEnvelope } from "./envelope.js";
import { selectedAction, selectedActionRadio, state } from "./state.js";
import { $, fmtMag } from "./util.js";

const magnitude = $("magnitude");
const magnitudeValue = $("magnitude-value");
const damage = $("damage");
const damageValue = $("damage-value");
const magnitudeHint = $("magnitude-hint");
const titrate = $("titrate");
const titrationText = $("titration");
const titrationCount = $("titration-count");
const useEnvelope = $("use-envelope");

const lerpLog = (a, b, t) => Math.exp(Math.log(a) + (Math.log(b) - Math.log(a)) * t);

/* The slider's mapping to the action's raw magnitude and back. Calibrated: the model card's magnitudes
   at set SNR levels against normal, evenly spaced in dB, so equal steps sound like equal steps.
   Otherwise: logarithmic over the action's useful range. */
export function makeScale(radio, card) {
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
  if (anchors.length < 2) {
    return {
      calibrated: false,
      toMag: (p) => lerpLog(lowest, highest, p),
      toPos: (m) => (m > lowest ? Math.min(1, Math.log(m / lowest) / Math.log(highest / lowest)) : 0),
      top: highest,
    };
  }
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

function showMagnitude() {
  const m = Number(magnitude.value);
  magnitudeValue.textContent = String(m);
  const action = selectedAction();
  const p = Number(damage.value) / Number(damage.max);
  const scale = state.scale;
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

/** Move the slider to the typed magnitude. */
export function sliderFromMagnitude() {
  const m = Number(magnitude.value);
  if (state.scale && Number.isFinite(m)) damage.value = String(Math.round(state.scale.toPos(m) * Number(damage.max)));
  showMagnitude();
}

/** Set up the control for the chosen action and model; ``keepValue`` keeps a magnitude in range. */
export function applyAction(keepValue) {
  const radio = selectedActionRadio();
  if (!radio) return;
  const d = radio.dataset;
  const titration = d.titration.split(",").map(Number);
  const modelSelect = $("model");
  state.scale = makeScale(radio, state.cards[modelSelect.value]);
  const old = Number(magnitude.value);
  magnitude.min = d.min;
  magnitude.max = d.max;
  if (!keepValue || !(old >= Number(d.min) && old <= Number(d.max))) magnitude.value = d.default;
  titrationText.textContent = d.titration;
  titrationCount.textContent = String(titration.length);
  magnitudeHint.textContent = `${radio.value}: magnitude = ${d.meaning}. Most of its audible range lies ` +
    `between ${titration[0]} and ${titration[titration.length - 1]}.` +
    (state.scale.calibrated ? " The slider is calibrated on this model: equal steps, equal loss in dB against normal."
      : " This model's card has no calibration: the slider is logarithmic.");
  showParams(radio.value);
  sliderFromMagnitude();
  drawEnvelope();
}

/** Only the chosen action's declared parameters are shown and sent (a disabled field is not sent). */
function showParams(action) {
  document.querySelectorAll(".action-params").forEach((group) => {
    const mine = group.dataset.action === action;
    group.hidden = !mine;
    group.querySelectorAll("input, select").forEach((input) => { input.disabled = !mine; });
  });
}

/** Titrating or an envelope leaves no single magnitude to set. */
export function syncDisabled() {
  const env = useEnvelope.checked;
  titrate.disabled = env;
  magnitude.disabled = titrate.checked || env;
  damage.disabled = titrate.checked || env;
}

export function setupDamage() {
  damage.addEventListener("input", () => {
    const m = state.scale.toMag(Number(damage.value) / Number(damage.max));
    magnitude.value = String(Number(m.toPrecision(3)));
    showMagnitude();
    drawEnvelope();
  });
  magnitude.addEventListener("input", sliderFromMagnitude);
  titrate.addEventListener("change", syncDisabled);
}
