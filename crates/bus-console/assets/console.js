// The bus console. Everything shown from the bus goes through textContent
// (never innerHTML), so a payload or error text is shown, never run. The
// page reads and acts only through the JSON API under /api/.
"use strict";

const POLL_MS = 1000;
const PAGE = 50;
const state = {
  view: "overview",
  token: sessionStorage.getItem("bus-console-token") || "",
  group: null,          // signature of the group whose letters are shown
  cursors: [null],      // `after` of each page seen, for "first page"
  selected: new Set(),  // ids of chosen letters
  letter: null,         // the letter shown in full
  payloadMode: "text",
  timer: null,
  refreshing: false,
};

const $ = (sel) => document.querySelector(sel);

// An element with attributes and children; strings become text nodes.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) {
    e.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
  }
  return e;
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function say(text, isError) {
  const m = $("#message");
  m.textContent = text;
  m.className = isError ? "error" : "";
}

async function api(path, options) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const init = { method: "GET", headers, ...(options || {}) };
  if (init.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.body);
  }
  init.headers = headers;
  const r = await fetch(path, init);
  let body = null;
  const type = r.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) body = await r.json();
  if (!r.ok) {
    const why = body && body.error ? body.error : r.status + " " + r.statusText;
    throw new Error(why);
  }
  return body;
}

const pct = (x) => (x === null || x === undefined ? "–" : (x * 100).toFixed(1) + " %");
const when = (t) => (t ? String(t).replace("T", " ").replace(/\.\d+Z$/, "Z") : "–");
const fixed = (x, d) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

// ---- overview ---------------------------------------------------------

function rates(history, key) {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const dt = (history[i].at_ms - history[i - 1].at_ms) / 1000;
    if (dt > 0) out.push((history[i][key] - history[i - 1][key]) / dt);
  }
  return out;
}

function successRates(history) {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i].acked - history[i - 1].acked;
    const f = history[i].failed - history[i - 1].failed;
    out.push(a + f > 0 ? a / (a + f) : null);
  }
  return out;
}

function chart(svg, values, fixedMax) {
  const pts = values.map((v, i) => [i, v]).filter(([, v]) => v !== null);
  const max = fixedMax || Math.max(1e-9, ...pts.map(([, v]) => v));
  const n = Math.max(values.length - 1, 1);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.map(([i, v]) => (i * 300 / n).toFixed(1) + "," + (78 - v / max * 74).toFixed(1)).join(" "));
  const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", "10");
  label.setAttribute("font-size", "9");
  label.textContent = fixedMax ? "" : "max " + max.toFixed(1);
  svg.replaceChildren(line, label);
}

function card(label, value) {
  return el("div", { class: "card" }, el("div", { class: "muted" }, label), el("div", { class: "v" }, value));
}

async function overview() {
  const o = await api("/api/overview");
  const badge = $("#status");
  badge.textContent = o.bus ? o.status : "no bus attached";
  badge.className = "badge " + (o.bus ? o.status : "");
  $("#reasons").replaceChildren(...o.reasons.map((r) => el("p", { class: "muted" }, r)));
  const w = o.window;
  $("#cards").replaceChildren(
    card("published (window)", w.published),
    card("acked (window)", w.acked),
    card("failed attempts (window)", w.failed),
    card("dead-lettered (window)", w.dead_lettered),
    card("success rate", pct(o.success_rate)),
    card("delivery success", pct(o.delivery_success_rate)),
    card("errors / minute", fixed(o.error_rate_per_minute, 1)),
    card("letters in the DLQ", o.dlq ? (o.dlq.letters ?? o.dlq.error) : "–"),
  );
  chart($("#chart-throughput"), rates(o.history, "acked"));
  chart($("#chart-errors"), rates(o.history, "failed"));
  chart($("#chart-success"), successRates(o.history), 1);
  const cats = new Set([...Object.keys(o.categories), ...Object.keys(o.category_totals)]);
  replaceRows($("#categories tbody"), [...cats].sort().map((c) =>
    el("tr", {}, el("td", {}, c), el("td", { class: "num" }, o.categories[c] || 0), el("td", { class: "num" }, o.category_totals[c] || 0))));
}

// ---- circuits and queues ---------------------------------------------

async function circuits() {
  const c = await api("/api/circuits");
  replaceRows($("#circuits tbody"), c.circuits.map((b) => {
    const act = (action, label) => el("button", {
      type: "button", class: "circuit-" + action, disabled: c.actions ? null : "disabled",
      onclick: () => confirmThen(label + " circuit " + b.name + "?", async () => {
        const r = await api("/api/circuits/action", { method: "POST", body: { name: b.name, action } });
        say("circuit " + r.name + " is now " + r.state);
      }),
    }, label);
    return el("tr", { "data-circuit": b.name },
      el("td", {}, b.name), el("td", {}, b.state), el("td", {}, b.time_in_state || "–"),
      el("td", { class: "num" }, b.failure_rate === undefined ? "–" : fixed(b.failure_rate, 1) + " %"),
      el("td", { class: "num" }, b.slow_call_rate === undefined ? "–" : fixed(b.slow_call_rate, 1) + " %"),
      el("td", { class: "num" }, b.calls ?? "–"), el("td", { class: "num" }, b.trips ?? "–"),
      el("td", { class: "num" }, b.rejected_calls ?? "–"),
      el("td", {}, act("force_open", "force open"), act("disable", "disable"), act("reset", "reset")));
  }));
}

async function queues() {
  const q = await api("/api/queues");
  $("#oldest").textContent = q.oldest_message_age_seconds === null ? "" :
    "oldest waiting message: " + fixed(q.oldest_message_age_seconds, 1) + " s";
  replaceRows($("#queues tbody"), q.queues.map((x) => el("tr", {},
    el("td", {}, x.topic), el("td", {}, x.group), el("td", { class: "num" }, x.depth),
    el("td", { class: "num" }, x.in_flight ?? "–"),
    el("td", { class: "num" }, x.capacity), el("td", { class: "num" }, x.capacity ? pct(x.depth / x.capacity) : "–"))));
}

// ---- dead letters -----------------------------------------------------

function filterParams() {
  const p = new URLSearchParams();
  for (const [k, v] of new FormData($("#filters"))) if (v) p.set(k, v);
  return p;
}

function filterObject() {
  return Object.fromEntries(filterParams());
}

// The JSON each table was last drawn from: a table whose data did not
// change is not redrawn, so a row is not replaced under the operator's
// pointer every second.
const drawn = {};
function changed(table, data) {
  const key = JSON.stringify(data);
  if (drawn[table] === key) return false;
  drawn[table] = key;
  return true;
}

async function groups() {
  const g = await api("/api/dlq/groups?" + filterParams());
  if (!changed("groups", [g, state.group])) return;
  $("#groups-summary").textContent = g.letters + " letters in " + g.groups.length + " groups" +
    (g.contents_shown ? "" : " (error texts need the operator token)");
  replaceRows($("#groups tbody"), g.groups.map((x) => el("tr", {
    class: "group-row" + (x.signature === state.group ? " chosen" : ""), "data-signature": x.signature,
  },
    el("td", { class: "num count" }, x.count), el("td", {}, when(x.first_seen)), el("td", {}, when(x.last_seen)),
    el("td", {}, x.category), el("td", {}, x.reason), el("td", {}, x.component),
    el("td", {}, (x.topics || []).join(", ")),
    el("td", { class: "err sample" }, x.sample_message === null ? "(hidden)" : x.sample_message),
    el("td", {},
      el("button", { type: "button", class: "open-group", onclick: () => openGroup(x.signature) }, "letters"),
      el("button", { type: "button", class: "replay-group", onclick: () => act("replay", { signature: x.signature }, x.count + " letters of this group") }, "replay"),
      el("button", { type: "button", class: "purge-group danger", onclick: () => act("purge", { signature: x.signature }, x.count + " letters of this group") }, "purge")))));
}

function openGroup(signature) {
  state.group = signature;
  state.cursors = [null];
  state.selected.clear();
  $("#group-name").textContent = signature;
  $("#group-panel").hidden = false;
  refresh();
}

async function letters() {
  if (!state.group) return;
  const p = filterParams();
  p.set("signature", state.group);
  p.set("limit", PAGE);
  const after = state.cursors[state.cursors.length - 1];
  if (after) p.set("after", after);
  const l = await api("/api/dlq/letters?" + p);
  state.next = l.next;
  if (!changed("letters", [l, state.cursors.length, state.selected.size])) return;
  $("#page-info").textContent = "page " + state.cursors.length + " · " + l.total + (l.more ? "+" : "") + " letters";
  $("#page-next").disabled = !l.next;
  replaceRows($("#letters tbody"), l.letters.map((x) => el("tr", { class: "letter-row", "data-id": x.id },
    el("td", {}, el("input", {
      type: "checkbox", class: "pick", checked: state.selected.has(x.id) ? "checked" : null,
      onchange: (e) => (e.target.checked ? state.selected.add(x.id) : state.selected.delete(x.id)),
    })),
    el("td", {}, el("button", { type: "button", class: "open-letter", onclick: () => openLetter(x.id) }, x.id.slice(0, 13) + "…")),
    el("td", {}, x.topic), el("td", {}, when(x.dead_lettered_at)), el("td", { class: "num" }, x.attempts),
    el("td", { class: "letter-state" }, x.state), el("td", { class: "err" }, x.error_message === null ? "(hidden)" : x.error_message))));
}

function showPayload() {
  const p = state.letter && state.letter.payload;
  if (!p) return;
  const asText = state.payloadMode === "text" && p.text !== null;
  const hex = p.hex.replace(/(..)/g, "$1 ").replace(/((?:.. ){16})/g, "$1\n");
  $("#payload").textContent = (asText ? p.text : hex) + (p.truncated ? "\n… (shortened; download for all)" : "");
  $("#payload-len").textContent = p.len + " bytes" + (p.text === null ? ", not UTF-8" : "");
}

async function openLetter(id) {
  try {
    const l = await api("/api/dlq/letters/" + encodeURIComponent(id));
    state.letter = l;
    state.payloadMode = l.payload.text === null ? "hex" : "text";
    $("#letter-id").textContent = l.id;
    const facts = [["state", l.state], ["topic", l.message.topic], ["component", l.component], ["group", l.group],
      ["reason", l.reason], ["dead-lettered", when(l.dead_lettered_at)], ["attempts", l.message.attempt],
      ["message id", l.message.id], ["correlation", l.message.correlation_id], ["signature", l.signature],
      ["replay refused", l.replay_refusal ? l.replay_refusal.reason : null]];
    $("#letter-facts").replaceChildren(...facts.filter(([, v]) => v !== null && v !== undefined)
      .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    replaceRows($("#letter-headers tbody"), Object.entries(l.message.headers || {}).map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", {}, v))));
    $("#letter-error").textContent = l.error.category + " / " + l.error.severity + " — " + l.error.error_type + "\n" + l.error.message;
    replaceRows($("#letter-history tbody"), (l.history || []).map((h) => el("tr", {},
      el("td", {}, h.attempt), el("td", {}, when(h.at)), el("td", {}, h.component), el("td", {}, h.category),
      el("td", { class: "err" }, h.error_type + ": " + h.message), el("td", {}, h.decision))));
    showPayload();
    $("#letter-panel").hidden = false;
  } catch (e) {
    say("cannot show the letter: " + e.message, true);
  }
}

async function download() {
  if (!state.letter) return;
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const r = await fetch("/api/dlq/letters/" + encodeURIComponent(state.letter.id) + "/payload", { headers });
  if (!r.ok) return say("download refused: " + r.status, true);
  const url = URL.createObjectURL(await r.blob());
  const a = el("a", { href: url, download: "letter-" + state.letter.id + ".bin" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---- actions ----------------------------------------------------------

function confirmThen(text, action) {
  $("#confirm-text").textContent = text;
  const box = $("#confirm");
  box.hidden = false;
  $("#confirm-yes").onclick = async () => {
    box.hidden = true;
    try {
      await action();
    } catch (e) {
      say("refused: " + e.message, true);
    }
    refresh();
  };
  $("#confirm-no").onclick = () => { box.hidden = true; };
}

function act(kind, selection, what) {
  const body = { ...filterObject(), ...selection };
  confirmThen(kind + " " + what + "?", async () => {
    const r = await api("/api/dlq/" + kind, { method: "POST", body });
    say(kind === "replay" ? r.marked + " letters marked for replay" : r.purged + " letters purged");
    state.selected.clear();
  });
}

function actSelected(kind) {
  const ids = [...state.selected];
  if (!ids.length) return say("choose letters first", true);
  act(kind, { ids, state: "any", signature: undefined }, ids.length + " chosen letters");
}

// ---- wiring -----------------------------------------------------------

function show(view) {
  state.view = view;
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.view === view);
  refresh();
}

async function refresh() {
  // One refresh at a time: on a large store a view can take longer than
  // the poll interval, and stacked requests would only queue up.
  if (state.refreshing) return;
  state.refreshing = true;
  try {
    if (state.view === "overview") await overview();
    else {
      const o = await api("/api/overview");
      $("#status").textContent = o.bus ? o.status : "no bus attached";
      $("#status").className = "badge " + (o.bus ? o.status : "");
    }
    if (state.view === "circuits") await circuits();
    if (state.view === "queues") await queues();
    if (state.view === "dlq") { await groups(); await letters(); }
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
    if ($("#message").className !== "error" && $("#message").textContent.startsWith("cannot reach")) say("");
  } catch (e) {
    say("cannot reach the bus: " + e.message, true);
  } finally {
    state.refreshing = false;
  }
}

function tokenState() {
  $("#token-state").textContent = state.token ? "token in use" : "no token: actions refused";
}

document.addEventListener("DOMContentLoaded", () => {
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => show(t.dataset.view));
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("#token").value.trim();
    $("#token").value = "";
    sessionStorage.setItem("bus-console-token", state.token);
    tokenState();
    refresh();
  });
  $("#token-forget").addEventListener("click", () => {
    state.token = "";
    sessionStorage.removeItem("bus-console-token");
    tokenState();
    refresh();
  });
  $("#filters").addEventListener("change", () => { state.cursors = [null]; refresh(); });
  $("#filters").addEventListener("submit", (e) => e.preventDefault());
  $("#page-next").addEventListener("click", () => { if (state.next) { state.cursors.push(state.next); refresh(); } });
  $("#page-first").addEventListener("click", () => { state.cursors = [null]; refresh(); });
  $("#replay-selected").addEventListener("click", () => actSelected("replay"));
  $("#purge-selected").addEventListener("click", () => actSelected("purge"));
  $("#select-all").addEventListener("change", (e) => {
    for (const box of document.querySelectorAll("#letters .pick")) {
      box.checked = e.target.checked;
      const id = box.closest("tr").dataset.id;
      if (box.checked) state.selected.add(id); else state.selected.delete(id);
    }
  });
  $("#letter-close").addEventListener("click", () => { $("#letter-panel").hidden = true; state.letter = null; });
  $("#payload-as-text").addEventListener("click", () => { state.payloadMode = "text"; showPayload(); });
  $("#payload-as-hex").addEventListener("click", () => { state.payloadMode = "hex"; showPayload(); });
  $("#payload-download").addEventListener("click", download);
  tokenState();
  const start = location.hash.slice(1);
  show(["overview", "circuits", "queues", "dlq"].includes(start) ? start : "overview");
  state.timer = setInterval(refresh, POLL_MS);
});
