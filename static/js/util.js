/* Small helpers shared by the page's modules: elements, SVG, text formats, the error box. */

export const SVG_NS = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

export function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (parent) parent.append(el);
  return el;
}

/** A message as a sentence: capital first letter, a full stop at the end. */
export function sentence(text) {
  const t = String(text || "").trim();
  if (!t) return "";
  const s = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : s + ".";
}

export function formatSeconds(s) {
  const m = Math.floor(s / 60);
  const rest = s - m * 60;
  return m > 0 ? `${m} min ${rest.toFixed(1)} s` : `${rest.toFixed(1)} s`;
}

export function formatBytes(n) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(0)} kB`;
  return `${n} bytes`;
}

/** A magnitude with two significant digits ("–" when it is not a number). */
export function fmtMag(m) {
  if (!Number.isFinite(m)) return "–";
  if (m === 0) return "0";
  return String(Number(m.toPrecision(2)));
}

/** A metric with its unit, or "–" when it is missing. */
export function number(value, digits, unit) {
  return typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(digits)}${unit}` : "–";
}

export function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  box.focus();
}

export function clearError() {
  const box = $("error");
  box.textContent = "";
  box.hidden = true;
}
