// Every string the pages show, in zh-CN (the default) and en.
// Elements carry data-i18n="key" (text) or data-i18n-title / data-i18n-placeholder;
// code calls t("key", {param: value}).  The choice is kept in localStorage.

const STRINGS = {
  "zh-CN": {
    "app.title": "12345 政务服务便民热线",
    "lang.toggle": "English",
    "login.title": "登录",
    "login.username": "用户名",
    "login.password": "密码",
    "login.submit": "登录",
    "login.failed": "用户名或密码错误",
    "login.throttled": "失败次数过多，请 {s} 秒后再试",
    "login.norole": "此账号暂无可用页面",
    "login.error": "登录失败：{e}",
    "nav.signout": "退出",
    "console.title": "坐席工作台",
    "wall.title": "值班长监控大屏",
    "link.up": "PBX 已连接",
    "link.down": "PBX 链路中断",
    "link.reconnecting": "与服务器断开，正在重连…",
    "link.stale": "PBX 链路中断 — 画面不是实时的",
    "state.logged_out": "未签入",
    "state.ready": "空闲",
    "state.ringing": "振铃",
    "state.on_call": "通话中",
    "state.wrap_up": "话后整理",
    "state.paused": "示忙",
    "state.unknown": "未知",
    "reason.meal": "用餐",
    "reason.training": "培训",
    "reason.acw": "话后处理",
    "reason.meeting": "会议",
    "reason.toilet": "如厕",
    "reason.busy": "忙碌",
    "agent.signin": "签入",
    "agent.ready": "就绪",
    "agent.pause": "示忙",
    "agent.signout": "签出",
    "agent.pause_pick": "选择示忙原因（按数字键）",
    "agent.in_state": "本状态 {d}",
    "agent.wrap_left": "话后整理剩余 {d}",
    "agent.not_mapped": "此账号未绑定坐席分机",
    "agent.pending": "已发送，等待交换机确认…",
    "queues.title": "队列",
    "queues.waiting": "{n} 人排队",
    "queues.longest": "最长等待 {d}",
    "call.title": "来电",
    "call.none": "暂无来电",
    "call.ringing": "来电振铃",
    "call.connected": "通话中",
    "call.caller": "来电号码",
    "call.name": "来电人",
    "call.hotline": "拨打号码",
    "call.ivr": "语音导航",
    "call.category": "类别",
    "call.queue": "队列",
    "call.waited": "等待时长",
    "call.hangup": "挂断",
    "call.transfer": "转接",
    "call.history": "历史来电与工单",
    "call.history_none": "无历史记录",
    "call.history_calls": "来电 {n} 次",
    "call.history_orders": "工单 {n} 件",
    "call.last": "上一通来电",
    "transfer.title": "转接",
    "transfer.queue": "转其他队列",
    "transfer.department": "转承办单位",
    "transfer.go": "转接",
    "cancel": "取消",
    "outcome.waiting": "排队中",
    "outcome.answered": "已接通",
    "outcome.completed": "已完成",
    "outcome.abandoned": "放弃",
    "outcome.exited": "离开",
    "draft.title": "工单登记",
    "draft.none": "接通来电后自动创建工单草稿；按 F4 新建",
    "draft.caller": "来电号码",
    "draft.category": "诉求类别",
    "draft.text": "诉求内容",
    "draft.text_ph": "记录市民反映的问题、地点、诉求……",
    "draft.call": "通话 {id}",
    "draft.nocall": "无关联通话",
    "draft.saved": "已自动保存 {t}",
    "draft.saving": "保存中…",
    "draft.unsaved": "未保存，稍后重试（本机已备份）",
    "draft.restored": "已从本机备份恢复未保存的内容",
    "draft.submit": "保存为工单",
    "draft.submitted": "工单 {n} 已受理",
    "draft.empty": "诉求内容不能为空",
    "draft.others": "其他草稿",
    "draft.open": "打开",
    "hotkeys.title": "快捷键",
    "hotkeys.ready": "就绪",
    "hotkeys.pause": "示忙",
    "hotkeys.form": "填写工单",
    "hotkeys.save": "保存工单",
    "hotkeys.esc": "关闭弹窗",
    "error.generic": "操作失败：{e}",
    "cat.consult": "咨询",
    "cat.complaint": "投诉",
    "cat.suggestion": "建议",
    "cat.report": "举报",
    "cat.help": "求助",
    "cat.praise": "表扬",
    "cat.other": "其他",
    "cat.market_regulation": "市场监管",
    "cat.environment": "生态环境",
    "cat.civil_affairs": "民政服务",
    "cat.social_security": "人力资源和社会保障",
    "cat.urban_construction": "城建服务",
    "cat.health": "卫生健康",
    "cat.city": "城市管理",
    "cat.housing": "住房城建",
    "cat.traffic": "交通出行",
    "cat.social": "社会保障",
    "cat.market": "市场监管",
    "cat.education": "教育",
    "ivr.direct": "直拨（按拨打号码分类，未经菜单）",
    "ivr.keys": "菜单按键 {keys}",
    "apierr.pbx.down": "电话系统（PBX）连接中断，操作没有发出。请稍等几秒再试；持续中断请联系值班长。",
    "apierr.pbx.timeout": "电话系统（PBX）没有及时回应「{action}」。请稍后重试；反复出现请联系值班长。",
    "apierr.pbx.no_queue": "电话系统里没有队列「{queue}」，无法签入该队列。请联系值班长或管理员核对队列配置（queues.conf 与 callcenter.toml 须一致）。",
    "apierr.pbx.not_member": "您不在队列「{queue}」中（可能已被签出）。请先点「签入」。",
    "apierr.pbx.no_channel": "这通电话已经结束，操作未执行。",
    "apierr.pbx.refused": "电话系统拒绝了「{action}」（{pbx_message}）。请重试；反复出现请联系值班长。",
    "wall.today": "今日",
    "wall.last15": "近15分钟",
    "wall.waiting": "排队",
    "wall.longest": "最长等待",
    "wall.offered": "呼入",
    "wall.answered": "接通",
    "wall.abandoned": "放弃",
    "wall.connection_rate": "接通率",
    "wall.answer_rate_sl": "15秒接通率",
    "wall.all_queues": "全部队列",
    "wall.agents": "座席",
    "wall.alerts": "告警",
    "wall.no_alerts": "无告警",
    "wall.trend": "接通率趋势（每15分钟）",
    "wall.logged_in": "{n} 名座席在线",
    "wall.answered_n": "接听 {n}",
    "wall.actions_for": "座席 {name}",
    "wall.force_ready": "强制就绪",
    "wall.force_signout": "强制签出",
    "wall.reason": "原因（必填，将记入审计日志）",
    "wall.done": "已发送",
    "wall.spy.title": "通话监听",
    "wall.spy.listen": "监听",
    "wall.spy.whisper": "耳语",
    "wall.spy.barge": "强插",
    "wall.spy.hint": "监听：只听不说；耳语：只有座席听到您；强插：双方都听到您。您的话机 {phone} 将振铃，接听后生效。",
    "wall.spy.not_on_call": "座席通话中时才能监听、耳语或强插。",
    "wall.spy.no_phone": "您的账号未设置话机，无法监听（请管理员设置）。",
    "wall.spy.busy": "您正在接入 {name} 的通话，请先结束。",
    "wall.spy.confirm": "确认以「{mode}」方式接入 {name} 的通话？您的话机 {phone} 将振铃。",
    "wall.spy.go": "确认接入",
    "wall.spy.back": "返回",
    "wall.spy.active": "正在{mode}：{name}",
    "wall.spy.ringing": "正在呼叫您的话机 {phone}，接听后开始",
    "wall.spy.stop": "结束监听",
    "alert.link_down": "PBX 链路中断：数据不是实时的",
    "alert.longest_wait": "{subject}：有市民已等待 {d}（{waiting} 人排队）",
    "alert.paused_while_waiting": "{subject} 示忙（{reason}）已 {d}，且有市民在排队",
    "alert.paused_share": "{subject} 示忙时长占在线时长 {pct}%",
    "alert.ring_no_answer": "{subject} 连续 {count} 次振铃未接",
    "dur.s": "{s}秒",
    "dur.ms": "{m}分{s}秒",
    "dur.hm": "{h}小时{m}分",
  },
  "en": {
    "app.title": "12345 Government Service Hotline",
    "lang.toggle": "中文",
    "login.title": "Sign in",
    "login.username": "Username",
    "login.password": "Password",
    "login.submit": "Sign in",
    "login.failed": "Wrong username or password",
    "login.throttled": "Too many failed attempts; try again in {s} s",
    "login.norole": "This account has no screen here yet",
    "login.error": "Sign-in failed: {e}",
    "nav.signout": "Log out",
    "console.title": "Operator console",
    "wall.title": "Supervisor wallboard",
    "link.up": "PBX connected",
    "link.down": "PBX link down",
    "link.reconnecting": "Disconnected from the server, reconnecting…",
    "link.stale": "PBX link down — this screen is not live",
    "state.logged_out": "Signed out",
    "state.ready": "Ready",
    "state.ringing": "Ringing",
    "state.on_call": "On call",
    "state.wrap_up": "Wrap-up",
    "state.paused": "Paused",
    "state.unknown": "Unknown",
    "reason.meal": "Meal",
    "reason.training": "Training",
    "reason.acw": "After-call work",
    "reason.meeting": "Meeting",
    "reason.toilet": "Toilet",
    "reason.busy": "Busy",
    "agent.signin": "Sign in",
    "agent.ready": "Ready",
    "agent.pause": "Pause",
    "agent.signout": "Sign out",
    "agent.pause_pick": "Pick a pause reason (number keys)",
    "agent.in_state": "for {d}",
    "agent.wrap_left": "Wrap-up ends in {d}",
    "agent.not_mapped": "This account has no queue member",
    "agent.pending": "Sent; waiting for the PBX…",
    "queues.title": "Queues",
    "queues.waiting": "{n} waiting",
    "queues.longest": "longest {d}",
    "call.title": "Call",
    "call.none": "No call",
    "call.ringing": "Incoming call",
    "call.connected": "Connected",
    "call.caller": "Caller number",
    "call.name": "Caller",
    "call.hotline": "Dialled",
    "call.ivr": "IVR choices",
    "call.category": "Category",
    "call.queue": "Queue",
    "call.waited": "Waited",
    "call.hangup": "Hang up",
    "call.transfer": "Transfer",
    "call.history": "Earlier calls and work orders",
    "call.history_none": "No history",
    "call.history_calls": "{n} calls",
    "call.history_orders": "{n} work orders",
    "call.last": "Last call",
    "transfer.title": "Transfer",
    "transfer.queue": "To another queue",
    "transfer.department": "To a department",
    "transfer.go": "Transfer",
    "cancel": "Cancel",
    "outcome.waiting": "waiting",
    "outcome.answered": "answered",
    "outcome.completed": "completed",
    "outcome.abandoned": "abandoned",
    "outcome.exited": "left",
    "draft.title": "Work order",
    "draft.none": "A draft opens when a call is answered; F4 starts a new one",
    "draft.caller": "Caller number",
    "draft.category": "Category",
    "draft.text": "Request",
    "draft.text_ph": "What the citizen reports: problem, place, request…",
    "draft.call": "call {id}",
    "draft.nocall": "no call",
    "draft.saved": "Autosaved {t}",
    "draft.saving": "Saving…",
    "draft.unsaved": "Not saved yet, retrying (kept on this computer)",
    "draft.restored": "Restored unsaved text from this computer",
    "draft.submit": "Save as work order",
    "draft.submitted": "Work order {n} accepted",
    "draft.empty": "The request text is empty",
    "draft.others": "Other drafts",
    "draft.open": "Open",
    "hotkeys.title": "Keys",
    "hotkeys.ready": "ready",
    "hotkeys.pause": "pause",
    "hotkeys.form": "work order",
    "hotkeys.save": "save order",
    "hotkeys.esc": "close dialog",
    "error.generic": "Failed: {e}",
    "cat.consult": "Enquiry",
    "cat.complaint": "Complaint",
    "cat.suggestion": "Suggestion",
    "cat.report": "Report",
    "cat.help": "Request for help",
    "cat.praise": "Praise",
    "cat.other": "Other",
    "cat.market_regulation": "Market regulation",
    "cat.environment": "Environment",
    "cat.civil_affairs": "Civil affairs",
    "cat.social_security": "Human resources & social security",
    "cat.urban_construction": "Urban construction",
    "cat.health": "Health",
    "cat.city": "City management",
    "cat.housing": "Housing",
    "cat.traffic": "Transport",
    "cat.social": "Social security",
    "cat.market": "Market regulation",
    "cat.education": "Education",
    "ivr.direct": "Direct (the number dialled chose the category; no menu)",
    "ivr.keys": "Menu keys {keys}",
    "apierr.pbx.down": "The phone system (PBX) link is down; nothing was sent. Wait a few seconds and try again; if it stays down, call your supervisor.",
    "apierr.pbx.timeout": "The phone system (PBX) did not answer “{action}” in time. Try again shortly; if it keeps happening, call your supervisor.",
    "apierr.pbx.no_queue": "The phone system has no queue “{queue}”, so you cannot sign in to it. Ask your supervisor or administrator to check the queue configuration (queues.conf and callcenter.toml must match).",
    "apierr.pbx.not_member": "You are not in queue “{queue}” (perhaps you were signed out). Press “Sign in” first.",
    "apierr.pbx.no_channel": "That call has already ended; nothing was done.",
    "apierr.pbx.refused": "The phone system refused “{action}” ({pbx_message}). Try again; if it keeps happening, call your supervisor.",
    "wall.today": "Today",
    "wall.last15": "15 min",
    "wall.waiting": "Waiting",
    "wall.longest": "Longest wait",
    "wall.offered": "Offered",
    "wall.answered": "Answered",
    "wall.abandoned": "Abandoned",
    "wall.connection_rate": "Connected",
    "wall.answer_rate_sl": "15-s rate",
    "wall.all_queues": "All queues",
    "wall.agents": "Agents",
    "wall.alerts": "Alerts",
    "wall.no_alerts": "No alerts",
    "wall.trend": "Connection rate and 15-s rate (per 15 min)",
    "wall.logged_in": "signed in: {n}",
    "wall.answered_n": "{n} answered",
    "wall.actions_for": "Agent {name}",
    "wall.force_ready": "Force ready",
    "wall.force_signout": "Force sign-out",
    "wall.reason": "Reason (required, goes to the audit log)",
    "wall.done": "Sent",
    "wall.spy.title": "Listen in",
    "wall.spy.listen": "Listen",
    "wall.spy.whisper": "Whisper",
    "wall.spy.barge": "Barge",
    "wall.spy.hint": "Listen: hear only; whisper: only the agent hears you; barge: both parties hear you. Your phone {phone} rings first.",
    "wall.spy.not_on_call": "You can listen, whisper or barge only while the agent is on a call.",
    "wall.spy.no_phone": "Your account has no phone, so you cannot listen in (ask an administrator).",
    "wall.spy.busy": "You are already on {name}'s call; stop that first.",
    "wall.spy.confirm": "{mode} on {name}'s call? Your phone {phone} will ring.",
    "wall.spy.go": "Connect",
    "wall.spy.back": "Back",
    "wall.spy.active": "{mode}: {name}",
    "wall.spy.ringing": "Calling your phone {phone}; answer it to start",
    "wall.spy.stop": "Stop listening",
    "alert.link_down": "PBX link down: figures are not live",
    "alert.longest_wait": "{subject}: a caller has waited {d} ({waiting} waiting)",
    "alert.paused_while_waiting": "{subject} paused ({reason}) for {d} while callers wait",
    "alert.paused_share": "{subject} paused {pct}% of signed-in time",
    "alert.ring_no_answer": "{subject}: {count} rings in a row not answered",
    "dur.s": "{s}s",
    "dur.ms": "{m}m {s}s",
    "dur.hm": "{h}h {m}m",
  },
};

const KEY = "hotline.lang";
let lang = STRINGS[localStorage.getItem(KEY)] ? localStorage.getItem(KEY) : "zh-CN";
const listeners = [];

export function currentLang() { return lang; }

export function t(key, params) {
  let s = STRINGS[lang][key] ?? STRINGS["zh-CN"][key] ?? key;
  if (params) {
    for (const [k, v] of Object.entries(params)) s = s.split("{" + k + "}").join(String(v));
  }
  return s;
}

export function applyI18n(root = document) {
  document.documentElement.lang = lang;
  for (const e of root.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  for (const e of root.querySelectorAll("[data-i18n-title]")) e.title = t(e.dataset.i18nTitle);
  for (const e of root.querySelectorAll("[data-i18n-placeholder]")) {
    e.placeholder = t(e.dataset.i18nPlaceholder);
  }
}

export function setLang(next) {
  lang = STRINGS[next] ? next : "zh-CN";
  localStorage.setItem(KEY, lang);
  applyI18n();
  for (const fn of listeners) fn(lang);
}

export function onLangChange(fn) { listeners.push(fn); }

// A button with data-lang-toggle switches between the two languages.
export function wireLangToggle() {
  for (const b of document.querySelectorAll("[data-lang-toggle]")) {
    b.addEventListener("click", () => setLang(lang === "zh-CN" ? "en" : "zh-CN"));
  }
}

// "3分05秒" / "3m 5s": a duration in seconds, for people.
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return t("dur.s", {s});
  if (s < 3600) return t("dur.ms", {m: Math.floor(s / 60), s: s % 60});
  return t("dur.hm", {h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60)});
}

export function stateLabel(state) { return t("state." + state) === "state." + state ? state : t("state." + state); }

// The words to show for a failed API call: the server's ``code`` (a PBX refusal and the
// like) explained in the page's language, with what to do; otherwise its message.
export function errorText(e) {
  const data = e && e.data;
  if (data && typeof data.code === "string") {
    const key = "apierr." + data.code;
    if (t(key) !== key) return t(key, {action: data.action || "", queue: data.queue || "", pbx_message: data.pbx_message || ""});
  }
  return t("error.generic", {e: e && e.message ? e.message : String(e)});
}

// A category code from the IVR or the PBX (CATEGORY, e.g. "consult") as words; a
// value that is already words (an order's category) is shown as it is.
export function categoryLabel(code) {
  if (!code) return "";
  const k = "cat." + code;
  return t(k) === k ? code : t(k);
}

// The caller's way through the IVR (IVR_PATH: "direct", or the keys "2-1").
export function ivrLabel(path) {
  if (!path) return "";
  if (path === "direct") return t("ivr.direct");
  return t("ivr.keys", {keys: path.split("-").join(" › ")});
}

export function reasonLabel(reason) {
  if (!reason) return "";
  const k = "reason." + reason;
  return t(k) === k ? reason : t(k);
}
