// Work orders: a department's own orders (accept, return with a reason, reply,
// complete), the centre's review of returns, and the supervision board of
// anomalies with their evidence.  Every rule is the server's; this page only
// offers the steps the order's state has and shows the answer.  Text is only
// ever set with textContent (see common.js el()).

import {api, ApiFailure, byId, centreInputValue, dateTime, el, fromCentreInput, setCsrf, setText, setTimeZone}
  from "/static/common.js";
import {applyI18n, categoryLabel, currentLang, localName, onLangChange, t, wireLangToggle} from "/static/i18n.js";
import {channelName, currentParams, labelFilters, markSort, orderLink, renderMerge, saveUrl, setupFind, textWithLinks}
  from "/static/order_find.js";

const STRINGS = {
  "zh-CN": {
    "orders.title": "工单",
    "tab.inbox": "待办", "inbox.title": "待办工单", "inbox.new": "新派单（待签收）",
    "inbox.sent_back": "退回本单位", "inbox.supervised": "督办件", "inbox.due_soon": "已超期或24小时内到期",
    "inbox.none": "无", "inbox.due": "时限 {t}", "inbox.overdue": "已超期（时限 {t}）",
    "inbox.back_refuse_return": "中心驳回退单", "inbox.back_reject_completion": "中心退回重办",
    "inbox.back_reopen": "市民回访未解决，重新办理", "inbox.arrived": "有 {n} 件新的待办工单",
    "board.kind": "异常类型", "board.department": "承办单位", "board.status": "处理状态",
    "board.status_open": "未处理", "board.status_handled": "已处理", "board.status_all": "全部",
    "board.all_kinds": "全部类型", "board.all_departments": "全部单位", "board.orders": "工单",
    "board.supervise": "督办", "board.ack": "标记已处理", "board.note": "处理说明（可选）",
    "board.handled_by": "已由 {who} 于 {at} 标记处理", "board.supervised": "已督办工单 {n}",
    "board.deadline_ph": "督办期限",
    "ev.ping_pong": "被退单 {n} 次，承办单位之间相互推诿。",
    "ev.returned_by": "{at}，{dept} 退单，理由：{reason}",
    "ev.dispatch_cycle": "主办单位来回改派：{path}。",
    "ev.false.citizen_unsolved": "{dept} 于 {at} 办结，但市民回访时表示问题未解决。",
    "ev.false.completion_rejected": "{dept} 于 {at} 办结，中心认为依据不充分，已退回重办。",
    "ev.false.no_citizen_contact": "{dept} 于 {at} 办结，已 {days} 天未联系市民核实（回访 {visits} 次）。",
    "ev.reply": "答复内容：“{text}”",
    "ev.template": "{dept} 对 {n} 件工单给出了几乎相同的答复（相似度不低于 {pct}%）：“{text}”",
    "ev.template_order": "工单 {n}：相似度 {pct}%",
    "ev.overdue.first_response": "首次响应时限为 {due}，{late}。",
    "ev.overdue.handling": "办理时限为 {due}，{late}。",
    "ev.overdue.supervision": "督办期限为 {due}，{late}。",
    "ev.late_done": "{at} 才完成，晚了 {h} 小时",
    "ev.late_open": "至今未完成，已超时 {h} 小时",
    "ev.repeat": "来电人 {caller} 在上一件工单办结 {days} 天后再次来电{same}：“{text}”",
    "ev.repeat_same": "（同一类别：{cat}）",
    "ev.staff": "{actor}（{role}）试图替市民录入满意度，系统已拒绝并记录。",
    "role.operator": "话务员", "role.supervisor": "值班长", "role.department": "承办单位",
    "role.admin": "管理员", "role.system": "系统", "role.citizen": "市民",
    "actor.timers": "系统定时", "actor.merge": "并案（主件 {n}）", "unit.centre": "热线中心",
    "timer.first_response": "首次响应时限", "timer.handling": "办理时限",
    "timer.supervision": "督办期限", "actor.citizen_keys": "市民按键", "actor.dialer": "自动外呼",
 "tab.orders": "工单", "tab.returns": "退单审核", "tab.board": "督办看板",
    "filter.state": "状态", "filter.all": "全部", "col.number": "编号", "col.state": "状态",
    "col.category": "类别", "col.text": "诉求", "col.department": "承办单位", "col.due": "办理时限",
    "page.prev": "上一页", "page.next": "下一页", "page.of": "第 {p} 页 · 共 {n} 件",
    "detail.replies": "答复", "detail.history": "办理记录", "detail.none": "无",
    "board.title": "异常工单", "board.none": "暂无异常",
    "followup.title": "待人工跟进的外呼", "followup.none": "暂无",
    "followup.return_visit": "回访未接通，转人工回访", "followup.callback": "回拨未接通",
    "field.caller": "来电人", "field.number": "来电号码", "field.urgency": "紧急程度",
    "field.location": "地点", "field.lead": "主办单位", "field.co": "协办单位",
    "field.accepted": "受理时间", "field.due": "办理时限", "field.returns": "退单次数",
    "field.pending": "待审核退单", "field.confidential": "保密", "field.answer": "直接答复", "field.recording": "通话录音",
    "field.survey": "通话满意度（市民按键）", "field.visit": "自动回访",
    "survey.1": "不满意", "survey.2": "基本满意", "survey.3": "满意", "survey.none": "未按键",
    "visit.waiting": "等待拨打", "visit.done": "已完成", "visit.manual": "转人工回访",
    "visit.gave_up": "放弃", "visit.cancelled": "已取消", "visit.attempts": "第 {n} 次",
    "visit.result.resolved": "市民按键：已解决", "visit.result.not resolved": "市民按键：未解决",
    "hidden": "（已隐藏）", "yes": "是",
    "in.reason": "理由（必填）", "in.text": "答复内容", "in.answer": "答复内容", "in.co_reply": "协办意见",
    "citizen.title": "记录市民在回访通话中的回答（须有通话编号）", "citizen.solved": "市民说已解决",
    "citizen.unsolved": "市民说未解决", "citizen.sat_op": "对话务员满意度", "citizen.sat_dep": "对承办单位满意度",
    "citizen.call": "回访通话编号", "citizen.none": "未回答", "step.answer": "记录市民回答",
    "in.deadline": "督办期限", "in.department": "承办单位",
    "done": "已完成：{s}", "failed": "未成功：{e}",
    "state.accepted": "已受理", "state.dispatched": "已派单", "state.in_progress": "办理中",
    "state.replied": "已答复", "state.completed": "已办结", "state.return_visit": "回访中",
    "state.evaluated": "已评价", "state.resolved_on_call": "直接答复", "state.returned": "已退单",
    "step.accept": "受理", "step.dispatch": "派单", "step.redispatch": "改派", "step.add_co_handler": "加派协办",
    "step.accept_handling": "签收", "step.return": "退单", "step.accept_return": "同意退单并改派",
    "step.refuse_return": "驳回退单", "step.co_reply": "协办意见", "step.reply": "答复",
    "step.complete": "办结", "step.reject_completion": "退回重办", "step.start_return_visit": "开始回访",
    "step.visit_unreachable": "回访未接通", "step.evaluate": "评价（已解决）", "step.reopen": "重新办理",
    "step.reopen_at_centre": "中心重新办理", "step.supervise": "督办", "step.flag_overdue": "超时",
    "step.resolve_on_call": "直接答复",
    "urgency.emergency": "紧急", "urgency.urgent": "加急", "urgency.normal": "一般",
    "kind.ping_pong": "推诿（多次退单）", "kind.dispatch_cycle": "来回派单", "kind.false_completion": "假办结",
    "kind.template_reply": "模板答复", "kind.overdue": "超时", "kind.repeat_after_completion": "办结后重复来电",
    "kind.staff_entered_satisfaction": "代填满意度",
  },
  "en": {
    "orders.title": "Work orders",
    "tab.inbox": "Inbox", "inbox.title": "Orders waiting for us", "inbox.new": "New (to sign for)",
    "inbox.sent_back": "Sent back to us", "inbox.supervised": "Supervised", "inbox.due_soon": "Overdue or due within 24 hours",
    "inbox.none": "none", "inbox.due": "due {t}", "inbox.overdue": "overdue (due {t})",
    "inbox.back_refuse_return": "the centre refused our return", "inbox.back_reject_completion": "the centre sent our completion back",
    "inbox.back_reopen": "the citizen says it is not solved: reopened", "inbox.arrived": "{n} new orders waiting",
    "board.kind": "Kind", "board.department": "Department", "board.status": "Handled?",
    "board.status_open": "Not handled", "board.status_handled": "Handled", "board.status_all": "All",
    "board.all_kinds": "All kinds", "board.all_departments": "All departments", "board.orders": "Orders",
    "board.supervise": "Supervise", "board.ack": "Mark handled", "board.note": "Note (optional)",
    "board.handled_by": "Marked handled by {who} at {at}", "board.supervised": "Order {n} supervised",
    "board.deadline_ph": "Deadline",
    "ev.ping_pong": "Returned {n} times: the departments pass it back and forth.",
    "ev.returned_by": "{at}: {dept} returned it: {reason}",
    "ev.dispatch_cycle": "The lead department went round in a circle: {path}.",
    "ev.false.citizen_unsolved": "{dept} completed it at {at}, but the citizen said on the return visit that it is not solved.",
    "ev.false.completion_rejected": "{dept} completed it at {at}; the centre found the grounds insufficient and sent it back.",
    "ev.false.no_citizen_contact": "{dept} completed it at {at}; nobody has checked with the citizen for {days} days ({visits} return-visit attempts).",
    "ev.reply": "The reply: “{text}”",
    "ev.template": "{dept} gave {n} orders nearly the same reply (similarity at least {pct}%): “{text}”",
    "ev.template_order": "order {n}: {pct}% similar",
    "ev.overdue.first_response": "The first response was due {due}; {late}.",
    "ev.overdue.handling": "Handling was due {due}; {late}.",
    "ev.overdue.supervision": "The supervision deadline was {due}; {late}.",
    "ev.late_done": "it was done only at {at}, {h} hours late",
    "ev.late_open": "it is still not done, {h} hours late",
    "ev.repeat": "Caller {caller} called again {days} days after the earlier order was completed{same}: “{text}”",
    "ev.repeat_same": " (same category: {cat})",
    "ev.staff": "{actor} ({role}) tried to enter the citizen's satisfaction; refused and recorded.",
    "role.operator": "operator", "role.supervisor": "supervisor", "role.department": "department",
    "role.admin": "admin", "role.system": "system", "role.citizen": "citizen",
    "actor.timers": "System timer", "actor.merge": "Merge (lead order {n})", "unit.centre": "the hotline centre",
    "timer.first_response": "first response deadline",
    "timer.handling": "handling deadline", "timer.supervision": "supervision deadline", "actor.citizen_keys": "Citizen's keys", "actor.dialer": "Auto dialler",
 "tab.orders": "Orders", "tab.returns": "Returns to review",
    "tab.board": "Supervision board", "filter.state": "State", "filter.all": "All",
    "col.number": "Number", "col.state": "State", "col.category": "Category", "col.text": "Request",
    "col.department": "Department", "col.due": "Due", "page.prev": "Previous", "page.next": "Next",
    "page.of": "page {p} · {n} orders", "detail.replies": "Replies", "detail.history": "History",
    "detail.none": "none", "board.title": "Anomalies", "board.none": "No anomalies",
    "followup.title": "Outbound calls for an operator to follow up", "followup.none": "none",
    "followup.return_visit": "Return visit not reached: make it by hand",
    "followup.callback": "Call-back not reached",
    "field.caller": "Caller", "field.number": "Number", "field.urgency": "Urgency",
    "field.location": "Place", "field.lead": "Lead department", "field.co": "Co-handlers",
    "field.accepted": "Accepted", "field.due": "Handling due", "field.returns": "Returns",
    "field.pending": "Return to review", "field.confidential": "Confidential",
    "field.answer": "Answered on the call", "field.recording": "Call recording", "hidden": "(hidden)", "yes": "yes",
    "field.survey": "Call satisfaction (citizen's key)", "field.visit": "Automatic return visit",
    "survey.1": "dissatisfied", "survey.2": "basically satisfied", "survey.3": "satisfied",
    "survey.none": "no key pressed", "visit.waiting": "waiting to dial", "visit.done": "done",
    "visit.manual": "handed to an operator", "visit.gave_up": "given up",
    "visit.cancelled": "cancelled", "visit.attempts": "attempt {n}",
    "visit.result.resolved": "citizen keyed: solved", "visit.result.not resolved": "citizen keyed: not solved",
    "in.reason": "Reason (required)", "in.text": "Reply", "in.answer": "Answer", "in.co_reply": "Co-handler's opinion",
    "citizen.title": "Record the citizen's answers on the return-visit call (call id required)",
    "citizen.solved": "Citizen says solved", "citizen.unsolved": "Citizen says not solved",
    "citizen.sat_op": "Satisfaction with the operator", "citizen.sat_dep": "Satisfaction with the department",
    "citizen.call": "Return-visit call id", "citizen.none": "No answer", "step.answer": "Record citizen's answer",
    "in.deadline": "Deadline", "in.department": "Department",
    "done": "Done: {s}", "failed": "Not done: {e}",
    "state.accepted": "Accepted", "state.dispatched": "Dispatched", "state.in_progress": "In progress",
    "state.replied": "Replied", "state.completed": "Completed", "state.return_visit": "Return visit",
    "state.evaluated": "Evaluated", "state.resolved_on_call": "Resolved on the call",
    "state.returned": "Returned",
    "step.accept": "Accept", "step.dispatch": "Dispatch", "step.redispatch": "Re-dispatch",
    "step.add_co_handler": "Add co-handler", "step.accept_handling": "Sign for it",
    "step.return": "Return", "step.accept_return": "Accept return and re-dispatch",
    "step.refuse_return": "Refuse return", "step.co_reply": "Co-handler opinion", "step.reply": "Reply",
    "step.complete": "Complete", "step.reject_completion": "Send completion back",
    "step.start_return_visit": "Start return visit", "step.visit_unreachable": "Visit unreachable",
    "step.evaluate": "Evaluate (solved)", "step.reopen": "Reopen", "step.reopen_at_centre": "Reopen at centre",
    "step.supervise": "Supervise", "step.flag_overdue": "Overdue", "step.resolve_on_call": "Resolve on the call",
    "urgency.emergency": "Emergency", "urgency.urgent": "Urgent", "urgency.normal": "Normal",
    "kind.ping_pong": "Ping-pong (returned again and again)", "kind.dispatch_cycle": "Dispatch cycle",
    "kind.false_completion": "False completion", "kind.template_reply": "Template replies",
    "kind.overdue": "Overdue", "kind.repeat_after_completion": "Caller back after completion",
    "kind.staff_entered_satisfaction": "Staff entered satisfaction",
  },
};

function tr(key, params) {
  let s = STRINGS[currentLang()]?.[key] ?? STRINGS["zh-CN"][key] ?? key;
  if (params) for (const [k, v] of Object.entries(params)) s = s.split("{" + k + "}").join(String(v));
  return s;
}

function applyOwn() {
  for (const e of document.querySelectorAll("[data-o18n]")) e.textContent = tr(e.dataset.o18n);
}

const STATES = ["accepted", "dispatched", "in_progress", "returned", "replied", "completed",
  "return_visit", "evaluated", "resolved_on_call"];
const HANDLER_STEPS = ["accept_handling", "return", "reply", "co_reply", "complete"];
const CENTRE_STEPS = ["dispatch", "redispatch", "add_co_handler",
  "reject_completion", "start_return_visit", "visit_unreachable", "resolve_on_call"];
// The server's table (agent_console/permissions.py STEPS): supervisors review returns.
const SUPERVISOR_STEPS = ["accept_return", "refuse_return", "supervise"];
const STEP_FIELDS = {
  dispatch: ["department"], redispatch: ["department", "reason"],
  add_co_handler: ["department", "reason"], accept_return: ["department", "reason"],
  refuse_return: ["reason"], reject_completion: ["reason"], return: ["reason"], reply: ["text"],
  co_reply: ["text"], resolve_on_call: ["answer"], supervise: ["reason", "deadline"],
};

// Steps that send the order to a department: only these show "→ department" in the trail.
const DISPATCH_STEPS = ["dispatch", "redispatch", "accept_return", "add_co_handler"];
// The deadline a system timer flagged (flag_overdue's data.timer).
const TIMER_KEYS = {first_response: "timer.first_response", handling: "timer.handling", supervision: "timer.supervision"};
// A timer as the API names it (first_response_overdue, ...) -> its string key, or undefined.
const timerKey = (kind) => TIMER_KEYS[String(kind).replace(/_overdue$/, "")];

let me = null;
let departments = [];
let tab = "orders";
let pageNo = 1;
let chosen = null;
let lastList = null;

function deptName(id) {
  if (id === "centre") return tr("unit.centre");  // the centre's own unit (departments.toml [centre])
  const d = departments.find((x) => x.id === id);
  if (!d) return id || "";
  return currentLang() === "en" ? d.name_en : d.name;
}

// Who took a step, in the page's language: the system's own actors by name, people by
// their account with their role, departments by name.
// A trail step's reason in the page's language: the reasons the code itself writes are
// stored as codes and come rendered by the server from its one table
// (callcenter/orders/reasons.py: reason in Chinese, reason_en in English); a person's
// reason is shown as it was typed.
function actorLabel(h) {
  const own = {timers: "actor.timers", citizen_keys: "actor.citizen_keys", keys: "actor.citizen_keys", dialer: "actor.dialer"}[h.actor_id];
  if (own) return tr(own);
  if (h.actor_id && h.actor_id.startsWith("merge:")) return tr("actor.merge", {n: h.actor_id.slice(6)});
  const role = {operator: "role.operator", supervisor: "role.supervisor", department: "role.department",
    admin: "role.admin", system: "role.system", citizen: "role.citizen"}[h.role];
  const unit = h.unit && h.unit !== "centre" ? deptName(h.unit) : "";
  return [h.actor_id, unit || (role ? tr(role) : "")].filter(Boolean).join(" · ");
}

// A time in the centre's time zone (common.js dateTime), never the browser's.
function when(iso) {
  return iso ? dateTime(Date.parse(iso) / 1000) : "";
}

function allowedSteps() {
  if (me.role === "handler") return HANDLER_STEPS;
  const steps = [...CENTRE_STEPS];
  if (me.role === "supervisor" || me.role === "admin") steps.push(...SUPERVISOR_STEPS);
  return steps;
}

async function boot() {
  applyI18n();
  applyOwn();
  wireLangToggle();
  let who;
  try { who = await api("GET", "/api/me"); } catch { return; }
  setCsrf(who.csrf);
  setTimeZone(who.config && who.config.timezone);
  me = who.user;
  setText("me", me.display_name);
  byId("web-signout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } finally { location.href = "/login"; }
  });
  const select = byId("state-filter");
  for (const s of STATES) select.append(el("option", {text: tr("state." + s), attrs: {value: s}}));
  byId("prev").addEventListener("click", () => { if (pageNo > 1) { pageNo -= 1; loadList(); } });
  byId("next").addEventListener("click", () => { pageNo += 1; loadList(); });
  const central = me.role !== "handler";
  document.querySelector('[data-tab="returns"]').hidden = !central;
  document.querySelector('[data-tab="board"]').hidden = !(me.role === "supervisor" || me.role === "admin");
  byId("inbox-tab").hidden = me.role !== "handler";
  for (const id of ["board-kind", "board-department", "board-status"]) byId(id).addEventListener("change", loadBoard);
  for (const b of document.querySelectorAll("[data-tab]")) {
    b.addEventListener("click", () => showTab(b.dataset.tab));
  }
  onLangChange(() => { applyOwn(); relabelStates(); labelFilters(departments); boardFilters(); if (lastList) renderList(lastList); if (chosen) openOrder(chosen); if (tab === "board") loadBoard(); if (me.role === "handler") loadInbox(); });
  try { departments = (await api("GET", "/api/departments")).departments; } catch { departments = []; }
  boardFilters();
  if (me.role === "handler") { loadInbox(); inboxTimer = setInterval(loadInbox, 30000); }
  const first = await setupFind({me, departments, reload: (p) => { pageNo = p; return loadList(); },
    open: (id, note) => openOrder(id, note)});
  showTab("orders", first.page);
  if (first.open) openOrder(first.open);
}

function relabelStates() {
  for (const o of byId("state-filter").options) if (o.value) o.textContent = tr("state." + o.value);
}

function showTab(name, page = 1) {
  tab = name;
  for (const b of document.querySelectorAll("[data-tab]")) b.classList.toggle("active", b.dataset.tab === name);
  const aside = name === "board" || name === "inbox";
  byId("board").hidden = name !== "board";
  byId("inbox").hidden = name !== "inbox";
  byId("list-panel").hidden = aside;
  byId("detail").hidden = aside || !chosen;
  if (name === "board") { loadBoard(); return; }
  if (name === "inbox") { loadInbox(); return; }
  if (name === "returns") byId("state-filter").value = "returned";
  else if (byId("state-filter").disabled) byId("state-filter").value = "";
  byId("state-filter").disabled = name === "returns";
  pageNo = page;
  loadList();
}

async function loadList() {
  const q = currentParams();
  q.set("page", String(pageNo));
  q.set("per_page", "20");
  saveUrl(pageNo, chosen);
  markSort();
  try {
    lastList = await api("GET", "/api/orders?" + q);
    renderList(lastList);
  } catch (e) {
    byId("orders").replaceChildren(el("tr", {}, el("td", {text: e.message, attrs: {colspan: 7}})));
  }
}

function renderList(doc) {
  const body = byId("orders");
  body.replaceChildren();
  for (const o of doc.orders) {
    // the cell shows the handling deadline: red only when that one was missed; any other
    // missed deadline (first response, supervision) is named in its tooltip
    const late = o.overdue.some((k) => timerKey(k) === TIMER_KEYS.handling);
    const missed = o.overdue.filter((k) => timerKey(k)).map((k) => tr(timerKey(k)));
    const row = el("tr", {data: {id: o.id}},
      el("td", {}, orderLink(o.id, o.number, (id) => openOrder(id)),
        o.confidential ? el("span", {cls: "muted", text: " " + t("find.confidential_mark")}) : null,
        o.merged_into ? el("span", {cls: "muted", text: " " + t("merge.mark")}) : null),
      el("td", {text: tr("state." + o.state)}),
      el("td", {text: categoryLabel(o.category)}),
      el("td", {cls: "text", text: o.text, attrs: {title: o.text}}),
      el("td", {text: channelName(o.channel)}),
      el("td", {text: deptName(o.lead_department)}),
      el("td", {cls: late ? "overdue" : "", text: when(o.handling_due),
        attrs: missed.length ? {title: missed.join(" · ")} : {}}));
    if (o.id === chosen) row.classList.add("chosen");
    row.addEventListener("click", () => openOrder(o.id));
    body.append(row);
  }
  const pages = Math.max(1, Math.ceil(doc.total / doc.per_page));
  setText("page", tr("page.of", {p: `${doc.page}/${pages}`, n: doc.total_capped ? doc.total + "+" : doc.total}));
  setText("list-count", t(doc.total_capped ? "find.count_capped" : "find.count", {n: doc.total}));
  byId("prev").disabled = doc.page <= 1;
  byId("next").disabled = doc.page >= pages;
}

async function openOrder(id, note) {
  chosen = id;
  saveUrl(pageNo, id);
  for (const tr of byId("orders").children) tr.classList.toggle("chosen", tr.dataset.id === id);
  let doc;
  try { doc = await api("GET", `/api/orders/${encodeURIComponent(id)}`); } catch (e) {
    setText("action-message", tr("failed", {e: e.message}));
    return;
  }
  renderDetail(doc);
  if (note) { const m = byId("action-message"); m.className = "message ok"; m.textContent = note; }
  renderMerge(doc, {me, open: (oid, n) => openOrder(oid, n), reload: loadList});
}

function renderDetail(doc) {
  const o = doc.order;
  byId("detail").hidden = tab === "board" || tab === "inbox";
  setText("detail-title", `${o.number} · ${tr("state." + o.state)}`);
  const fields = byId("detail-fields");
  fields.replaceChildren();
  const add = (key, value) => {
    if (value === "" || value === undefined) return;
    fields.append(el("dt", {text: tr(key)}), el("dd", {text: value === null ? tr("hidden") : value}));
  };
  add("field.caller", o.caller_name);
  add("field.number", o.caller_number);
  add("field.urgency", tr("urgency." + o.urgency));
  add("col.category", categoryLabel(o.category));
  add("col.text", o.text);
  add("field.location", o.location);
  if (o.channel) fields.append(el("dt", {text: t("find.channel")}), el("dd", {text: channelName(o.channel)}));
  add("field.accepted", when(o.accepted_at));
  add("field.due", when(o.handling_due));
  add("field.lead", o.lead_department ? deptName(o.lead_department) : "");
  add("field.co", o.co_handlers.map(deptName).join("、"));
  if (o.return_count) add("field.returns", String(o.return_count));
  if (o.confidential) add("field.confidential", tr("yes"));
  if (o.on_call_answer) add("field.answer", o.on_call_answer);
  if (o.pending_return) add("field.pending", `${deptName(o.pending_return.department)}：${o.pending_return.reason}`);
  if (doc.call_survey) {
    add("field.survey", doc.call_survey.score ? `${doc.call_survey.score} · ${tr("survey." + doc.call_survey.score)}`
      : tr("survey.none"));
  }
  if (doc.return_visit) {
    const v = doc.return_visit;
    add("field.visit", [tr("visit." + v.status), v.attempts ? tr("visit.attempts", {n: v.attempts}) : "",
      visitResult(v.result)].filter(Boolean).join(" · "));
  }
  if (doc.recording) {  // supervisors: the order's call, played with Range requests
    fields.append(el("dt", {text: tr("field.recording")}), el("dd", {},
      el("audio", {attrs: {controls: "", preload: "none", src: doc.recording}})));
  }
  renderActions(o);
  const replies = byId("replies");
  replies.replaceChildren();
  for (const r of o.replies) {
    replies.append(el("li", {}, el("span", {cls: "when", text: when(r.at)}),
      el("strong", {text: deptName(r.department) + " "}), el("span", {text: r.text})));
  }
  if (!o.replies.length) replies.append(el("li", {cls: "muted", text: tr("detail.none")}));
  const history = byId("history");
  history.replaceChildren();
  for (const h of doc.history) {
    const extra = DISPATCH_STEPS.includes(h.step) && h.data.department ? " → " + deptName(h.data.department)
      : h.step === "flag_overdue" && timerKey(h.data.timer) ? "：" + tr(timerKey(h.data.timer)) : "";
    history.append(el("li", {},
      el("span", {cls: "when", text: when(h.at)}),
      el("strong", {text: tr("step." + h.step) + extra}),
      el("span", {cls: "muted"}, ...textWithLinks(" " + actorLabel(h), (id) => openOrder(id))),
      h.reason ? el("div", {}, ...textWithLinks(localName(h, "reason"), (id) => openOrder(id))) : null));
  }
}

function departmentSelect(order) {
  const select = el("select", {data: {field: "department"}});
  for (const d of departments) {
    if (d.id === order.lead_department && order.state !== "accepted") continue;
    select.append(el("option", {text: currentLang() === "en" ? d.name_en : d.name, attrs: {value: d.id}}));
  }
  api("GET", "/api/departments/suggest?text=" + encodeURIComponent(order.text.slice(0, 500)))
    .then((s) => {
      const best = s.suggestions.find((x) => x.id !== order.lead_department);
      if (best) select.value = best.id;
    }).catch(() => {});
  return select;
}

function renderActions(order) {
  const box = byId("actions");
  box.replaceChildren();
  setText("action-message", "");
  const offered = allowedSteps().filter((s) => order.steps.includes(s));
  for (const step of offered) {
    const row = el("div", {cls: "row"});
    const inputs = [];
    for (const field of STEP_FIELDS[step] || []) {
      let input;
      if (field === "department") input = departmentSelect(order);
      else if (field === "deadline") input = el("input", {data: {field}, attrs: {type: "datetime-local", "aria-label": tr("in.deadline")}});
      else if (field === "reason") input = el("input", {data: {field}, attrs: {maxlength: 2000, placeholder: tr("in.reason")}});
      else input = el("textarea", {data: {field}, attrs: {maxlength: 20000, placeholder: step === "co_reply" ? tr("in.co_reply") : tr("in." + field)}});
      inputs.push(input);
      row.append(input);
    }
    const button = el("button", {cls: step === "return" || step === "reject_completion" ? "danger" : "primary",
      text: tr("step." + step), attrs: {type: "button"}});
    button.addEventListener("click", () => takeStep(order, step, inputs, button));
    row.append(button);
    box.append(row);
  }
  if (order.state === "return_visit" && me.role !== "handler") box.append(citizenAnswerRow(order));
}

// An operator records what the citizen said on a recorded return-visit call; the
// server accepts it only with the call's id, as the citizen's own answer.
function citizenAnswerRow(order) {
  const choice = (field, label, options) => {
    const select = el("select", {data: {field}, attrs: {"aria-label": label}});
    for (const [value, label] of options) select.append(el("option", {text: label, attrs: {value}}));
    return select;
  };
  const scale = [["", tr("citizen.none")], ["3", "3 满意 satisfied"], ["2", "2 基本满意"], ["1", "1 不满意"]];
  const resolved = choice("resolved", tr("citizen.title"),
    [["true", tr("citizen.solved")], ["false", tr("citizen.unsolved")]]);
  const satOp = choice("satisfaction_operator", tr("citizen.sat_op"), scale);
  const satDep = choice("satisfaction_department", tr("citizen.sat_dep"), scale);
  const call = el("input", {data: {field: "call_id"}, attrs: {maxlength: 64, placeholder: tr("citizen.call")}});
  const button = el("button", {cls: "primary", text: tr("step.answer"), attrs: {type: "button"}});
  const row = el("div", {cls: "row"}, el("div", {cls: "muted", text: tr("citizen.title")}),
    resolved, satOp, satDep, call, button);
  button.addEventListener("click", () => {
    const body = {step: "answer", resolved: resolved.value === "true", call_id: call.value.trim()};
    if (satOp.value) body.satisfaction_operator = Number(satOp.value);
    if (satDep.value) body.satisfaction_department = Number(satDep.value);
    postStep(order, "answer", body, button);
  });
  return row;
}

async function takeStep(order, step, inputs, button) {
  const body = {step};
  for (const input of inputs) {
    const field = input.dataset.field;
    if (field === "deadline") {
      if (input.value) body.deadline = fromCentreInput(input.value);  // the centre's wall time
    } else if (input.value.trim()) {
      body[field] = input.value;
    }
  }
  await postStep(order, step, body, button);
}

async function postStep(order, step, body, button) {
  button.disabled = true;
  const message = byId("action-message");
  try {
    await api("POST", `/api/orders/${encodeURIComponent(order.id)}/steps`, body);
    message.className = "message ok";
    message.textContent = tr("done", {s: tr("step." + step)});
    await loadList();
    await openOrder(order.id);
    message.className = "message ok";
    message.textContent = tr("done", {s: tr("step." + step)});
  } catch (e) {
    message.className = "message error";
    message.textContent = tr("failed", {e: e instanceof ApiFailure ? e.message : String(e)});
  } finally {
    button.disabled = false;
  }
}

const KINDS = ["ping_pong", "dispatch_cycle", "false_completion", "template_reply", "overdue",
  "repeat_after_completion", "staff_entered_satisfaction"];

function boardFilters() {
  const kind = byId("board-kind"), dept = byId("board-department");
  const keepKind = kind.value, keepDept = dept.value;
  kind.replaceChildren(el("option", {attrs: {value: ""}, text: tr("board.all_kinds")}),
    ...KINDS.map((k) => el("option", {attrs: {value: k}, text: tr("kind." + k)})));
  dept.replaceChildren(el("option", {attrs: {value: ""}, text: tr("board.all_departments")}),
    ...departments.map((d) => el("option", {attrs: {value: d.id}, text: deptName(d.id)})));
  kind.value = keepKind; dept.value = keepDept;
}

function pct(x) { return Math.round(Number(x) * 100); }
function clip(text, n = 80) { text = String(text || ""); return text.length > n ? text.slice(0, n) + "…" : text; }
function hours(x) { return Number(x).toFixed(1); }

// The evidence of one finding as sentences (never JSON).
function evidenceSentences(a, numberOf) {
  const e = a.evidence || {};
  const out = [];
  if (a.kind === "ping_pong") {
    out.push(tr("ev.ping_pong", {n: e.returns}));
    for (const st of e.steps || []) out.push(tr("ev.returned_by", {at: when(st.at), dept: deptName(st.department || st.unit), reason: st.reason || "—"}));
  } else if (a.kind === "dispatch_cycle") {
    out.push(tr("ev.dispatch_cycle", {path: (e.lead_path || []).map(deptName).join(" → ")}));
  } else if (a.kind === "false_completion") {
    const c = e.completion || {};
    out.push(tr("ev.false." + (e.reason || "citizen_unsolved"), {dept: deptName(c.department || c.unit), at: when(c.at),
      days: e.days_without_contact ?? "", visits: e.return_visit_steps ?? 0}));
    if (e.reply_text) out.push(tr("ev.reply", {text: clip(e.reply_text, 120)}));
  } else if (a.kind === "template_reply") {
    out.push(tr("ev.template", {dept: deptName(e.department), n: e.orders, pct: pct(e.threshold), text: clip(e.leader && e.leader.text, 120)}));
    for (const r of e.replies || []) out.push(tr("ev.template_order", {n: numberOf(r.order_id), pct: pct(r.similarity_to_leader)}));
  } else if (a.kind === "overdue") {
    // Still open: late by now, not by when the finding was made (0.0 h at the deadline).
    const lateOpen = e.due ? Math.max(Number(e.late_by_hours) || 0, (Date.now() - Date.parse(e.due)) / 3600e3)
      : e.late_by_hours;
    const late = e.met_at ? tr("ev.late_done", {at: when(e.met_at), h: hours(e.late_by_hours)}) : tr("ev.late_open", {h: hours(lateOpen)});
    out.push(tr("ev.overdue." + (e.deadline || "handling"), {due: when(e.due), late}));
  } else if (a.kind === "repeat_after_completion") {
    const later = e.later || {};
    out.push(tr("ev.repeat", {caller: e.caller || "", days: e.days_after_completion,
      same: e.same_category ? tr("ev.repeat_same", {cat: categoryLabel(later.category || "")}) : "", text: clip(later.text, 100)}));
  } else if (a.kind === "staff_entered_satisfaction") {
    const role = {operator: "role.operator", supervisor: "role.supervisor", department: "role.department", admin: "role.admin"}[e.role];
    out.push(tr("ev.staff", {actor: e.actor_id, role: role ? tr(role) : e.role}));
  }
  return out;
}

async function loadBoard() {
  const list = byId("anomalies");
  const q = new URLSearchParams({status: byId("board-status").value || "open"});
  if (byId("board-kind").value) q.set("kind", byId("board-kind").value);
  if (byId("board-department").value) q.set("department", byId("board-department").value);
  let doc;
  try { doc = await api("GET", "/api/supervision/anomalies?" + q); } catch (e) {
    list.replaceChildren(el("li", {text: e.message}));
    return;
  }
  const counts = byId("board-counts");
  counts.replaceChildren();
  for (const [kind, n] of Object.entries(doc.counts)) {
    const chip = el("button", {cls: "count" + (byId("board-kind").value === kind ? " active" : ""), attrs: {type: "button"}, text: `${tr("kind." + kind)} ${n}`});
    chip.addEventListener("click", () => { byId("board-kind").value = byId("board-kind").value === kind ? "" : kind; loadBoard(); });
    counts.append(chip);
  }
  list.replaceChildren();
  if (!doc.anomalies.length) list.append(el("li", {cls: "muted", text: tr("board.none")}));
  for (const a of doc.anomalies) list.append(anomalyItem(a));
  loadFollowups();
}

function anomalyItem(a) {
  const numbers = Object.fromEntries(a.orders.map((o) => [o.id, o.number || "#" + o.id]));
  const numberOf = (id) => numbers[id] || "#" + id;
  const open = (id) => { showTab("orders"); openOrder(id); };
  const links = a.orders.flatMap((o, i) => [i ? el("span", {text: "、"}) : null, orderLink(o.id, numberOf(o.id), open)]).filter(Boolean);
  const item = el("li", {data: {kind: a.kind, key: a.key}, cls: a.ack ? "handled" : ""},
    el("div", {cls: "head"}, el("span", {cls: "kind", text: tr("kind." + a.kind)}),
      el("span", {cls: "muted", text: when(a.at) + " · " + tr("board.orders") + " "}), ...links),
    el("ul", {cls: "evidence"}, ...evidenceSentences(a, numberOf).map((s) => el("li", {}, ...textWithLinks(s, open)))));
  if (a.ack) {
    item.append(el("div", {cls: "ack muted"}, ...textWithLinks(tr("board.handled_by", {who: a.ack.by, at: when(new Date(a.ack.at * 1000).toISOString())}) + (a.ack.note ? " · " + a.ack.note : ""), open)));
    return item;
  }
  const note = el("input", {attrs: {maxlength: "500", placeholder: tr("board.note")}, data: {field: "note"}});
  const deadline = el("input", {attrs: {type: "datetime-local", title: tr("board.deadline_ph")}, data: {field: "deadline"}});
  deadline.value = centreInputValue(Date.now() / 1000 + 3 * 86400);  // on the centre's clock
  const message = el("span", {cls: "message"});
  const target = a.orders.find((o) => o.state && !["evaluated", "resolved_on_call"].includes(o.state)) || null;
  const supervise = el("button", {attrs: {type: "button"}, data: {act: "supervise"}, text: tr("board.supervise")});
  supervise.disabled = !target;
  supervise.addEventListener("click", async () => {
    const reason = note.value.trim() || tr("kind." + a.kind);
    try {
      await api("POST", `/api/orders/${encodeURIComponent(target.id)}/steps`,
        {step: "supervise", reason, deadline: fromCentreInput(deadline.value)});
      await api("POST", "/api/supervision/anomalies/ack", {key: a.key, note: tr("board.supervised", {n: numberOf(target.id)}) + (note.value.trim() ? " · " + note.value.trim() : "")});
      loadBoard();
    } catch (e) { message.className = "message error"; message.textContent = tr("failed", {e: e.message}); }
  });
  const ack = el("button", {attrs: {type: "button"}, data: {act: "ack"}, text: tr("board.ack")});
  ack.addEventListener("click", async () => {
    try { await api("POST", "/api/supervision/anomalies/ack", {key: a.key, note: note.value.trim()}); loadBoard(); } catch (e) {
      message.className = "message error"; message.textContent = tr("failed", {e: e.message});
    }
  });
  item.append(el("div", {cls: "row board-actions"}, note, deadline, supervise, ack, message));
  return item;
}

// --------------------------------------------------------------------------- a department's inbox

let inboxSeen = null;   // ids already announced (null until the first load)
let inboxTimer = null;

function beep() {  // a short two-tone chime; browsers may hold it until the page was clicked
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    [660, 880].forEach((f, i) => {
      const o = ctx.createOscillator(), g = ctx.createGain();
      o.frequency.value = f; o.connect(g); g.connect(ctx.destination);
      g.gain.setValueAtTime(0.15, ctx.currentTime + i * 0.18);
      g.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + i * 0.18 + 0.16);
      o.start(ctx.currentTime + i * 0.18); o.stop(ctx.currentTime + i * 0.18 + 0.17);
    });
  } catch { /* no audio */ }
}

async function loadInbox() {
  let doc;
  try { doc = await api("GET", "/api/orders/inbox"); } catch { return; }
  const waiting = [...doc.new, ...doc.sent_back, ...doc.supervised];
  const ids = new Set(waiting.map((o) => o.id));
  const arrived = inboxSeen === null ? [] : [...ids].filter((id) => !inboxSeen.has(id));
  inboxSeen = ids;
  const badge = byId("inbox-badge");
  const n = new Set([...ids, ...doc.due_soon.map((o) => o.id)]).size;
  badge.hidden = n === 0;
  badge.textContent = String(n);
  badge.classList.toggle("flash", arrived.length > 0);
  document.title = (n ? `(${n}) ` : "") + "12345 · " + tr("orders.title");
  if (arrived.length) { beep(); byId("inbox-badge").title = tr("inbox.arrived", {n: arrived.length}); }
  const box = byId("inbox-lists");
  box.replaceChildren();
  const open = (id) => { showTab("orders"); openOrder(id); };
  for (const [key, rows] of [["new", doc.new], ["sent_back", doc.sent_back], ["supervised", doc.supervised], ["due_soon", doc.due_soon]]) {
    const ul = el("ul", {cls: "anomalies"});
    if (!rows.length) ul.append(el("li", {cls: "muted", text: tr("inbox.none")}));
    for (const o of rows) {
      const due = o.due || o.handling_due;
      const late = Boolean(due) && new Date(due) < new Date();  // the deadline shown (o.overdue lists flags)
      const why = o.sent_back ? tr({refuse_return: "inbox.back_refuse_return", reject_completion: "inbox.back_reject_completion"}[o.sent_back.step] || "inbox.back_reopen") + (o.sent_back.reason ? "：" + o.sent_back.reason : "") : "";
      ul.append(el("li", {data: {order: o.id}, cls: arrived.includes(o.id) ? "fresh" : ""},
        orderLink(o.id, o.number, open), " ",
        el("span", {cls: "muted", text: [tr("state." + o.state), categoryLabel(o.category)].filter(Boolean).join(" · ")}), " ",
        due ? el("span", {cls: late ? "overdue" : "muted", text: tr(late ? "inbox.overdue" : "inbox.due", {t: when(due)})}) : null,
        el("div", {text: clip(o.text, 100)}), why ? el("div", {cls: "muted", text: why}) : null));
    }
    box.append(el("section", {data: {list: key}}, el("h3", {text: tr("inbox." + key) + ` (${rows.length})`}), ul));
  }
}

function visitResult(text) {  // the dialer's own results are translated, others shown as sent
  const key = "visit.result." + text;
  return STRINGS["zh-CN"][key] ? tr(key) : text;
}

async function loadFollowups() {  // return visits handed to an operator, call-backs given up
  const list = byId("followups");
  let manual, gaveUp;
  try {
    [manual, gaveUp] = await Promise.all([api("GET", "/api/outbound?status=manual"),
      api("GET", "/api/outbound?status=gave_up")]);
  } catch (e) {
    list.replaceChildren(el("li", {text: e.message}));
    return;
  }
  const rows = [...manual.outbound, ...gaveUp.outbound];
  list.replaceChildren();
  if (!rows.length) list.append(el("li", {cls: "muted", text: tr("followup.none")}));
  for (const r of rows) {
    const item = el("li", {data: {kind: r.kind}},
      el("span", {cls: "kind", text: tr("followup." + r.kind)}),
      el("span", {cls: "muted", text: [when(new Date(r.updated_at * 1000).toISOString()),
        r.kind === "return_visit" ? "#" + r.key : "", r.number, tr("visit.attempts", {n: r.attempts}),
        r.result].filter(Boolean).join(" · ")}));
    if (r.kind === "return_visit") item.addEventListener("click", () => openOrder(r.key));
    list.append(item);
  }
}

boot();
