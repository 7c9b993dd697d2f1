/* The page's charts, plain SVG: the dose-response plot of a titration and the sensitivity map. They
   draw and report clicks; what a click plays is the caller's business. */

import { $, number, svgEl } from "./util.js";

const MAP_COLOURS = [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]];

/** About ``count`` round tick values covering lo..hi. */
export function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  const last = Math.ceil(hi / step - 1e-9) * step;  // the ticks cover every value
  for (let v = Math.floor(lo / step + 1e-9) * step; v <= last + 1e-9; v += step) ticks.push(Number(v.toFixed(10)));
  return ticks;
}

function onActivate(el, pick) {
  el.addEventListener("click", pick);
  el.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); event.stopPropagation(); pick(); }
  });
}

/* SNR and log-spectral distance against normal over the magnitude (log), one point per flossed output;
   ``onPick(i)`` gets the index of the flossed output a point stands for. Hidden for fewer than two. */
export function drawDose(view, onPick) {
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
      onActivate(c, () => {
        onPick(p.i);
        svg.querySelectorAll(".dose-point").forEach((el) => el.classList.toggle("chosen", Number(el.dataset.index) === p.i));
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

function colour(t) {
  const x = Math.max(0, Math.min(1, t)) * (MAP_COLOURS.length - 1);
  const i = Math.min(MAP_COLOURS.length - 2, Math.floor(x));
  const f = x - i;
  const c = MAP_COLOURS[i].map((v, k) => Math.round(v + (MAP_COLOURS[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/* The sensitivity map as a heat map (layers x magnitudes, SNR against normal) with its legend and
   download links, laid out for the width it gets; ``onCell(layer, magnitude, cellElement)`` on a pick. */
export function drawMap(view, done, onCell) {
  const mapPlot = $("map-plot");
  const files = $("map-files");
  const map = done.map;
  const layers = map.layers || [];
  const mags = map.magnitudes || [];
  const action = done.action || (view.recipe || {}).action;
  const cells = [];
  layers.forEach((layer) => (map.cells[layer] || []).forEach((cell) => {
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
      onActivate(g, () => onCell(layer, mags[c], g));
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
  files.replaceChildren();
  const names = { png: "Heat map (PNG)", json: "Map (JSON)", csv: "Map (CSV)" };
  for (const [kind, url] of Object.entries(done.files || {})) {
    if (!url) continue;
    const a = document.createElement("a");
    a.href = url;
    a.download = "";
    a.textContent = names[kind] || kind;
    files.append(a);
  }
  files.hidden = files.childElementCount === 0;
}
