// The Retraining section: start a job, its live progress (server-sent events fed by the job's
// progress records) with a Cancel button while it is queued or training, the candidate against the
// current model when it ends, and the version history with promote and rollback.
import { byId, el, errorLine, followJob, getJSON, over, pct, stack, withToken, words } from "./dom.js";
import { legend, lines, recallPairs } from "./charts.js";

const pts = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(100 * x).toFixed(1)}`;

function phaseText(job) {
  const p = job.progress || {};
  const phase = p.phase || job.state;
  if (phase === "embedding") return `embedding images ${p.embedded || 0}/${p.to_embed || 0} (${p.cached || 0} cached)`;
  if (phase === "training" || (p.epoch && phase !== "done")) {
    const val = p.val_accuracy === null || p.val_accuracy === undefined ? "" : `, validation accuracy ${pct(p.val_accuracy)}`;
    return `training the head: epoch ${p.epoch || 0}/${p.epochs || "?"}` +
      (p.loss !== undefined ? `, loss ${Number(p.loss).toFixed(3)}${val}` : "");
  }
  return String(phase).replaceAll("-", " ");
}
function fraction(p) {
  if (p.phase === "embedding") return p.to_embed ? 0.3 * (p.embedded || 0) / p.to_embed : 0.3;
  if (p.phase === "training") return 0.3 + 0.6 * ((p.epoch || 0) / (p.epochs || 1));
  if (["calibrating", "saving", "fine-tuning"].includes(p.phase)) return 0.92;
  return p.phase === "done" ? 1 : 0.02;
}

// Progress phases in which a cancel is too late (shared/jobs.py TOO_LATE_TO_CANCEL).
const TOO_LATE_TO_CANCEL = new Set(["publishing", "promoting"]);

// The Cancel button of the job followed: shown while it is queued or training.
function cancelButton(job) {
  let button = byId("train-cancel");
  if (!button) {
    button = el("button", { type: "button", class: "small quiet", id: "train-cancel" }, "Cancel this job");
    byId("train-phase").after(button);
  }
  button.dataset.job = job.job_id;
  button.hidden = over(job) || TOO_LATE_TO_CANCEL.has((job.progress || {}).phase);
  button.onclick = () => cancelJob(job.job_id);
  return button;
}

async function cancelJob(jobId) {
  const status = byId("retrain-status");
  const button = byId("train-cancel");
  button.disabled = true;
  try {
    const response = await withToken(`/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" }, "operator", status);
    if (response === null) return;
    const body = await response.json();
    status.replaceChildren(response.ok
      ? el("span", { id: "cancel-done" }, `job ${jobId} cancelled; the training claim is free`)
      : errorLine(`${body.error.message} (HTTP ${response.status})`, "cancel-error"));
  } finally {
    button.disabled = false;
  }
}

function drawLive(job) {
  const p = job.progress || {};
  byId("train-live").hidden = false;
  cancelButton(job);
  byId("train-phase").textContent = `${job.state}: ${phaseText(job)}`;
  byId("train-progress").value = over(job) ? 1 : fraction(p);
  const line = `${job.state} · ${phaseText(job)}`, log = byId("train-log");
  if (!log.lastElementChild || log.lastElementChild.dataset.line !== line) {  // heartbeats repeat themselves
    log.append(el("li", { "data-state": job.state, "data-phase": p.phase || "", "data-epoch": p.epoch || 0, "data-line": line },
      `${new Date(job.updated_at).toLocaleTimeString()} ${line}`));
  }
  const history = p.history || [];
  if (!history.length) return;
  const series = (key) => history.filter((h) => typeof h[key] === "number").map((h) => [h.epoch, h[key]]);
  const xMax = p.epochs || history.length;
  const loss = [{ name: "training loss", color: "#2457c5", points: series("loss") },
    { name: "validation loss", color: "#c2571a", points: series("val_loss") }];
  lines(byId("loss-chart"), "loss per epoch", loss, { xMax });
  byId("loss-chart").append(legend(loss));
  const acc = [{ name: "training accuracy", color: "#2457c5", points: series("accuracy") },
    { name: "validation accuracy", color: "#c2571a", points: series("val_accuracy") }];
  lines(byId("acc-chart"), "accuracy per epoch", acc, { xMax, yMin: 0, yMax: 1, format: (v) => pct(v, 0) });
  byId("acc-chart").append(legend(acc));
}

function policyText(policy) {
  if (!policy) return null;
  return `The gate's margins (the operator's settings, not chosen here): balanced accuracy may fall at most ` +
    `${(100 * policy.max_balanced_accuracy_drop).toFixed(1)} points beyond its noise; a benign class's recall ` +
    `${(100 * policy.max_class_recall_drop).toFixed(1)} points; a malignant class's ` +
    `${(100 * policy.malignant_max_recall_drop).toFixed(1)} points; a class is judged with at least ` +
    `${policy.min_class_support} held-out images; ${Math.round(100 * policy.confidence)}% intervals from ` +
    `${policy.resamples} paired bootstrap resamples.`;
}

// One table per held-out set the gate judged on (the lineage's reference images, the catalog's
// held-out uploads): each class's support and where its images came from, its recall before and
// after, and for a malignant class what a clinician gets (named or flagged) and what the flag costs.
function gateTable(gate) {
  const change = (c) => c ? `${pts(c.difference)} [${pts(c.low)}, ${pts(c.high)}]` : "–";
  const share = (a, b) => (a == null ? "–" : `${pct(a)} → ${pct(b)}`);
  const from = (v) => Object.entries(v.sources || {}).map(([s, n]) => `${n} ${s}`).join(", ");
  const sets = gate.sets && gate.sets.length ? gate.sets
    : [{ name: "held-out", description: "held-out images", images: null, classes: gate.classes || [] }];
  return el("div", {}, ...sets.map((set, i) => el("div", { class: "scroll", "data-set": set.name },
    el("h4", {}, `${set.name}: ${set.description}` + (set.images != null ? ` (${set.images} images)` : "")),
    stack(el("table", { class: "grid", id: i === 0 ? "gate-table" : `gate-table-${set.name}` },
      el("thead", {}, el("tr", {}, ...["class", "held-out images (from)", "current recall", "candidate recall",
        "change, points [interval]", "named or flagged (malignant)", "flag's specificity", "verdict"]
        .map((t) => el("th", { scope: "col" }, t)))),
      el("tbody", {}, ...(set.classes || []).map((v) => el("tr", { "data-label": v.label },
        el("td", {}, words(v.label) + (v.malignant ? " (malignant)" : "")),
        el("td", { class: "num" }, `${v.support}` + (from(v) ? ` (${from(v)})` : "")),
        el("td", { class: "num" }, pct(v.current_recall)), el("td", { class: "num" }, pct(v.candidate_recall)),
        el("td", { class: "num" }, change(v.change)),
        el("td", { class: "num" }, share(v.current_caught, v.candidate_caught)),
        el("td", { class: "num" }, share(v.current_specificity, v.candidate_specificity)),
        el("td", {}, v.judgement)))))))),
    ...(gate.unjudged && gate.unjudged.length ? [el("p", { class: "flag refer", id: "gate-unjudged" },
      `Not enough held-out images to judge ${gate.unjudged.map(words).join(", ")}: absence of evidence is not a ` +
      "pass, so this candidate is not promoted automatically.")] : []));
}

function confusionTable(classes, matrix) {
  const short = (name) => words(name).split(" ").map((w) => w[0]).join("").toUpperCase();
  const head = el("tr", {}, el("th", { scope: "col" }, "true \\ predicted"),
    ...classes.map((c) => el("th", { scope: "col", title: words(c) }, short(c))));
  const rows = matrix.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return el("tr", {}, el("th", { scope: "row", title: words(classes[i]) }, words(classes[i])),
      ...row.map((n, j) => {
        const share = n / total;  // at most 56% blue under dark ink: contrast stays above 4.5:1
        return el("td", { title: `${words(classes[i])} predicted as ${words(classes[j])}: ${n}`,
          style: `background:rgba(36,87,197,${(0.04 + 0.52 * share).toFixed(3)})` }, String(n));
      }));
  });
  return el("div", { class: "scroll" }, el("table", { class: "confusion", id: "confusion" }, el("thead", {}, head), el("tbody", {}, ...rows)),
    el("p", { class: "meta" }, "Rows: the true class of each held-out image; columns: what the candidate said (" +
      classes.map((c) => `${short(c)} ${words(c)}`).join(", ") + ")."));
}

async function showResult(job) {
  const box = byId("train-result");
  const result = job.result;
  if (!result) {
    const why = job.error ? job.error.message : "no result";
    box.replaceChildren(el("p", { class: "flag refer", id: "train-verdict" }, job.state === "cancelled"
      ? `The job was cancelled (${why}). The current model is unchanged.`
      : `The job ${job.state}: ${why}. The current model is unchanged.`));
    return;
  }
  const gate = result.gate;
  const ba = gate.balanced_accuracy_change;
  const verdict = gate.passed
    ? `The gate passed candidate ${result.version}` + (result.promoted ? ": it is now serving." : "; promote it from the history to serve it.")
    : `The gate rejected candidate ${result.version}: the current model stays.`;
  const parts = [el("p", { class: `flag ${gate.passed ? "ok" : "refer"}`, id: "train-verdict" }, verdict),
    el("p", {}, `Held-out balanced accuracy: candidate ${pct(gate.candidate_balanced_accuracy)}, current ` +
      `${pct(gate.current_balanced_accuracy)}` + (ba ? ` (${pts(ba.difference)} points, interval ${pts(ba.low)} to ${pts(ba.high)})` : "") + "."),
    el("ul", { id: "gate-reasons" }, ...gate.reasons.map((r) => el("li", {}, r)))];
  const policy = policyText(gate.policy);
  if (policy) parts.push(el("p", { class: "meta", id: "gate-margins" }, policy));
  const chart = el("div", { id: "recall-chart" });
  parts.push(el("h3", {}, "Per-class recall: current and candidate, with the change's interval"), chart, gateTable(gate));
  box.replaceChildren(...parts);
  recallPairs(chart, "per-class held-out recall, current and candidate", (gate.classes || []).map((v) => ({
    label: words(v.label), raw: v.label, current: v.current_recall, candidate: v.candidate_recall, change: v.change, judgement: v.judgement })));
  try {
    const models = await getJSON("/models");
    const version = models.versions.find((v) => v.version === result.version);
    const evaluation = version && version.metrics && version.metrics.eval;
    if (evaluation && evaluation.confusion_matrix) {
      box.append(el("h3", {}, "Confusion matrix of the candidate (held-out images)"), confusionTable(version.classes, evaluation.confusion_matrix));
    }
  } catch (err) {
    box.append(errorLine(`The version list could not be read: ${err.message}`));
  }
}

// ---- history -------------------------------------------------------------------------------
function balancedAccuracy(metrics) {
  const evaluation = (metrics || {}).eval || {};
  if (typeof evaluation.balanced_accuracy === "number") return pct(evaluation.balanced_accuracy);
  const sources = Object.entries(evaluation).filter(([, v]) => v && typeof v.balanced_accuracy === "number");
  return sources.map(([name, v]) => `${pct(v.balanced_accuracy)} (${name})`).join(", ") || "–";
}

async function act(url, body, what) {
  const status = byId("history-status");
  status.textContent = `${what}…`;
  const response = await withToken(url, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body) }, "operator", status);
  if (response === null) return null;
  const answer = await response.json();
  if (!response.ok) {
    status.replaceChildren(errorLine(`${answer.error.message} (HTTP ${response.status})`, "history-error"));
    return { ok: false, code: answer.error.code };
  }
  status.replaceChildren(el("span", { id: "history-done" }, `${what}: now serving ${answer.current}.`));
  await refreshHistory();
  return { ok: true };
}

function forceForm(version) {
  const reason = el("input", { id: "force-reason", type: "text", minlength: 3, maxlength: 500, size: 28,
    "aria-label": `why serve ${version} although the gate rejected it` });
  return el("span", { class: "row wrap" }, el("label", { for: "force-reason", class: "meta" }, "reason (kept in the audit log)"), reason,
    el("button", { type: "button", class: "small", id: "force-button", onclick: () =>
      act(`/models/${encodeURIComponent(version)}/promote`, { force: true, reason: reason.value }, `forcing ${version}`) },
    "Serve anyway"));
}

async function promote(version) {
  const outcome = await act(`/models/${encodeURIComponent(version)}/promote`, {}, `promoting ${version}`);
  if (outcome && outcome.code === "gate_rejected") byId("history-status").append(" ", forceForm(version));
}

function versionRow(v) {
  const gate = v.gate ? (v.gate.passed ? "passed" : "rejected") : "none";
  return el("tr", { "data-version": v.version, "data-current": v.current ? "true" : "false" },
    el("td", {}, el("b", {}, v.version), v.current ? el("span", { class: "pill current" }, " serving") : null,
      v.parent_version ? el("div", { class: "meta" }, `from ${v.parent_version}`) : null,
      /^https?:\/\//.test(v.tracking_url || "") ? el("div", { class: "meta" }, el("a", { href: v.tracking_url, target: "_blank",
        rel: "noopener noreferrer" }, "its MLflow run")) : null),
    el("td", {}, new Date(v.created_at).toLocaleString()),
    el("td", {}, balancedAccuracy(v.metrics)),
    el("td", {}, el("span", { class: `pill ${gate}` }, gate)),
    el("td", {}, v.current ? "" : el("button", { type: "button", class: "small promote", "data-version": v.version,
      onclick: () => promote(v.version) }, "Promote")));
}

// GET /models answers the newest page of versions; `next` asks for the page before it.
function olderVersions(next) {
  let button = byId("history-older");
  if (!next) {
    if (button) button.remove();
    return;
  }
  if (!button) {
    button = el("button", { type: "button", class: "small quiet", id: "history-older" }, "Show older versions");
    byId("history").closest(".scroll").after(button);
  }
  button.onclick = async () => {
    button.disabled = true;
    try {
      const page = await getJSON(`/models?after=${encodeURIComponent(next)}`);
      byId("history").querySelector("tbody").append(...[...page.versions].reverse().map(versionRow));
      stack(byId("history"));
      olderVersions(page.next);
    } catch (err) {
      byId("history-status").replaceChildren(errorLine(`Older versions could not be read: ${err.message}`));
    } finally {
      button.disabled = false;
    }
  };
}

export async function refreshHistory() {
  let models;
  try {
    models = await getJSON("/models");
  } catch (err) {
    byId("history-status").replaceChildren(errorLine(`The version list could not be read: ${err.message}`));
    return;
  }
  byId("history").querySelector("tbody").replaceChildren(...[...models.versions].reverse().map(versionRow));
  olderVersions(models.next);
  stack(byId("history"));
  const recent = models.history.slice(-6).map((h) => `${h.version} (${new Date(h.promoted_at).toLocaleString()})`);
  byId("promotions").textContent = recent.length ? `Promotions, oldest first: ${recent.join(" → ")}` : "No promotions yet.";
  const latest = [...models.versions].reverse().find((v) => v.gate && v.gate.policy);
  if (latest) byId("gate-policy").textContent = policyText(latest.gate.policy) + ` (as applied to ${latest.version})`;
}

export function initTraining() {
  byId("train-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = byId("retrain-status");
    const epochs = Number(byId("train-epochs").value);
    if (!Number.isInteger(epochs) || epochs < 1) { status.replaceChildren(errorLine("Epochs must be a whole number of at least 1.")); return; }
    const fineTune = document.querySelector("input[name=kind]:checked").value === "fine_tune";
    const options = { epochs, fine_tune: fineTune, promote: byId("train-promote").checked };
    const response = await withToken("/retrain", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(options) }, "operator", status);
    if (response === null) return;
    const body = await response.json();
    if (!response.ok) {
      status.replaceChildren(errorLine(body.error.message, "retrain-error"));
      if (body.job_id) follow(body.job_id);  // the job already running: watch it
      return;
    }
    status.textContent = `job ${body.job_id} queued with ${JSON.stringify(options)}`;
    follow(body.job_id);
  });
  byId("rollback-button").addEventListener("click", () => act("/models/rollback", {}, "rolling back"));
  refreshHistory();
}

async function follow(jobId) {
  byId("train-log").replaceChildren();
  byId("train-result").replaceChildren();
  byId("retrain-button").disabled = true;
  try {
    const job = await followJob(jobId, (update) => drawLive(update));
    if (job) await showResult(job);
  } finally {
    byId("retrain-button").disabled = false;
    refreshHistory();
  }
}
