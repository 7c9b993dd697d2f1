/* The crossfade rule of a ladder, and the gain automation that plays a knob path exactly. A path is a list of
   [seconds, position] points (linear between them, held outside); at position p the rung floor(p) plays at
   1 - f and the next at f (f = p - floor(p)): equal gain, since rungs of one seed are strongly correlated.
   Each rung's gain is then linear in time between the path's points and the instants where it crosses a
   rung, so Web Audio's linear ramps through those breakpoints play the same mix the server renders. */

/** The gain of rung ``k`` at position ``p`` (``count`` rungs). */
export function rungGain(k, p, count) {
  const i = Math.min(Math.floor(p), count - 2);
  const f = p - i;
  if (k === i) return 1 - f;
  if (k === i + 1) return f;
  return 0;
}

/** The path's position at time ``t`` (linear between points, held outside); ``fallback`` for an empty path. */
export function positionAt(points, t, fallback = 0) {
  if (!points.length) return fallback;
  if (t <= points[0][0]) return points[0][1];
  const last = points[points.length - 1];
  if (t >= last[0]) return last[1];
  let lo = 0;
  let hi = points.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] <= t) lo = mid; else hi = mid;
  }
  const [t0, p0] = points[lo];
  const [t1, p1] = points[hi];
  return p0 + ((p1 - p0) * (t - t0)) / (t1 - t0);
}

/** The breakpoints of the path from ``from`` on: its points and every rung crossing, as [t, p]. */
export function breakpoints(points, from) {
  const out = [[from, positionAt(points, from)]];
  for (let j = 0; j + 1 < points.length; j++) {
    const [t0, p0] = points[j];
    const [t1, p1] = points[j + 1];
    if (t1 <= from) continue;
    const lo = Math.min(p0, p1);
    const hi = Math.max(p0, p1);
    const crossings = [];
    for (let k = Math.floor(lo) + 1; k < hi; k++) crossings.push(t0 + ((t1 - t0) * (k - p0)) / (p1 - p0));
    crossings.sort((a, b) => a - b);
    for (const t of crossings) if (t > from) out.push([t, positionAt(points, t)]);
    out.push([t1, p1]);
  }
  return out;
}

/** Each rung's gain events ([t, gain], the first a set, the others linear ramps), zeros merged. */
export function gainEvents(points, from, count) {
  const bps = breakpoints(points, from);
  const events = [];
  for (let k = 0; k < count; k++) {
    const list = [];
    bps.forEach(([t, p], n) => {
      const g = rungGain(k, p, count);
      const prev = list.length ? list[list.length - 1][1] : null;
      const next = n + 1 < bps.length ? rungGain(k, bps[n + 1][1], count) : null;
      if (n > 0 && g === prev && (next === null || next === g)) return;  // a flat stretch needs no event
      list.push([t, g]);
    });
    events.push(list);
  }
  return events;
}

/** A knob move at ``t`` to ``p`` over ``ramp`` seconds: the path from ``t`` on is replaced (points, in place). */
export function moveTo(points, t, p, ramp, fallback) {
  const from = positionAt(points, t, fallback);
  while (points.length && points[points.length - 1][0] >= t) points.pop();
  points.push([t, from], [t + ramp, p]);
  return from;
}

/** The recipe JSON's record of a performance (the server's ``ladder-crossfade`` envelope). */
export function performanceRecord(points, rungs, rule, continuous) {
  return { kind: "ladder-crossfade", rule, rungs: rungs.slice(), points: points.map((p) => p.slice()), continuous };
}

/** The points of a recipe's performance record, checked against this ladder's rungs; a sentence when unfit. */
export function readPerformance(record, rungs) {
  if (!record || record.kind !== "ladder-crossfade" || !Array.isArray(record.points)) {
    return { error: "This file holds no performance (an envelope of kind ladder-crossfade)." };
  }
  if (!Array.isArray(record.rungs) || record.rungs.length !== rungs.length || record.rungs.some((m, i) => m !== rungs[i])) {
    return { error: "This performance was recorded on other rungs (another action, model or ladder)." };
  }
  const points = record.points.map((p) => [Number(p[0]), Number(p[1])]);
  const bad = points.findIndex((p, i) => !p.every(Number.isFinite) || p[1] < 0 || p[1] > rungs.length - 1
    || (i > 0 && p[0] <= points[i - 1][0]));
  if (bad >= 0) return { error: `Point ${bad + 1} of the performance is out of order or outside the rungs.` };
  return { points };
}

/** The ``t:p,...`` text of a path (every number as JavaScript prints it, which the server reads exactly). */
export function pathText(points) {
  return points.map(([t, p]) => `${t}:${p}`).join(",");
}

/** The magnitude at position ``p`` (linear between rungs), for showing a path as an envelope. */
export function magnitudeAt(p, rungs) {
  const i = Math.min(Math.floor(p), rungs.length - 2);
  const f = p - i;
  return (1 - f) * rungs[i] + f * rungs[i + 1];
}

/** The position of magnitude ``m`` (the inverse of magnitudeAt; rungs increase). */
export function positionOf(m, rungs) {
  if (m <= rungs[0]) return 0;
  for (let i = 0; i + 1 < rungs.length; i++) {
    if (m <= rungs[i + 1]) return i + (m - rungs[i]) / (rungs[i + 1] - rungs[i]);
  }
  return rungs.length - 1;
}
