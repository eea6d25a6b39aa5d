import {api, ApiFailure, byId} from "/static/common.js";
import {applyI18n, t, wireLangToggle} from "/static/i18n.js";

applyI18n();
wireLangToggle();

const params = new URLSearchParams(location.search);
const message = byId("login-message");
if (params.has("none")) message.textContent = t("login.norole");

function safeNext(home) {
  const next = params.get("next");
  // Only a path on this site: never an absolute URL that leaves it.
  return next && next.startsWith("/") && !next.startsWith("//") ? next : home;
}

byId("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = byId("login-submit");
  button.disabled = true;
  message.textContent = "";
  try {
    const who = await api("POST", "/api/login",
      {username: byId("username").value.trim(), password: byId("password").value},
      {redirectOn401: false});
    // replace: the back button from the home page never comes back to this form
    location.replace(who.home.startsWith("/login") ? who.home : safeNext(who.home));
  } catch (e) {
    if (e instanceof ApiFailure && e.status === 401) message.textContent = t("login.failed");
    else if (e instanceof ApiFailure && e.status === 429) message.textContent = t("login.throttled", {s: e.data?.retry_after ?? "?"});
    else message.textContent = t("login.error", {e: e.message});
    byId("password").select();
  } finally {
    button.disabled = false;
  }
});
