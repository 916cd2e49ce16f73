// T.A.R.S. chat page, part 2 of 3: conversations kept in the browser
// (localStorage), and the side list that switches, renames and deletes them.
//
// Per signed-in client id: an index `tars.conversations:<client>` (id,
// title, updated; newest first) and one key per conversation
// `tars.conversation:<client>:<id>` holding its turns, so that saving the
// running answer rewrites one conversation, not all of them. The id is the
// `conversation_id` the page sends, so reopening a conversation continues it
// in the gateway's memory. No token is ever written here (tokens stay in
// sessionStorage). When the browser's quota is full, the oldest other
// conversations are dropped until the save fits.
"use strict";

window.TarsConversations = (() => {
  const TITLE_MAX = 80;

  /** The store of one client id. */
  function open(client) {
    const indexKey = `tars.conversations:${client}`;
    const key = (id) => `tars.conversation:${client}:${id}`;

    function readJson(k, fallback) {
      try {
        const v = JSON.parse(localStorage.getItem(k));
        return v ?? fallback;
      } catch {
        return fallback;
      }
    }

    /** [{id, title, updated}], newest first. */
    function list() {
      const l = readJson(indexKey, []);
      return Array.isArray(l) ? l.filter((c) => c && typeof c.id === "string") : [];
    }

    function writeIndex(l) {
      l.sort((a, b) => b.updated - a.updated);
      localStorage.setItem(indexKey, JSON.stringify(l));
    }

    /** The conversation, or null: {id, title, created, updated, turns}. */
    function load(id) {
      const c = readJson(key(id), null);
      if (!c || !Array.isArray(c.turns)) return null;
      return c;
    }

    /** Store `conv` (its index entry too). Returns false when even dropping
     *  every other conversation does not make room. */
    function save(conv) {
      const text = JSON.stringify(conv);
      for (;;) {
        try {
          localStorage.setItem(key(conv.id), text);
          const l = list().filter((c) => c.id !== conv.id);
          l.push({ id: conv.id, title: conv.title, updated: conv.updated });
          writeIndex(l);
          return true;
        } catch {
          const others = list().filter((c) => c.id !== conv.id);
          if (!others.length) return false;
          remove(others[others.length - 1].id); // the oldest goes first
        }
      }
    }

    function remove(id) {
      localStorage.removeItem(key(id));
      const l = list().filter((c) => c.id !== id);
      try {
        writeIndex(l);
      } catch {
        /* a shorter index always fits */
      }
    }

    function rename(id, title) {
      const c = load(id);
      if (!c) return;
      c.title = cleanTitle(title) || c.title;
      save(c);
    }

    return { list, load, save, remove, rename };
  }

  function cleanTitle(s) {
    const t = String(s || "").replace(/\s+/g, " ").trim();
    return t.length > TITLE_MAX ? `${t.slice(0, TITLE_MAX - 1)}…` : t;
  }

  /** The side list. `on` = {select(id), rename(id, title), remove(id)}. */
  function sideList(ul, on) {
    let busy = false;

    function item(c, currentId) {
      const li = document.createElement("li");
      li.dataset.id = c.id;
      if (c.id === currentId) li.setAttribute("aria-current", "true");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "conv-open";
      open.textContent = c.title || "Untitled";
      open.title = c.title || "";
      open.disabled = busy;
      open.addEventListener("click", () => on.select(c.id));
      const rename = document.createElement("button");
      rename.type = "button";
      rename.className = "conv-rename quiet icon";
      rename.textContent = "✎";
      rename.setAttribute("aria-label", `Rename “${c.title}”`);
      rename.addEventListener("click", () => startRename(li, open, c));
      const del = document.createElement("button");
      del.type = "button";
      del.className = "conv-delete quiet icon";
      del.textContent = "×";
      del.setAttribute("aria-label", `Delete “${c.title}”`);
      del.disabled = busy && c.id === currentId;
      del.addEventListener("click", () => {
        if (window.confirm(`Delete the conversation “${c.title}”?`)) on.remove(c.id);
      });
      li.append(open, rename, del);
      return li;
    }

    function startRename(li, open, c) {
      const input = document.createElement("input");
      input.className = "conv-title";
      input.value = c.title;
      input.maxLength = TITLE_MAX;
      input.setAttribute("aria-label", "Conversation title");
      let done = false;
      const finish = (keep) => {
        if (done) return;
        done = true;
        if (keep && cleanTitle(input.value)) on.rename(c.id, cleanTitle(input.value));
        else input.replaceWith(open);
      };
      input.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") {
          ev.preventDefault();
          finish(true);
        } else if (ev.key === "Escape") {
          finish(false);
        }
      });
      input.addEventListener("blur", () => finish(true));
      open.replaceWith(input);
      input.focus();
      input.select();
    }

    return {
      /** Draw `convs`, marking `currentId`; `isBusy` disables switching. */
      render(convs, currentId, isBusy) {
        busy = isBusy;
        ul.replaceChildren(...convs.map((c) => item(c, currentId)));
      },
    };
  }

  return { open, sideList, cleanTitle };
})();
