// The operator console.  What it shows comes from /ws (this operator's view);
// what it does goes through the JSON API.  The agent's state on screen changes
// only when the PBX's events say so: buttons send an AMI action and wait.

import {api, ApiFailure, byId, clockTime, dateTime, el, Live, setCsrf, setText} from "/static/common.js";
import {applyI18n, categoryLabel, duration, errorText, ivrLabel, onLangChange, reasonLabel, stateLabel, t, wireLangToggle} from "/static/i18n.js";

let me = null;
let config = null;
let live = null;
let view = null;            // the newest view from the server
let pending = null;         // {signature, at} while an agent action awaits the PBX
let poppedCall = null;      // uniqueid on screen in the pop
let historyFor = null;
let draft = null;           // the draft in the form (server copy)
let dirty = false;
let saving = null;          // the save in flight (a promise)
let saveTimer = null;
let openingFor = null;      // call uniqueid whose draft is being opened

const AGENT_KEYS = {F2: "ready", F3: "pause", F4: "form", F6: "transfer"};

// --------------------------------------------------------------------------- start

async function boot() {
  applyI18n();
  wireLangToggle();
  let who;
  try { who = await api("GET", "/api/me"); } catch { return; }
  me = who.user; config = who.config; setCsrf(who.csrf);
  setText("me", `${me.display_name} · ${me.member}`);
  buildPauseMenu();
  buildTransferChoices();
  wire();
  onLangChange(() => { buildPauseMenu(); render(); renderHistory(lastHistory); renderOtherDrafts(); });
  live = new Live((doc) => { view = doc; render(); }, linkStatus);
  live.connect();
  live.keepAlive();
  setInterval(tick, 1000);
  await loadDrafts();
}

function wire() {
  byId("btn-signin").addEventListener("click", () => agentAction("signin"));
  byId("btn-ready").addEventListener("click", () => agentAction("ready"));
  byId("btn-pause").addEventListener("click", togglePauseMenu);
  byId("btn-signout").addEventListener("click", () => agentAction("signout"));
  byId("btn-hangup").addEventListener("click", hangup);
  byId("btn-transfer").addEventListener("click", openTransfer);
  byId("transfer-cancel").addEventListener("click", () => byId("transfer-dialog").close());
  byId("transfer-form").addEventListener("submit", transfer);
  byId("draft-form").addEventListener("submit", (ev) => { ev.preventDefault(); submitDraft(); });
  for (const id of ["draft-caller", "draft-category", "draft-text"]) {
    byId(id).addEventListener("input", draftEdited);
  }
  byId("web-signout").addEventListener("click", signOutWeb);
  document.addEventListener("keydown", onKey);
  window.addEventListener("beforeunload", () => { if (dirty) backup(); });
}

// --------------------------------------------------------------------------- rendering

function linkStatus(status) {
  if (status !== "open") {
    const link = byId("link");
    link.className = "pill down";
    link.textContent = t("link.reconnecting");
  } else {
    render();
  }
}

function render() {
  if (!view) return;
  const link = byId("link");
  link.className = "pill " + (view.link.up ? "up" : "down");
  link.textContent = t(view.link.up ? "link.up" : "link.down");
  byId("stale").hidden = view.link.up;
  renderAgent();
  renderQueues();
  renderCall();
  maybeOpenDraftForCall();
  tick();
}

function agentSignature(a) {
  return a ? `${a.state}|${a.reason}|${a.queues.join(",")}|${a.paused}` : "none";
}

function renderAgent() {
  const a = view.agent;
  const state = a ? a.state : "logged_out";
  if (pending && (agentSignature(a) !== pending.signature || Date.now() - pending.at > 8000)) {
    pending = null;
    setMessage("agent-message", "");
  }
  const badge = byId("state-badge");
  badge.className = "state-badge st-" + state;
  setText("state-label", stateLabel(state));
  const reason = a && a.paused ? reasonLabel(a.reason) : "";
  setText("state-reason", reason);
  const signedIn = a && a.queues.length > 0;
  const busy = pending !== null;
  byId("btn-signin").disabled = busy || signedIn;
  byId("btn-ready").disabled = busy || !signedIn || !(state === "paused" || (a && a.paused));
  byId("btn-pause").disabled = busy || !signedIn || state === "logged_out";
  byId("btn-signout").disabled = busy || !signedIn || state === "ringing" || state === "on_call";
  if (!signedIn) byId("pause-menu").hidden = true;
  document.title = (state === "ringing" ? "☎ " + t("call.ringing") + " · " : "") + t("console.title");
}

function renderQueues() {
  const list = byId("queues");
  list.replaceChildren();
  const now = live.now();
  for (const q of Object.values(view.queues)) {
    const li = el("li", {cls: q.waiting ? "busy" : ""},
      el("span", {text: q.title}),
      el("span", {cls: "count", text: q.waiting
        ? t("queues.waiting", {n: q.waiting}) + " · " + t("queues.longest", {d: duration(now - q.oldest_joined_at)})
        : t("queues.waiting", {n: 0})}));
    list.append(li);
  }
}

function renderCall() {
  const a = view.agent;
  const call = view.call || null;
  const shown = call || view.last_call || null;
  const pop = byId("pop");
  byId("call-empty").hidden = shown !== null;
  pop.hidden = shown === null;
  if (!shown) { poppedCall = null; return; }
  const ringing = call && a && a.state === "ringing";
  const connected = call && a && a.state === "on_call";
  pop.className = "pop " + (ringing ? "ringing" : connected ? "connected" : "last");
  setText("pop-status", ringing ? t("call.ringing") : connected ? t("call.connected") : t("call.last"));
  if (shown.uniqueid !== poppedCall) {
    poppedCall = shown.uniqueid;
    pop.dataset.uniqueid = shown.uniqueid;
    pop.dataset.shownAt = String(Date.now());
    loadHistory(shown.uniqueid);
  }
  setText("pop-caller", shown.caller_num || "—");
  setText("pop-name", shown.caller_name || "—");
  setText("pop-hotline", shown.hotline || "—");
  setText("pop-ivr", ivrLabel(shown.ivr_path) || "—");
  setText("pop-category", categoryLabel(shown.category) || "—");
  setText("pop-queue", shown.queue_title || shown.queue);
  byId("call-actions").hidden = !connected;
  byId("btn-hangup").disabled = !connected;
  byId("btn-transfer").disabled = !connected;
}

// Clock-driven parts: time in state, waited, wrap-up countdown.
function tick() {
  if (!view || !live) return;
  const now = live.now();
  const a = view.agent;
  setText("state-time", a && a.state !== "logged_out" ? t("agent.in_state", {d: duration(now - a.since)}) : "");
  const wrap = byId("wrap");
  if (a && a.state === "wrap_up" && a.wrap_until) {
    wrap.hidden = false;
    setText(wrap, t("agent.wrap_left", {d: duration(Math.max(0, a.wrap_until - now))}));
  } else {
    wrap.hidden = true;
  }
  const shown = view.call || view.last_call;
  if (shown) {
    const waited = shown.hold_time !== null && shown.hold_time !== undefined
      ? shown.hold_time : now - shown.joined_at;
    setText("pop-waited", duration(waited));
  }
  if (Object.values(view.queues).some((q) => q.waiting)) renderQueues();
}

let lastHistory = null;

async function loadHistory(uniqueid) {
  historyFor = uniqueid;
  renderHistory(null);
  try {
    const h = await api("GET", `/api/calls/${encodeURIComponent(uniqueid)}/history`);
    if (historyFor === uniqueid) { lastHistory = h; renderHistory(h); }
  } catch (e) {
    if (historyFor === uniqueid) byId("history").replaceChildren(el("p", {cls: "muted", text: e.message}));
  }
}

function renderHistory(h) {
  const box = byId("history");
  box.replaceChildren();
  if (!h) return;
  if (!h.calls.length && !h.work_orders.length) {
    box.append(el("p", {cls: "muted", text: t("call.history_none")}));
    return;
  }
  box.append(el("p", {cls: "muted", text: t("call.history_calls", {n: h.calls.length}) + " · " + t("call.history_orders", {n: h.work_orders.length})}));
  const ul = el("ul");
  for (const w of h.work_orders) {
    ul.append(el("li", {},
      el("span", {cls: "when", text: dateTime(w.created_at)}),
      el("strong", {text: w.number + " "}),
      el("span", {text: [w.category, w.text.slice(0, 80)].filter(Boolean).join(" · ")})));
  }
  for (const c of h.calls) {
    ul.append(el("li", {},
      el("span", {cls: "when", text: dateTime(c.joined_at)}),
      el("span", {text: [t("outcome." + c.outcome), c.agent, c.hotline].filter(Boolean).join(" · ")}),
      // The server offers a recording only to those who may hear it (an operator: their own calls).
      c.recording ? el("audio", {attrs: {controls: "", preload: "none", src: c.recording}}) : null));
  }
  box.append(ul);
}

// --------------------------------------------------------------------------- agent actions

function setMessage(id, text, kind = "") {
  const m = byId(id);
  m.className = "message " + kind;
  m.textContent = text;
}

async function agentAction(kind, body = {}) {
  if (pending) return;
  const before = agentSignature(view && view.agent);
  pending = {signature: before, at: Date.now()};
  setMessage("agent-message", t("agent.pending"));
  renderAgent();
  try {
    await api("POST", "/api/agent/" + kind, body);
  } catch (e) {
    pending = null;
    setMessage("agent-message", errorText(e), "error");
    renderAgent();
  }
}

function buildPauseMenu() {
  const ol = byId("pause-reasons");
  ol.replaceChildren();
  config.pause_reasons.forEach((reason, i) => {
    const b = el("button", {attrs: {type: "button"}, data: {reason}},
      el("kbd", {text: String(i + 1)}), el("span", {text: " " + reasonLabel(reason)}));
    b.addEventListener("click", () => pauseWith(reason));
    ol.append(el("li", {}, b));
  });
}

function togglePauseMenu() {
  if (byId("btn-pause").disabled) return;
  const menu = byId("pause-menu");
  menu.hidden = !menu.hidden;
  if (!menu.hidden) menu.querySelector("button").focus();
}

function pauseWith(reason) {
  byId("pause-menu").hidden = true;
  agentAction("pause", {reason});
}

// --------------------------------------------------------------------------- call actions

async function hangup() {
  if (!view.call) return;
  try {
    await api("POST", "/api/call/hangup", {uniqueid: view.call.uniqueid});
    setMessage("call-message", "");
  } catch (e) {
    setMessage("call-message", errorText(e), "error");
  }
}

function buildTransferChoices() {
  const qbox = byId("transfer-queues");
  const dbox = byId("transfer-departments");
  qbox.replaceChildren(); dbox.replaceChildren();
  for (const q of config.queues) {
    qbox.append(el("label", {}, el("input", {attrs: {type: "radio", name: "target", value: "queue:" + q.queue}}),
      el("span", {text: q.title})));
  }
  for (const d of config.departments) {
    dbox.append(el("label", {}, el("input", {attrs: {type: "radio", name: "target", value: "department:" + d.number}}),
      el("span", {text: `${d.name} (${d.number})`})));
  }
}

function openTransfer() {
  if (byId("btn-transfer").disabled || !view.call) return;
  byId("transfer-dialog").showModal();
  const first = byId("transfer-form").querySelector("input");
  if (first) first.focus();
}

async function transfer(ev) {
  ev.preventDefault();
  const chosen = byId("transfer-form").querySelector("input[name=target]:checked");
  byId("transfer-dialog").close();
  if (!chosen || !view.call) return;
  const [kind, ...rest] = chosen.value.split(":");
  try {
    await api("POST", "/api/call/transfer", {uniqueid: view.call.uniqueid, kind, target: rest.join(":")});
    setMessage("call-message", "");
  } catch (e) {
    setMessage("call-message", errorText(e), "error");
  }
}

// --------------------------------------------------------------------------- drafts

function backupKey(id) { return `hotline.draft.${me.username}.${id}`; }

function formFields() {
  return {caller: byId("draft-caller").value, category: byId("draft-category").value, text: byId("draft-text").value};
}

// Every keystroke is kept on this computer at once; the server copy follows.
function backup() {
  if (!draft) return;
  localStorage.setItem(backupKey(draft.id), JSON.stringify({...formFields(), t: Date.now()}));
}

function draftEdited() {
  dirty = true;
  backup();
  setText("draft-status", t("draft.saving"));
  clearTimeout(saveTimer);
  saveTimer = setTimeout(saveDraft, 600);
}

async function saveDraft() {
  clearTimeout(saveTimer);
  if (saving) { await saving; }
  if (!draft || !dirty) return;
  const target = draft;
  const fields = formFields();
  saving = (async () => {
    try {
      const saved = await api("PUT", `/api/drafts/${target.id}`, fields);
      if (draft && draft.id === saved.id) {
        draft = saved;
        const now = formFields();
        if (now.caller === fields.caller && now.category === fields.category && now.text === fields.text) {
          dirty = false;
          localStorage.removeItem(backupKey(saved.id));
          setText("draft-status", t("draft.saved", {t: clockTime(saved.updated_at)}));
        }
      }
    } catch (e) {
      setText("draft-status", t("draft.unsaved"));
      if (!(e instanceof ApiFailure && e.status < 500 && e.status !== 401)) {
        saveTimer = setTimeout(saveDraft, 3000);
      }
    }
  })();
  await saving;
  saving = null;
  if (dirty && draft && draft.id === target.id && !saveTimer) saveTimer = setTimeout(saveDraft, 600);
}

function showDraft(d) {
  draft = d;
  dirty = false;
  byId("draft-form").hidden = false;
  byId("draft-empty").hidden = true;
  setText("draft-call", d.call_uniqueid ? t("draft.call", {id: d.call_uniqueid}) : t("draft.nocall"));
  byId("draft-caller").value = d.caller;
  byId("draft-category").value = d.category;
  byId("draft-text").value = d.text;
  setText("draft-status", t("draft.saved", {t: clockTime(d.updated_at)}));
  // A newer copy on this computer (typed but never saved: reload, crash, network) wins.
  const raw = localStorage.getItem(backupKey(d.id));
  if (raw) {
    try {
      const b = JSON.parse(raw);
      const differs = b.caller !== d.caller || b.category !== d.category || b.text !== d.text;
      if (differs && b.t > d.updated_at * 1000) {
        byId("draft-caller").value = b.caller;
        byId("draft-category").value = b.category;
        byId("draft-text").value = b.text;
        setMessage("draft-message", t("draft.restored"), "ok");
        draftEdited();
      } else {
        localStorage.removeItem(backupKey(d.id));
      }
    } catch { localStorage.removeItem(backupKey(d.id)); }
  }
  renderOtherDrafts();
}

function hideDraft() {
  draft = null;
  dirty = false;
  byId("draft-form").hidden = true;
  byId("draft-empty").hidden = false;
}

let openDrafts = [];

async function loadDrafts() {
  try {
    const r = await api("GET", "/api/drafts");
    openDrafts = r.drafts;
  } catch { return; }
  if (!draft && openDrafts.length) showDraft(openDrafts[0]);
  renderOtherDrafts();
}

function renderOtherDrafts() {
  const others = openDrafts.filter((d) => !draft || d.id !== draft.id);
  byId("other-drafts").hidden = others.length === 0;
  const ul = byId("other-list");
  ul.replaceChildren();
  for (const d of others) {
    const b = el("button", {cls: "link-button", attrs: {type: "button"}, text: t("draft.open")});
    b.addEventListener("click", async () => { await saveDraft(); showDraft(d); });
    ul.append(el("li", {}, el("span", {text: `${d.caller || "—"} · ${clockTime(d.updated_at)} · ${d.text.slice(0, 30)}`}), b));
  }
}

async function openDraft(callUniqueid) {
  await saveDraft();
  const d = await api("POST", "/api/drafts", callUniqueid ? {call_uniqueid: callUniqueid} : {});
  openDrafts = [d, ...openDrafts.filter((x) => x.id !== d.id)];
  showDraft(d);
  return d;
}

// On answer: the work-order draft for this call opens, prefilled.
function maybeOpenDraftForCall() {
  const a = view.agent;
  const call = view.call;
  if (!a || a.state !== "on_call" || !call) return;
  if ((draft && draft.call_uniqueid === call.uniqueid) || openingFor === call.uniqueid) return;
  openingFor = call.uniqueid;
  openDraft(call.uniqueid)
    .catch((e) => setMessage("draft-message", errorText(e), "error"))
    .finally(() => { openingFor = null; });
}

// F4: to the work-order text; without a draft, open one (for the call on screen if any).
async function focusForm() {
  if (!draft) {
    const call = view && (view.call || view.last_call);
    try {
      await openDraft(call ? call.uniqueid : null);
    } catch (e) {
      setMessage("draft-message", errorText(e), "error");
      return;
    }
  }
  byId("draft-text").focus();
}

async function submitDraft() {
  if (!draft) return;
  if (!byId("draft-text").value.trim()) { setMessage("draft-message", t("draft.empty"), "error"); return; }
  await saveDraft();
  if (dirty) { setMessage("draft-message", t("draft.unsaved"), "error"); return; }
  try {
    const order = await api("POST", `/api/drafts/${draft.id}/submit`);
    localStorage.removeItem(backupKey(draft.id));
    openDrafts = openDrafts.filter((d) => d.id !== draft.id);
    hideDraft();
    const m = byId("draft-message");
    m.className = "message ok";
    m.replaceChildren(el("span", {text: t("draft.submitted", {n: order.number})}));
    m.dataset.number = order.number;
    renderOtherDrafts();
  } catch (e) {
    setMessage("draft-message", errorText(e), "error");
  }
}

// --------------------------------------------------------------------------- keys

function onKey(ev) {
  if (ev.key === "Escape") {
    byId("pause-menu").hidden = true;
    return;
  }
  if ((ev.ctrlKey || ev.metaKey) && (ev.key === "s" || ev.key === "S")) {
    ev.preventDefault();
    submitDraft();
    return;
  }
  const menu = byId("pause-menu");
  if (!menu.hidden && /^[1-9]$/.test(ev.key)) {
    const reason = config.pause_reasons[Number(ev.key) - 1];
    if (reason) { ev.preventDefault(); pauseWith(reason); }
    return;
  }
  const what = AGENT_KEYS[ev.key];
  if (!what) return;
  ev.preventDefault();
  if (what === "ready" && !byId("btn-ready").disabled) agentAction("ready");
  else if (what === "pause") togglePauseMenu();
  else if (what === "form") focusForm();
  else if (what === "transfer") openTransfer();
}

async function signOutWeb() {
  await saveDraft();
  try { await api("POST", "/api/logout"); } finally { location.href = "/login"; }
}

boot();
