/* The page as an instrument: once a job is done, the listening area (transport, versions, knob, level) is what
   fills the screen and the form folds into a one-line summary that reopens it. Keyboard and screen readers
   reach both: the summary's button says whether the form is shown (aria-expanded) and moves focus into it. */

import { $ } from "./util.js";

const main = $("main");
const form = $("floss-form");
const summary = $("form-summary");
const summaryText = $("form-summary-text");
const toggle = $("form-toggle");

function setOpen(open) {
  form.hidden = !open;
  toggle.setAttribute("aria-expanded", open ? "true" : "false");
  toggle.textContent = open ? "Hide the settings" : "Change the settings";
}

/** Fold the form under a summary of the finished job ``view``. */
export function foldForm(view) {
  const r = view.recipe || {};
  const req = view.request || {};
  const what = req.ladder ? `a ladder of ${req.ladder} rungs` : (r.magnitudes || []).join(", ");
  summaryText.textContent = `${view.filename}: ${r.model}, ${r.action} ${what}, seed ${r.seed}.`;
  summary.hidden = false;
  main.classList.add("instrument");
  setOpen(false);
}

/** Show the form again (and keep the summary to fold it back). */
export function openForm() {
  setOpen(true);
  form.querySelector("input, select, button").focus();
}

export function setupLayout() {
  toggle.addEventListener("click", () => { if (form.hidden) openForm(); else setOpen(false); });
  document.addEventListener("senseflosser:open-form", () => setOpen(true));
}
