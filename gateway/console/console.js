// Rogatory gateway console: one page, no dependencies, nothing fetched but this gateway's own API.
// Every value from the API is written with textContent, never as HTML.
"use strict";

const state = { token: sessionStorage.getItem("rogatory-token"), role: null, view: null, timer: null, auditNext: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, ...(options.body ? { "Content-Type": "application/json" } : {}) },
  });
  const body = await response.json().catch(() => null);
  if (response.status === 401 && state.role) signedOutByGateway();
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

function rate(value) {
  return value === null || value === undefined ? "–" : value.toFixed(1);
}

// -- sign in and roles -----------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  const who = await api("/v1/console/whoami");
  if (who.role !== "operator" && who.role !== "auditor") throw new Error(`a ${who.role} token cannot use the console`);
  state.role = who.role;
  sessionStorage.setItem("rogatory-token", token);
  $("login").hidden = true;
  $("tabs").hidden = false;
  $("sign-out").hidden = false;
  $("signed-in-as").hidden = false;
  $("account-name").textContent = who.name;
  $("role-badge").hidden = false;
  $("role-badge").textContent = who.role;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.hidden = !button.dataset.role.split(" ").includes(state.role);
  }
  const wanted = location.hash.slice(1);
  const allowed = [...document.querySelectorAll("#tabs button")].filter((b) => !b.hidden).map((b) => b.dataset.view);
  show(allowed.includes(wanted) ? wanted : allowed[0]);
}

// The account was revoked (or its token replaced) while signed in: back to the sign-in form, saying why.
function signedOutByGateway() {
  clearInterval(state.timer);
  state.role = null;
  sessionStorage.removeItem("rogatory-token");
  for (const section of document.querySelectorAll(".view")) section.hidden = true;
  for (const id of ["tabs", "sign-out", "signed-in-as", "role-badge"]) $(id).hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = "The gateway no longer accepts this token (the account may have been revoked). Sign in again.";
}

function signOut() {
  sessionStorage.removeItem("rogatory-token");
  location.hash = "";
  location.reload();
}

function show(view) {
  state.view = view;
  history.replaceState(null, "", `#${view}`);
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.view === view);
  clearInterval(state.timer);
  if (view === "overview") {
    refreshOverview();
    state.timer = setInterval(refreshOverview, 5000);
  } else if (view === "dead-letters") {
    refreshDeadLetters();
    state.timer = setInterval(refreshDeadLetters, 5000);
  } else if (view === "verify") {
    loadKey();
  }
}

// -- network health (operators) ---------------------------------------------------------

async function refreshOverview() {
  let data;
  try {
    data = await api("/v1/console/overview");
  } catch (error) {
    $("alerts").replaceChildren(el("li", { class: "critical" }, el("span", { class: "title" }, "The gateway did not answer"), error.message));
    return;
  }
  $("refreshed").textContent = `updated ${new Date(data.generated_at).toLocaleTimeString()}`;
  const alerts = data.alerts.map((a) =>
    el("li", { class: a.severity, "data-code": a.code }, el("span", { class: "title" }, a.title), a.detail));
  $("alerts").replaceChildren(...(alerts.length ? alerts : [el("li", { class: "none" }, el("span", { class: "title" }, "All clear"), "no alert")]));
  const up = data.gateway.status === "ok";
  $("card-gateway").replaceChildren(el("span", { class: up ? "ok" : "bad" }, up ? "consuming" : data.gateway.status));
  $("card-log").textContent = `${data.log.tree_size}`;
  const checkpoint = data.log.checkpoint;
  $("card-checkpoint").textContent = checkpoint
    ? `size ${checkpoint.tree_size}, ${ago(checkpoint.signed_at)}, ${checkpoint.cosignatures} cosigned`
    : "none yet";
  $("card-dead").replaceChildren(el("span", { class: data.dead_letters.held ? "bad" : "ok" }, data.dead_letters.held));
  $("card-directory").textContent = `v${data.directory.version}, expires ${data.directory.expires_at.slice(0, 10)}`;
  $("dead-count").textContent = data.dead_letters.held || "";
  $("agencies").tBodies[0].replaceChildren(...data.agencies.map((a) => {
    const connected = a.connected === null ? el("span", { class: "warn" }, "unknown")
      : el("span", { class: a.connected ? "ok" : "bad" }, a.connected ? "connected" : "not connected");
    const soonest = a.keys.reduce((min, k) => (min === null || k.valid_until < min.valid_until ? k : min), null);
    const keys = soonest ? `${soonest.valid_until.slice(0, 10)} (${soonest.use}, in ${Math.floor(soonest.expires_in_s / 86400)} days)` : "–";
    return el("tr", { "data-agency": a.agency_id },
      el("td", {}, el("strong", {}, a.agency_id), el("br"), el("span", { class: "muted" }, a.name)),
      el("td", {}, connected), el("td", { class: "num" }, a.consumers ?? "–"),
      el("td", {}, ago(a.last_activity)), el("td", {}, ago(a.last_cosigned_at)), el("td", {}, keys));
  }));
  const certificates = data.certificates.map((c) => el("tr", { "data-certificate": c.path, "data-subject": c.subject ?? "" },
    ...(c.readable
      ? [el("td", {}, el("strong", {}, c.subject)), el("td", {}, c.issuer), el("td", {}, expiry(c))]
      : [el("td", {}, el("span", { class: "bad" }, "unreadable")), el("td", { colspan: "2" }, c.problem)]),
    el("td", { class: "mono" }, c.path)));
  $("certificates").tBodies[0].replaceChildren(...(certificates.length ? certificates
    : [el("tr", {}, el("td", { colspan: "4" }, "no certificate watched"))]));
  const queues = data.queues.map((q) => el("tr", { "data-queue": q.name },
    el("td", { class: "mono" }, q.name), el("td", { class: "num" }, q.messages_ready ?? "–"),
    el("td", { class: "num" }, q.messages_unacknowledged ?? "–"), el("td", { class: "num" }, q.consumers ?? "–"),
    el("td", { class: "num" }, rate(q.publish_rate)), el("td", { class: "num" }, rate(q.deliver_rate)),
    el("td", {}, q.growing ? el("span", { class: "warn" }, "growing") : "steady")));
  $("queues").tBodies[0].replaceChildren(...(queues.length ? queues
    : [el("tr", {}, el("td", { colspan: "7" }, data.queues_error || "no queue"))]));
}

function expiry(certificate) {
  const days = certificate.days_left;
  const when = certificate.not_after.slice(0, 10);
  if (certificate.expires_in_s <= 0) return el("span", { class: "bad" }, `${when} (expired)`);
  const text = `${when} (in ${days} day${days === 1 ? "" : "s"})`;
  return certificate.expiring ? el("span", { class: "warn" }, text) : text;
}

// -- dead letters (operators) ----------------------------------------------------------

async function refreshDeadLetters() {
  const wanted = $("dl-state").value;
  const data = await api(`/v1/ops/dead-letters${wanted ? `?state=${wanted}` : ""}`);
  const rows = data.dead_letters.map((d) => el("tr", { "data-dead-letter": d.id },
    el("td", { class: "num" }, d.id), el("td", { class: "mono" }, d.queue), el("td", {}, d.reason),
    el("td", {}, d.died_at), el("td", {}, d.kind), el("td", {}, `${d.sender || "?"} → ${d.recipient || "?"}`),
    el("td", { class: "mono" }, d.message_id || "–"), el("td", {}, d.state, d.note ? el("div", { class: "muted" }, d.note) : null),
    el("td", {}, d.state === "held" ? [
      el("button", { type: "button", class: "primary", "data-action": "redrive", onclick: () => decide(d.id, "redrive") }, "Re-drive"),
      " ",
      el("button", { type: "button", class: "danger", "data-action": "discard", onclick: () => decide(d.id, "discard") }, "Discard"),
    ].reduce((cell, node) => { cell.append(node); return cell; }, el("span", {})) : "")));
  $("dead-letters").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "9" }, "No dead letter: nothing to do."))]));
  $("dead-count").textContent = wanted === "held" ? (data.dead_letters.length || "") : $("dead-count").textContent;
}

async function decide(id, action) {
  // The operator writes the reason each time: it is logged in the audit log as theirs, so nothing is pre-filled.
  const field = $("dl-reason");
  const reason = field.value.trim();
  if (!reason) {
    $("dl-result").textContent = `Dead letter ${id}: write the reason for the decision first; nothing was done.`;
    field.reportValidity();  // `required`: the browser says so at the field too
    field.focus();
    return;
  }
  try {
    const record = await api(`/v1/ops/dead-letters/${id}/${action}`, { method: "POST", body: JSON.stringify({ reason }) });
    $("dl-result").textContent = `Dead letter ${id}: ${action === "redrive" ? "re-driven" : "discarded"}, now ${record.state}. Logged in the audit log.`;
  } catch (error) {
    $("dl-result").textContent = `Dead letter ${id}: ${error.message}`;
  }
  await refreshDeadLetters();
}

// -- tracking ----------------------------------------------------------------------------

const NEGATIVE = new Set(["SUBMISSION_REJECTED", "RELAY_FAILED", "NON_DELIVERY", "NON_RETRIEVAL", "DEAD_LETTER", "INPUT_REJECTED"]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function track(query) {
  $("track-error").textContent = "";
  const parameter = UUID.test(query) ? "message_id" : "case_id";
  let data;
  try {
    data = await api(`/v1/console/track?${parameter}=${encodeURIComponent(query)}`);
  } catch (error) {
    $("track-error").textContent = error.message;
    return;
  }
  if (!data.messages.length) {
    $("track-results").replaceChildren(el("p", {}, `The gateway knows no message with ${parameter.replace("_", " ")} ${query}.`));
    return;
  }
  $("track-results").replaceChildren(...data.messages.map((m) => el("div", { class: "message", "data-message": m.message_id },
    el("h3", {}, `${m.message_type || "message"} ${m.sender || ""} → ${(m.recipients || []).join(", ")}`),
    el("div", { class: "muted" }, `message ${m.message_id} · case ${m.case_id || "?"} · state `, el("strong", {}, m.state),
      m.received_at ? ` · accepted ${m.received_at}` : ""),
    el("ol", { class: "timeline" }, ...m.timeline.map((step) => el("li", {
      class: NEGATIVE.has(step.label) ? "negative" : step.kind === "operator_action" ? "operator" : "",
      "data-step": step.label,
    },
    el("span", { class: "step" }, step.label), " ",
    el("span", { class: "muted" }, `${step.at || step.appended_at}${step.issuer ? ` · by ${step.issuer}` : ""}${step.recipient ? ` · for ${step.recipient}` : ""}`),
    step.reason ? el("div", { class: NEGATIVE.has(step.label) ? "error" : "note" }, step.reason) : null,
    el("div", { class: "muted" }, `audit log entry #${step.index} `,
      el("button", { type: "button", "data-verify": step.index, onclick: () => verifyFromElsewhere(step.index) }, "Verify proof"))))))));
}

// -- audit log ---------------------------------------------------------------------------

function b64decode(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function describe(entry) {
  const content = entry.content || {};
  if (entry.kind === "evidence" && content.evidence) {
    try {
      const statement = JSON.parse(new TextDecoder().decode(b64decode(content.evidence.payload)));
      return `${statement.evidence_type} · ${statement.sender} → ${statement.recipient || "-"} · by ${statement.issuer}`;
    } catch { return "evidence"; }
  }
  if (entry.kind === "operator_action") return `operator ${content.operator}: ${content.action} ${content.target} (${content.detail})`;
  if (entry.kind === "dead_letter") return `dead letter in ${content.queue} (${content.reason})`;
  if (entry.kind === "directory") return `directory version ${content.version}`;
  if (entry.kind === "rejected_input") return `input rejected: ${content.reason && content.reason.code}`;
  return entry.kind;
}

async function loadAudit(start) {
  $("audit-error").textContent = "";
  const agency = $("audit-agency").value.trim();
  const message = $("audit-message").value.trim();
  const caseId = $("audit-case").value.trim();
  const since = $("audit-since").value.trim();
  let entries = [];
  state.auditNext = null;
  try {
    if (caseId) {
      const tracked = await api(`/v1/console/track?case_id=${encodeURIComponent(caseId)}`);
      for (const m of tracked.messages) {
        const page = await api(`/v1/audit/entries?message_id=${encodeURIComponent(m.message_id)}&limit=1000`);
        entries.push(...page.entries);
      }
      entries.sort((a, b) => a.index - b.index);
    } else {
      const query = new URLSearchParams({ start: String(start || 0), limit: "50" });
      if (agency) query.set("agency", agency);
      if (message) query.set("message_id", message);
      if (since) query.set("since", since);
      const page = await api(`/v1/audit/entries?${query}`);
      entries = page.entries;
      state.auditNext = page.next_start;
    }
  } catch (error) {
    $("audit-error").textContent = error.message;
    return;
  }
  $("audit-next").hidden = state.auditNext === null;
  $("audit-entries").tBodies[0].replaceChildren(...(entries.length ? entries.map((e) => el("tr", { "data-index": e.index },
    el("td", { class: "num" }, e.index), el("td", {}, e.appended_at), el("td", {}, e.kind), el("td", {}, describe(e)),
    el("td", { class: "mono" }, e.message_id || "–"),
    el("td", {}, el("button", { type: "button", "data-verify": e.index, onclick: () => verifyFromElsewhere(e.index) }, "Verify")))) : [el("tr", {}, el("td", { colspan: "6" }, "No entry matches."))]));
}

// -- verification in the browser (RFC 9162 inclusion, C2SP signed note, Ed25519) --------

const utf8 = (text) => new TextEncoder().encode(text);
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out;
};
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

async function rootFromInclusionProof(leafHash, index, size, proof) {
  if (index >= size) throw new Error(`index ${index} is outside the tree of size ${size}`);
  let fn = index, sn = size - 1, r = leafHash;
  for (const p of proof) {
    if (sn === 0) throw new Error("the proof is too long");
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(concat([1], p, r));
      if (fn % 2 === 0) { while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); } }
    } else {
      r = await sha256(concat([1], r, p));
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("the proof is too short");
  return r;
}

async function verifyCheckpoint(note, origin, publicKey) {
  const split = note.indexOf("\n\n");
  if (split < 0) throw new Error("the checkpoint is not a signed note");
  const body = note.slice(0, split + 1);
  const lines = body.split("\n");
  if (lines[0] !== origin) throw new Error(`the checkpoint is for log ${lines[0]}, not ${origin}`);
  const keyHash = (await sha256(concat(utf8(origin), [0x0a], [0x01], publicKey))).slice(0, 4);
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  let found = false;
  for (const line of note.slice(split + 2).split("\n")) {
    if (!line.startsWith(`\u2014 ${origin} `)) continue;
    const raw = b64decode(line.slice(origin.length + 3));
    if (!equal(raw.slice(0, 4), keyHash)) continue;
    found = true;
    if (!(await crypto.subtle.verify({ name: "Ed25519" }, key, raw.slice(4), utf8(body)))) {
      throw new Error("the log's signature does not verify over the checkpoint");
    }
  }
  if (!found) throw new Error("the checkpoint carries no signature by this key");
  return { size: Number(lines[1]), root: b64decode(lines[2]) };
}

async function loadKey() {
  if ($("verify-key").value.trim()) return;
  try {
    const keys = await api("/v1/console/keys");
    state.origin = keys.log_origin;
    $("verify-key").value = keys.log_keys[keys.log_keys.length - 1].public_key;
    $("verify-key-source").textContent = `Pre-filled from the gateway's directory (version ${keys.directory_version}, log ${keys.log_origin}, key ${keys.log_keys[keys.log_keys.length - 1].key_id}). An auditor compares it with the key the directory authority published, or pastes that one.`;
  } catch (error) {
    $("verify-key-source").textContent = error.message;
  }
}

async function verifyFromElsewhere(index) {
  show("verify");
  $("verify-index").value = String(index);
  await loadKey();
  await verifyEntry();
}

async function verifyEntry() {
  const steps = $("verify-steps");
  steps.replaceChildren();
  $("verdict").className = "verdict";
  $("verdict").textContent = "Verifying…";
  const step = (text, ok) => steps.append(el("li", { class: ok ? "pass" : "fail" }, text));
  const index = Number($("verify-index").value);
  try {
    if (!state.origin) await loadKey();
    const publicKey = b64decode($("verify-key").value.trim());
    if (publicKey.length !== 32) throw new Error("the log public key must be 32 bytes of base64");
    const latest = await api("/v1/audit/checkpoint");
    const checkpoint = await verifyCheckpoint(latest.checkpoint, state.origin, publicKey);
    step(`Checkpoint signature: valid Ed25519 signature by ${state.origin} over tree size ${checkpoint.size}`, true);
    if (index >= checkpoint.size) throw new Error(`entry #${index} is not yet covered by the latest checkpoint (size ${checkpoint.size})`);
    const page = await api(`/v1/audit/entries?start=${index}&limit=1`);
    const entry = page.entries[0];
    if (!entry || entry.index !== index) throw new Error(`the gateway did not return entry #${index}`);
    const leafHash = await sha256(concat([0], b64decode(entry.leaf)));
    step(`Leaf hash computed here from the entry's bytes (${entry.kind}: ${describe(entry)})`, true);
    const proof = await api(`/v1/audit/proof/inclusion?index=${index}&size=${checkpoint.size}`);
    const root = await rootFromInclusionProof(leafHash, index, checkpoint.size, proof.proof.map(b64decode));
    if (!equal(root, checkpoint.root)) throw new Error("the inclusion proof leads to another root than the signed checkpoint's");
    step(`Inclusion proof: ${proof.proof.length} hashes lead from the entry to the signed root`, true);
    $("verdict").className = "verdict valid";
    $("verdict").textContent = `VALID: entry #${index} is in the log, under a checkpoint signed by ${state.origin} (tree size ${checkpoint.size}).`;
  } catch (error) {
    step(error.message, false);
    $("verdict").className = "verdict invalid";
    $("verdict").textContent = `NOT VERIFIED: ${error.message}`;
  }
}

async function exportLog() {
  $("export-status").textContent = "Reading the log…";
  const checkpoints = [];
  let after = 0;
  while (after !== null) {
    const page = await api(`/v1/audit/checkpoints?after=${after}&limit=1000`);
    checkpoints.push(...page.checkpoints);
    after = page.next_after;
  }
  const size = checkpoints.length ? checkpoints[checkpoints.length - 1].tree_size : 0;
  const entries = [];
  while (entries.length < size) {
    const page = await api(`/v1/audit/entries?start=${entries.length}&limit=1000`);
    if (!page.entries.length) break;
    entries.push(...page.entries.map((e) => ({ leaf: e.leaf, receipt: e.receipt })));
  }
  const document_ = { format: "rogatory-audit-export/1", checkpoints: checkpoints.map((c) => c.checkpoint), entries: entries.slice(0, size) };
  const blob = new Blob([JSON.stringify(document_, null, 1) + "\n"], { type: "application/json" });
  const link = el("a", { href: URL.createObjectURL(blob), download: "rogatory-audit-export.json" });
  document.body.append(link);
  link.click();
  link.remove();
  $("export-status").textContent = `Exported ${checkpoints.length} checkpoints and ${Math.min(entries.length, size)} entries. Verify offline with: rogatory audit verify --export rogatory-audit-export.json --authority-key KEY`;
}

// -- wiring ------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value.trim()).catch((error) => {
      $("login-error").textContent = error.status === 401 ? "This token is not accepted." : error.message;
    });
  });
  $("sign-out").addEventListener("click", signOut);
  for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => show(button.dataset.view));
  $("dl-state").addEventListener("change", refreshDeadLetters);
  $("track-form").addEventListener("submit", (event) => { event.preventDefault(); track($("track-query").value.trim()); });
  $("audit-form").addEventListener("submit", (event) => { event.preventDefault(); loadAudit(0); });
  $("audit-next").addEventListener("click", () => loadAudit(state.auditNext));
  $("verify-button").addEventListener("click", verifyEntry);
  $("export-button").addEventListener("click", () => exportLog().catch((error) => { $("export-status").textContent = error.message; }));
  if (state.token) signIn(state.token).catch(() => { sessionStorage.removeItem("rogatory-token"); $("login").hidden = false; });
});
