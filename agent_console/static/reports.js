// The reports page (and the printable 日报 / 月报): period, queue and department
// filters; charts by Apache ECharts (vendored, /static/vendor/echarts/); tables whose
// column names open the figure's definition; downloads as XLSX and CSV.

import {api, byId, el, setCsrf, setText, withOrderLinks} from "/static/common.js";
import {applyI18n, currentLang, localName, onLangChange, t, wireLangToggle} from "/static/i18n.js";

const printing = document.body.classList.contains("printing");
const state = {period: "day", day: "", queue: "", pbx: "", department: ""};
let report = null;
const charts = {};

function query(extra = {}) {
  const q = new URLSearchParams({period: state.period, day: state.day});
  if (state.queue) q.set("queue", state.queue);
  if (state.pbx) q.set("pbx", state.pbx);
  if (state.department) q.set("department", state.department);
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return q.toString();
}

async function boot() {
  applyI18n();
  wireLangToggle();
  let who;
  try { who = await api("GET", "/api/me"); } catch { return; }
  setCsrf(who.csrf);
  setText("me", who.user.display_name);
  if (who.user.role === "handler") {
    for (const id of ["queue-box", "dept-box", "to-wallboard"]) byId(id).hidden = true;
  }
  byId("web-signout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } finally { location.href = "/login"; }
  });
  const params = new URLSearchParams(location.search);
  state.period = params.get("period") || "day";
  state.day = params.get("day") || "";
  state.queue = params.get("queue") || "";
  state.pbx = params.get("pbx") || "";
  state.department = params.get("department") || "";
  for (const b of document.querySelectorAll("[data-period]")) {
    b.addEventListener("click", () => { state.period = b.dataset.period; load(); });
  }
  byId("day").addEventListener("change", () => { state.day = byId("day").value; load(); });
  byId("queue").addEventListener("change", () => { state.queue = byId("queue").value; load(); });
  byId("pbx").addEventListener("change", () => { state.pbx = byId("pbx").value; load(); });
  byId("department").addEventListener("change", () => { state.department = byId("department").value; load(); });
  const doPrint = byId("do-print");
  if (doPrint) doPrint.addEventListener("click", () => window.print());
  onLangChange(render);
  window.addEventListener("resize", () => { for (const c of Object.values(charts)) c.resize(); });
  await load();
}

async function load() {
  setText("status", t("rep.loading"));
  try {
    report = await api("GET", "/api/reports/summary?" + query());
  } catch (e) {
    setText("status", t("rep.failed", {e: e.message}));
    return;
  }
  state.day = report.day;
  if (!printing) history.replaceState(null, "", "/reports?" + query());
  setText("status", "");
  render();
}

function fillSelect(id, items, value, key, label) {
  const sel = byId(id);
  const first = sel.options[0];
  sel.replaceChildren(first, ...items.map((x) => el("option", {text: x[label], attrs: {value: x[key]}})));
  sel.value = value || "";
}

function render() {
  if (!report) return;
  for (const b of document.querySelectorAll("[data-period]")) {
    b.setAttribute("aria-pressed", String(b.dataset.period === state.period));
  }
  byId("day").value = report.day;
  fillSelect("queue", report.queues_known.map((q) => ({...q, title: localName(q, "title")})), state.queue, "queue", "title");
  // the PBX picker only once several PBXs are configured (the whole centre by default)
  byId("pbx-box").hidden = !report.pbxs_known.length || !report.calls;
  fillSelect("pbx", report.pbxs_known.map((p) => ({name: p})), state.pbx, "name", "name");
  fillSelect("department", report.departments_known, state.department, "id", "name");
  byId("xlsx").href = "/api/reports/export.xlsx?" + query();
  byId("print").href = "/reports/print?" + query();
  setText("print", t(state.period === "month" ? "rep.print_month" : state.period === "week" ? "rep.print_week" : "rep.print_day"));
  const first = report.start.slice(0, 10);
  const range = first === report.last_day ? first : `${first} — ${report.last_day}`;
  if (printing) {
    setText("print-centre", report.centre);
    setText("print-title", `${report.title} · ${range}`);
    document.title = `${report.centre} ${report.title} ${report.day}`;
  }
  renderCharts();
  renderTables();
}

// --------------------------------------------------------------------------- charts

function chart(id) {
  if (!window.echarts) return null;
  const box = byId(id);
  if (!charts[id]) {
    charts[id] = window.echarts.init(box, null, {renderer: "canvas", locale: currentLang() === "en" ? "EN" : "ZH"});
  }
  return charts[id];
}

function renderCharts() {
  const calls = report.calls;
  const depts = report.departments || [];
  for (const box of document.querySelectorAll(".chart-box")) box.hidden = false;
  if (!calls) {
    for (const id of ["chart-intervals", "chart-hours", "chart-abandons"]) byId(id).parentElement.hidden = true;
  } else {
    const iv = calls.intervals;
    const label = (s) => (report.interval === "hour" ? s.slice(11, 16) : s.slice(5, 10));
    chart("chart-intervals")?.setOption({
      animation: !printing,
      tooltip: {trigger: "axis", renderMode: "richText"},
      legend: {top: 0},
      grid: {left: 48, right: 48, top: 36, bottom: 28},
      xAxis: {type: "category", data: iv.map((r) => label(r.start))},
      yAxis: [{type: "value", min: 0, max: 100, axisLabel: {formatter: "{value}%"}},
              {type: "value", minInterval: 1, splitLine: {show: false}}],
      series: [
        {name: t("rep.offered"), type: "bar", yAxisIndex: 1, data: iv.map((r) => r.offered), itemStyle: {color: "#9fb3c8"}},
        {name: t("wall.connection_rate"), type: "line", data: iv.map((r) => (r.offered ? r.connection_rate : null))},
        {name: t("wall.answer_rate_sl"), type: "line", lineStyle: {type: "dashed"}, data: iv.map((r) => (r.offered ? r.answer_rate_sl : null))},
      ],
    }, true);
    chart("chart-hours")?.setOption({
      animation: !printing,
      tooltip: {trigger: "axis", renderMode: "richText"},
      legend: {top: 0},
      grid: {left: 48, right: 20, top: 36, bottom: 28},
      xAxis: {type: "category", data: calls.hours.map((h) => String(h.hour).padStart(2, "0"))},
      yAxis: {type: "value", minInterval: 1},
      series: [
        {name: t("rep.answered"), type: "bar", stack: "h", data: calls.hours.map((h) => h.answered)},
        {name: t("rep.abandoned"), type: "bar", stack: "h", data: calls.hours.map((h) => h.abandoned)},
      ],
    }, true);
    chart("chart-abandons")?.setOption({
      animation: !printing,
      tooltip: {trigger: "axis", renderMode: "richText"},
      grid: {left: 48, right: 20, top: 20, bottom: 28},
      xAxis: {type: "category", data: calls.abandon_times.map((a) => a.wait)},
      yAxis: {type: "value", minInterval: 1},
      series: [{name: t("rep.abandoned"), type: "bar", data: calls.abandon_times.map((a) => a.abandoned), itemStyle: {color: "#d9822b"}}],
    }, true);
  }
  if (!report.departments) { byId("chart-departments").parentElement.hidden = true; return; }
  const rate = (k) => ({name: report.definitions[k][currentLang() === "en" ? "en" : "zh"], type: "bar", barMaxWidth: 36, data: depts.map((d) => d[k])});
  chart("chart-departments")?.setOption({
    animation: !printing,
    tooltip: {trigger: "axis", renderMode: "richText"},
    legend: {top: 0},
    grid: {left: 48, right: 20, top: 36, bottom: 60},
    xAxis: {type: "category", data: depts.map((d) => d.name), axisLabel: {rotate: 20}},
    yAxis: {type: "value", min: 0, max: 100, axisLabel: {formatter: "{value}%"}},
    series: [rate("response_rate"), rate("resolution_rate"), rate("satisfaction_rate")],
  }, true);
}

// --------------------------------------------------------------------------- tables

function showDefinition(key) {
  const d = report.definitions[key];
  if (!d) return;
  setText("def-name", currentLang() === "en" ? `${d.en} (${d.zh})` : `${d.zh}（${d.en}）`);
  setText("def-rule", d.rule);
  byId("definition").showModal();
}

function renderTables() {
  const out = [];
  for (const tb of report.tables) {
    const head = el("tr", {}, ...tb.headers.map((h, i) => {
      const key = tb.columns[i];
      if (!report.definitions[key]) return el("th", {text: h});
      const b = el("button", {cls: "def", text: h, attrs: {type: "button", title: t("rep.definition")}, data: {def: key}});
      b.addEventListener("click", () => showDefinition(key));
      return el("th", {}, b);
    }));
    // A cell that is an order number (a drill-down row) opens the order.
    const rows = tb.rows.map((r) => el("tr", {}, ...r.map((v) => el("td", {}, ...withOrderLinks(v ?? "—")))));
    const csv = el("a", {cls: "no-print", text: t("rep.csv"),
      attrs: {href: "/api/reports/export.csv?" + query({table: tb.key}), download: ""}, data: {csv: tb.key}});
    out.push(el("section", {cls: "panel table-panel", data: {table: tb.key}},
      el("h2", {}, el("span", {text: tb.title}), csv),
      el("table", {cls: "report"}, el("thead", {}, head), el("tbody", {}, ...rows))));
  }
  byId("tables").replaceChildren(...out);
}

boot();
