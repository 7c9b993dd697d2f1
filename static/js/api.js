/* The JSON API as the page uses it: uploads with progress, a job's state until it is done. */

import { config } from "./config.js";
import { sentence } from "./util.js";

/** Without an answer for this long, following a job gives up (a page rule, not the server's). */
const GIVE_UP_MS = 60_000;

export async function readJson(response) {
  try {
    return await response.json();
  } catch (e) {
    return { error: `the server answered ${response.status} ${response.statusText}` };
  }
}

/** ``GET`` JSON: ``{response, body}``; rejects only when the server cannot be reached. */
export async function getJson(url, { signal } = {}) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store", signal });
  return { response, body: await readJson(response) };
}

/** ``POST`` a form with upload progress; resolves ``{status, body, retryAfter}``. */
export function upload(url, data, onProgress) {
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

/** The sentence to show for a refused submission. */
export function refusal(answer) {
  let message = sentence(answer.body.error || `The server answered ${answer.status}`);
  if (answer.status === 503 && answer.retryAfter) message += ` (Try again in ${answer.retryAfter} s.)`;
  return message;
}

export function jobPage(id) {
  return config.jobPageUrl.replace("JOBID", encodeURIComponent(id));
}

export function jobUrl(id) {
  return `${config.jobsUrl}/${id}`;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/* ``GET`` a job until it is done; ``onUpdate(view)`` sees each state (``null`` while the server is away).
   Each request is a long poll: the server answers as soon as the job's ``version`` differs from the one
   the page has seen (or after ``config.statusWait`` seconds), so a change shows at once, without a timer.
   The next poll is asked before an answer is shown, so a change that comes while the page draws the last
   one (the job finishing while its audio is laid out) is not learnt late.
   Resolves with the final view, or with ``null`` as soon as ``isCurrent()`` turns false (nobody waits
   for that job any more). */
export async function watch(url, onUpdate, isCurrent = () => true) {
  let lastAnswer = Date.now();
  let version = null;
  let asking = null;  // the poll in flight, aborted when nobody waits for it any more
  const ask = () => {
    const asked = new URL(url, location.href);
    if (version) {
      asked.searchParams.set("wait", String(config.statusWait));
      asked.searchParams.set("version", version);
    }
    asking = new AbortController();
    const pending = getJson(asked.href, { signal: asking.signal });
    pending.catch(() => {});  // awaited below; this only keeps an aborted poll from being reported
    return pending;
  };
  const leave = () => {  // a poll asked ahead would hold a server thread for its whole wait
    asking.abort();
    return null;
  };
  let next = ask();
  for (;;) {
    let response, body;
    try {
      ({ response, body } = await next);
    } catch (e) {
      if (!isCurrent()) return null;
      if (Date.now() - lastAnswer > GIVE_UP_MS) {
        throw new Error("The server has not answered for a minute. Reload the page to look again.");
      }
      onUpdate(null);
      await sleep(config.pollMs * 2);
      next = ask();
      continue;
    }
    if (!isCurrent()) return null;
    lastAnswer = Date.now();
    if (!response.ok) throw new Error(sentence(body.error || `The server answered ${response.status}`));
    const ended = body.state === "done" || body.state === "failed";
    version = body.version || null;
    if (!ended && version) next = ask();
    try {
      onUpdate(body);
    } catch (e) {
      if (!ended && version) leave();
      throw e;
    }
    if (ended) return body;
    if (!version) {  // an answer without a version cannot be waited on: poll
      await sleep(config.pollMs);
      if (!isCurrent()) return null;
      next = ask();
    }
    if (!isCurrent()) return leave();
  }
}

/** ``[text, fraction or null]`` for a job's state. */
export function describeState(body) {
  if (!body) return ["The connection was lost; trying again…", null];
  if (body.state === "queued") return [body.position ? `Waiting in the queue: position ${body.position}.` : "Waiting in the queue.", 0];
  if (body.state === "running") {
    return [`Working: ${Math.round(100 * body.progress)} %${body.message ? ` (${body.message})` : ""}.`, body.progress];
  }
  if (body.state === "done") return ["Done.", 1];
  return ["The job failed.", 0];
}
