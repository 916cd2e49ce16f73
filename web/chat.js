// T.A.R.S. chat page, part 3 of 4: the transcript. Shows the current
// conversation, streams the answer being written into it (Markdown rendered
// once per animation frame), keeps every turn in localStorage through
// TarsConversations, and drives the side list (a drawer on a phone).
//
// Text from the user and the model's thinking are put into the page as text
// only; the answer goes through TarsMarkdown, which escapes raw HTML and
// sanitizes what marked makes.
"use strict";

window.TarsChat = (() => {
  const SAVE_EVERY_MS = 1000; // how often a streaming answer is saved

  function fmtMs(ms) {
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // Plain-HTTP pages are not a secure context: build a v4 UUID by hand.
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /** A turn that the gateway keeps in its memory: any answer with text
   *  that did not end in an error (docs/protocol.md §6). */
  const remembered = (t) => t.done !== "error" && !!t.answer;

  /**
   * `ui`: the page's elements; `send(frame)`: write to the socket;
   * `changed()`: called when busy() may have changed; `session`:
   * sessionStorage (which conversation this tab shows).
   */
  function create({ ui, send, changed, session }) {
    let store = null; // TarsConversations store of the signed-in client
    let conv = null; // the conversation shown: {id, title, created, updated, turns}
    let current = null; // the answer being streamed
    let limits = null; // {historyTurns, idleSecs} from GET /models
    let saveTimer = 0;
    const side = TarsConversations.sideList(ui.conversationList, {
      select: (id) => {
        if (!current) show(id);
        closeDrawer();
      },
      rename: (id, title) => {
        store.rename(id, title);
        if (conv && conv.id === id) conv.title = store.load(id)?.title || conv.title;
        drawList();
      },
      remove: (id) => {
        store.remove(id);
        if (conv && conv.id === id) startNew();
        drawList();
      },
    });
    TarsMarkdown.handleCopyClicks(ui.log);

    // ---- the log -----------------------------------------------------------

    function nearBottom() {
      const l = ui.log;
      return l.scrollHeight - l.scrollTop - l.clientHeight < 80;
    }

    function keepScrolled(wasNearBottom) {
      if (wasNearBottom) ui.log.scrollTop = ui.log.scrollHeight;
    }

    /** A notice line in the conversation: kind is "error", "system" or "info". */
    function notice(kind, text) {
      const stick = nearBottom();
      const p = document.createElement("p");
      p.className = `notice ${kind}`;
      p.setAttribute("role", kind === "error" ? "alert" : "status");
      p.textContent = text;
      ui.log.append(p);
      keepScrolled(stick);
      return p;
    }

    function addMessage(role, who) {
      const box = document.createElement("div");
      box.className = `msg ${role}`;
      const label = document.createElement("div");
      label.className = "who";
      label.textContent = who;
      box.append(label);
      ui.log.append(box);
      return box;
    }

    function textBlock(className, text) {
      const d = document.createElement("div");
      d.className = className;
      d.append(document.createTextNode(text || ""));
      return d;
    }

    /** Turn number `index`'s two messages (`live`: its answer is about to
     *  stream); returns the answer's parts. */
    function drawTurn(turn, index, live) {
      const user = addMessage("user", "You");
      user.dataset.turn = index;
      user.append(textBlock("text", turn.user));
      const box = addMessage("assistant", turn.model || "model");
      const thinking = textBlock("thinking", turn.thinking);
      thinking.hidden = !turn.thinking;
      const phase = document.createElement("div");
      phase.className = "phase";
      phase.hidden = true;
      const answer = document.createElement("div");
      answer.className = "text answer markdown";
      const stats = document.createElement("div");
      stats.className = "stats";
      box.append(thinking, phase, answer, stats);
      const parts = { box, thinking, phase, answer, stats };
      if (turn.done) endTurnView(parts, turn);
      else if (!live) {
        // Left unfinished when the page closed or reloaded mid-answer.
        turn.done = "interrupted";
        turn.stats = "Interrupted: the page was closed during this answer.";
        endTurnView(parts, turn);
      }
      return parts;
    }

    /** Show `turn` as ended (`streamed`: its answer is on screen already). */
    function endTurnView(parts, turn, streamed) {
      parts.box.classList.remove("streaming");
      parts.box.dataset.done = turn.done;
      parts.phase.hidden = true;
      if (!streamed) TarsMarkdown.render(parts.answer, turn.answer);
      parts.stats.textContent = turn.stats || "";
      parts.stats.className = `stats ${turn.done}`;
      parts.stats.hidden = !turn.stats;
      if (turn.error) notice("error", turn.error);
    }

    /** Mark where the turns that the gateway no longer sends to the model
     *  end (ADR 0006): past `history_turns`, or all of them once the
     *  conversation sat unused longer than the gateway keeps it. */
    function placeHistoryNote() {
      for (const n of ui.log.querySelectorAll(".notice.forgotten")) n.remove();
      if (!conv || !limits || !conv.turns.length) return;
      const mins = `${Math.round(limits.idleSecs / 60)} min`;
      const kept = conv.turns.map((t, i) => (remembered(t) ? i : -1)).filter((i) => i >= 0);
      let from = 0;
      let why = "";
      if (kept.length > limits.historyTurns) {
        from = kept[kept.length - limits.historyTurns];
        const n = limits.historyTurns;
        why = `the gateway keeps the last ${n === 1 ? "turn" : `${n} turns`} of a conversation`;
      }
      if ((conv.forgottenBefore || 0) > from) {
        from = conv.forgottenBefore;
        why = `the gateway had forgotten them (unused for over ${mins}) when the conversation went on`;
      }
      if (idle()) {
        from = conv.turns.length;
        why = `the gateway forgets a conversation unused for ${mins}`;
      }
      if (!from) return;
      const n = notice("info", `Earlier turns are not sent to the model: ${why}.`);
      n.classList.add("forgotten");
      const next = ui.log.querySelector(`.msg.user[data-turn="${from}"]`);
      if (next) ui.log.insertBefore(n, next);
    }

    function idle() {
      return !!(limits && limits.idleSecs && Date.now() - conv.updated > limits.idleSecs * 1000);
    }

    // ---- conversations -------------------------------------------------------

    function drawList() {
      if (!store) return;
      side.render(store.list(), conv && conv.id, !!current);
    }

    function blank() {
      const now = Date.now();
      return { id: newId(), title: "", created: now, updated: now, turns: [] };
    }

    /** Show conversation `id` (a new one when it is not stored). */
    function show(id) {
      conv = (id && store.load(id)) || blank();
      session.setItem("tars.conversation_id", conv.id);
      ui.log.replaceChildren();
      conv.turns.forEach((t, i) => drawTurn(t, i));
      if (!conv.turns.length) notice("info", "New conversation.").classList.add("fresh");
      placeHistoryNote();
      ui.log.scrollTop = ui.log.scrollHeight;
      drawList();
    }

    function startNew() {
      if (current) return;
      show(null);
      closeDrawer();
      ui.prompt.focus();
    }

    function save() {
      clearTimeout(saveTimer);
      saveTimer = 0;
      if (store && conv.turns.length && !store.save(conv)) {
        notice("error", "This browser's storage is full: the conversation is not saved.");
      }
    }

    function saveSoon() {
      if (!saveTimer) saveTimer = setTimeout(save, SAVE_EVERY_MS);
    }

    // ---- the drawer (narrow screens) -------------------------------------------

    function openDrawer(open) {
      document.body.classList.toggle("drawer-open", open);
      ui.backdrop.hidden = !open;
      ui.menu.setAttribute("aria-expanded", String(open));
    }

    function closeDrawer() {
      openDrawer(false);
    }

    ui.menu.addEventListener("click", () =>
      openDrawer(!document.body.classList.contains("drawer-open")),
    );
    ui.backdrop.addEventListener("click", closeDrawer);
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && document.body.classList.contains("drawer-open")) closeDrawer();
    });
    ui.newConversation.addEventListener("click", startNew);

    // ---- the answer being streamed ---------------------------------------------

    /** Ask `content`; returns false when nothing was sent. */
    function ask(content, model) {
      if (current) return false;
      const resumed = idle();
      const turn = { user: content, model, answer: "", thinking: "", stats: "", done: null };
      if (resumed && conv.turns.length) conv.forgottenBefore = conv.turns.length;
      conv.turns.push(turn);
      conv.title = conv.title || TarsConversations.cleanTitle(content);
      conv.updated = Date.now();
      const msg = { type: "chat", content, conversation_id: conv.id };
      if (model) msg.model = model;
      send(msg);
      ui.log.querySelector(".notice.fresh")?.remove();
      const parts = drawTurn(turn, conv.turns.length - 1, true);
      parts.box.classList.add("streaming");
      current = { ...parts, turn, conversationId: conv.id, render: TarsMarkdown.streamer(parts.answer) };
      placeHistoryNote();
      ui.log.scrollTop = ui.log.scrollHeight;
      save();
      drawList();
      changed();
      return true;
    }

    function mine(f) {
      return current && (!f.conversation_id || f.conversation_id === current.conversationId);
    }

    function onToken(f) {
      if (!mine(f) || typeof f.token !== "string") return;
      // A resume replays from the seq asked for: skip what is already shown.
      if (typeof f.seq === "number" && f.seq <= (current.lastSeq || 0)) return;
      const stick = nearBottom();
      current.phase.hidden = true;
      current.turn.answer += f.token;
      if (typeof f.seq === "number") current.lastSeq = f.seq; // for resume (issue 17)
      current.render.set(current.turn.answer);
      keepScrolled(stick);
      saveSoon();
    }

    function onThinking(f) {
      if (!mine(f) || typeof f.token !== "string") return;
      current.phase.hidden = true;
      current.thinking.hidden = false;
      current.turn.thinking += f.token;
      current.thinking.firstChild.appendData(f.token);
      saveSoon();
    }

    /** `status` frames: where the chat waits before its first token. */
    function onStatus(f) {
      if (!mine(f) || current.turn.answer || current.turn.thinking) return;
      let text = "";
      if (f.phase === "queued") {
        text = f.position > 0 ? `waiting (${f.position} ahead)` : "waiting…";
      } else if (f.phase === "loading_model") {
        text = "loading model…";
        if (f.model) current.phase.title = f.model;
      }
      if (!text) return;
      current.phase.textContent = text;
      current.phase.hidden = false;
    }

    /** End the running answer: `done` is how, `stats` the line under it. */
    function finish(done, stats, error) {
      const c = current;
      if (!c) return;
      current = null;
      c.render.flush();
      Object.assign(c.turn, { done, stats: stats || "" });
      if (error) c.turn.error = error;
      endTurnView(c, c.turn, true);
      if (conv.id === c.conversationId) conv.updated = Date.now();
      placeHistoryNote();
      save();
      drawList();
      changed();
    }

    function onComplete(f) {
      if (!mine(f)) return;
      const parts = [`${f.total_tokens} tokens`];
      if (f.first_token_ms != null) parts.push(`first token ${fmtMs(f.first_token_ms)}`);
      if (typeof f.tokens_per_second === "number") parts.push(`${f.tokens_per_second.toFixed(1)} tokens/s`);
      if (typeof f.latency_ms === "number") parts.push(`${fmtMs(f.latency_ms)} total`);
      if (typeof f.upstream === "string" && f.upstream !== "default") parts.push(`via ${f.upstream}`);
      let kind = "stop";
      if (f.done_reason === "cancelled") {
        kind = "cancelled";
        parts.unshift("Stopped");
      } else if (f.done_reason === "length") {
        kind = "length";
        parts.unshift("Cut at the token limit");
      }
      finish(kind, parts.join(" · "));
    }

    function onError(f) {
      const text = `${f.message || "error"} (${f.code || "error"})`;
      if (f.code === "resumed_elsewhere" && mine(f)) {
        finish("moved", "This answer goes on in another window or tab of this client.");
      } else if (f.code === "resume_unavailable" && mine(f)) {
        finish("interrupted", "The rest of this answer could not be recovered: ask again.");
      } else if (mine(f)) {
        finish("error", "", text);
      } else {
        notice("error", text);
      }
    }

    /** The socket dropped mid-answer and the gateway offers resume: keep the
     *  answer open and return what to resume (null when nothing runs). */
    function suspend() {
      if (!current) return null;
      current.phase.textContent = "connection lost — resuming…";
      current.phase.hidden = false;
      return { conversation_id: current.conversationId, last_seq: current.lastSeq || 0 };
    }

    function stop() {
      if (current) send({ type: "cancel", conversation_id: current.conversationId });
    }

    return {
      /** Signed in as `client`: show the list and this tab's conversation
       *  (else the newest one). */
      open(client) {
        store = TarsConversations.open(client);
        ui.sidebar.hidden = false;
        ui.menu.hidden = false;
        const wanted = session.getItem("tars.conversation_id");
        const list = store.list();
        show(list.some((c) => c.id === wanted) ? wanted : list[0] && list[0].id);
      },
      /** Signed out: forget what is shown (the stored conversations stay). */
      close() {
        if (current) current = null;
        save();
        store = conv = null;
        ui.log.replaceChildren();
        ui.conversationList.replaceChildren();
        ui.sidebar.hidden = true;
        ui.menu.hidden = true;
        closeDrawer();
      },
      setLimits(l) {
        limits = l;
        placeHistoryNote();
      },
      busy: () => !!current,
      ask,
      stop,
      suspend,
      finish,
      notice,
      onToken,
      onThinking,
      onStatus,
      onComplete,
      onError,
    };
  }

  return { create };
})();
