//! The chat page end to end in a real headless Chromium, against the real
//! gateway binary and the fake Ollama: sign in, stream text byte-exact (HTML
//! and emoji rendered as text), Stop, reconnect after the gateway restarts,
//! token refresh, a wrong secret, a pasted token at phone width (with the
//! conversation drawer). `browser/page.rs`: Markdown while it streams,
//! hostile HTML in model output, conversations kept across a reload, the
//! dark theme. `browser/harness.rs`: Chromium behind chromedriver.
//!
//! Chromium is Debian's `chromium` package, driven through its
//! `chromium-driver` (chromedriver, W3C WebDriver on loopback) by the
//! `fantoccini` crate. It trusts exactly the test gateway's self-signed
//! certificate: `--ignore-certificate-errors-spki-list` pins the SHA-256 of
//! its public key (no blanket `--ignore-certificate-errors`). `.ci/run`
//! installs both packages; where they are missing every browser test prints
//! `SKIPPED: chromium not available` and passes locally, so the rest of the
//! suite still runs, but FAILS under `CI=true`. The HTTP-level tests at the
//! end need no browser.
//!
//! `TARS_CHROMIUM` and `TARS_CHROMEDRIVER` name other binaries (a path that
//! does not exist counts as missing).
//! `TARS_UPDATE_SCREENSHOT=1 cargo test --test browser` rewrites
//! `docs/screenshot.png` and `docs/screenshot-dark.png` (and two more
//! never committed); otherwise the screenshots go to a temporary folder.

#[path = "browser/harness.rs"]
mod harness;
#[path = "browser/page.rs"]
mod page;
#[path = "browser/pairing.rs"]
mod pairing;
mod support;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;
use support::fake_ollama::{Behavior, FakeOllama};
use support::*;

// ---- the browser tests ---------------------------------------------------------

/// Sign in, pick a model, stream an answer with HTML, quotes, emoji, a
/// newline and a tab byte-exact as text, see thinking and the stats; a
/// second turn continues the conversation (the history reaches Ollama) and
/// is photographed mid-answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_stream_text_byte_exact() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let Some(b) = Browser::start(&gw, "sign_in_and_stream_text_byte_exact").await else {
        return;
    };
    b.goto(&gw).await;
    b.until(
        "the sign-in form",
        "return !document.getElementById('sign-in-view').hidden",
    )
    .await;
    b.sign_in(CLIENT, SECRET).await;
    b.wait_connected().await;

    // Tokens live in sessionStorage only (localStorage is for the
    // conversations, none yet, and the theme, not chosen).
    let storage = b
        .js("return [!!sessionStorage.getItem('tars.access_token'), \
             !!sessionStorage.getItem('tars.refresh_token'), localStorage.length, document.cookie]")
        .await;
    assert_eq!(storage, json!([true, true, 0, ""]));

    // The picker holds exactly the client's models, the default selected.
    let models = b
        .until(
            "the model picker",
            "const o = [...document.querySelectorAll('#model option')].map(o => o.value); \
             return o.length ? [o, document.getElementById('model').value] : null;",
        )
        .await;
    assert_eq!(models, json!([MODELS, MODELS[0]]));
    b.click(&format!("#model option[value='{}']", MODELS[1]))
        .await;

    let tokens = [
        "Hello ",
        "<b>bold</b>",
        " & \"quotes\" \\ ",
        "<img src=x onerror=\"window.pwned=1\">",
        "😀🚀 ",
        "é\n",
        "tab\tend",
    ];
    let expected: String = tokens.concat();
    fake.set(
        Behavior::stream(tokens)
            .thinking(["Let me think <i>", "carefully</i>."])
            .delay(Duration::from_millis(20)),
    );
    let prompt = "Say <b>hi</b> 👋";
    b.ask(prompt).await;
    let a = b.answer_done().await;
    // The answer is kept byte-exact and rendered as Markdown in which the
    // model's HTML is text: a paragraph whose text is the same bytes.
    assert_eq!(a["source"], json!(expected), "{a:#}");
    assert_eq!(a["text"], json!(expected), "{a:#}");
    assert_eq!(
        a["foreign_elements"],
        json!([]),
        "model output became HTML: {a:#}"
    );
    assert_eq!(a["handler_attributes"], json!([]), "{a:#}");
    assert_eq!(a["thinking"], "Let me think <i>carefully</i>.");
    assert_eq!(a["thinking_shown"], true);
    assert_eq!(a["done"], "stop");
    assert_eq!(a["who"], MODELS[1]);
    let stats = a["stats"].as_str().unwrap();
    // `complete.total_tokens`: Ollama's eval_count, the thinking tokens included.
    assert!(
        stats.starts_with(&format!("{} tokens · first token ", tokens.len() + 2)),
        "{stats}"
    );
    assert!(
        stats.contains(" tokens/s · ") && stats.contains(" total"),
        "{stats}"
    );
    // Nothing ran, no <b>/<img>/<i> anywhere in the conversation.
    let clean = b
        .js("return [window.pwned === undefined, \
             document.querySelectorAll('#log b, #log img, #log i').length, \
             document.querySelector('.msg.user .text').textContent]")
        .await;
    assert_eq!(clean, json!([true, 0, prompt]));
    // localStorage now holds the conversation, and still no token.
    let leaked = b
        .js("const t = [sessionStorage.getItem('tars.access_token'), \
                        sessionStorage.getItem('tars.refresh_token')]; \
             const all = Object.keys(localStorage).map(k => k + localStorage.getItem(k)).join(); \
             return [localStorage.length > 0, t.some(x => all.includes(x))];")
        .await;
    assert_eq!(leaked, json!([true, false]));
    // The CSP is in force: an inline script does not run (and the page's own
    // wss:// connection, made under `connect-src 'self'`, did).
    let blocked = b
        .js("const s = document.createElement('script'); \
             s.textContent = 'window.inlineRan = 1'; document.body.append(s); \
             return window.inlineRan === undefined;")
        .await;
    assert_eq!(blocked, true, "an inline script ran: no CSP");
    let first = fake.requests().last().unwrap().clone();
    assert_eq!(first["model"], MODELS[1]);

    // Second turn: the same conversation_id, so Ollama gets the history.
    let slow: Vec<String> = "Paris is the capital of France. It sits on the Seine, \
        and is known for the Eiffel Tower, the Louvre and its cafés."
        .split_inclusive(' ')
        .map(str::to_string)
        .collect();
    fake.set(Behavior::stream(slow.clone()).delay(Duration::from_millis(120)));
    b.ask("And what is the capital of France?").await;
    b.until(
        "the second answer to be half way",
        "const a = [...document.querySelectorAll('.msg.assistant .answer')].pop(); \
         return a.textContent.length > 40;",
    )
    .await;
    // Mid-answer: the streaming cursor (docs/screenshot*.png come from
    // browser/page.rs, with Markdown on screen).
    screenshot(&b, "mid-answer.png").await;
    let a = b.answer_done().await;
    assert_eq!(a["text"], json!(slow.concat()));
    let second = fake.requests().last().unwrap().clone();
    let messages = second["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{second:#}");
    assert_eq!(messages[0]["content"], prompt);
    assert_eq!(messages[1]["content"], json!(expected));

    // New conversation: a fresh id, so no history.
    b.click("#new-conversation").await;
    fake.set(Behavior::Echo);
    b.ask("fresh start").await;
    let a = b.answer_done().await;
    assert_eq!(a["text"], "fresh start");
    let third = fake.requests().last().unwrap().clone();
    assert_eq!(third["messages"].as_array().unwrap().len(), 1, "{third:#}");
    b.quit().await;
}

/// Stop mid-stream: the page sends `cancel`, the upstream request is
/// dropped, the answer ends as "Stopped" with its stats, and the next prompt
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_mid_stream() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let Some(b) = Browser::start(&gw, "stop_mid_stream").await else {
        return;
    };
    b.goto(&gw).await;
    b.sign_in(CLIENT, SECRET).await;
    b.wait_connected().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(30),
    });
    b.ask("never stop").await;
    b.until(
        "some streamed text and a Stop button",
        "const a = [...document.querySelectorAll('.msg.assistant .answer')].pop(); \
         return a && a.textContent.length > 20 && !document.getElementById('stop').hidden;",
    )
    .await;
    b.click("#stop").await;
    let a = b.answer_done().await;
    assert_eq!(a["done"], "cancelled", "{a:#}");
    assert!(
        a["stats"].as_str().unwrap().starts_with("Stopped · "),
        "{a:#}"
    );
    assert!(!a["text"].as_str().unwrap().is_empty());
    assert!(
        fake.wait_stream_closed(Duration::from_secs(5))
            .await
            .is_some(),
        "the upstream request was not dropped"
    );
    let stop_hidden = b.js("return document.getElementById('stop').hidden").await;
    assert_eq!(stop_hidden, true);

    fake.set(Behavior::Echo);
    b.ask("after the stop").await;
    let a = b.answer_done().await;
    assert_eq!(a["text"], "after the stop");
    assert_eq!(a["done"], "stop");
    b.quit().await;
}

/// Issue 17: the page's socket is killed mid-answer. The page reconnects
/// on its own, sends `resume` with the last seq it showed, and the answer
/// continues where it stopped: the whole text once, nothing missing or
/// doubled, from one upstream request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_continues_after_the_socket_is_killed() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let Some(b) = Browser::start(&gw, "the_answer_continues_after_the_socket_is_killed").await
    else {
        return;
    };
    b.goto(&gw).await;
    b.sign_in(CLIENT, SECRET).await;
    b.wait_connected().await;
    b.js("const send = WebSocket.prototype.send; window.sent = []; \
         WebSocket.prototype.send = function (d) { window.sock = this; \
             window.sent.push(JSON.parse(d)); return send.call(this, d); }; return 1")
        .await;
    let toks: Vec<String> = (1..=150).map(|i| format!(" w{i}")).collect();
    fake.set(Behavior::stream(toks.clone()).delay(Duration::from_millis(10)));
    b.ask("a long answer").await;
    b.until(
        "part of the answer",
        "const a = [...document.querySelectorAll('.msg.assistant .answer')].pop(); \
         return a && a.textContent.length > 40",
    )
    .await;
    b.js("window.sock.close(); return 1").await;
    let a = b.answer_done().await;
    assert_eq!(a["done"], "stop", "{a:#}");
    assert_eq!(a["source"], toks.concat(), "{a:#}");
    assert_eq!(a["text"], toks.concat(), "{a:#}");
    let resume = b
        .js("return window.sent.filter(m => m.type === 'resume')")
        .await;
    let resume = resume.as_array().unwrap();
    assert_eq!(resume.len(), 1, "{resume:?}");
    assert!(resume[0]["last_seq"].as_u64().unwrap() >= 5, "{resume:?}");
    assert_eq!(fake.chat_count(), 1, "resumed, not asked again");
    b.quit().await;
}

/// The gateway goes away under the page (SIGTERM: it tells the page it is
/// shutting down and closes the socket with 1001) and comes back on the
/// same port, certificate and signing key, as after `systemctl restart`. The
/// page shows that it is reconnecting, retries with backoff, reconnects on
/// its own, and chats again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_gateway_restart() {
    let fake = FakeOllama::start().await;
    let mut gw = start_gateway(&fake).await;
    let Some(b) = Browser::start(&gw, "reconnects_after_gateway_restart").await else {
        return;
    };
    b.goto(&gw).await;
    b.sign_in(CLIENT, SECRET).await;
    b.wait_connected().await;

    // Keep what the replacement needs before the old one's folder goes.
    let next = gateway()
        .without_cert()
        .ollama(&fake.url())
        .client(CLIENT, SECRET, false)
        .set("ollama.model", MODELS[0])
        .set("ollama.allowed_models", MODELS.to_vec())
        .set("server.listen", gw.addr.to_string());
    std::fs::create_dir_all(next.dir().join("certs")).unwrap();
    for f in ["tars.crt", "tars.key"] {
        std::fs::copy(
            gw.dir.path().join("certs").join(f),
            next.dir().join("certs").join(f),
        )
        .unwrap();
    }

    gw.signal("TERM");
    let notice = b
        .until(
            "the shutdown notice",
            "const n = [...document.querySelectorAll('.notice.system')].pop(); \
             return n && n.textContent;",
        )
        .await;
    assert!(
        notice.as_str().unwrap().contains("shutting down"),
        "{notice}"
    );
    let status = b
        .until(
            "the reconnecting status",
            "const s = document.getElementById('status'); \
             return s.dataset.state === 'reconnecting' && s.textContent.includes('reconnecting in') \
                    && s.textContent;",
        )
        .await;
    assert!(
        status.as_str().unwrap().starts_with("Disconnected: "),
        "{status}"
    );
    assert!(gw.wait_exit(Duration::from_secs(15)).is_some());
    drop(gw);
    // Stay down long enough for a few failed attempts (backoff).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = b
        .js("return document.getElementById('status').textContent")
        .await;
    assert!(
        attempts.as_str().unwrap().contains("(attempt "),
        "{attempts}"
    );

    let gw = next.start();
    b.wait_connected().await;
    fake.set(Behavior::Echo);
    b.ask("still there?").await;
    let a = b.answer_done().await;
    assert_eq!(a["text"], "still there?");
    drop(gw);
    b.quit().await;
}

/// The page refreshes the access token before it expires: with the stored
/// expiry moved to a few seconds ahead (as if the day had passed), a reload
/// schedules the refresh at once; the new pair replaces the old in
/// sessionStorage, and the old refresh token is spent (rotation): presenting
/// it again is taken as theft and ends the whole token family, so the page
/// is signed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_the_token_before_it_expires() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let Some(b) = Browser::start(&gw, "refreshes_the_token_before_it_expires").await else {
        return;
    };
    b.goto(&gw).await;
    b.sign_in(CLIENT, SECRET).await;
    b.wait_connected().await;
    let old_access = session_storage(&b, "tars.access_token").await.unwrap();
    let old_refresh = session_storage(&b, "tars.refresh_token").await.unwrap();
    b.js("sessionStorage.setItem('tars.expires_at', String(Date.now() + 301000));")
        .await;
    b.c.refresh().await.unwrap();
    b.until(
        "a refreshed token",
        &format!(
            "return sessionStorage.getItem('tars.refresh_token') !== '{old_refresh}' \
             && sessionStorage.getItem('tars.access_token') !== '{old_access}'"
        ),
    )
    .await;
    b.wait_connected().await;
    let expires_at = b
        .js("return Number(sessionStorage.getItem('tars.expires_at')) - Date.now()")
        .await;
    assert!(expires_at.as_f64().unwrap() > 86_000_000.0, "{expires_at}");
    fake.set(Behavior::Echo);
    b.ask("after refresh").await;
    assert_eq!(b.answer_done().await["text"], "after refresh");
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": old_refresh}),
        None,
    )
    .await;
    assert_eq!(r.status, 401, "the old refresh token still works");
    let err = b
        .until(
            "the page signed out by the family revocation",
            "const e = document.getElementById('sign-in-error'); \
             return !e.hidden && e.textContent;",
        )
        .await;
    assert!(err.as_str().unwrap().contains("family"), "{err}");
    b.quit().await;
}

/// A wrong secret shows the gateway's error and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_shows_an_error() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let Some(b) = Browser::start(&gw, "wrong_secret_shows_an_error").await else {
        return;
    };
    b.goto(&gw).await;
    b.sign_in(CLIENT, "not-the-secret").await;
    let err = b
        .until(
            "the sign-in error",
            "const e = document.getElementById('sign-in-error'); \
             return !e.hidden && e.textContent;",
        )
        .await;
    assert_eq!(err, "Sign-in failed: unknown client or wrong secret.");
    let state = b
        .js(
            "return [sessionStorage.length, document.getElementById('chat-view').hidden, \
             document.getElementById('status').dataset.state]",
        )
        .await;
    assert_eq!(state, json!([0, true, "signed-out"]));
    b.quit().await;
}

/// At a phone's width (360 px) nothing overflows sideways and the composer is
/// on screen; this one signs in with a pasted access token (no refresh
/// token), then signs out, which revokes the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_width_and_pasted_token() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let phone = Some((360, 740));
    let Some(b) = Browser::start_with(&gw, "phone_width_and_pasted_token", phone, &[]).await else {
        return;
    };
    let token = chat::token_for(&gw, CLIENT, Some(SECRET)).await;
    b.goto(&gw).await;
    assert_eq!(b.js(FITS).await, json!([360, true, true]), "sign-in view");
    b.click("details summary").await;
    b.fill("#token-input", &token).await;
    b.click("#use-token").await;
    b.wait_connected().await;
    assert_eq!(session_storage(&b, "tars.refresh_token").await, None);
    fake.set(Behavior::stream([
        "A long line without spaces: ",
        &"x".repeat(300),
    ]));
    b.ask("wide?").await;
    b.answer_done().await;
    assert_eq!(b.js(FITS).await, json!([360, true, true]), "chat view");
    screenshot(&b, "phone.png").await;

    // The conversation list is a drawer: off screen until ☰ opens it, then
    // on screen and no wider than the phone; picking a conversation closes it.
    let drawer = "const r = document.getElementById('sidebar').getBoundingClientRect(); \
                  return [r.right <= 0, r.left >= 0 && r.right <= window.innerWidth && r.width > 200];";
    assert_eq!(b.js(drawer).await, json!([true, false]), "closed drawer");
    b.click("#menu").await;
    b.until(
        "the drawer to open",
        &format!("return ({})()[1];", drawer_fn(drawer)),
    )
    .await;
    assert_eq!(b.js(FITS).await, json!([360, true, true]), "open drawer");
    let items = b
        .js("return [...document.querySelectorAll('#conversation-list .conv-open')].map(e => e.textContent)")
        .await;
    assert_eq!(items, json!(["wide?"]));
    screenshot(&b, "phone-drawer.png").await;
    b.click("#conversation-list .conv-open").await;
    b.until(
        "the drawer to close",
        &format!("return ({})()[0];", drawer_fn(drawer)),
    )
    .await;

    b.click("#sign-out").await;
    let state = b
        .until(
            "the sign-in form again",
            "return !document.getElementById('sign-in-view').hidden \
             && [sessionStorage.getItem('tars.access_token'), \
                 document.getElementById('status').dataset.state];",
        )
        .await;
    assert_eq!(state, json!([null, "signed-out"]));
    // Signing out revoked the token (best effort, right after the click).
    let end = Instant::now() + WAIT;
    loop {
        let r = post_json(&gw, "/auth/validate", &json!({}), Some(&token)).await;
        if r.status == 401 {
            assert_eq!(r.json()["reason"], "revoked", "{}", r.text());
            break;
        }
        assert!(Instant::now() < end, "sign-out did not revoke the token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.quit().await;
}

/// `gzip -9 | wc -c` of `bytes`.
fn gzip9_len(bytes: &[u8]) -> usize {
    use std::io::Write as _;
    let mut gz = std::process::Command::new("gzip")
        .arg("-9c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = gz.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = gz.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout.len()
}

/// A function expression of a script body, to call from another script.
fn drawer_fn(body: &str) -> String {
    format!("() => {{ {body} }}")
}

// ---- HTTP level (no browser needed) ------------------------------------------------

/// `/` is negotiated, the static files carry their types, validators and the
/// security headers, and `If-None-Match` gets 304.
#[tokio::test]
async fn page_and_static_files_over_https() {
    let gw = gateway().start();
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let page = request(&gw, "GET", "/", &[("accept", html)], None).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("/static/app.js"));
    let csp = page.header("content-security-policy").unwrap();
    assert_eq!(
        csp,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("vary"), Some("Accept"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));

    let api = get(&gw, "/").await;
    assert_eq!(api.header("content-type"), Some("application/json"));
    assert_eq!(api.header("vary"), Some("Accept"));
    let endpoints = api.json()["endpoints"].clone();
    for e in ["GET /models", "GET /static/app.js", "GET /static/app.css"] {
        assert!(endpoints.as_array().unwrap().contains(&json!(e)), "{e}");
    }

    for (path, ct) in [
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/app.css", "text/css; charset=utf-8"),
    ] {
        let r = get(&gw, path).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(ct));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let etag = r.header("etag").unwrap().to_string();
        assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
        let again = request(&gw, "GET", path, &[("if-none-match", &etag)], None).await;
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        let head = request(&gw, "HEAD", path, &[], None).await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
    }
    // Everything the page loads, as served, under 200 KB compressed.
    let mut gzipped = 0;
    for (path, accept) in [
        ("/", html),
        ("/static/app.js", "*/*"),
        ("/static/app.css", "*/*"),
    ] {
        let r = request(&gw, "GET", path, &[("accept", accept)], None).await;
        assert_eq!(r.status, 200, "{path}");
        gzipped += gzip9_len(&r.body);
    }
    say(&format!("chat page assets: {gzipped} bytes gzip -9"));
    assert!(gzipped < 200 * 1024, "{gzipped} bytes compressed");
    for path in [
        "/static/",
        "/static/../Cargo.toml",
        "/static/%2e%2e/Cargo.toml",
        "/static/index.html",
        "/static/app.js/",
    ] {
        assert_eq!(get(&gw, path).await.status, 404, "{path}");
    }
}

/// `GET /models` lists the bearer's models and refuses everyone else.
#[tokio::test]
async fn models_endpoint() {
    let gw = gateway()
        .client(CLIENT, SECRET, false)
        .set("ollama.model", MODELS[0])
        .set("ollama.allowed_models", MODELS.to_vec())
        .start();
    let r = get(&gw, "/models").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "missing_token");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = request(
        &gw,
        "GET",
        "/models",
        &[("authorization", "Bearer nope")],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_token");

    let token = chat::token_for(&gw, CLIENT, Some(SECRET)).await;
    let bearer = format!("Bearer {token}");
    let r = request(&gw, "GET", "/models", &[("authorization", &bearer)], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"default": MODELS[0], "models": MODELS, "history_turns": 20,
               "conversation_idle_secs": 3600})
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
}
