// T.A.R.S. chat page, part 4 of 4: sign in, keep the access token fresh,
// speak the /ws/chat protocol (docs/protocol.md), the colour theme. The
// transcript is TarsChat's (chat.js).
//
// Safety rule of this file: text from the server or the user is only ever
// put into the page as text (textContent), never parsed as HTML. Tokens live
// in sessionStorage only (gone when the tab closes); localStorage holds the
// conversations and the theme, never a token.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    signOut: $("sign-out"),
    signInView: $("sign-in-view"),
    signInForm: $("sign-in-form"),
    signIn: $("sign-in"),
    clientId: $("client-id"),
    secret: $("client-secret"),
    tokenForm: $("token-form"),
    tokenInput: $("token-input"),
    signInError: $("sign-in-error"),
    chatView: $("chat-view"),
    model: $("model"),
    menu: $("menu"),
    theme: $("theme"),
    sidebar: $("sidebar"),
    backdrop: $("backdrop"),
    conversationList: $("conversation-list"),
    newConversation: $("new-conversation"),
    log: $("log"),
    composer: $("composer"),
    prompt: $("prompt"),
    send: $("send"),
    stop: $("stop"),
  };

  /** sessionStorage keys. */
  const KEY = {
    access: "tars.access_token",
    refresh: "tars.refresh_token",
    expiresAt: "tars.expires_at", // access token expiry, ms since the epoch
    lifetime: "tars.expires_in", // access token lifetime, seconds
    client: "tars.client_id",
    model: "tars.model",
  };
  /** localStorage: "dark" or "light" when it differs from the system's. */
  const THEME_KEY = "tars.theme";
  const store = window.sessionStorage;

  const RECONNECT_BASE_MS = 500;
  const RECONNECT_MAX_MS = 30000;
  const REFRESH_LEAD_MAX_MS = 5 * 60 * 1000;
  const RETRY_LATER_MS = 15000;

  let signedIn = false;
  let ws = null; // the live socket, or null
  let wsOpen = false; // the live socket finished its handshake
  let connected = false; // connection_ack received on the live socket
  let attempt = 0; // reconnect attempts since the last connection_ack
  let reconnectTimer = 0;
  let resumeWindowSecs = 0; // from the last connection_ack (0: no resume)
  let pendingResume = null; // the answer cut by a drop: {conversation_id, last_seq, until}
  let refreshTimer = 0;
  let refreshing = null; // the running refresh, shared by its callers
  const chat = TarsChat.create({ ui, send: sendFrame, changed: updateComposer, session: store });

  // ---- small helpers -------------------------------------------------------

  function setStatus(state, text) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
  }

  function notice(kind, text) {
    chat.notice(kind, text);
  }

  function showSignInMessage(text, isError) {
    ui.signInError.textContent = text;
    ui.signInError.classList.toggle("error", isError);
    ui.signInError.hidden = !text;
  }

  /** fetch a JSON endpoint of the gateway; resolves to {ok, status, data}. */
  async function api(path, { method = "GET", body, token } = {}) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (token) headers.authorization = `Bearer ${token}`;
    const resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    let data = null;
    try {
      data = await resp.json();
    } catch {
      data = null;
    }
    return { ok: resp.ok, status: resp.status, data };
  }

  function errorText(r, fallback) {
    const d = r.data || {};
    return d.message || d.reason || `${fallback} (HTTP ${r.status})`;
  }

  // ---- tokens ----------------------------------------------------------------

  function saveTokens(pair) {
    store.setItem(KEY.access, pair.access_token);
    store.setItem(KEY.refresh, pair.refresh_token);
    store.setItem(KEY.expiresAt, String(Date.now() + pair.expires_in * 1000));
    store.setItem(KEY.lifetime, String(pair.expires_in));
  }

  /** How long before expiry the access token is refreshed. */
  function refreshLeadMs() {
    const life = Number(store.getItem(KEY.lifetime)) * 1000 || 0;
    return Math.min(REFRESH_LEAD_MAX_MS, life / 5);
  }

  function expiresAt() {
    return Number(store.getItem(KEY.expiresAt)) || 0;
  }

  function needsRefresh() {
    const exp = expiresAt();
    return exp > 0 && Date.now() >= exp - refreshLeadMs();
  }

  function scheduleRefresh(delayMs) {
    clearTimeout(refreshTimer);
    if (!signedIn || !store.getItem(KEY.refresh)) return; // a pasted token cannot be refreshed
    const wait = delayMs ?? Math.max(0, expiresAt() - refreshLeadMs() - Date.now());
    refreshTimer = setTimeout(refreshTokens, Math.min(wait, 0x7fffffff));
  }

  /** Refresh the token pair once, however many callers ask meanwhile.
   *  Resolves to true when new tokens were stored. */
  function refreshTokens() {
    if (!refreshing) refreshing = doRefresh().finally(() => (refreshing = null));
    return refreshing;
  }

  async function doRefresh() {
    const refreshToken = store.getItem(KEY.refresh);
    if (!signedIn || !refreshToken) return false;
    let r;
    try {
      r = await api("/auth/refresh", { method: "POST", body: { refresh_token: refreshToken } });
    } catch {
      scheduleRefresh(RETRY_LATER_MS); // gateway unreachable: keep the tokens, try again
      return false;
    }
    if (r.ok) {
      saveTokens(r.data);
      scheduleRefresh();
      // The open session goes on with the new token (otherwise the gateway
      // closes it when the old one expires).
      sendFrame({ type: "auth", token: r.data.access_token });
      return true;
    }
    if (r.status === 400 || r.status === 401) {
      signOut(`Your session ended: ${errorText(r, "refresh refused")}. Sign in again.`);
      return false;
    }
    scheduleRefresh(RETRY_LATER_MS);
    return false;
  }

  /** The access token, refreshed first when it is about to expire. */
  async function freshAccessToken() {
    if (needsRefresh() && store.getItem(KEY.refresh)) await refreshTokens();
    if (signedIn && !store.getItem(KEY.refresh) && expiresAt() && Date.now() >= expiresAt()) {
      signOut("The access token has expired. Sign in again.");
    }
    return signedIn ? store.getItem(KEY.access) : null;
  }

  /** Ask the gateway whether the access token still holds (the browser does
   *  not show why a WebSocket handshake failed). "ok", "signed-out" or
   *  "unknown" (gateway unreachable). */
  async function checkToken() {
    let r;
    try {
      r = await api("/auth/validate", { method: "POST", token: store.getItem(KEY.access) });
    } catch {
      return "unknown";
    }
    if (r.ok) return "ok";
    if (r.status !== 401) return "unknown";
    if (store.getItem(KEY.refresh)) {
      if (await refreshTokens()) return "ok";
      return signedIn ? "unknown" : "signed-out";
    }
    signOut(`The gateway no longer accepts this token: ${errorText(r, "refused")}. Sign in again.`);
    return "signed-out";
  }

  // ---- signing in and out ----------------------------------------------------

  async function onSignIn(ev) {
    ev.preventDefault();
    showSignInMessage("", false);
    const clientId = ui.clientId.value.trim();
    const body = { client_id: clientId, device_type: "browser" };
    if (ui.secret.value) body.client_secret = ui.secret.value;
    ui.signIn.disabled = true;
    try {
      const r = await api("/auth/token", { method: "POST", body });
      if (!r.ok) {
        showSignInMessage(`Sign-in failed: ${errorText(r, "refused")}.`, true);
        return;
      }
      ui.secret.value = "";
      store.setItem(KEY.client, clientId);
      saveTokens(r.data);
      enterChat();
    } catch (e) {
      showSignInMessage(`Cannot reach the gateway: ${e.message}`, true);
    } finally {
      ui.signIn.disabled = false;
    }
  }

  async function onUseToken(ev) {
    ev.preventDefault();
    showSignInMessage("", false);
    const token = ui.tokenInput.value.trim();
    try {
      const r = await api("/auth/validate", { method: "POST", token });
      if (!r.ok || !r.data || !r.data.valid) {
        showSignInMessage(`That token was refused: ${errorText(r, "invalid")}.`, true);
        return;
      }
      ui.tokenInput.value = "";
      store.setItem(KEY.access, token);
      store.removeItem(KEY.refresh);
      store.removeItem(KEY.lifetime);
      store.setItem(KEY.expiresAt, String(Date.parse(r.data.expires_at) || 0));
      store.setItem(KEY.client, r.data.client_id);
      enterChat();
    } catch (e) {
      showSignInMessage(`Cannot reach the gateway: ${e.message}`, true);
    }
  }

  function enterChat() {
    signedIn = true;
    ui.signInView.hidden = true;
    ui.chatView.hidden = false;
    ui.signOut.hidden = false;
    chat.open(store.getItem(KEY.client) || "");
    scheduleRefresh();
    loadModels();
    connect();
    ui.prompt.focus();
  }

  /** Leave the chat: forget the tokens, close the socket, show the sign-in form. */
  function signOut(message, isError = true) {
    signedIn = false;
    clearTimeout(reconnectTimer);
    clearTimeout(refreshTimer);
    const sock = ws;
    ws = null;
    wsOpen = connected = false;
    pendingResume = null;
    if (sock) sock.close(1000, "signed out");
    chat.close();
    for (const k of [KEY.access, KEY.refresh, KEY.expiresAt, KEY.lifetime]) store.removeItem(k);
    ui.chatView.hidden = true;
    ui.signOut.hidden = true;
    ui.signInView.hidden = false;
    ui.clientId.value = store.getItem(KEY.client) || "";
    setStatus("signed-out", "Signed out");
    showSignInMessage(message || "", isError);
    updateComposer();
  }

  async function onSignOut() {
    const access = store.getItem(KEY.access);
    const refresh = store.getItem(KEY.refresh);
    signOut("Signed out.", false);
    // Best effort: revoke both tokens so a copy of them is worthless.
    try {
      if (refresh) await api("/auth/revoke", { method: "POST", token: access, body: { token: refresh } });
      if (access) await api("/auth/revoke", { method: "POST", token: access });
    } catch {
      /* the gateway is unreachable; the tokens expire on their own */
    }
  }

  // ---- models ----------------------------------------------------------------

  async function loadModels() {
    const token = await freshAccessToken();
    if (!token) return;
    let r;
    try {
      r = await api("/models", { token });
    } catch (e) {
      notice("error", `Cannot list the models: ${e.message}`);
      return;
    }
    if (!r.ok || !r.data || !Array.isArray(r.data.models)) {
      notice("error", `Cannot list the models: ${errorText(r, "refused")}`);
      return;
    }
    const models = r.data.models;
    ui.model.replaceChildren(
      ...models.map((m) => {
        const o = document.createElement("option");
        o.value = m;
        o.textContent = m;
        return o;
      }),
    );
    const wanted = store.getItem(KEY.model);
    ui.model.value = models.includes(wanted) ? wanted : r.data.default || models[0] || "";
    if (!models.length) notice("error", "This client may not use any model.");
    if (r.data.history_turns > 0) {
      chat.setLimits({ historyTurns: r.data.history_turns, idleSecs: r.data.conversation_idle_secs || 0 });
    }
  }

  // ---- the socket --------------------------------------------------------------

  async function connect() {
    clearTimeout(reconnectTimer);
    if (!signedIn || ws) return;
    setStatus(
      attempt ? "reconnecting" : "connecting",
      attempt ? `Reconnecting (attempt ${attempt})…` : "Connecting…",
    );
    const token = await freshAccessToken();
    if (!token || ws) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(`${scheme}//${location.host}/ws/chat?token=${encodeURIComponent(token)}`);
    ws = sock;
    wsOpen = connected = false;
    sock.onopen = () => {
      if (ws === sock) wsOpen = true;
    };
    sock.onmessage = (ev) => {
      if (ws === sock) onFrame(ev.data);
    };
    sock.onclose = (ev) => {
      if (ws === sock) onClose(ev);
    };
  }

  function sendFrame(obj) {
    if (ws && wsOpen) ws.send(JSON.stringify(obj));
  }

  async function onClose(ev) {
    const wasOpen = wsOpen;
    ws = null;
    wsOpen = connected = false;
    if (chat.busy()) {
      // Resume (issue 17): the gateway keeps the answer going; the next
      // session asks for what follows the last token shown.
      const r = resumeWindowSecs > 0 ? chat.suspend() : null;
      if (r) pendingResume = { ...r, until: Date.now() + resumeWindowSecs * 1000 };
      else chat.finish("interrupted", "Connection lost: the answer was interrupted.");
    }
    updateComposer();
    if (!signedIn) return;
    // A refused token never gets a handshake (the browser shows no reason),
    // and a revoked one is closed with 1008: ask the gateway before retrying.
    if (!wasOpen || ev.code === 1008) {
      setStatus("reconnecting", "Disconnected — checking the token…");
      if ((await checkToken()) === "signed-out" || !signedIn) return;
    }
    scheduleReconnect(wasOpen ? `${ev.reason || "connection lost"} (${ev.code})` : "cannot connect");
  }

  function scheduleReconnect(why) {
    const base = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    attempt += 1;
    const secs = (delay / 1000).toFixed(delay < 10000 ? 1 : 0);
    setStatus("reconnecting", `Disconnected: ${why} — reconnecting in ${secs} s (attempt ${attempt})`);
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, delay);
  }

  function onFrame(text) {
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    switch (f.type) {
      case "connection_ack":
        attempt = 0;
        connected = true;
        resumeWindowSecs = f.resume_window_secs || 0;
        if (pendingResume) {
          const r = pendingResume;
          pendingResume = null;
          if (resumeWindowSecs > 0 && Date.now() < r.until && chat.busy()) {
            sendFrame({ type: "resume", conversation_id: r.conversation_id, last_seq: r.last_seq });
          } else if (chat.busy()) {
            chat.finish("interrupted", "Connection lost: the answer was interrupted.");
          }
        }
        setStatus("connected", `Connected as ${f.client_id}`);
        updateComposer();
        break;
      case "token":
        chat.onToken(f);
        break;
      case "thinking":
        chat.onThinking(f);
        break;
      case "status":
        chat.onStatus(f);
        break;
      case "complete":
        chat.onComplete(f);
        break;
      case "error":
        chat.onError(f);
        break;
      case "system":
        notice("system", f.message);
        break;
      case "ping":
        sendFrame({ type: "pong" });
        break;
      case "auth_ack":
        break; // the session runs on the refreshed token
      default:
        break; // pong and frame types this page does not know
    }
  }

  // ---- asking --------------------------------------------------------------------

  function onSend(ev) {
    ev.preventDefault();
    const content = ui.prompt.value;
    if (!content.trim() || !connected || chat.busy()) return;
    const model = ui.model.value;
    if (model) store.setItem(KEY.model, model);
    if (chat.ask(content, model)) ui.prompt.value = "";
  }

  function onStop() {
    chat.stop();
    ui.stop.disabled = true;
  }

  function updateComposer() {
    const busy = chat.busy();
    ui.send.disabled = !connected || busy;
    ui.stop.hidden = !busy;
    ui.stop.disabled = !busy;
    ui.newConversation.disabled = busy;
  }

  // ---- the theme ------------------------------------------------------------------

  const darkScheme = window.matchMedia("(prefers-color-scheme: dark)");

  /** `dark` or `light` class on <html>: the stored choice, else the system's. */
  function applyTheme() {
    const chosen = localStorage.getItem(THEME_KEY);
    const dark = chosen ? chosen === "dark" : darkScheme.matches;
    document.documentElement.classList.toggle("dark", dark);
    document.documentElement.classList.toggle("light", !dark);
    ui.theme.setAttribute("aria-pressed", String(dark));
    ui.theme.title = dark ? "Dark mode (click for light)" : "Light mode (click for dark)";
  }

  /** Flip the theme; a choice equal to the system's is not stored, so the
   *  page follows the system again. */
  function toggleTheme() {
    const dark = !document.documentElement.classList.contains("dark");
    if (dark === darkScheme.matches) localStorage.removeItem(THEME_KEY);
    else localStorage.setItem(THEME_KEY, dark ? "dark" : "light");
    applyTheme();
  }

  // ---- wiring ------------------------------------------------------------------

  ui.signInForm.addEventListener("submit", onSignIn);
  ui.tokenForm.addEventListener("submit", onUseToken);
  ui.signOut.addEventListener("click", onSignOut);
  ui.composer.addEventListener("submit", onSend);
  ui.stop.addEventListener("click", onStop);
  ui.theme.addEventListener("click", toggleTheme);
  darkScheme.addEventListener("change", applyTheme);
  window.addEventListener("storage", (ev) => {
    if (ev.key === THEME_KEY) applyTheme();
  });
  ui.model.addEventListener("change", () => store.setItem(KEY.model, ui.model.value));
  ui.prompt.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  window.addEventListener("online", () => {
    if (signedIn && !ws) connect();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && signedIn && needsRefresh()) refreshTokens();
  });

  applyTheme();
  ui.clientId.value = store.getItem(KEY.client) || "";
  if (store.getItem(KEY.access)) enterChat();
  else updateComposer();
})();
