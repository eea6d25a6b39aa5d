// Finding orders on /orders (search box, filters, sortable columns, all kept in the URL
// so a view can be bookmarked and shared), the order-creation form for requests that
// came by another channel (一号对外), and duplicates / merging (重复件 / 并案) on an
// order.  The server decides everything; text is only ever set as text.

import {api, ApiFailure, byId, el, orderHref, withOrderLinks} from "/static/common.js";
import {currentLang, placeLabel, setCategoryTree, setPlaceNames, t} from "/static/i18n.js";

export const CHANNELS = ["phone", "web", "wechat", "app", "letter", "email", "mayor_mailbox"];
const URGENCIES = ["emergency", "urgent", "normal"];
const FILTERS = ["q", "state", "department", "category", "urgency", "channel", "request_type", "district",
  "street", "reply_method", "from", "to", "due"];
// The intake fields' lists (GET /api/intake-form: 诉求类型, 回复方式, districts and streets);
// null for a department handler (the centre's intake form is not theirs).
let intake = null;
const FLAGS = ["confidential", "mine", "followers"];
const field = (f) => byId(f === "state" ? "state-filter" : "find-" + f);

export function channelName(c) {
  const names = {phone: t("chan.phone"), web: t("chan.web"), wechat: t("chan.wechat"), app: t("chan.app"),
    letter: t("chan.letter"), email: t("chan.email"), mayor_mailbox: t("chan.mayor_mailbox")};
  return names[c] || c || "";
}

function urgencyName(u) {
  return {emergency: t("urg.emergency"), urgent: t("urg.urgent"), normal: t("urg.normal")}[u] || u;
}

function reasonName(r) {
  return {same_caller: t("dup.same_caller"), same_place: t("dup.same_place"),
    similar_text: t("dup.similar_text")}[r] || r;
}

// A link to an order: a real URL (bookmarkable, opens in a new tab), clicks stay here.
export function orderLink(id, number, open) {
  const a = el("a", {cls: "order-link", text: number, attrs: {href: orderHref(id)}});
  a.addEventListener("click", (ev) => {
    ev.stopPropagation();  // the row's own click would open it a second time
    if (open && !ev.ctrlKey && !ev.metaKey) { ev.preventDefault(); open(id); }
  });
  return a;
}

// Text with its order numbers as links that open here (see common.js withOrderLinks).
export function textWithLinks(text, open) {
  return withOrderLinks(text, (n) => orderLink(n, n, open));
}

// The filters as URL parameters (also the query of GET /api/orders).
export function currentParams() {
  const p = new URLSearchParams();
  for (const f of FILTERS) {
    const v = field(f).value.trim();
    if (v) p.set(f, v);
  }
  if (byId("find-confidential").checked) p.set("confidential", "1");
  if (byId("find-mine").checked) p.set("mine", "1");
  if (byId("find-followers").checked) p.set("followers", "0");
  const sort = byId("find").dataset.sort;
  if (sort && sort !== "-created") p.set("sort", sort);
  return p;
}

function fromUrl() {
  const p = new URLSearchParams(location.search);
  for (const f of FILTERS) field(f).value = p.get(f) || "";
  byId("find-confidential").checked = p.get("confidential") === "1";
  byId("find-mine").checked = p.get("mine") === "1";
  byId("find-followers").checked = p.get("followers") === "0";
  byId("find").dataset.sort = p.get("sort") || "-created";
  return {page: Math.max(1, Number(p.get("page")) || 1), open: p.get("open")};
}

// Keep the view in the address bar (replaceState: the back button is not flooded).
export function saveUrl(page, open) {
  const p = currentParams();
  if (page > 1) p.set("page", String(page));
  if (open) p.set("open", open);
  const query = p.toString();
  history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
  byId("find-export").href = "/api/orders?" + new URLSearchParams([...currentParams(), ["format", "csv"], ["per_page", "5000"]]);
}

export function markSort() {
  const sort = byId("find").dataset.sort || "-created";
  for (const th of document.querySelectorAll("th[data-sort]")) {
    const key = th.dataset.sort;
    th.classList.toggle("sorted", sort.replace("-", "") === key);
    th.dataset.dir = sort === key ? "asc" : sort === "-" + key ? "desc" : "";
    th.setAttribute("aria-sort", th.dataset.dir === "asc" ? "ascending" : th.dataset.dir === "desc" ? "descending" : "none");
  }
}

export function labelFilters(departments) {
  const fill = (id, values, name) => {
    const select = byId(id);
    const chosen = select.value;
    select.replaceChildren(el("option", {text: t("find.any"), attrs: {value: ""}}),
      ...values.map((v) => el("option", {text: name(v), attrs: {value: v}})));
    select.value = chosen;
  };
  fill("find-department", departments.map((d) => d.id), (id) => {
    const d = departments.find((x) => x.id === id);
    return d ? (currentLang() === "en" ? d.name_en : d.name) : id;
  });
  fill("find-urgency", URGENCIES, urgencyName);
  fill("find-channel", CHANNELS, channelName);
  const named = (list) => (code) => {
    const r = (list || []).find((x) => x.code === code);
    return r ? (currentLang() === "en" ? r.name_en : r.name) : code;
  };
  if (intake) {
    fill("find-request_type", intake.request_types.map((r) => r.code), named(intake.request_types));
    fill("find-reply_method", intake.reply_methods.map((r) => r.code), named(intake.reply_methods));
    fill("find-district", intake.districts.map((d) => d.name), placeLabel);
    fillStreets();
  }
  const due = byId("find-due");
  const chosenDue = due.value;
  due.replaceChildren(el("option", {text: t("find.any"), attrs: {value: ""}}),
    el("option", {text: t("find.overdue"), attrs: {value: "overdue"}}),
    el("option", {text: t("find.due_soon"), attrs: {value: "soon"}}));
  due.value = chosenDue;
  fill("new-channel", CHANNELS.filter((c) => c !== "phone").concat(["phone"]), channelName);
  fill("new-urgency", URGENCIES, urgencyName);
  if (!byId("new-urgency").value) byId("new-urgency").value = "normal";
  if (!byId("new-channel").value) byId("new-channel").value = "web";
}

// The streets of the chosen district (all streets when none is chosen).
function fillStreets() {
  const select = byId("find-street");
  const chosen = select.value || new URLSearchParams(location.search).get("street") || "";
  const district = byId("find-district").value;
  const streets = intake.districts.filter((d) => !district || d.name === district).flatMap((d) => d.streets);
  select.replaceChildren(el("option", {text: t("find.any"), attrs: {value: ""}}),
    ...streets.map((s) => el("option", {text: placeLabel(s), attrs: {value: s}})));
  select.value = streets.includes(chosen) ? chosen : "";
}

// Wire the search form; reload() is called with the page to show.
export async function setupFind({me, departments, reload, open}) {
  const form = byId("find");
  // Everyone reads the lists' names (categories, districts and streets in English);
  // the intake filters are the centre's, not a department's.
  let lists = null;
  try { lists = await api("GET", "/api/intake-form"); } catch { lists = null; }
  if (lists) { setCategoryTree(lists.categories); setPlaceNames(lists.districts); }
  intake = me.role !== "handler" ? lists : null;
  for (const label of document.querySelectorAll(".intake-filter")) label.hidden = !intake;
  labelFilters(departments);
  const first = fromUrl();
  if (intake) fillStreets();
  if (me.role === "handler") byId("find-department").closest("label").hidden = true;
  byId("new-order").hidden = me.role === "handler";
  form.addEventListener("submit", (ev) => { ev.preventDefault(); reload(1); });
  for (const id of ["state-filter", "find-department", "find-urgency", "find-channel", "find-due", "find-from", "find-to",
    "find-request_type", "find-street", "find-reply_method", "find-confidential", "find-mine", "find-followers"]) {
    byId(id).addEventListener("change", () => reload(1));
  }
  byId("find-district").addEventListener("change", () => { if (intake) fillStreets(); reload(1); });
  let typing = null;
  byId("find-q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => reload(1), 300); });
  byId("find-reset").addEventListener("click", () => {
    for (const f of FILTERS) field(f).value = "";
    for (const f of FLAGS) byId("find-" + f).checked = false;
    form.dataset.sort = "-created";
    reload(1);
  });
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.tabIndex = 0;
    const flip = () => {
      const key = th.dataset.sort;
      form.dataset.sort = form.dataset.sort === "-" + key ? key : "-" + key;
      reload(1);
    };
    th.addEventListener("click", flip);
    th.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); flip(); } });
  }
  setupCreate(open);
  markSort();
  return first;
}

// ---- the creation form: a request from the web portal, WeChat, a letter, ...

function setupCreate(open) {
  const dialog = byId("new-dialog");
  const form = byId("new-form");
  byId("new-order").addEventListener("click", () => {
    form.reset();
    byId("new-channel").value = "web";
    byId("new-urgency").value = "normal";
    byId("new-duplicates").replaceChildren();
    byId("new-message").textContent = "";
    dialog.showModal();
    byId("new-text").focus();
  });
  byId("new-cancel").addEventListener("click", () => dialog.close());
  let timer = null;
  for (const id of ["new-caller", "new-location", "new-category", "new-text"]) {
    byId(id).addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(checkDuplicates, 400); });
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {channel: byId("new-channel").value, text: byId("new-text").value,
      caller_name: byId("new-name").value, caller: byId("new-caller").value, address: byId("new-address").value,
      category: byId("new-category").value, location: byId("new-location").value,
      urgency: byId("new-urgency").value, confidential: byId("new-confidential").checked};
    const button = byId("new-submit");
    button.disabled = true;
    try {
      const doc = await api("POST", "/api/orders", body);
      dialog.close();
      open(doc.order.id, t("new.done", {n: doc.order.number}));
    } catch (e) {
      const m = byId("new-message");
      m.className = "message error";
      m.textContent = t("new.failed", {e: e instanceof ApiFailure ? e.message : String(e)});
    } finally {
      button.disabled = false;
    }
  });
}

async function checkDuplicates() {
  const p = new URLSearchParams({caller: byId("new-caller").value.trim(), location: byId("new-location").value.trim(),
    category: byId("new-category").value.trim(), text: byId("new-text").value.trim().slice(0, 2000)});
  const box = byId("new-duplicates");
  if (!p.get("caller") && !p.get("text")) { box.replaceChildren(); return; }
  try {
    const doc = await api("GET", "/api/orders/duplicates?" + p);
    box.replaceChildren(...(doc.candidates.length ? [el("div", {cls: "muted", text: t("dup.title")}),
      ...doc.candidates.map((c) => el("div", {cls: "dup"}, el("a", {text: c.number, attrs: {href: `/orders?open=${c.id}`, target: "_blank"}}),
        el("span", {cls: "muted", text: " " + c.reasons.map(reasonName).join("、") + " · "}), el("span", {text: c.text})))] : []));
  } catch { box.replaceChildren(); }
}

// ---- duplicates and 并案 on an open order

export async function renderMerge(doc, {me, open, reload}) {
  const o = doc.order;
  const box = byId("merge-box");
  const mine = Symbol("render");  // a newer render of another order wins
  box.render = mine;
  box.replaceChildren();
  const supervisor = me.role === "supervisor" || me.role === "admin";
  const message = el("p", {cls: "message"});
  if (o.merged_into) {
    const row = el("div", {cls: "merge-lead"}, el("span", {text: t("merge.follows") + " "}),
      orderLink(o.merged_into.id, o.merged_into.number, open));
    if (supervisor) {
      const reason = el("input", {attrs: {maxlength: 2000, placeholder: t("merge.reason")}});
      const undo = el("button", {cls: "danger", text: t("merge.unmerge"), attrs: {type: "button"}});
      undo.addEventListener("click", async () => {
        try {
          await api("POST", `/api/orders/${encodeURIComponent(o.id)}/unmerge`, {reason: reason.value});
          await reload();
          await open(o.id);
        } catch (e) { message.className = "message error"; message.textContent = t("new.failed", {e: e.message}); }
      });
      row.append(reason, undo);
    }
    box.append(el("h3", {text: t("merge.title")}), row, message);
    return;
  }
  if (o.followers && o.followers.length) {
    box.append(el("h3", {text: t("merge.title")}), el("div", {cls: "merge-followers"},
      el("span", {text: t("merge.followers", {n: o.followers.length}) + " "}),
      ...o.followers.flatMap((f, i) => [i ? el("span", {text: "、"}) : null, orderLink(f.id, f.number, open)].filter(Boolean))));
  }
  if (me.role === "handler" || !["accepted", "dispatched", "in_progress", "returned", "replied"].includes(o.state)) return;
  let found;
  try { found = await api("GET", `/api/orders/${encodeURIComponent(o.id)}/duplicates`); } catch { return; }
  if (box.render !== mine || !found.candidates.length) return;
  const list = el("ul", {cls: "dup-list"});
  const picks = [];
  for (const c of found.candidates) {
    const pick = el("input", {attrs: {type: "checkbox", value: c.id, "aria-label": c.number}});
    picks.push(pick);
    list.append(el("li", {}, supervisor ? pick : null, orderLink(c.id, c.number, open),
      el("span", {cls: "muted", text: ` ${c.reasons.map(reasonName).join("、")}` + (c.similarity ? ` · ${Math.round(c.similarity * 100)}%` : "") + " · "}),
      el("span", {text: c.text})));
  }
  box.append(el("h3", {text: t("dup.title_n", {n: found.candidates.length})}), list);
  if (supervisor) {
    const reason = el("input", {attrs: {maxlength: 2000, placeholder: t("merge.reason")}, data: {field: "merge-reason"}});
    const go = el("button", {cls: "primary", text: t("merge.button"), attrs: {type: "button", id: "merge-button"}});
    go.addEventListener("click", async () => {
      const followers = picks.filter((p) => p.checked).map((p) => p.value);
      if (!followers.length) { message.className = "message error"; message.textContent = t("merge.pick"); return; }
      go.disabled = true;
      try {
        const doc2 = await api("POST", `/api/orders/${encodeURIComponent(o.id)}/merge`, {followers, reason: reason.value});
        await reload();
        await open(o.id, t("merge.done", {n: doc2.merged.length}));
      } catch (e) {
        message.className = "message error";
        message.textContent = t("new.failed", {e: e.message});
      } finally { go.disabled = false; }
    });
    box.append(el("div", {cls: "row merge-row"}, reason, go));
  }
  box.append(message);
}
