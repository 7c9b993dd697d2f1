/* The senses panel: the concepts the chosen model's card located (which channels of which layers follow
   brightness, bass, ...; how sure the causal check is), and deleting one: the job's layers become
   ``concept:NAME`` (the server resolves it to those channels and records them), with any action and
   magnitude, and its solo / mute / difference can be heard beside the damage. */

import { applyAction, sliderFromMagnitude } from "./damage.js";
import { $ } from "./util.js";

const box = $("senses");
const select = $("sense");
const info = $("sense-info");
const deleteButton = $("sense-delete");
const bandButton = $("sense-band");

let concepts = {};

/** The card's located concepts, by name (``{}`` for a card without a concepts section). */
function located(card) {
  const section = card && card.concepts && typeof card.concepts === "object" ? card.concepts.concepts : null;
  if (!section || typeof section !== "object") return {};
  return Object.fromEntries(Object.entries(section).filter(([, c]) => c && c.located && Array.isArray(c.selection)
    && c.selection.length));
}

function describe(name) {
  const c = concepts[name];
  if (!c) {
    info.textContent = "";
    return;
  }
  const where = c.selection.map((entry) => {
    const [layer, channels] = entry.split(":");
    return `${layer}: channels ${channels.split(",").join(", ")}`;
  }).join("; ");
  const sure = c.confirmed ? "The causal check confirmed it." : "The causal check did not confirm it";
  const band = bandOf(c);
  info.textContent = `${name} lives in ${where}. ${c.note ? `${sure}: ${c.note}` : `${sure}.`}`
    + (band && band.note ? ` Its band: ${band.note}.` : "");
}

/** A spectral concept's band mask from the card (``null`` for a concept without one). */
function bandOf(c) {
  const band = c && c.band;
  return band && typeof band.width === "number" && typeof band.place === "number" && band.layer ? band : null;
}

/** Tick only one layer's box (no channels): the band mask covers all of that layer's channels. */
function onlyLayer(name) {
  document.querySelectorAll('input[name="layers"]').forEach((box) => {
    box.checked = box.value === name;
    const pick = $(`${box.id}-channels`);
    if (pick) pick.value = "";
  });
}

/** Show the senses of a card (or hide the panel: an uploaded model, a card without concepts). */
export function showSenses(card) {
  concepts = located(card);
  const names = Object.keys(concepts);
  const before = select.value;
  select.replaceChildren(new Option("none (the layers above, or the action's default)", ""));
  names.forEach((name) => {
    select.append(new Option(`${name}${concepts[name].confirmed ? " (confirmed)" : " (not confirmed)"}`, name));
  });
  select.value = names.includes(before) ? before : "";
  box.hidden = names.length === 0;
  describe(select.value);
  deleteButton.disabled = !select.value;
  bandButton.hidden = !bandOf(concepts[select.value]);
}

/** The layer entry the chosen sense adds to a job (``[]`` when none is chosen). */
export function senseLayers() {
  return !box.hidden && select.value ? [`concept:${select.value}`] : [];
}

export function setupSenses() {
  select.addEventListener("change", () => {
    describe(select.value);
    deleteButton.disabled = !select.value;
    bandButton.hidden = !bandOf(concepts[select.value]);
  });
  // Delete its band: bandmask at the band's width and place on its layer (the concept's channels are not used).
  bandButton.addEventListener("click", () => {
    const name = select.value;
    const band = bandOf(concepts[name]);
    const radio = $("action-bandmask");
    if (!band || !radio) return;
    radio.checked = true;
    applyAction(false);
    $("magnitude").value = String(band.width);
    sliderFromMagnitude();
    const place = $("param-bandmask-place");
    if (place) place.value = String(band.place);
    onlyLayer(band.layer);
    select.value = "";
    describe("");
    deleteButton.disabled = true;
    bandButton.hidden = true;
    info.textContent = `Set: bandmask ${band.width} at place ${band.place} on ${band.layer} (${name}'s band); `
      + 'press "Floss it".';
  });
  // Delete it: silence its channels (ablate at 1) and ask for what they did alone and without them.
  deleteButton.addEventListener("click", () => {
    const ablate = $("action-ablate");
    if (ablate) {
      ablate.checked = true;
      applyAction(false);
      $("magnitude").value = "1";
      sliderFromMagnitude();
    }
    document.querySelectorAll('input[name="explain"]').forEach((b) => { b.checked = true; });
    info.textContent = `${info.textContent} Set: ablate at 1 with solo, mute and difference; press "Floss it".`;
  });
}
