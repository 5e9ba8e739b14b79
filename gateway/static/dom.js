// Small DOM helpers and the API token. Everything the server sends is inserted as text
// (textContent, text nodes, attributes), never parsed as HTML: file names are user input.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));  // strings become text nodes
  return node;
}
export const byId = (id) => document.getElementById(id);
// The states a job ends in (shared/jobs.py FINAL_STATES).
export const FINAL_STATES = new Set(["succeeded", "failed", "rejected", "cancelled"]);
// An upload the gateway reported failed as `worker_lost` (its service went silent) with a
// retryable error: its ingest service resumes it when it gets the job again (shared/jobs.py).
export function resumable(job) {
  return job.state === "failed" && Boolean(job.error) && job.error.code === "worker_lost" && job.error.retryable === true;
}
// Whether a job will not change again: final and not resumable (the rule of gateway/events.py over).
export function over(job) { return FINAL_STATES.has(job.state) && !resumable(job); }
// Each body cell of `table` labelled with its column's heading (data-th): on a phone the rows are
// shown as stacked cards that name each value (app.css), so no table is wider than the screen.
export function stack(table) {
  const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  table.classList.add("stack");
  for (const row of table.querySelectorAll("tbody tr")) {
    [...row.children].forEach((cell, i) => { if (heads[i]) cell.dataset.th = heads[i]; });
  }
  return table;
}
export function pct(p, digits = 1) { return p === null || p === undefined ? "–" : (100 * Number(p)).toFixed(digits) + "%"; }
export function words(name) { return String(name).replaceAll("_", " "); }
export function errorLine(text, id) { return el("span", { class: "error", id }, text); }
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}
export async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

// The API token: asked for before the first state change or the first look at the catalog's
// images, kept in sessionStorage (this tab).
const TOKEN_KEY = "dermascan.token";
export function keptToken() { return sessionStorage.getItem(TOKEN_KEY); }
export function showTokenState() {
  const set = Boolean(sessionStorage.getItem(TOKEN_KEY));
  byId("token-state").textContent = set ? "token set for this tab" : "no token";
  byId("token-forget").hidden = !set;
}
export function initToken() {
  byId("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showTokenState(); });
  showTokenState();
}

function askToken(why) {
  const dialog = byId("token-dialog"), field = byId("token-input");
  byId("token-why").textContent = why;
  field.value = "";
  dialog.returnValue = "";  // Escape keeps the last value otherwise
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const token = field.value.trim();
      resolve(dialog.returnValue === "ok" && token ? token : null);
    }, { once: true });
    dialog.showModal();
    field.focus();
  });
}

// The kept token, or one asked for now (and kept); null when none was given.
export async function tokenFor(needs, status) {
  let token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    token = await askToken(`This needs a token with the ${needs} role.`);
    if (!token) { status.replaceChildren(errorLine("No token given: nothing was sent.")); return null; }
    sessionStorage.setItem(TOKEN_KEY, token);
    showTokenState();
  }
  return token;
}

// Says plainly what a 401 or a 403 means in `status` (and forgets a token the server does not
// know); true when `code` was one of them.
export function refused(code, body, needs, status) {
  if (code !== 401 && code !== 403) return false;
  const message = body && body.error ? body.error.message : `HTTP ${code}`;
  if (code === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    status.replaceChildren(errorLine(`The token was not accepted (401): ${message}. ` +
      "Try again to enter another one.", "auth-error"));
  } else {
    status.replaceChildren(errorLine(`This token may not do that (403): ${message}. ` +
      `It needs a token with the ${needs} role.`, "auth-error"));
  }
  return true;
}

// fetch() with the Bearer token; null when no token was given or it was refused (said in `status`).
export async function withToken(url, options, needs, status) {
  const token = await tokenFor(needs, status);
  if (!token) return null;
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${token}` };
  const response = await fetch(url, { ...options, headers });
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => null);
    refused(response.status, body, needs, status);
    return null;
  }
  return response;
}

// A job's record as it changes, from the gateway's server-sent events; `onJob` is called with
// each, and the promise resolves with the one that is over (`over`: a resumable upload's failed
// record is not, so it is followed on). The gateway ends the stream after that record and answers
// the EventSource's reconnection (which names the last event it got) with 204, which closes it
// for good: closing it here instead would abort a request in flight. A stream the gateway refused
// (429: too many open) or that failed for good is followed by polling the job.
export function followJob(jobId, onJob) {
  return new Promise((resolve) => {
    const url = `/jobs/${encodeURIComponent(jobId)}`;
    const source = new EventSource(`${url}/events`);
    let ended = false;
    const finish = (job) => {
      if (ended) return;
      ended = true;
      if (job) onJob(job, true);
      resolve(job);
    };
    source.addEventListener("job", (event) => onJob(JSON.parse(event.data), false));
    source.addEventListener("end", (event) => finish(JSON.parse(event.data)));
    source.addEventListener("gone", () => finish(null));
    source.addEventListener("error", () => {
      if (ended || source.readyState !== EventSource.CLOSED) return;  // CONNECTING: it retries itself
      const poll = async () => {
        try {
          const response = await fetch(url);
          if (response.status === 404) return finish(null);
          if (response.ok) {
            const job = await response.json();
            if (over(job)) return finish(job);
            onJob(job, false);
          }
        } catch (err) { /* the gateway is away for a moment: ask again */ }
        setTimeout(poll, 1000);
      };
      poll();
    });
  });
}
