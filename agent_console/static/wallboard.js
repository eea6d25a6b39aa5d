// The supervisor's wallboard: queues, figures, trend, agents and alerts, live
// from /ws.  Supervisor actions (force ready, force sign-out, and listen /
// whisper / barge on a live call) need a reason and are audited by the server.

import {api, byId, clockTime, el, hourMinute, Live, pct, setCsrf, setText, setTimeZone} from "/static/common.js";
import {applyI18n, currentLang, duration, errorText, localName, onLangChange, reasonLabel, stateLabel, t, wireLangToggle} from "/static/i18n.js";

let live = null;
let view = null;
let dialogAgent = null;
let myPhone = "";
let spy = null;       // the spy call started from this tab: {agent, mode, phone}
let spyPick = null;   // the mode chosen, waiting for confirmation

async function boot() {
  applyI18n();
  wireLangToggle();
  let who;
  try { who = await api("GET", "/api/me"); } catch { return; }
  setCsrf(who.csrf);
  setTimeZone(who.config.timezone);
  setText("me", who.user.display_name);
  myPhone = who.user.interface || "";
  byId("web-signout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } finally { location.href = "/login"; }
  });
  byId("agent-cancel").addEventListener("click", () => byId("agent-dialog").close());
  byId("force-ready").addEventListener("click", () => supervise("ready"));
  byId("force-signout").addEventListener("click", () => supervise("signout"));
  for (const b of document.querySelectorAll("[data-spy]")) {
    b.addEventListener("click", () => pickSpy(b.dataset.spy));
  }
  byId("spy-back").addEventListener("click", () => { spyPick = null; renderSpySection(); });
  byId("spy-go").addEventListener("click", startSpy);
  byId("spy-stop").addEventListener("click", stopSpy);
  restoreSpy();
  onLangChange(render);
  live = new Live((doc) => { view = doc; render(); }, (status) => {
    if (status !== "open") { byId("link").className = "pill down"; setText("link", t("link.reconnecting")); }
    else render();
  }, "/ws/wall");  // the web workers' path behind nginx; the core serves it too
  live.connect();
  live.keepAlive();
  setInterval(tick, 1000);
}

function render() {
  if (!view) return;
  const link = byId("link");
  const parts = Object.values(view.pbxs || {});
  const upCount = parts.filter((p) => p.up).length;
  if (view.link.up && parts.length && upCount < parts.length) {  // some PBXs down
    link.className = "pill partial";
    setText(link, t("link.partial", {up: upCount, n: parts.length}));
  } else {
    link.className = "pill " + (view.link.up ? "up" : "down");
    setText(link, t(view.link.up ? "link.up" : "link.down"));
  }
  byId("stale").hidden = view.link.up;
  renderQueues();
  renderTrend();
  renderAgents();
  renderSpy();
  tick();
}

// --------------------------------------------------------------------------- queues

// A rate of nothing is not 0.00 %: when no call was offered the cell says "0 calls";
// a mean of nothing is not 0.0 s: ASA with no call answered, AHT with none completed
// (acd/metrics.py: their denominators) say "—".
// Colours come from the server, from the one table of bounds in the config
// (acd.reports.parse_colours), for every row and card alike; none given, none shown.
const MEAN_OF = {asa_s: "answered", aht_s: "completed"};
function rateCell(f, key, colours) {
  const none = !f.offered || (key in MEAN_OF && !f[MEAN_OF[key]]);
  const colour = none ? "none" : (colours && colours[key]) || "plain";
  const seconds = key.endsWith("_s");
  const text = none ? (seconds ? "—" : t("wall.no_calls")) : seconds ? secs(f[key]) : pct(f[key]);
  return el("td", {cls: `rate c-${colour}`, text, data: {figure: key, colour}});
}

function secs(v) { return (typeof v === "number" ? v : 0).toFixed(1) + "s"; }

function figureRow(period, label, f, colours) {
  f = f || {offered: 0, answered: 0, abandoned: 0};
  return el("tr", {data: {period}},
    el("td", {text: label}),
    el("td", {text: f.offered, data: {figure: "offered"}}),
    el("td", {text: f.answered, data: {figure: "answered"}}),
    el("td", {text: f.abandoned, data: {figure: "abandoned"}}),
    rateCell(f, "connection_rate", colours),
    rateCell(f, "answer_rate_sl", colours),
    rateCell(f, "abandon_rate", colours),
    rateCell(f, "asa_s", colours),
    rateCell(f, "aht_s", colours));
}

function queueCard(key, title, sub, waiting, oldest, today, last15, colours) {
  const card = el("article", {cls: "panel qcard", data: {queue: key}},
    el("h2", {}, el("span", {text: title}), el("span", {cls: "muted", text: sub})),
    el("div", {cls: "big"},
      el("div", {cls: "cell" + (waiting ? " hot" : "")},
        el("div", {cls: "label", text: t("wall.waiting")}),
        el("div", {cls: "value", text: waiting, data: {figure: "waiting"}})),
      el("div", {cls: "cell"},
        el("div", {cls: "label", text: t("wall.longest")}),
        el("div", {cls: "value", text: "—", data: {figure: "longest", oldest: oldest ?? ""}}))),
    el("table", {cls: "figs"},
      el("thead", {}, el("tr", {},
        el("th", {text: ""}), el("th", {text: t("wall.offered")}), el("th", {text: t("wall.answered")}),
        el("th", {text: t("wall.abandoned")}), el("th", {text: t("wall.connection_rate")}),
        el("th", {text: t("wall.answer_rate_sl")}), el("th", {text: t("wall.abandon_rate")}),
        el("th", {text: t("wall.asa")}), el("th", {text: t("wall.aht")}))),
      el("tbody", {}, figureRow("today", t("wall.today"), today, colours && colours.today),
        figureRow("last_15min", t("wall.last15"), last15, colours && colours.last_15min))));
  return card;
}

function renderQueues() {
  const box = byId("queue-cards");
  const cards = [];
  const queues = Object.values(view.queues);
  const waiting = queues.reduce((n, q) => n + q.waiting, 0);
  const oldest = queues.map((q) => q.oldest_joined_at).filter((x) => x !== null);
  cards.push(queueCard("__all__", t("wall.all_queues"), "", waiting,
    oldest.length ? Math.min(...oldest) : null, view.today, view.last_15min, view.colours));
  for (const q of queues) {
    cards.push(queueCard(q.queue, localName(q, "title"), t("wall.logged_in", {n: q.agents_logged_in}),
      q.waiting, q.oldest_joined_at, q.today, q.last_15min, q.colours));
  }
  // Several PBXs: one card each after the queues; a PBX whose link is down is greyed
  // (its figures are what it last said), the others stay live.
  for (const [name, p] of Object.entries(view.pbxs || {})) {
    const sub = p.up ? t("wall.pbx_up", {n: p.agents_logged_in})
      : t("wall.pbx_down", {reason: p.reason || ""});
    const card = queueCard("pbx:" + name, "PBX " + name, sub, p.waiting, p.oldest_joined_at, p.today,
      p.last_15min, {today: p.colours, last_15min: null});
    card.classList.add("pbx-card");
    if (!p.up) card.classList.add("down");
    card.dataset.pbx = name;
    card.dataset.up = p.up ? "1" : "0";
    cards.push(card);
  }
  box.replaceChildren(...cards);
}

// --------------------------------------------------------------------------- trend

let trendChart = null;

function cssVar(name, fallback) {
  return getComputedStyle(document.body).getPropertyValue(name).trim() || fallback;
}

// The trend, drawn by Apache ECharts (vendored under /static/vendor/echarts/).
function renderTrend() {
  const box = byId("trend");
  if (!window.echarts) return;
  if (!trendChart) {
    trendChart = window.echarts.init(box, null, {renderer: "canvas", locale: currentLang() === "en" ? "EN" : "ZH"});
    window.addEventListener("resize", () => trendChart.resize());
  }
  const pts = view.trend || [];
  const labels = pts.map((p) => hourMinute(p.start));  // the centre's time zone
  const fg = cssVar("--fg", "#e6edf3"), muted = cssVar("--muted", "#8b98a5");
  const accent = cssVar("--accent", "#4ea1ff"), ok = cssVar("--ok", "#3fb950");
  const line = (key, name, color, dashed) => ({
    name, type: "line", yAxisIndex: 0, connectNulls: false, symbolSize: 5,
    lineStyle: {width: 2.5, type: dashed ? "dashed" : "solid", color}, itemStyle: {color},
    data: pts.map((p) => (p.offered ? p[key] : null)),
  });
  trendChart.setOption({
    animation: false,
    textStyle: {color: fg},
    grid: {left: 44, right: 40, top: 34, bottom: 26},
    tooltip: {trigger: "axis", renderMode: "richText"},
    legend: {top: 0, textStyle: {color: fg}},
    xAxis: {type: "category", data: labels, axisLabel: {color: muted, interval: 7}},
    yAxis: [
      {type: "value", min: 0, max: 100, axisLabel: {color: muted, formatter: "{value}%"},
       splitLine: {lineStyle: {color: cssVar("--line", "#30363d")}}},
      {type: "value", minInterval: 1, axisLabel: {color: muted}, splitLine: {show: false}},
    ],
    series: [
      {name: t("wall.offered"), type: "bar", yAxisIndex: 1, barMaxWidth: 10,
       itemStyle: {color: "rgba(139,152,165,0.35)"}, data: pts.map((p) => p.offered)},
      line("connection_rate", t("wall.connection_rate"), accent, false),
      line("answer_rate_sl", t("wall.answer_rate_sl"), ok, true),
    ],
  }, true);
}

// --------------------------------------------------------------------------- agents

function renderAgents() {
  const box = byId("agents");
  const alerting = new Set(Object.values(view.alerts).map((a) => a.subject));
  const tiles = [];
  const agents = Object.values(view.agents);
  // Several PBXs: the operators of a PBX that is down are greyed with it (stale).
  const down = new Set(Object.entries(view.pbxs || {}).filter(([, p]) => !p.up).map(([n]) => n));
  const order = {ringing: 0, on_call: 1, wrap_up: 2, ready: 3, paused: 4, logged_out: 5};
  agents.sort((a, b) => (order[a.state] ?? 9) - (order[b.state] ?? 9) || a.name.localeCompare(b.name));
  for (const a of agents) {
    const tile = el("button", {cls: `tile st-${a.state}` + (alerting.has(a.name) ? " alerting" : "")
      + (spy && spy.agent === a.name ? " spied" : "") + (a.pbx && down.has(a.pbx) ? " stale" : ""),
      attrs: {type: "button"}, data: {agent: a.name, since: a.since}},
      el("span", {cls: "name", text: a.operator || a.name}),
      a.operator ? el("span", {cls: "who", text: a.name}) : null,
      a.pbx ? el("span", {cls: "who", text: "PBX " + a.pbx, data: {pbx: a.pbx}}) : null,
      el("span", {text: stateLabel(a.state) + (a.paused && a.reason ? " · " + reasonLabel(a.reason) : "")}),
      el("span", {cls: "time", text: ""}),
      el("span", {cls: "muted-on-tile", text: t("wall.answered_n", {n: a.answered})}));
    tile.addEventListener("click", () => openAgent(a.name));
    tiles.push(tile);
  }
  box.replaceChildren(...tiles);
  setText("agent-count", `(${agents.filter((a) => a.state !== "logged_out").length}/${agents.length})`);
  const counts = view.agent_counts || {};
  byId("agent-states").replaceChildren(...["ready", "ringing", "on_call", "wrap_up", "paused", "logged_out"].map(
    (st) => el("span", {cls: `count st-${st}`, data: {state: st}},
      el("span", {cls: "label", text: stateLabel(st)}), el("b", {text: counts[st] ?? 0}))));
}

function openAgent(name) {
  dialogAgent = name;
  const a = view.agents[name];
  setText("agent-dialog-title", t("wall.actions_for", {name: a && a.operator ? `${a.operator} (${name})` : name}));
  setText("agent-dialog-state", a ? stateLabel(a.state) + (a.reason ? " · " + reasonLabel(a.reason) : "") : "");
  byId("agent-reason").value = "";
  byId("agent-dialog-message").textContent = "";
  spyPick = null;
  renderSpySection();
  byId("agent-dialog").showModal();
  byId("agent-reason").focus();
}

async function supervise(kind) {
  const reason = byId("agent-reason").value.trim();
  const msg = byId("agent-dialog-message");
  if (!reason) { msg.className = "message error"; msg.textContent = t("wall.reason"); byId("agent-reason").focus(); return; }
  try {
    await api("POST", `/api/supervisor/agents/${encodeURIComponent(dialogAgent)}/${kind}`, {reason});
    byId("agent-dialog").close();
  } catch (e) {
    msg.className = "message error";
    msg.textContent = errorText(e);
  }
}

// --------------------------------------------------------------------------- listen in

const SPY_KEY = "hotline.spy";  // this tab's spy call, kept across a reload

function modeLabel(mode) {
  return {listen: t("wall.spy.listen"), whisper: t("wall.spy.whisper"), barge: t("wall.spy.barge")}[mode] || mode;
}

function keepSpy(value) {
  spy = value;
  try {
    if (spy) sessionStorage.setItem(SPY_KEY, JSON.stringify({agent: spy.agent, mode: spy.mode, phone: spy.phone}));
    else sessionStorage.removeItem(SPY_KEY);
  } catch { /* storage off: the bar just does not survive a reload */ }
}

function restoreSpy() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SPY_KEY) || "null");
    if (s && typeof s.agent === "string" && typeof s.mode === "string") spy = s;
  } catch { spy = null; }
}

function agentLabel(name) {
  const a = view && view.agents[name];
  return a && a.operator ? `${a.operator} (${name})` : name;
}

function dialogError(text) {
  const msg = byId("agent-dialog-message");
  msg.className = "message error";
  msg.textContent = text;
}

// The spy part of the agent dialog: the three modes while the agent is on a
// call, then a confirmation naming the agent and the mode.
function renderSpySection() {
  if (!dialogAgent || !view) return;
  const a = view.agents[dialogAgent];
  const onCall = !!a && a.state === "on_call";
  let hint = t("wall.spy.hint", {phone: myPhone});
  if (!onCall) hint = t("wall.spy.not_on_call");
  else if (spy) hint = t("wall.spy.busy", {name: agentLabel(spy.agent)});
  else if (!myPhone) hint = t("wall.spy.no_phone");
  setText("spy-hint", hint);
  const can = onCall && !spy;
  for (const b of document.querySelectorAll("[data-spy]")) b.disabled = !can;
  if (!can) spyPick = null;
  byId("spy-modes").hidden = spyPick !== null;
  byId("spy-confirm").hidden = spyPick === null;
  if (spyPick !== null) {
    setText("spy-confirm-text", t("wall.spy.confirm",
      {mode: modeLabel(spyPick), name: agentLabel(dialogAgent), phone: myPhone || "—"}));
  }
}

function pickSpy(mode) {
  if (!byId("agent-reason").value.trim()) {
    dialogError(t("wall.reason"));
    byId("agent-reason").focus();
    return;
  }
  byId("agent-dialog-message").textContent = "";
  spyPick = mode;
  renderSpySection();
  byId("spy-go").focus();
}

async function startSpy() {
  const mode = spyPick;
  const reason = byId("agent-reason").value.trim();
  if (!mode || !dialogAgent) return;
  byId("spy-go").disabled = true;
  try {
    const r = await api("POST", `/api/supervise/${encodeURIComponent(dialogAgent)}/spy`, {mode, reason});
    keepSpy(r.spy);
    spyPick = null;
    byId("agent-dialog").close();
    render();
    barMessage(t("wall.spy.ringing", {phone: spy.phone}), "ok");
  } catch (e) {
    spyPick = null;
    renderSpySection();
    dialogError(errorText(e));
  } finally {
    byId("spy-go").disabled = false;
  }
}

async function stopSpy() {
  byId("spy-stop").disabled = true;
  try {
    await api("POST", "/api/supervise/spy/stop", {});
    keepSpy(null);
    render();
  } catch (e) {
    barMessage(errorText(e), "error");
  } finally {
    byId("spy-stop").disabled = false;
  }
}

function barMessage(text, kind) {
  const msg = byId("spy-bar-message");
  msg.className = "message " + kind;
  msg.textContent = text;
}

// The bar under the top bar while this supervisor is on a spy call, with Stop.
// The spy call ends with the agent's call (ChanSpy's E option): so does the bar.
function renderSpy() {
  if (spy && view && !(view.agents[spy.agent] && view.agents[spy.agent].state === "on_call")) keepSpy(null);
  const bar = byId("spy-bar");
  if (!spy) {
    if (!bar.hidden) { bar.hidden = true; barMessage("", ""); }
  } else {
    setText("spy-bar-text", t("wall.spy.active", {mode: modeLabel(spy.mode), name: agentLabel(spy.agent)}));
    bar.dataset.agent = spy.agent;
    bar.dataset.mode = spy.mode;
    bar.hidden = false;
  }
  if (byId("agent-dialog").open) renderSpySection();
}

// --------------------------------------------------------------------------- clock-driven

function alertText(a, now) {
  let subject = a.subject;
  if (a.kind === "longest_wait" && view.queues[a.subject]) subject = localName(view.queues[a.subject], "title");
  const agent = view.agents[a.subject];
  if (agent && agent.operator) subject = `${agent.operator} (${a.subject})`;
  const d = a.since ? duration(now - a.since) : "";
  return t("alert." + a.kind, {subject, d, waiting: a.detail.waiting ?? "",
    reason: reasonLabel(a.detail.reason || ""), pct: a.detail.pct ?? "", count: a.detail.count ?? "",
    usual: a.detail.usual ?? "", addresses: a.detail.addresses ?? "", error: a.detail.error ?? "",
    why: a.detail.why_kind ? t("agi.why." + a.detail.why_kind) : ""});
}

function tick() {
  if (!view || !live) return;
  const now = live.now();
  setText("clock", clockTime(now));
  for (const cell of document.querySelectorAll("[data-figure=longest]")) {
    const oldest = cell.dataset.oldest;
    setText(cell, oldest ? duration(now - Number(oldest)) : "—");
  }
  for (const tile of document.querySelectorAll(".tile")) {
    const a = view.agents[tile.dataset.agent];
    if (a) setText(tile.querySelector(".time"), a.state === "logged_out" ? "" : duration(now - a.since));
  }
  const list = byId("alerts");
  const alerts = Object.values(view.alerts);
  const order = {critical: 0, warning: 1};
  alerts.sort((a, b) => (order[a.severity] ?? 9) - (order[b.severity] ?? 9) || a.key.localeCompare(b.key));
  const items = alerts.map((a) => el("li", {cls: a.severity, text: alertText(a, now), data: {alert: a.key}}));
  if (!items.length) items.push(el("li", {cls: "none", text: t("wall.no_alerts")}));
  list.replaceChildren(...items);
}

boot();
