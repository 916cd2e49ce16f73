//! The chat page's Markdown (rendered while it streams, code blocks with a
//! copy button), hostile HTML in the model's output, conversations kept in
//! localStorage across a reload, and the dark theme: in headless Chromium
//! against the real gateway and the fake Ollama.

use std::time::Duration;

use fantoccini::key::Key;
use fantoccini::Locator;
use serde_json::{json, Value};

use crate::harness::*;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::*;

/// A model answer using every Markdown feature the page promises.
const DOC: &str = "## Plan\n\n\
| Step | Time |\n\
|:-----|-----:|\n\
| Boil | 5 min |\n\
| Brew | **3** min |\n\n\
- [x] kettle\n\
- [ ] cups\n\n\
```rust\n\
fn main() {\n    println!(\"<b>hi</b>\");\n}\n\
```\n\n\
See [the docs](https://example.org/docs), ~~not this~~ and [that](javascript:window.pwned=1).\n";

/// `s` cut every `n` characters, so that token boundaries fall inside
/// Markdown syntax (a table row, a fence) as a model's tokens do.
fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// Chromium signed in as [`CLIENT`], or `None` when it is not installed.
async fn signed_in(gw: &Gateway, test: &str, extra: &[&str]) -> Option<Browser> {
    let b = Browser::start_with(gw, test, None, extra).await?;
    b.goto(gw).await;
    b.sign_in(CLIENT, SECRET).await;
    b.wait_connected().await;
    Some(b)
}

/// The sidebar's titles, top (newest) first.
async fn titles(b: &Browser) -> Value {
    b.js(
        "return [...document.querySelectorAll('#conversation-list .conv-open')] \
          .map(e => e.textContent)",
    )
    .await
}

/// Click button `class` of the side list entry titled `title`.
async fn click_entry(b: &Browser, title: &str, class: &str) {
    let items =
        b.c.find_all(Locator::Css("#conversation-list li"))
            .await
            .unwrap();
    for li in items {
        if li.text().await.unwrap().starts_with(title) {
            li.find(Locator::Css(class))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            return;
        }
    }
    panic!("no conversation titled {title:?}: {}", titles(b).await);
}

/// Scroll the last question to the top of the log and let two frames be
/// painted (for a screenshot).
async fn show_last_question(b: &Browser) {
    b.c.execute_async(
        "const done = arguments[arguments.length - 1]; \
         [...document.querySelectorAll('.msg.user')].pop().scrollIntoView({block: 'start'}); \
         requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
        vec![],
    )
    .await
    .unwrap();
}

/// The last answer's rendered HTML.
const LAST_HTML: &str =
    "return [...document.querySelectorAll('.msg.assistant .answer')].pop().innerHTML";

/// [user texts, answer texts] of the transcript shown.
const TRANSCRIPT: &str = "return [\
    [...document.querySelectorAll('.msg.user .text')].map(e => e.textContent), \
    [...document.querySelectorAll('.msg.assistant .answer')].map(e => e.textContent)];";

/// A table, a task list, a fenced code block with its copy button and
/// links, rendered while the answer streams in 6-character tokens; the
/// source is kept byte-exact. Photographed for docs/screenshot.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markdown_renders_while_streaming() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let Some(b) = signed_in(&gw, "markdown_renders_while_streaming", &[]).await else {
        return;
    };
    fake.set(Behavior::Echo);
    b.ask("What is T.A.R.S.?").await;
    b.answer_done().await;
    b.click("#new-conversation").await;

    fake.set(Behavior::stream(pieces(DOC, 6)).delay(Duration::from_millis(40)));
    b.ask("How do I make tea? Show the plan as a table, and code.")
        .await;
    // The table is a table before the answer has ended.
    b.until(
        "a table while the answer streams",
        "const a = [...document.querySelectorAll('.msg.assistant')].pop(); \
         return a.classList.contains('streaming') && !a.dataset.done \
                && a.querySelectorAll('.answer table td').length >= 2;",
    )
    .await;
    let a = b.answer_done().await;
    assert_eq!(a["done"], "stop", "{a:#}");
    assert_eq!(a["source"], json!(DOC), "{a:#}");
    assert_eq!(a["foreign_elements"], json!([]), "{a:#}");
    assert_eq!(a["handler_attributes"], json!([]), "{a:#}");

    let r = b
        .js(r#"
        const a = [...document.querySelectorAll('.msg.assistant .answer')].pop();
        const cells = (sel) => [...a.querySelectorAll(sel)].map(e => e.textContent.trim());
        const pre = a.querySelector('pre');
        const links = [...a.querySelectorAll('a')];
        return {
            heading: cells('h2'),
            head: cells('table thead th'),
            body: [...a.querySelectorAll('table tbody tr')].map(tr =>
                [...tr.children].map(td => td.textContent.trim())),
            strong_in_table: a.querySelectorAll('table td strong').length,
            tasks: [...a.querySelectorAll('li input')].map(i =>
                [i.type, i.checked, i.disabled, i.parentElement.textContent.trim()]),
            code: pre.querySelector('code').textContent,
            code_class: pre.querySelector('code').className,
            copy: [...pre.querySelectorAll('button.copy')].map(b => b.textContent),
            del: cells('del'),
            links: links.map(l => [l.textContent, l.getAttribute('href'),
                                   l.getAttribute('target'), l.getAttribute('rel')]),
        };
    "#)
        .await;
    assert_eq!(r["heading"], json!(["Plan"]));
    assert_eq!(r["head"], json!(["Step", "Time"]));
    assert_eq!(r["body"], json!([["Boil", "5 min"], ["Brew", "3 min"]]));
    assert_eq!(r["strong_in_table"], 1);
    assert_eq!(
        r["tasks"],
        json!([
            ["checkbox", true, true, "kettle"],
            ["checkbox", false, true, "cups"]
        ])
    );
    assert_eq!(r["code"], "fn main() {\n    println!(\"<b>hi</b>\");\n}\n");
    assert_eq!(r["code_class"], "language-rust");
    assert_eq!(r["copy"], json!(["Copy"]));
    assert_eq!(r["del"], json!(["not this"]));
    assert_eq!(
        r["links"],
        json!([
            [
                "the docs",
                "https://example.org/docs",
                "_blank",
                "noopener noreferrer"
            ],
            ["that", null, null, null]
        ])
    );

    let streamed = b.js(LAST_HTML).await;

    // The copy button puts exactly the code on the clipboard.
    let copy = b.c.find_all(Locator::Css("pre button.copy")).await.unwrap();
    copy.last().unwrap().click().await.unwrap();
    let copied = b
        .until(
            "the copy button to answer",
            "const b = [...document.querySelectorAll('pre button.copy')].pop(); \
             return b.textContent !== 'Copy' && b.textContent;",
        )
        .await;
    assert_eq!(copied, "Copied");
    // Pasted into the prompt with Ctrl+V, as a user would.
    let prompt = b.c.find(Locator::Css("#prompt")).await.unwrap();
    prompt.clear().await.unwrap();
    prompt
        .send_keys(&format!("{}v{}", Key::Control, Key::Null))
        .await
        .unwrap();
    let clip = b
        .until(
            "the pasted code",
            "return document.getElementById('prompt').value",
        )
        .await;
    assert_eq!(clip, r["code"]);

    assert_eq!(
        titles(&b).await,
        json!([
            "How do I make tea? Show the plan as a table, and code.",
            "What is T.A.R.S.?"
        ])
    );
    prompt.clear().await.unwrap();
    show_last_question(&b).await;
    screenshot(&b, "screenshot.png").await;

    // Rendered from storage after a reload: the same DOM as streamed.
    b.c.refresh().await.unwrap();
    b.wait_connected().await;
    assert_eq!(b.js(LAST_HTML).await, streamed);
    b.quit().await;
}

/// Markup in the model's answer stays text: no element, no handler, no
/// script runs, no dialog opens, nothing gets a `javascript:` link, and the
/// text is on screen as the model wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_html_in_model_output_is_inert() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let Some(b) = signed_in(&gw, "hostile_html_in_model_output_is_inert", &[]).await else {
        return;
    };
    let tokens = [
        "Look: <img src=x onerror=\"window.pwned=1;alert(1)\">",
        "\n\n<script>window.pwned=2;alert(2)</script>\n\n",
        "<iframe src=\"javascript:window.pwned=3\"></iframe>",
        " [link](javascript:window.pwned=4) and ![pic](x\" onerror=\"window.pwned=5)",
        " <a href=\"javascript:window.pwned=6\" onclick=\"window.pwned=7\">a</a>",
        "\n\n<svg onload=\"window.pwned=8\"><circle/></svg>",
        "<style>body{display:none}</style>\n\n",
        "<details open ontoggle=\"window.pwned=9\">x</details>",
    ];
    fake.set(Behavior::stream(tokens).delay(Duration::from_millis(30)));
    b.ask("be evil").await;
    let a = b.answer_done().await;
    assert_eq!(a["source"], json!(tokens.concat()), "{a:#}");
    assert_eq!(a["foreign_elements"], json!([]), "{a:#}");
    assert_eq!(a["handler_attributes"], json!([]), "{a:#}");
    // Follow every link the answer has, as a user would.
    let r = b
        .js(r#"
        const log = document.getElementById('log');
        const a = [...document.querySelectorAll('.msg.assistant .answer')].pop();
        for (const l of a.querySelectorAll('a')) l.click();
        return {
            pwned: window.pwned === undefined ? null : window.pwned,
            elements: log.querySelectorAll(
                'img, script, iframe, svg, style, details, object, embed, [onerror], [onclick], [onload], [ontoggle]'
            ).length,
            js_links: log.querySelectorAll('a[href^="javascript" i]').length,
            text: a.innerText,
            hidden_body: getComputedStyle(document.body).display === 'none',
        };
    "#)
        .await;
    assert_eq!(r["pwned"], Value::Null, "{r:#}");
    assert_eq!(r["elements"], 0, "{r:#}");
    assert_eq!(r["js_links"], 0, "{r:#}");
    assert_eq!(r["hidden_body"], false, "{r:#}");
    let text = r["text"].as_str().unwrap();
    for shown in [
        "Look: <img src=x onerror=\"window.pwned=1;alert(1)\">",
        "<script>window.pwned=2;alert(2)</script>",
        "<iframe src=\"javascript:window.pwned=3\"></iframe>",
        "<svg onload=\"window.pwned=8\"><circle/></svg>",
        "<style>body{display:none}</style>",
    ] {
        assert!(
            text.contains(shown),
            "{shown:?} not shown as text in {text:?}"
        );
    }
    assert!(
        b.c.get_alert_text().await.is_err(),
        "a dialog opened from model output"
    );
    // Still a live page: the next answer streams as usual.
    fake.set(Behavior::Echo);
    b.ask("still fine?").await;
    assert_eq!(b.answer_done().await["text"], "still fine?");
    b.quit().await;
}

/// Two conversations survive a reload; switching shows each one's
/// transcript and continues it under its own `conversation_id` (the
/// gateway's memory reaches Ollama); turns past `history_turns` are marked
/// as no longer sent; rename and delete persist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_survive_a_reload_and_switch() {
    let fake = FakeOllama::start().await;
    let gw = gateway()
        .ollama(&fake.url())
        .client(CLIENT, SECRET, false)
        .set("ollama.model", MODELS[0])
        .set("ollama.allowed_models", MODELS.to_vec())
        .set("ollama.history_turns", 1)
        .start();
    let Some(b) = signed_in(&gw, "conversations_survive_a_reload_and_switch", &[]).await else {
        return;
    };
    fake.set(Behavior::Echo);
    for q in ["alpha one", "alpha two"] {
        b.ask(q).await;
        assert_eq!(b.answer_done().await["text"], q);
    }
    // history_turns = 1: the next question carries only "alpha two", and
    // the page says so above it.
    let note = "const n = document.querySelector('.notice.forgotten'); \
                return n && [n.textContent, n.nextElementSibling.dataset.turn];";
    let shown = b.until("the history note", note).await;
    assert_eq!(
        shown,
        json!([
            "Earlier turns are not sent to the model: the gateway keeps the last turn of a conversation.",
            "1"
        ])
    );

    b.click("#new-conversation").await;
    b.ask("beta one").await;
    b.answer_done().await;
    assert_eq!(titles(&b).await, json!(["beta one", "alpha one"]));

    b.c.refresh().await.unwrap();
    b.wait_connected().await;
    assert_eq!(titles(&b).await, json!(["beta one", "alpha one"]));
    let t = b.until("the transcript", TRANSCRIPT).await;
    assert_eq!(
        t,
        json!([["beta one"], ["beta one"]]),
        "this tab's conversation"
    );

    click_entry(&b, "alpha one", ".conv-open").await;
    let t = b.js(TRANSCRIPT).await;
    assert_eq!(
        t,
        json!([["alpha one", "alpha two"], ["alpha one", "alpha two"]])
    );
    assert_eq!(b.js(note).await[1], "1");
    b.ask("alpha three").await;
    b.answer_done().await;
    let sent = fake.requests().last().unwrap().clone();
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["alpha two", "alpha two", "alpha three"],
        "{sent:#}"
    );

    // Rename by typing; the name survives a reload.
    click_entry(&b, "alpha one", ".conv-rename").await;
    // It opens focused with the old name selected, so typing replaces it.
    let input = b.c.find(Locator::Css(".conv-title")).await.unwrap();
    input
        .send_keys(&format!("Renamed chat{}", Key::Enter))
        .await
        .unwrap();
    b.until(
        "the new name",
        "return document.querySelector('#conversation-list .conv-open').textContent \
         === 'Renamed chat';",
    )
    .await;
    b.c.refresh().await.unwrap();
    b.wait_connected().await;
    assert_eq!(titles(&b).await, json!(["Renamed chat", "beta one"]));
    assert_eq!(b.js(TRANSCRIPT).await[0].as_array().unwrap().len(), 3);

    // Delete asks first; then the conversation and its key are gone.
    click_entry(&b, "beta one", ".conv-delete").await;
    b.c.accept_alert().await.unwrap();
    b.until(
        "one conversation left",
        "return document.querySelectorAll('#conversation-list li').length === 1",
    )
    .await;
    let keys = b
        .js("return Object.keys(localStorage).filter(k => k.startsWith('tars.conversation')).length")
        .await;
    assert_eq!(keys, 2, "the index and one conversation");
    click_entry(&b, "Renamed chat", ".conv-delete").await;
    b.c.accept_alert().await.unwrap();
    b.until(
        "a new empty conversation",
        "return document.querySelectorAll('#conversation-list li').length === 0 \
         && document.querySelectorAll('.msg').length === 0",
    )
    .await;
    b.quit().await;
}

/// Under a dark system theme (`--force-dark-mode`) the page is dark
/// (`dark` class on <html>, dark background); the toggle switches to light
/// and the choice survives a reload; toggling back follows the system again
/// (nothing stored). Photographed for docs/screenshot-dark.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_mode_follows_the_system_and_toggles() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let test = "dark_mode_follows_the_system_and_toggles";
    let Some(b) = signed_in(&gw, test, &["--force-dark-mode"]).await else {
        return;
    };
    let theme = "const bg = getComputedStyle(document.body).backgroundColor \
                 .match(/\\d+/g).slice(0, 3).map(Number); \
                 return [matchMedia('(prefers-color-scheme: dark)').matches, \
                         document.documentElement.className, \
                         bg.reduce((a, b) => a + b, 0) < 3 * 128, \
                         localStorage.getItem('tars.theme')];";
    assert_eq!(b.js(theme).await, json!([true, "dark", true, null]));

    b.click("#theme").await;
    assert_eq!(b.js(theme).await, json!([true, "light", false, "light"]));
    b.c.refresh().await.unwrap();
    b.wait_connected().await;
    assert_eq!(b.js(theme).await, json!([true, "light", false, "light"]));
    b.click("#theme").await;
    assert_eq!(b.js(theme).await, json!([true, "dark", true, null]));

    fake.set(Behavior::stream(pieces(DOC, 12)));
    b.ask("How do I make tea?").await;
    b.answer_done().await;
    show_last_question(&b).await;
    screenshot(&b, "screenshot-dark.png").await;
    b.quit().await;
}

/// Under a light system theme the toggle stores "dark", which a reload
/// keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_system_theme_and_a_stored_dark_choice() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let test = "light_system_theme_and_a_stored_dark_choice";
    let Some(b) = Browser::start_with(&gw, test, None, &[]).await else {
        return;
    };
    b.goto(&gw).await;
    let theme = "return [matchMedia('(prefers-color-scheme: dark)').matches, \
                 document.documentElement.className, localStorage.getItem('tars.theme'), \
                 document.getElementById('theme').getAttribute('aria-pressed')];";
    assert_eq!(b.js(theme).await, json!([false, "light", null, "false"]));
    b.click("#theme").await;
    assert_eq!(b.js(theme).await, json!([false, "dark", "dark", "true"]));
    b.c.refresh().await.unwrap();
    b.until(
        "the page after the reload",
        "return document.readyState === 'complete' && document.documentElement.className",
    )
    .await;
    assert_eq!(b.js(theme).await, json!([false, "dark", "dark", "true"]));
    b.quit().await;
}

/// Issue 17's frames, ahead of the gateway sending them: the page's own
/// socket handler is given `status` and `error` frames (the socket is
/// caught when the page sends its chat) while the real answer waits on a
/// slow first token. "waiting (2 ahead)", then "loading model…", replace the
/// silent cursor; the first token clears them; `resumed_elsewhere` and
/// `resume_unavailable` end the answer with a line, not an error notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_frames_and_resume_errors() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let Some(b) = signed_in(&gw, "status_frames_and_resume_errors", &[]).await else {
        return;
    };
    // Catch the page's socket when it sends, and list the frames it gets
    // (this listener runs after the page's own handler).
    b.js("const send = WebSocket.prototype.send; window.seen = []; \
         WebSocket.prototype.send = function (d) { \
             if (window.sock !== this) this.addEventListener('message', \
                 e => window.seen.push(JSON.parse(e.data).type)); \
             window.sock = this; return send.call(this, d); }; \
         window.frame = (f) => window.sock.onmessage({ data: JSON.stringify(Object.assign( \
             { conversation_id: sessionStorage.getItem('tars.conversation_id') }, f)) });")
        .await;
    let phase = "const a = [...document.querySelectorAll('.msg.assistant')].pop(); \
                 const p = a.querySelector('.phase'); return p.hidden ? '' : p.textContent;";

    fake.set(Behavior::stream(["first token"]).first_delay(Duration::from_secs(3)));
    b.ask("slow").await;
    b.until("the socket", "return !!window.sock").await;
    assert_eq!(b.js(phase).await, "");
    b.js("frame({type: 'status', phase: 'queued', position: 2}); return 1")
        .await;
    assert_eq!(b.js(phase).await, "waiting (2 ahead)");
    b.js("frame({type: 'status', phase: 'loading_model', model: 'mistral:7b-instruct'}); return 1")
        .await;
    assert_eq!(b.js(phase).await, "loading model…");
    let a = b.answer_done().await;
    assert_eq!(a["text"], "first token");
    assert_eq!(b.js(phase).await, "");

    let mut completes = 1;
    for (code, done, line) in [
        (
            "resumed_elsewhere",
            "moved",
            "This answer goes on in another window or tab of this client.",
        ),
        (
            "resume_unavailable",
            "interrupted",
            "The rest of this answer could not be recovered: ask again.",
        ),
    ] {
        fake.set(Behavior::stream(["late"]).first_delay(Duration::from_secs(2)));
        b.ask(code).await;
        b.js(&format!(
            "frame({{type: 'error', code: '{code}', message: 'x'}}); return 1"
        ))
        .await;
        let a = b.last_answer().await;
        assert_eq!(
            (a["done"].as_str(), a["stats"].as_str()),
            (Some(done), Some(line))
        );
        // The real answer that arrives later is not this page's any more.
        completes += 1;
        b.until(
            "the gateway's own complete",
            &format!("return window.seen.filter(t => t === 'complete').length === {completes}"),
        )
        .await;
        let errors = b
            .js("return document.querySelectorAll('.notice.error').length")
            .await;
        assert_eq!(errors, 0);
        assert_eq!(b.last_answer().await["text"], "");
        b.until(
            "Send to be enabled",
            "return !document.getElementById('send').disabled",
        )
        .await;
    }
    b.quit().await;
}
