// T.A.R.S. chat page, part 1 of 3: the model's Markdown turned into safe DOM.
//
// marked (vendored, web/vendor/) parses CommonMark + GFM (tables, task
// lists, strikethrough, fenced code); its output goes through DOMPurify
// (vendored) into a DocumentFragment. Two walls against markup from the
// model: raw HTML in the Markdown is escaped by the renderer (so
// `<img onerror>` shows as text), and whatever HTML marked produces is then
// sanitized with an allow-list of tags and attributes. Links keep only
// http(s) targets and open in a new tab with rel="noopener noreferrer";
// images become links (the CSP blocks other hosts' images anyway, and a LAN
// page should not fetch them). This file never assigns HTML to the page's
// own elements: DOMPurify parses in an inert document.
"use strict";

window.TarsMarkdown = (() => {
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);

  const md = new marked.Marked({ gfm: true, breaks: false, async: false });
  md.use({
    renderer: {
      // Raw HTML (block or inline) is shown as the text the model wrote.
      html: ({ text }) => escapeHtml(text),
      // An image becomes a link to it, labelled with its alt text.
      image: ({ href, text }) => `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`,
    },
  });

  const ALLOWED_TAGS = [
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s",
    "code", "pre", "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr",
    "th", "td", "a", "input",
  ];
  const ALLOWED_ATTR = ["href", "title", "type", "checked", "disabled", "start", "align", "class"];
  const SAFE_LINK = /^https?:\/\//i;

  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.nodeName === "A") {
      const href = node.getAttribute("href");
      if (href && SAFE_LINK.test(href)) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      } else {
        node.removeAttribute("href");
      }
    } else if (node.nodeName === "INPUT") {
      // Only a GFM task list's read-only checkbox.
      node.setAttribute("type", "checkbox");
      node.setAttribute("disabled", "");
    } else if (node.hasAttribute("class")) {
      // Only code's "language-xyz" survives (for the copy button's label).
      const lang = /^language-[\w+#.-]{1,32}$/.exec(node.getAttribute("class") || "");
      if (node.nodeName === "CODE" && lang) node.setAttribute("class", lang[0]);
      else node.removeAttribute("class");
    }
  });
  const PURIFY = { ALLOWED_TAGS, ALLOWED_ATTR, ALLOW_DATA_ATTR: false, RETURN_DOM_FRAGMENT: true };

  /** Markdown source → a sanitized DocumentFragment. */
  function fragment(source) {
    let html;
    try {
      // Trimmed: the newline after the last block would be a text node.
      html = md.parse(source).trim();
    } catch {
      html = `<p>${escapeHtml(source)}</p>`;
    }
    return sanitized(html);
  }

  /** Some of a lexed document's tokens → HTML (`raw`: their source, shown
   *  as text should marked fail). */
  function renderTokens(tokens, raw) {
    try {
      return md.parser(tokens).trim();
    } catch {
      return `<p>${escapeHtml(raw)}</p>`;
    }
  }

  function sanitized(html) {
    const frag = DOMPurify.sanitize(html, PURIFY);
    for (const pre of frag.querySelectorAll("pre")) addCopyButton(pre);
    return frag;
  }

  function addCopyButton(pre) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "copy quiet";
    b.textContent = "Copy";
    b.setAttribute("aria-label", "Copy the code");
    pre.prepend(b);
  }

  /** Clicks on any copy button under `root` copy that block's code. */
  function handleCopyClicks(root) {
    root.addEventListener("click", async (ev) => {
      const b = ev.target.closest("button.copy");
      if (!b) return;
      const code = b.parentElement.querySelector("code");
      const text = code ? code.textContent : "";
      try {
        await navigator.clipboard.writeText(text);
        b.textContent = "Copied";
      } catch {
        // No clipboard (plain HTTP, or refused): select it for Ctrl+C.
        const range = document.createRange();
        range.selectNodeContents(code || b.parentElement);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        b.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => (b.textContent = "Copy"), 2000);
    });
  }

  /** Renders `elem` from a growing source at most once per animation
   *  frame; `flush()` renders at once (an answer's end, a hidden tab).
   *  Only the top-level blocks whose source changed are rendered again
   *  (while an answer streams, the last one), so a frame costs a lex of the
   *  whole answer plus the render of one block, not a render of it all. */
  function streamer(elem) {
    let source = "";
    let queued = 0;
    let blocks = []; // [{raw, nodes}] in order, as in `elem`
    const draw = () => {
      queued = 0;
      let tokens;
      try {
        tokens = md.lexer(source);
      } catch {
        blocks = [];
        elem.replaceChildren(fragment(source));
        return;
      }
      if (!blocks.length) elem.replaceChildren();
      let same = 0;
      while (same < blocks.length && same < tokens.length && blocks[same].raw === tokens[same].raw) {
        same += 1;
      }
      for (const b of blocks.splice(same)) for (const n of b.nodes) n.remove();
      for (const t of tokens.slice(same)) {
        const one = [t];
        one.links = tokens.links; // reference-style links defined anywhere
        const frag = sanitized(renderTokens(one, t.raw));
        blocks.push({ raw: t.raw, nodes: [...frag.childNodes] });
        elem.append(frag);
      }
    };
    return {
      set(s) {
        source = s;
        if (!queued) queued = requestAnimationFrame(draw);
      },
      flush() {
        if (queued) cancelAnimationFrame(queued);
        draw();
      },
    };
  }

  /** Render `source` into `elem` at once (a stored answer). */
  function render(elem, source) {
    const r = streamer(elem);
    r.set(source);
    r.flush();
  }

  return { render, streamer, handleCopyClicks };
})();
