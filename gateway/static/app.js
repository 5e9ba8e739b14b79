// The DermaScan page: Status, Predict, Bulk upload and Data (Retraining: training.js), all from
// the public JSON API. Server text goes in as text only (dom.js).
import { byId, duration, el, errorLine, followJob, getJSON, initToken, keptToken, over, pct, refused, resumable, stack, tokenFor, words } from "./dom.js";
import { groupedBars, histogram, legend } from "./charts.js";
import { initTraining } from "./training.js";

initToken();
byId("token-forget").addEventListener("click", () => showSamples(false));  // the images go with the token

// ---- Status --------------------------------------------------------------------------------
function card(name, value, ok) {
  return el("div", { class: "card" }, el("span", { class: "meta" }, name),
    el("b", {}, el("span", { class: `dot ${ok === undefined ? "" : ok ? "ok" : "bad"}` }), value));
}
function table(head, rows, attrs = {}) {
  return el("div", { class: "scroll" }, stack(el("table", { class: "grid", ...attrs },
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))))));
}

async function refreshStatus() {
  const pill = byId("status");
  let s;
  try {
    s = await getJSON("/status");
  } catch (err) {
    pill.replaceChildren(el("span", { class: "dot bad" }), "unreachable");
    return;
  }
  const ok = s.status === "ok";
  const versions = [...new Set(s.workers.map((w) => w.model_version).filter(Boolean))];
  pill.replaceChildren(el("span", { class: `dot ${ok ? "ok" : "bad"}` }),
    ok ? `ready · model ${versions.join(", ")} · ${s.workers.length} worker(s)`
       : "degraded: " + [s.broker_connected ? "" : "broker down", s.store_reachable ? "" : "store unreachable",
                         s.workers.length ? "" : "no workers"].filter(Boolean).join(", "));
  byId("status-cards").replaceChildren(
    card("overall", s.status, ok), card("gateway up", duration(s.gateway_uptime_s)),
    card("broker", s.broker_connected ? "connected" : "unreachable", s.broker_connected),
    card("store", s.store_reachable ? "reachable" : "unreachable", s.store_reachable),
    card("current model", s.classes.model_version || "none"));
  byId("status-workers").replaceChildren(s.workers.length
    ? table(["worker", "model", "engine", "up", "heard"], s.workers.map((w) => [
      w.id, w.model_version || "loading…", w.engine || "–", duration(w.uptime_s), `${w.heard_s_ago} s ago`]),
    { id: "workers-table" })
    : errorLine("No inference worker is live: predictions will wait."));
  const services = s.services;
  byId("status-services").replaceChildren(services.length
    ? table(["service", "instance", "up", "heard"], services.map((v) => [
      words(v.service), v.id, duration(v.uptime_s), `${v.heard_s_ago} s ago`]), { id: "services-table" })
    : errorLine("No ingest or trainer service is live: uploads and retraining will wait."));
  byId("status-queues").replaceChildren(table(["queue", "carries", "waiting", "consumers"], s.queues.map((q) => [
    q.name, q.role, q.messages === null ? "?" : String(q.messages), q.consumers === null ? "?" : String(q.consumers)]),
  { id: "queues-table" }));
  byId("status-classes").replaceChildren(
    el("p", {}, `The current model predicts ${s.classes.predicted.length} of ${s.classes.predicted.length + s.classes.needs_data.length} classes: `,
      el("span", { id: "classes-predicted" }, s.classes.predicted.map(words).join(", ") || "none"), "."),
    el("p", {}, "Need labelled images (upload them, then retrain): ",
      el("span", { id: "classes-needing-data" }, s.classes.needs_data.map(words).join(", ") || "none"), "."));
  const links = byId("status-links");
  links.replaceChildren(...(s.grafana_url
    ? ["Dashboards: ", el("a", { href: s.grafana_url, id: "grafana-link", rel: "noopener" }, "Grafana"), " · "] : []),
  el("a", { href: "/metrics" }, "Prometheus metrics"), " · ", el("a", { href: "/openapi.json" }, "API (OpenAPI)"));
  fillClassLists(s.classes.predicted.concat(s.classes.needs_data));
}

let classesFilled = false;
function fillClassLists(taxonomy) {
  if (classesFilled) return;
  classesFilled = true;
  const select = byId("upload-label");
  for (const name of taxonomy) select.add(new Option(words(name), name));
  byId("upload-classes").textContent = taxonomy.join(", ");
}

// ---- Predict -------------------------------------------------------------------------------
const answer = byId("answer");

function show(body) {
  const rows = body.top_k.map((s) =>
    el("div", { class: "bar" }, el("span", {}, words(s.label) + (s.parent ? ` (a ${words(s.parent)})` : "")),
      el("span", { class: "track", role: "img", "aria-label": `${words(s.label)} ${pct(s.probability)}` },
        el("span", { class: "fill", style: `width:${pct(s.probability)}` })),
      el("span", {}, pct(s.probability))));
  const parts = [];
  if (body.out_of_distribution) {
    parts.push(el("div", { class: "flag ood", id: "ood" },
      "This does not look like a dermoscopic skin image. The model was trained on dermatoscope " +
      "pictures of skin lesions; its answer for this picture means nothing."),
    el("div", { class: "meta" }, `out-of-distribution score ${Number(body.ood_score).toFixed(2)} ` +
        `(above ${Number(body.ood_threshold).toFixed(2)})`));
  } else {
    if (body.referral.length) {
      parts.push(el("div", { class: "flag refer", id: "referral" }, "Refer: ",
        ...body.referral.map((r, i) => el("span", {}, (i ? ", " : "") +
          `${words(r.label)} ${pct(r.probability)} (threshold ${pct(r.threshold)})`))));
    }
    if (body.uncertain) {
      parts.push(el("div", { class: "flag unsure", id: "uncertain" },
        "Uncertain — see a dermatologist. The model cannot tell between:"),
      el("div", { style: "margin-top:6px" }, ...rows));
    } else {
      parts.push(el("div", { class: "label", id: "label" }, words(body.label)),
        body.parent ? el("div", { id: "parent" }, `a kind of ${words(body.parent)}`) : null,
        el("div", {}, `calibrated confidence ${pct(body.confidence)}`),
        el("div", { style: "margin-top:10px" }, ...rows));
    }
    if (body.ood_score !== null && body.ood_score !== undefined) {
      parts.push(el("div", { class: "meta" }, `in distribution (score ${Number(body.ood_score).toFixed(2)}, ` +
        `threshold ${Number(body.ood_threshold).toFixed(2)})`));
    }
  }
  parts.push(el("div", { class: "aid", id: "aid" }, "A decision aid, not a diagnosis. See a clinician for any lesion that worries you."),
    el("div", { class: "meta", id: "answer-meta" }, `Model ${body.model_version} · ${body.latency_ms} ms · worker ${body.worker.id}`));
  answer.className = "";
  answer.replaceChildren(...parts);
  const eye = byId("model-eye");
  if (body.model_input) {
    eye.src = body.model_input;  // a data: URL the API made; an attribute, not HTML
    eye.hidden = byId("model-eye-caption").hidden = false;
  }
}

async function classify(file) {
  const preview = byId("preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = byId("preview-caption").hidden = false;
  byId("model-eye").hidden = byId("model-eye-caption").hidden = true;
  answer.className = "meta";
  answer.textContent = "Classifying…";
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch("/predict?model_input=true", { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) {
      answer.replaceChildren(errorLine(body.error.message, "error"),
        el("div", { class: "meta" }, `HTTP ${response.status} · ${body.error.code}`));
    } else {
      show(body);
    }
  } catch (err) {
    answer.replaceChildren(errorLine(`The server could not be reached: ${err}`));
  }
}

function initPredict() {
  const drop = byId("drop"), input = byId("file");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => input.files[0] && classify(input.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) { e.preventDefault(); classify(item.getAsFile()); }
  });
}

// ---- Bulk upload ---------------------------------------------------------------------------
function outcomeCell(file) {
  return el("span", { class: `pill ${file.status}` }, file.status);
}
function detailOf(file) {
  if (file.status === "rejected") return `${file.reason}${file.message ? ": " + file.message : ""}`;
  return file.label ? words(file.label) : "";  // never the split: the server keeps who is held out
}

function uploadRows(files) {
  const body = byId("upload-table").querySelector("tbody");
  const rows = [...files].map((file) => {
    const bar = el("progress", { max: 1, value: 0, "aria-label": `upload of ${file.name}` });
    const row = el("tr", {}, el("td", {}, file.name), el("td", {}, bar), el("td", {}, "waiting"), el("td", {}, ""));
    return { file, bar, row, outcome: row.children[2], detail: row.children[3] };
  });
  body.replaceChildren(...rows.map((r) => r.row));
  byId("upload-table").hidden = false;
  stack(byId("upload-table"));
  return rows;
}

// Sends the form with XMLHttpRequest, for its upload progress: each file's bar follows the
// bytes sent up to it (the files go in order, in one request).
function send(form, token, rows, onSent) {
  const ends = [];
  let total = 0;
  for (const r of rows) { total += r.file.size; ends.push(total); }
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/upload-bulk");
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.addEventListener("progress", (e) => {
      const sent = e.lengthComputable ? (e.loaded / e.total) * total : 0;
      rows.forEach((r, i) => {
        const start = i ? ends[i - 1] : 0, size = r.file.size || 1;
        r.bar.value = Math.max(0, Math.min(1, (sent - start) / size));
        if (r.bar.value > 0 && r.outcome.textContent === "waiting") r.outcome.textContent = "sending";
      });
    });
    xhr.upload.addEventListener("load", onSent);
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
    xhr.send(form);
  });
}

function describeUpload(job, rows) {
  const p = job.progress || {};
  const done = p.done || 0, final = over(job), paused = resumable(job);
  const files = (job.result && job.result.files) || [];  // outcomes so far, also while running
  const byIndex = new Map(files.map((f) => [f.index, f]));
  rows.forEach((r, i) => {
    r.bar.value = 1;
    const f = byIndex.get(i);
    if (f) {
      r.outcome.replaceChildren(outcomeCell(f));
      r.detail.textContent = detailOf(f);
    } else if (final) {
      r.outcome.textContent = job.state === "succeeded" ? "(an archive: its files below)" : job.state;
    } else if (paused) {
      r.outcome.textContent = "waiting for the upload service";
    } else {
      r.outcome.textContent = i < done ? "checked" : "queued for checks";
    }
  });
  const body = byId("upload-table").querySelector("tbody");
  for (const f of files.filter((x) => x.index >= rows.length)) {  // members of zip archives
    const id = `upload-member-${f.index}`;
    if (!document.getElementById(id)) {
      body.append(el("tr", { id }, el("td", {}, f.filename), el("td", {}, ""), el("td", {}, outcomeCell(f)),
        el("td", {}, detailOf(f))));
    }
  }
  stack(byId("upload-table"));
  if (paused) {  // failed as worker_lost, but it resumes: the page follows it on (followJob)
    return el("div", { id: "upload-paused" }, el("div", { class: "flag unsure" },
      "The upload service stopped answering; it will resume when it comes back. " +
      "The files it has not checked yet are kept, and this page follows the upload on."),
    el("div", { class: "meta" }, `${done}/${p.files || "?"} files checked so far`));
  }
  if (!final) return el("span", {}, `upload ${job.state}: ${done}/${p.files || "?"} files checked`);
  const count = (status) => files.filter((f) => f.status === status).length;
  return el("div", {}, el("span", { id: "upload-summary" }, `${job.state}: ${count("stored")} stored, ` +
    `${count("duplicate")} duplicate, ${count("rejected")} rejected`),
  job.error ? el("div", { class: "error" }, job.error.message) : null,
  ...files.filter((f) => f.status === "rejected").map((f) => el("div", {}, `${f.filename}: ${f.reason}`)));
}

function initUpload() {
  byId("upload-button").addEventListener("click", async () => {
    const files = byId("upload-files").files, status = byId("upload-status");
    if (!files.length) { status.textContent = "Choose files first."; return; }
    const token = await tokenFor("contribute", status);
    if (!token) return;
    const form = new FormData();
    for (const file of files) form.append("files", file);
    const label = byId("upload-label").value;
    if (label) form.append("label", label);
    const rows = uploadRows(files);
    status.textContent = `sending ${files.length} file(s)…`;
    const { status: code, body } = await send(form, token, rows, () => { status.textContent = "sent; waiting for the job…"; });
    if (refused(code, body, "contribute", status)) return;
    if (code !== 202 || !body) {
      status.replaceChildren(errorLine(body && body.error ? `${body.error.message} (HTTP ${code})` : `upload failed (HTTP ${code})`));
      rows.forEach((r) => { r.outcome.textContent = "not sent"; });
      return;
    }
    await followJob(body.job_id, (job) => status.replaceChildren(describeUpload(job, rows)));
    refreshData();
  });
}

// ---- Data ----------------------------------------------------------------------------------
const TRAIN = "#2457c5", EVAL = "#c2571a";

async function refreshData() {
  let summary;
  try {
    summary = await getJSON("/data/summary");
  } catch (err) {
    byId("data-total").replaceChildren(errorLine(`The catalog could not be read: ${err.message}`));
    return;
  }
  const train = summary.counts.train || {}, held = summary.counts.eval || {};
  const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
  byId("data-total").replaceChildren(el("span", { id: "data-total-count" }, String(summary.total)),
    ` images in the catalog: ${sum(train)} for training, ${sum(held)} held out for evaluation and the gate.`);
  const counts = byId("data-counts");
  groupedBars(counts, "images per class: training and held-out", summary.classes.map((c) => ({
    label: words(c), raw: c, values: [train[c] || 0, held[c] || 0] })), [{ name: "train", color: TRAIN }, { name: "eval", color: EVAL }]);
  counts.append(legend([{ name: "training", color: TRAIN }, { name: "held out (eval)", color: EVAL }]));
  const binLabel = (b, unit = "") => b.high === null ? `≥${b.low}${unit}` : `${b.low}–${b.high}${unit}`;
  histogram(byId("data-sizes"), "images by longest side in pixels",
    summary.longest_side.bins.map((b) => ({ label: binLabel(b), value: b.count })), TRAIN);
  histogram(byId("data-aspect"), "images by aspect ratio",
    summary.aspect_ratio.bins.map((b) => ({ label: binLabel(b), value: b.count })), EVAL);
  const common = summary.common_sizes.slice(0, 3).map((s) => `${s.width}×${s.height} (${s.count})`).join(", ");
  byId("data-sizes").append(el("p", { class: "meta" }, `most common sizes: ${common || "none"}` +
    (summary.longest_side.unknown ? `; ${summary.longest_side.unknown} of unknown size` : "")));
  showSamples(false);
}

// The sample images are patients' images: the gateway shows them only to a token of the view role
// or higher. So they wait for a button until the tab has a token, and each thumbnail is fetched
// with it and shown from a blob: URL (an <img src> cannot send the token).
let sampleUrls = [];
function samplesButton() {
  return el("p", { class: "meta" }, "The sample images are patients' images: they need a token of the view role or higher. ",
    el("button", { type: "button", id: "samples-button", class: "quiet", onclick: () => showSamples(true) }, "Show sample images"));
}
function thumbnail(sample, label, token) {
  const img = el("img", { alt: `a ${words(label)} image, ${sample.width}×${sample.height}`, width: 160, height: 120 });
  fetch(sample.thumbnail_url, { headers: { Authorization: `Bearer ${token}` } })
    .then((response) => response.ok ? response.blob() : Promise.reject(new Error(`HTTP ${response.status}`)))
    .then((blob) => { const url = URL.createObjectURL(blob); sampleUrls.push(url); img.src = url; })
    .catch(() => { img.alt += " (could not be loaded)"; });
  return img;
}
async function showSamples(ask) {
  const box = byId("data-samples");
  const token = ask ? await tokenFor("view", box) : keptToken();
  sampleUrls.forEach((url) => URL.revokeObjectURL(url));
  sampleUrls = [];
  if (!token) {  // asked and not given: tokenFor said so in the box
    if (ask) box.append(samplesButton()); else box.replaceChildren(samplesButton());
    return;
  }
  let response, body;
  try {
    response = await fetch("/data/samples?per_class=4", { headers: { Authorization: `Bearer ${token}` } });
    body = await response.json();
  } catch (err) {
    box.replaceChildren(errorLine(`The samples could not be read: ${err.message}`));
    return;
  }
  if (refused(response.status, body, "view", box)) { box.append(samplesButton()); return; }
  if (!response.ok) { box.replaceChildren(errorLine(`The samples could not be read: ${body.error.message}`)); return; }
  box.replaceChildren(el("div", { class: "samples" }, ...body.classes.map((c) =>
    el("figure", { "data-label": c.label }, el("figcaption", {}, `${words(c.label)} (${c.count})`),
      el("div", { class: "thumbs" }, ...c.samples.map((s) => thumbnail(s, c.label, token)))))));
}

// ---- start ---------------------------------------------------------------------------------
initPredict();
initUpload();
initTraining();
refreshStatus();
setInterval(refreshStatus, 5000);
refreshData();
