/* One playhead over every version of a job. With Web Audio, every version's buffer plays at once from
   the same start time on one AudioContext clock, each through its own gain; picking a version moves the
   gains (a 3 ms crossfade), so the playhead never moves and nothing is silent in between. Without Web
   Audio (or if decoding fails), the <audio> elements are swapped at the same currentTime. Levels are as
   produced. */

import { $, svgEl } from "./util.js";

/** The transport of the page's #transport section; ``sampleRate``: the rate the outputs are written at. */
export function createTransport({ sampleRate }) {
  const box = $("transport");
  const versionsBox = $("versions");
  const playButton = $("play");
  const clock = $("clock");
  const stateText = $("transport-state");
  const seek = $("seek");
  const wave = $("waveform");
  const waveWidth = wave.viewBox.baseVal.width;  // the template's viewBox: the playhead is drawn in its units
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
  const startListeners = [];  // told (ctx time, audio offset) whenever the sources start (live mode schedules on it)
  const selectListeners = [];

  function audioContext() {
    if (ctx) return ctx;
    const Ctor = window.AudioContext || window.webkitAudioContext;
    if (!Ctor) return null;
    try {
      ctx = new Ctor({ sampleRate, latencyHint: "interactive" });
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
    startListeners.forEach((fn) => fn(when, offset));
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
    selectListeners.forEach((fn) => fn(i));
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
      const x = (waveWidth * t) / duration;
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
        const x = (waveWidth * pk.duration * (i + 0.5)) / pk.bins / duration;
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

  /* A version's peaks (``null`` when it has none or they cannot be read: the waveform is drawn without them). */
  const fetchPeaks = (url) => (url ? fetch(url).then((r) => (r.ok ? r.json() : null)).catch(() => null) : null);

  async function prepare(v, gen) {
    const peaks = fetchPeaks(v.peaksUrl);
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

  let lastLoad = Promise.resolve();

  /* Load a new set of versions (the playhead back at 0); resolves once they can play. */
  function load(list, keep) {
    lastLoad = loadNow(list, keep);
    return lastLoad;
  }

  /* The same versions with what came later (peaks, activation frames): nothing is fetched or decoded
     again, and whatever is playing goes on. Another list is loaded afresh. */
  async function complete(list) {
    await lastLoad;
    const same = list.length === versions.length && list.every((v, k) => v.url === versions[k].url);
    if (!same) return load(list, current);
    delete box.dataset.ready;  // "1" again once what came later (the peaks) is here, as after load()
    await Promise.all(list.map(async (v, k) => {
      const have = Object.assign(versions[k], v);
      if (!have.peaksUrl || have.peaks) return;
      have.peaks = await fetchPeaks(have.peaksUrl);
      if (have.onPeaks && have.peaks) have.onPeaks(have.peaks);
    }));
    drawWave();
    box.dataset.ready = "1";
    return undefined;
  }

  async function loadNow(list, keep) {
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
    load, complete, add, select, play, pause, seekTo, position, draw: drawWave,
    // Starting an AudioContext costs tens of milliseconds: done while a job runs, not when its audio arrives
    // (before a user gesture it starts suspended; play() resumes it).
    warm: () => { audioContext(); },
    current: () => current, playing: () => playing, count: () => versions.length,
    engine: () => (fallback ? "elements" : "webaudio"),
    label: (i) => (versions[i] ? versions[i].label : null),
    sampleRate: () => (ctx ? ctx.sampleRate : sampleRate),
    context: () => (fallback ? null : ctx),
    gainNode: (i) => (versions[i] && versions[i].gain) || null,
    onStart: (fn) => startListeners.push(fn),
    onSelect: (fn) => selectListeners.push(fn),
  };
}
