// The operator console.  What it shows comes from /ws (this operator's view);
// what it does goes through the JSON API.  The agent's state on screen changes
// only when the PBX's events say so: buttons send an AMI action and wait.

import {api, ApiFailure, byId, clockTime, dateTime, el, Live, orderHref, setCsrf, setText, setTimeZone} from "/static/common.js";
import {applyI18n, categoryLabel, duration, errorText, ivrLabel, localName, orderStateLabel, onLangChange, placeLabel, reasonLabel, setCategoryLabels, setCategoryTree, setPlaceNames, stateLabel, t, wireLangToggle} from "/static/i18n.js";

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
  me = who.user; config = who.config; setCsrf(who.csrf); setTimeZone(config.timezone);
  setText("me", `${me.display_name} · ${me.member}`);
  buildPauseMenu();
  wire();
  onLangChange(() => {
    buildPauseMenu(); render(); renderHistory(lastHistory); renderOtherDrafts();
    if (draftStatusShown) draftStatus(...draftStatusShown);
    if (submittedShown) showSubmitted(submittedShown);
    if (draft) draftCall(draft);
    const keep = draft ? formFields() : null;
    buildIntakeLists();
    if (keep) { fillForm(keep); }
  });
  // The form's lists first: a draft shown before them would lose its choices.
  await loadIntake();
  live = new Live((doc) => { view = doc; render(); }, linkStatus);
  live.connect();
  live.keepAlive();
  setInterval(tick, 1000);
  await loadDrafts();
}

// The draft's save status, kept as a key so a language switch re-says it ("Autosaved 10:02").
let draftStatusShown = null;
function draftStatus(key, params) {
  draftStatusShown = [key, params];
  setText("draft-status", t(key, params));
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
  byId("draft-form").addEventListener("submit", (ev) => { ev.preventDefault(); openSubmit(); });
  byId("btn-save").addEventListener("click", saveNow);
  byId("submit-form").addEventListener("submit", submitDraft);
  byId("submit-cancel").addEventListener("click", () => byId("submit-dialog").close());
  for (const id of ["draft-caller", "draft-text", ...Object.values(FIELD_INPUTS)]) {
    byId(id).addEventListener("input", draftEdited);
  }
  byId("draft-confidential").addEventListener("change", draftEdited);
  byId("draft-district").addEventListener("input", districtChanged);
  for (const id of ["draft-cat-1", "draft-cat-2", "draft-cat-3"]) {
    byId(id).addEventListener("change", () => categoryChanged());
  }
  for (const r of byId("draft-form").querySelectorAll("input[name=outcome]")) r.addEventListener("change", outcomeChanged);
  byId("draft-department").addEventListener("change", () => { departmentPicked = true; });
  byId("kb-query").addEventListener("input", kbQueryChanged);
  byId("lookup-form").addEventListener("submit", lookup);
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
  for (const q of Object.values(view.queues || {})) {  // (from the shared message)
    const li = el("li", {cls: q.waiting ? "busy" : ""},
      el("span", {text: localName(q, "title")}),
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
  setText("pop-queue", localName(shown, "queue_title") || shown.queue);
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
  if (Object.values(view.queues || {}).some((q) => q.waiting)) renderQueues();
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

function renderHistory(h) { renderHistoryInto(byId("history"), h); }

// A caller's history: the open work orders first (state, deadline, a link to each), then
// the closed ones, then the earlier calls.
function renderHistoryInto(box, h) {
  box.replaceChildren();
  if (!h) return;
  if (!h.calls.length && !h.work_orders.length) {
    box.append(el("p", {cls: "muted", text: t("call.history_none")}));
    return;
  }
  const open = h.work_orders.filter((w) => w.open);
  box.append(el("p", {cls: "muted", text: [t("call.history_calls", {n: h.calls.length}),
    t("call.history_orders", {n: h.work_orders.length}), open.length ? t("call.history_open", {n: open.length}) : ""].filter(Boolean).join(" · ")}));
  const ul = el("ul");
  const now = Date.now() / 1000;
  for (const w of h.work_orders) {
    const link = el("a", {cls: "order-link", attrs: {href: orderHref(w.id), target: "_blank"}, text: w.number});
    const due = w.open && w.handling_due ? el("span", {cls: "due" + (w.handling_due < now ? " overdue" : ""),
      text: t(w.handling_due < now ? "call.order_overdue" : "call.order_due", {t: dateTime(w.handling_due)})}) : null;
    ul.append(el("li", {cls: w.open ? "open-order" : ""},
      el("span", {cls: "when", text: dateTime(w.created_at)}), link, " ",
      el("span", {cls: "ostate", text: orderStateLabel(w.status)}), " ", due,
      el("div", {text: [categoryLabel(w.category), (w.text || "").slice(0, 80)].filter(Boolean).join(" · ")})));
  }
  for (const c of h.calls) {
    // The orders filed on this call (a visit's id is its channel's, "#n" for a later queue).
    const filed = h.work_orders.filter((w) => w.call_uniqueid && w.call_uniqueid === String(c.uniqueid).split("#")[0]);
    ul.append(el("li", {},
      el("span", {cls: "when", text: dateTime(c.joined_at)}),
      el("span", {text: [t("outcome." + c.outcome), c.agent, c.hotline].filter(Boolean).join(" · ")}),
      ...filed.flatMap((w) => [" ", el("a", {cls: "order-link", attrs: {href: orderHref(w.id), target: "_blank"}, text: w.number})]),
      // The server offers a recording only to those who may hear it (an operator: their own calls).
      c.recording ? el("audio", {attrs: {controls: "", preload: "none", src: c.recording}}) : null));
  }
  box.append(ul);
}

// --------------------------------------------------------------------------- agent actions

function setMessage(id, text, kind = "") {
  if (id === "draft-message") submittedShown = null;
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

// The transfer targets, in the UI's language: the other queues first, the call's own
// queue last and marked (the caller is already waiting there).
function buildTransferChoices(current = "") {
  const qbox = byId("transfer-queues");
  const dbox = byId("transfer-departments");
  qbox.replaceChildren(); dbox.replaceChildren();
  const queues = config.queues.filter((q) => q.queue !== current).concat(config.queues.filter((q) => q.queue === current));
  for (const q of queues) {
    const own = q.queue === current;
    qbox.append(el("label", {cls: own ? "current" : ""}, el("input", {attrs: {type: "radio", name: "target", value: "queue:" + q.queue}}),
      el("span", {text: localName(q, "title") + (own ? " " + t("transfer.current") : "")})));
  }
  for (const d of config.departments) {
    dbox.append(el("label", {}, el("input", {attrs: {type: "radio", name: "target", value: "department:" + d.number}}),
      el("span", {text: `${localName(d)} (${d.number})`})));
  }
}

function openTransfer() {
  if (byId("btn-transfer").disabled || !view.call) return;
  buildTransferChoices(view.call.queue);
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

// --------------------------------------------------------------------------- intake lists

let intake = null;          // /api/intake: request types, reply methods, categories, districts
let departments = [];       // /api/departments
const leaves = new Map();   // category label -> node

async function loadIntake() {
  try {
    intake = await api("GET", "/api/intake-form");
    departments = (await api("GET", "/api/departments")).departments;
  } catch (e) {
    setMessage("draft-message", errorText(e), "error");
    return;
  }
  knowledgeAvailable = !!intake.knowledge;
  setCategoryLabels(intake.ivr_categories);
  setCategoryTree(intake.categories);
  setPlaceNames(intake.districts);
  leaves.clear();
  const walk = (n) => { if (!n.children.length) leaves.set(n.label, n); n.children.forEach(walk); };
  intake.categories.forEach(walk);
  buildIntakeLists();
}

function option(value, text) { return el("option", {attrs: {value}, text}); }

function fillSelect(select, items, blank) {
  const keep = select.value;
  select.replaceChildren(...(blank === null ? [] : [option("", blank)]), ...items.map(([v, label]) => option(v, label)));
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

function buildIntakeLists() {
  if (!intake) return;
  fillSelect(byId("draft-request-type"), intake.request_types.map((r) => [r.code, localName(r)]), t("draft.pick"));
  fillSelect(byId("draft-reply-method"), intake.reply_methods.map((r) => [r.code, localName(r)]), null);
  fillSelect(byId("draft-cat-1"), intake.categories.map((n) => [n.name, localName(n)]), t("draft.pick"));
  byId("districts").replaceChildren(...intake.districts.map((d) => option(d.name, placeLabel(d.name))));
  fillSelect(byId("draft-department"), departments.map((d) => [d.id, localName(d)]), t("draft.pick"));
  categoryChanged(false);
  districtChanged();
}

function childOf(nodes, name) { return nodes.find((n) => n.name === name) || null; }

// The three category selects: the deepest chosen node, and the lists below it.
function categoryChanged(edited = true) {
  if (!intake) return;
  const s1 = byId("draft-cat-1"), s2 = byId("draft-cat-2"), s3 = byId("draft-cat-3");
  const top = childOf(intake.categories, s1.value);
  fillSelect(s2, top ? top.children.map((n) => [n.name, localName(n)]) : [], t("draft.pick"));
  s2.hidden = !top;
  const mid = top ? childOf(top.children, s2.value) : null;
  fillSelect(s3, mid ? mid.children.map((n) => [n.name, localName(n)]) : [], t("draft.pick"));
  s3.hidden = !(mid && mid.children.length);
  const leaf = chosenCategory();
  const hint = byId("draft-cat-hint");
  hint.textContent = leaf ? t("draft.usual_departments", {d: leaf.departments.map((d) => localName(d)).join(t("list.sep")) || "—"}) : "";
  suggestDepartment(leaf);
  if (edited) draftEdited();
}

function chosenCategory() {
  if (!intake) return null;
  const top = childOf(intake.categories, byId("draft-cat-1").value);
  const mid = top && childOf(top.children, byId("draft-cat-2").value);
  if (!mid) return null;
  if (!mid.children.length) return mid;
  return childOf(mid.children, byId("draft-cat-3").value);
}

function setCategory(label) {
  const leaf = leaves.get(label);
  const names = leaf ? [...leaf.label.split("/")] : [];
  let top = null;
  if (leaf) {
    top = intake.categories.find((n) => n.children.some((c) => c.name === names[0]));
  }
  byId("draft-cat-1").value = top ? top.name : "";
  categoryChanged(false);
  byId("draft-cat-2").value = names[0] || "";
  categoryChanged(false);
  byId("draft-cat-3").value = names[1] || "";
  categoryChanged(false);
}

function districtChanged() {
  if (!intake) return;
  const d = intake.districts.find((x) => x.name === byId("draft-district").value);
  byId("streets").replaceChildren(...(d ? d.streets : []).map((s) => option(s, placeLabel(s))));
}

// Dispatch at intake: the leaf's usual department is preselected (unless one was picked).
let departmentPicked = false;
function suggestDepartment(leaf) {
  const select = byId("draft-department");
  const hint = byId("dispatch-hint");
  if (leaf && leaf.departments.length) {
    if (!departmentPicked) select.value = leaf.departments[0].id;
    hint.textContent = t("draft.suggested", {d: localName(leaf.departments[0])});
  } else {
    hint.textContent = "";
  }
}

function outcomeChanged() {
  const outcome = chosenOutcome();
  byId("answer-box").hidden = outcome !== "answer";
  byId("dispatch-box").hidden = outcome !== "dispatch";
  byId("kb-box").hidden = outcome !== "answer" || !knowledgeAvailable;
}

function chosenOutcome() {
  const r = byId("draft-form").querySelector("input[name=outcome]:checked");
  return r ? r.value : "accept";
}

// --------------------------------------------------------------------------- knowledge base

let knowledgeAvailable = false;   // the server serves /api/knowledge/search
let chosenArticle = null;         // {id, title}
let kbTimer = null;


function kbQueryChanged() {
  clearTimeout(kbTimer);
  kbTimer = setTimeout(kbSearch, 250);
}

async function kbSearch() {
  const q = byId("kb-query").value.trim();
  const ul = byId("kb-results");
  if (!q) { ul.replaceChildren(); return; }
  const params = new URLSearchParams({q, limit: "6"});
  let found;
  try { found = await api("GET", "/api/knowledge/search?" + params); } catch (e) { ul.replaceChildren(el("li", {cls: "muted", text: errorText(e)})); return; }
  if (byId("kb-query").value.trim() !== q) return;  // typed on meanwhile
  const hits = found.hits || [];
  if (!hits.length) { ul.replaceChildren(el("li", {cls: "muted", text: t("kb.none")})); return; }
  ul.replaceChildren(...hits.map((a) => {
    const b = el("button", {cls: "link-button", attrs: {type: "button"}, data: {article: String(a.id)}, text: a.title});
    b.addEventListener("click", () => useArticle(a));
    return el("li", {}, b, el("div", {cls: "muted excerpt", text: (a.excerpt || "").slice(0, 120)}));
  }));
}

// "Answered from this article": the answer is prefilled from it, the order will link it.
async function useArticle(a) {
  chosenArticle = {id: a.id, title: a.title};
  byId("kb-chosen").textContent = t("kb.chosen", {title: a.title});
  const answer = byId("draft-answer");
  if (answer.value.trim()) return;
  let body = a.excerpt || "";
  try { body = (await api("GET", `/api/knowledge/articles/${encodeURIComponent(a.id)}`)).article.body || body; } catch { /* the excerpt will do */ }
  if (!answer.value.trim()) answer.value = body.slice(0, 4000);
}

// --------------------------------------------------------------------------- drafts

function backupKey(id) { return `hotline.draft.${me.username}.${id}`; }

const FIELD_INPUTS = {caller_name: "draft-caller-name", gender: "draft-gender", callback: "draft-callback",
  request_type: "draft-request-type", urgency: "draft-urgency", reply_method: "draft-reply-method",
  district: "draft-district", street: "draft-street", address: "draft-address"};

function formFields() {
  const fields = {};
  for (const [key, id] of Object.entries(FIELD_INPUTS)) fields[key] = byId(id).value.trim();
  const leaf = chosenCategory();
  fields.category = leaf ? leaf.label : "";
  fields.confidential = byId("draft-confidential").checked;
  return {caller: byId("draft-caller").value, text: byId("draft-text").value, fields};
}

function sameFields(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

function fillForm(f) {
  byId("draft-caller").value = f.caller || "";
  byId("draft-text").value = f.text || "";
  const fields = f.fields || {};
  for (const [key, id] of Object.entries(FIELD_INPUTS)) {
    byId(id).value = fields[key] || (key === "urgency" ? "normal" : key === "reply_method" ? "phone" : "");
  }
  byId("draft-confidential").checked = !!fields.confidential;
  setCategory(fields.category || "");
  districtChanged();
}

// A 回复号码 one can dial (agent_console/intake.py callback_complete): digits, a leading
// +, separators, 转 before an extension; 5 to 20 digits before it.
function callbackComplete(number) {
  const n = number.normalize("NFKC").replace(/[\u2010-\u2015\u2212]/g, "-").trim();
  if (!/^\+?[0-9()\- ]*(?:\u8f6c[0-9 ]*)?$/.test(n)) return false;  // \u8f6c: 转
  const digits = (n.split("\u8f6c")[0].match(/[0-9]/g) || []).length;
  return digits >= 5 && digits <= 20;
}

// Every keystroke is kept on this computer at once; the server copy follows.
function backup() {
  if (!draft) return;
  localStorage.setItem(backupKey(draft.id), JSON.stringify({...formFields(), t: Date.now()}));
}

function draftEdited() {
  if (!draft) return;
  dirty = true;
  backup();
  draftStatus("draft.saving");
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
        if (sameFields(formFields(), fields)) {
          dirty = false;
          localStorage.removeItem(backupKey(saved.id));
          draftStatus("draft.saved", {t: clockTime(saved.updated_at)});
        }
      }
    } catch (e) {
      draftStatus("draft.unsaved");
      if (e instanceof ApiFailure && e.status === 400) setMessage("draft-message", errorText(e), "error");
      if (!(e instanceof ApiFailure && e.status < 500 && e.status !== 401)) {
        saveTimer = setTimeout(saveDraft, 3000);
      }
    }
  })();
  await saving;
  saving = null;
  if (dirty && draft && draft.id === target.id && !saveTimer) saveTimer = setTimeout(saveDraft, 600);
}

// Ctrl+S: save now (it also saves by itself as you type); never submits.
async function saveNow() {
  if (!draft) return;
  dirty = true;
  await saveDraft();
  if (!dirty) setMessage("draft-message", t("draft.saved_now", {t: clockTime(draft.updated_at)}), "ok");
}

function draftCall(d) {
  setText("draft-call", d.call_uniqueid ? t("draft.call", {id: d.call_uniqueid}) : t("draft.nocall"));
}

function showDraft(d) {
  draft = d;
  dirty = false;
  departmentPicked = false;
  chosenArticle = null;
  byId("draft-form").hidden = false;
  byId("draft-empty").hidden = true;
  draftCall(d);
  fillForm(d);
  byId("draft-answer").value = "";
  byId("kb-chosen").textContent = "";
  byId("outcome-accept").checked = true;
  outcomeChanged();
  draftStatus("draft.saved", {t: clockTime(d.updated_at)});
  // A newer copy on this computer (typed but never saved: reload, crash, network) wins.
  const raw = localStorage.getItem(backupKey(d.id));
  if (raw) {
    try {
      const b = JSON.parse(raw);
      const {t: when, ...copy} = b;
      if (!sameFields(copy, {caller: d.caller, text: d.text, fields: d.fields}) && when > d.updated_at * 1000) {
        fillForm(copy);
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
    ul.append(el("li", {}, el("span", {text: [d.caller || "—", clockTime(d.updated_at), d.text.slice(0, 30)].filter(Boolean).join(" · ")}), b));
  }
}

// The calls whose draft is already a work order: their pushes must not show it again.
const doneCalls = new Set();

// ``orNew``: when the call's draft is already an order, open a new one without the call
// (F4); otherwise (the automatic opening on answer) show nothing and return null.
async function openDraft(callUniqueid, orNew = true) {
  await saveDraft();
  let d = await api("POST", "/api/drafts", callUniqueid ? {call_uniqueid: callUniqueid} : {});
  if (d.status !== "open") {
    doneCalls.add(callUniqueid);
    if (!orNew) return null;
    d = await api("POST", "/api/drafts", {});
  }
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
  if (doneCalls.has(call.uniqueid)) return;  // submitted: F4 opens a new draft
  openingFor = call.uniqueid;
  openDraft(call.uniqueid, false)
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

// What is missing before submitting (the server checks the same and more).
function missingForSubmit(f, outcome) {
  const missing = [];
  if (!f.text.trim()) missing.push("text");
  if (!f.fields.request_type) missing.push("request_type");
  if (!f.fields.category) missing.push("category");
  if ((f.fields.reply_method !== "none" && !(f.fields.callback || f.caller.trim()))
      || (f.fields.callback && !callbackComplete(f.fields.callback))) missing.push("callback");
  if (outcome === "answer" && !byId("draft-answer").value.trim()) missing.push("answer");
  if (outcome === "dispatch" && !byId("draft-department").value) missing.push("department");
  return missing;
}

function labelOf(list, code) {
  const item = (list || []).find((x) => x.code === code);
  return item ? localName(item) : code || "—";
}

// Ctrl+Enter / the submit button: a confirmation with the summary; nothing is sent yet.
async function openSubmit() {
  if (!draft) return;
  await saveDraft();
  const f = formFields();
  const outcome = chosenOutcome();
  const leaf = chosenCategory();
  const dl = byId("submit-summary");
  const rows = [
    ["draft.caller_name", [f.fields.caller_name, f.fields.gender ? (f.fields.gender === "female" ? t("draft.gender_female") : t("draft.gender_male")) : ""].filter(Boolean).join(" · ")],
    ["draft.caller", f.caller],
    ["draft.callback", f.fields.callback],
    ["draft.request_type", labelOf(intake && intake.request_types, f.fields.request_type)],
    ["draft.category", leaf ? categoryLabel(leaf.label) : ""],
    ["draft.address", [f.fields.district, f.fields.street, f.fields.address].join("")],
    ["draft.urgency", t("urgency." + (f.fields.urgency || "normal"))],
    ["draft.reply_method", labelOf(intake && intake.reply_methods, f.fields.reply_method)],
    ["draft.confidential", f.fields.confidential ? t("yes") : t("no")],
    ["draft.text", f.text.trim().slice(0, 300)],
    ["draft.outcome", t("outcome_pick." + outcome)],
  ];
  if (outcome === "answer") rows.push(["draft.answer", byId("draft-answer").value.trim().slice(0, 300) + (chosenArticle ? ` (${t("kb.chosen", {title: chosenArticle.title})})` : "")]);
  if (outcome === "dispatch") rows.push(["draft.department", byId("draft-department").selectedOptions[0]?.textContent || ""]);
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {text: t(k)}), el("dd", {text: v || "—"})]));
  const missing = missingForSubmit(f, outcome);
  setText("submit-missing", missing.length ? t("submit.missing", {f: missing.map((m) => t("missing." + m)).join(t("list.sep"))}) : "");
  byId("submit-go").disabled = missing.length > 0 || dirty;
  byId("submit-dialog").showModal();
  byId(missing.length ? "submit-cancel" : "submit-go").focus();
}

async function submitDraft(ev) {
  if (ev) ev.preventDefault();
  byId("submit-dialog").close();
  if (!draft) return;
  const outcome = chosenOutcome();
  const body = {outcome};
  if (outcome === "answer") {
    body.answer = byId("draft-answer").value.trim();
    if (chosenArticle) body.article_id = chosenArticle.id;
  }
  if (outcome === "dispatch") body.department = byId("draft-department").value;
  try {
    const done = await api("POST", `/api/drafts/${draft.id}/submit`, body);
    localStorage.removeItem(backupKey(draft.id));
    openDrafts = openDrafts.filter((d) => d.id !== draft.id);
    if (draft.call_uniqueid) doneCalls.add(draft.call_uniqueid);
    hideDraft();
    showSubmitted({outcome, id: done.id, number: done.number});
    renderOtherDrafts();
    if (historyFor) loadHistory(historyFor);
  } catch (e) {
    setMessage("draft-message", errorText(e), "error");
  }
}

// "Answered on the call, order 20261130-000013": kept as data so a language switch re-says it.
let submittedShown = null;
function showSubmitted(s) {
  const m = byId("draft-message");
  m.className = "message ok";
  const link = el("a", {cls: "order-link", attrs: {href: orderHref(s.id), target: "_blank"}, text: s.number});
  m.replaceChildren(el("span", {text: t("draft.submitted_" + s.outcome)}), link);
  m.dataset.number = s.number;
  submittedShown = s;
}

// --------------------------------------------------------------------------- lookup

async function lookup(ev) {
  ev.preventDefault();
  const number = byId("lookup-number").value.trim();
  const box = byId("lookup-result");
  if (!number) { box.replaceChildren(); return; }
  try {
    const h = await api("GET", "/api/callers?number=" + encodeURIComponent(number));
    renderHistoryInto(box, h);
  } catch (e) {
    box.replaceChildren(el("p", {cls: "message error", text: errorText(e)}));
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
    saveNow();
    return;
  }
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") {
    ev.preventDefault();
    if (!byId("submit-dialog").open) openSubmit();
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
