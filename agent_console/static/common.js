// Shared by the console and the wallboard: the JSON API, DOM helpers that only
// ever set text (never markup), and the live connection to /ws.

let csrf = "";

export function setCsrf(token) { csrf = token; }

export class ApiFailure extends Error {
  constructor(status, message, data) { super(message); this.status = status; this.data = data; }
}

export async function api(method, path, body, {redirectOn401 = true} = {}) {
  const headers = {"Accept": "application/json"};
  const init = {method, headers, credentials: "same-origin"};
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = csrf;
    init.body = JSON.stringify(body ?? {});
  }
  const r = await fetch(path, init);
  let data = null;
  try { data = await r.json(); } catch { data = null; }
  if (r.status === 401 && redirectOn401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname);
  }
  if (!r.ok) throw new ApiFailure(r.status, (data && data.error) || r.statusText, data);
  return data;
}

// Build an element; text is always set as text, so caller-supplied data cannot
// become markup.
export function el(tag, opts = {}, ...children) {
  const e = document.createElement(tag);
  if (opts.cls) e.className = opts.cls;
  if (opts.text !== undefined && opts.text !== null) e.textContent = String(opts.text);
  if (opts.data) for (const [k, v] of Object.entries(opts.data)) e.dataset[k] = String(v);
  if (opts.attrs) for (const [k, v] of Object.entries(opts.attrs)) e.setAttribute(k, String(v));
  for (const c of children) if (c) e.append(c);
  return e;
}

export function byId(id) { return document.getElementById(id); }

export function setText(id, text) {
  const e = typeof id === "string" ? byId(id) : id;
  if (e && e.textContent !== String(text)) e.textContent = String(text);
}

export function pct(v) { return (typeof v === "number" ? v : 0).toFixed(2) + "%"; }

// Times are shown in the centre's time zone (the config's [metrics] timezone, served in
// /api/me's config), never the browser's: a page hands it in once it knows it.
let timeZone;
export function setTimeZone(tz) {
  try { new Intl.DateTimeFormat("en", {timeZone: tz}); timeZone = tz; } catch { timeZone = undefined; }
}

export function clockTime(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString(document.documentElement.lang, {hour12: false, timeZone});
}

export function dateTime(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleString(document.documentElement.lang, {hour12: false, timeZone});
}

// A datetime-local input's value ("2026-12-03T12:51") for an instant, on the centre's
// clock, and back: the value typed is the centre's wall time, whatever the browser's zone.
function wallParts(ms) {
  const parts = new Intl.DateTimeFormat("en-GB", {year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZone}).formatToParts(new Date(ms));
  const get = (type) => Number((parts.find((p) => p.type === type) || {value: "0"}).value);
  return [get("year"), get("month"), get("day"), get("hour"), get("minute"), get("second")];
}
export function centreInputValue(epochSeconds) {
  const [y, mo, d, h, mi] = wallParts(epochSeconds * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${y}-${two(mo)}-${two(d)}T${two(h)}:${two(mi)}`;
}
export function fromCentreInput(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value || "");
  if (!m) return null;
  const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
  // The zone's offset at that moment: the wall time it shows for `wall`, less `wall`.
  const [y, mo, d, h, mi, s] = wallParts(wall);
  const offset = Date.UTC(y, mo - 1, d, h, mi, s) - wall;
  return new Date(wall - offset).toISOString();
}

// "09:15": hours and minutes in the centre's time zone (a chart's axis).
export function hourMinute(epochSeconds) {
  const [, , , h, mi] = wallParts(epochSeconds * 1000);
  return String(h).padStart(2, "0") + ":" + String(mi).padStart(2, "0");
}

// Apply the server's patch operations (agent_console/hub.py apply_ops).
export function applyOps(doc, ops) {
  for (const [kind, path, value] of ops) {
    let target = doc;
    for (const part of path.slice(0, -1)) {
      if (typeof target[part] !== "object" || target[part] === null) target[part] = {};
      target = target[part];
    }
    const last = path[path.length - 1];
    if (kind === "set") target[last] = value;
    else if (kind === "del") delete target[last];
  }
  return doc;
}

// The live picture: a snapshot, then numbered updates.  On a reconnect the
// stream id and last number are sent, so the server replays what was missed
// (or sends a fresh snapshot).  A gap in the numbers asks for a resync.
// A "shared" message (an operator screen's queue figures, the same for every
// operator: agent_console/hub.py) is not numbered: its data replaces those keys of
// the document, now and after every later snapshot.
export class Live {
  constructor(onDoc, onStatus, path = "/ws") {
    this.path = path;
    this.onDoc = onDoc;
    this.onStatus = onStatus;
    this.doc = null;
    this.shared = {};  // the newest shared message's data
    this.stream = null;
    this.seq = null;
    this.offset = 0;  // server clock minus local clock, seconds
    this.backoff = 500;
    this.ws = null;
    this.lastPong = 0;
  }

  now() { return Date.now() / 1000 + this.offset; }

  connect() {
    const q = this.stream ? `?stream=${encodeURIComponent(this.stream)}&seq=${this.seq}` : "";
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + this.path + q);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => { opened = true; this.backoff = 500; this.lastPong = Date.now(); this.onStatus("open"); };
    ws.onmessage = (m) => this.receive(m.data);
    ws.onclose = async (ev) => {
      if (this.ws !== ws) return;
      this.onStatus("closed");
      if (ev.code === 4401 || !opened) {
        try { await api("GET", "/api/me"); } catch { return; }  // 401 goes to the login page
      }
      // 4408: the server cut us for not reading fast enough (a frozen tab): come back
      // after its cool-down (2 s, doubling; meanwhile /ws answers 429 and the backoff
      // grows); the stream id and last number make it resume, or send a fresh snapshot.
      if (ev.code === 4408) this.backoff = 2000;
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    };
  }

  send(obj) { if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj)); }

  receive(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (typeof msg.at === "number") this.offset = msg.at - Date.now() / 1000;
    if (msg.type === "snapshot") {
      this.doc = msg.data; this.stream = msg.stream; this.seq = msg.seq;
      for (const [k, v] of Object.entries(this.shared)) if (!(k in this.doc)) this.doc[k] = v;
      this.onDoc(this.doc, true);
    } else if (msg.type === "shared") {
      if (!msg.data || typeof msg.data !== "object") return;
      this.shared = msg.data;
      if (this.doc) { Object.assign(this.doc, msg.data); this.onDoc(this.doc, false); }
    } else if (msg.type === "update") {
      if (msg.stream !== this.stream || msg.seq !== this.seq + 1) {
        if (msg.stream === this.stream && msg.seq <= this.seq) return;  // already applied
        this.send({type: "resync"});
        return;
      }
      applyOps(this.doc, msg.ops);
      this.seq = msg.seq;
      this.onDoc(this.doc, false);
    } else if (msg.type === "pong") {
      this.lastPong = Date.now();
    } else if (msg.type === "error") {
      console.warn("server:", msg.error);
    }
  }

  // Keep the connection honest: a ping every 15 s; no answer in 40 s means a dead
  // link, so close and reconnect (resuming from the last number).
  keepAlive() {
    setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - this.lastPong > 40000) { this.ws.close(); return; }
      this.send({type: "ping"});
    }, 15000);
  }
}

// Order numbers (工单编号, YYYYMMDD-NNNNNN) as links to the order wherever a page shows
// one: the pop history, the board, the trail, report tables.  /orders?open= takes an
// order's id or its number.
export const ORDER_NUMBER = /\b(?:19|20)\d{6}-\d{6}\b/g;

export function orderHref(idOrNumber) {
  return "/orders?open=" + encodeURIComponent(idOrNumber);
}

// Text with each order number in it made a link (text stays text: no markup is parsed).
// ``link(number)`` makes the link (default: a plain <a> to the order, same tab).
export function withOrderLinks(text, link = (n) => el("a", {cls: "order-link", text: n, attrs: {href: orderHref(n)}})) {
  const out = [];
  const s = String(text ?? "");
  let last = 0;
  for (const m of s.matchAll(ORDER_NUMBER)) {
    if (m.index > last) out.push(document.createTextNode(s.slice(last, m.index)));
    out.push(link(m[0]));
    last = m.index + m[0].length;
  }
  if (last < s.length) out.push(document.createTextNode(s.slice(last)));
  return out;
}
