/* The server's rules for this page. templates/index.html renders them as data attributes of #main from
   the Python values where they are defined (app/pages.py gathers them); nothing here repeats one. */

function text(el, name) {
  const value = el.dataset[name];
  if (value === undefined || value === "") throw new Error(`the page lacks its server setting data-${kebab(name)}`);
  return value;
}

function number(el, name) {
  const value = Number(text(el, name));
  if (!Number.isFinite(value)) throw new Error(`the server setting data-${kebab(name)} is not a number`);
  return value;
}

function kebab(name) {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The page's settings from an element's data attributes (frozen). */
export function readConfig(el) {
  return Object.freeze({
    modelsUrl: text(el, "modelsUrl"),
    jobsUrl: text(el, "jobsUrl"),
    mapsUrl: text(el, "mapsUrl"),
    jobPageUrl: text(el, "jobPageUrl"),
    jobId: el.dataset.jobId || null,
    maxUploadBytes: number(el, "maxUploadBytes"),
    maxModelBytes: number(el, "maxModelBytes"),
    maxDuration: number(el, "maxDuration"),        // longest segment a job processes (s)
    minDuration: number(el, "minDuration"),        // shortest segment a job processes (s)
    pollMs: number(el, "pollMs"),                  // pause before asking again after a failed status request
    statusWait: number(el, "statusWait"),          // seconds a status request may wait for a change (long poll)
    sampleRate: number(el, "sampleRate"),          // the rate every output is written at
    jobIdPattern: new RegExp(text(el, "idPattern")),   // a job id (data-id-pattern)
    mapMaxSeconds: number(el, "mapMaxSeconds"),    // longest excerpt a map measures
    maxSeed: number(el, "maxSeed"),
    envelopeMaxPoints: number(el, "envelopeMaxPoints"),
    ladderRungs: number(el, "ladderRungs"),                  // the rungs of the page's ladder jobs
    performanceMaxPoints: number(el, "performanceMaxPoints"),  // most points of a recorded knob path
    crossfadeRule: text(el, "crossfadeRule"),
  });
}

export const config = readConfig(document.getElementById("main"));
