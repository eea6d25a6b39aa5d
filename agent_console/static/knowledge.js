// Knowledge base (知识库): search as you type, read an article and its history;
// supervisors write, edit, retire and restore articles and see which articles
// answer most calls and which searches found nothing.  The server checks every
// rule; text is only ever set as text (common.js el()).

import {api, ApiFailure, byId, dateTime, el, setCsrf, setText, setTimeZone} from "/static/common.js";
import {applyI18n, currentLang, onLangChange, t, wireLangToggle} from "/static/i18n.js";

let me = null;
let writer = false;
let departments = [];
let current = null;  // the article in the editor, or null for a new one
let timer = null;

function deptName(id) {
  const d = departments.find((x) => x.id === id);
  if (!d) return id || "";
  return currentLang() === "en" ? d.name_en : d.name;
}

function when(epoch) { return dateTime(epoch); }  // in the centre's time zone

const ACTIONS = () => ({create: t("kb.a.create"), edit: t("kb.a.edit"), retire: t("kb.a.retire"),
  restore: t("kb.a.restore")});
const FIELD_NAMES = () => ({title: t("kb.f.title"), body: t("kb.f.body"), category: t("kb.f.category"),
  keywords: t("kb.f.keywords"), department: t("kb.f.department"), valid_from: t("kb.f.valid_from"),
  valid_to: t("kb.f.valid_to"), status: t("kb.status")});

function message(text, ok) {
  const m = byId("kb-message");
  m.textContent = text;
  m.className = "message " + (ok ? "ok" : "error");
}

async function search() {
  const q = byId("kb-q").value.trim();
  const category = byId("kb-category").value;
  const list = byId("kb-results");
  try {
    if (q) {
      const doc = await api("GET", "/api/knowledge/search?" + new URLSearchParams({q, category, limit: "20"}));
      setText("kb-count", t("kb.hits", {n: doc.hits.length}));
      list.replaceChildren(...doc.hits.map((h) => item(h, h.excerpt)));
    } else {
      const params = {category, per_page: "50"};
      if (!byId("kb-retired").checked) params.status = "active";
      const doc = await api("GET", "/api/knowledge/articles?" + new URLSearchParams(params));
      setText("kb-count", t("kb.total", {n: doc.total}));
      list.replaceChildren(...doc.articles.map((a) => item(a, a.body.slice(0, 80))));
    }
  } catch (e) {
    setText("kb-count", t("kb.failed", {e: e.message}));
  }
}

function item(a, excerpt) {
  const li = el("li", {cls: a.status === "retired" ? "retired" : "", data: {id: a.id}},
    el("span", {cls: "t", text: a.title}), el("span", {cls: "c", text: a.category}),
    el("div", {cls: "x", text: excerpt}));
  if (current && current.id === a.id) li.classList.add("chosen");
  li.addEventListener("click", () => openArticle(a.id));
  return li;
}

function fill(a) {
  for (const k of ["title", "category", "keywords", "body", "valid_from", "valid_to"]) {
    byId("f-" + k).value = a ? (a[k] ?? "") : "";
  }
  byId("f-department").value = a ? a.department : "";
  byId("f-note").value = "";
}

async function openArticle(id) {
  let doc;
  try { doc = await api("GET", `/api/knowledge/articles/${id}`); } catch (e) { message(t("kb.failed", {e: e.message})); return; }
  current = doc.article;
  fill(current);
  setText("kb-heading", t("kb.article", {id: current.id, v: current.version}));
  const status = byId("kb-status");
  status.textContent = current.status === "retired" ? t("kb.retired") : (doc.valid_now ? t("kb.active") : t("kb.not_valid"));
  status.className = "pill " + (current.status === "retired" || !doc.valid_now ? "retired" : "active");
  byId("kb-retire").hidden = !writer || current.status === "retired";
  byId("kb-restore").hidden = !writer || current.status !== "retired";
  const names = FIELD_NAMES();
  const actions = ACTIONS();
  byId("kb-history").replaceChildren(...doc.history.slice().reverse().map((h) => el("li", {},
    el("span", {cls: "muted", text: `v${h.version} · ${when(h.changed_at)} · ${h.changed_by} · `}),
    el("span", {text: actions[h.action] || h.action}),
    el("span", {text: Object.keys(h.changes).length ? " — " + Object.keys(h.changes).map((k) => names[k] || k).join("、") : ""}),
    h.note ? el("span", {cls: "muted", text: ` （${h.note}）`}) : null)));
  for (const li of byId("kb-results").children) li.classList.toggle("chosen", Number(li.dataset.id) === current.id);
  message("", true);
}

function newArticle() {
  current = null;
  fill(null);
  setText("kb-heading", t("kb.new"));
  byId("kb-status").textContent = "";
  byId("kb-status").className = "pill";
  byId("kb-retire").hidden = true;
  byId("kb-restore").hidden = true;
  byId("kb-history").replaceChildren();
  message("", true);
}

function formFields() {
  const out = {};
  for (const k of ["title", "category", "keywords", "body"]) out[k] = byId("f-" + k).value;
  out.department = byId("f-department").value;
  out.valid_from = byId("f-valid_from").value || null;
  out.valid_to = byId("f-valid_to").value || null;
  out.note = byId("f-note").value;
  return out;
}

// One write at a time: a double click on 保存 must not create the article twice.
let writing = false;
async function oneWrite(work) {
  if (writing) return;
  writing = true;
  const buttons = ["kb-save", "kb-retire", "kb-restore"].map(byId);
  for (const b of buttons) b.disabled = true;
  try { await work(); } finally {
    writing = false;
    for (const b of buttons) b.disabled = false;
  }
}

async function save(ev) {
  ev.preventDefault();
  if (!writer) return;
  await oneWrite(saveNow);
}

async function saveNow() {
  try {
    let doc;
    if (current) doc = await api("PUT", `/api/knowledge/articles/${current.id}`, {...formFields(), version: current.version});
    else doc = await api("POST", "/api/knowledge/articles", formFields());
    await openArticle(doc.article.id);
    message(t("kb.saved", {v: doc.article.version}), true);
    await Promise.all([search(), loadCategories()]);
  } catch (e) {
    message(e instanceof ApiFailure && e.status === 409 ? t("kb.conflict") : t("kb.failed", {e: e.message}));
  }
}

async function setStatus(action) {
  if (!current) return;
  await oneWrite(() => setStatusNow(action));
}

async function setStatusNow(action) {
  try {
    await api("POST", `/api/knowledge/articles/${current.id}/${action}`, {version: current.version, note: byId("f-note").value});
    await openArticle(current.id);
    message(action === "retire" ? t("kb.retired_done") : t("kb.restored_done"), true);
    await search();
  } catch (e) {
    message(e instanceof ApiFailure && e.status === 409 ? t("kb.conflict") : t("kb.failed", {e: e.message}));
  }
}

async function loadCategories() {
  const doc = await api("GET", "/api/knowledge/categories");
  const select = byId("kb-category");
  const chosen = select.value;
  const tops = new Set();
  for (const c of doc.categories) {
    const parts = c.category.split("/");
    for (let i = 1; i <= parts.length; i++) if (parts[0]) tops.add(parts.slice(0, i).join("/"));
  }
  select.replaceChildren(el("option", {text: t("kb.all_categories"), attrs: {value: ""}}),
    ...[...tops].sort().map((c) => el("option", {text: c, attrs: {value: c}})));
  select.value = chosen;
  byId("kb-categories").replaceChildren(...[...tops].sort().map((c) => el("option", {attrs: {value: c}})));
}

async function loadStats() {
  if (!writer) return;
  try {
    const doc = await api("GET", "/api/knowledge/stats?days=30");
    byId("kb-stats").hidden = false;
    byId("kb-top").replaceChildren(...(doc.top_articles.length ? doc.top_articles.map((a) => {
      const li = el("li", {}, el("button", {cls: "link-button", text: a.title}), el("span", {cls: "muted", text: " " + t("kb.uses", {n: a.uses})}));
      li.querySelector("button").addEventListener("click", () => openArticle(a.id));
      return li;
    }) : [el("li", {cls: "muted", text: t("kb.none")})]));
    byId("kb-misses").replaceChildren(...(doc.empty_searches.length ? doc.empty_searches.map((s) =>
      el("li", {}, el("span", {text: s.query}), el("span", {cls: "muted", text: " " + t("kb.times", {n: s.times})})))
      : [el("li", {cls: "muted", text: t("kb.none")})]));
  } catch { byId("kb-stats").hidden = true; }
}

async function boot() {
  applyI18n();
  wireLangToggle();
  let who;
  try { who = await api("GET", "/api/me"); } catch { return; }
  setCsrf(who.csrf);
  setTimeZone(who.config && who.config.timezone);
  me = who.user;
  writer = me.role === "supervisor" || me.role === "admin";
  setText("me", me.display_name);
  byId("web-signout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } finally { location.href = "/login"; }
  });
  for (const id of ["kb-save", "kb-new"]) byId(id).hidden = !writer;
  for (const e of byId("kb-form").querySelectorAll("input, textarea, select")) e.disabled = !writer;
  try { departments = (await api("GET", "/api/departments")).departments; } catch { departments = []; }
  byId("f-department").append(...departments.map((d) => el("option", {text: deptName(d.id), attrs: {value: d.id}})));
  byId("kb-q").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(search, 150); });
  byId("kb-category").addEventListener("change", search);
  byId("kb-retired").addEventListener("change", search);
  byId("kb-form").addEventListener("submit", save);
  byId("kb-new").addEventListener("click", newArticle);
  byId("kb-retire").addEventListener("click", () => setStatus("retire"));
  byId("kb-restore").addEventListener("click", () => setStatus("restore"));
  onLangChange(() => {
    for (const o of byId("f-department").options) if (o.value) o.textContent = deptName(o.value);
    if (current) openArticle(current.id); else newArticle();
    loadCategories();
  });
  const first = new URLSearchParams(location.search).get("q");
  if (first) byId("kb-q").value = first;
  await loadCategories();
  await Promise.all([search(), loadStats()]);
  const open = Number(new URLSearchParams(location.search).get("article"));
  if (open > 0) await openArticle(open);
}

boot();
