//! The chat page end to end in a real headless Chromium, against the real
//! gateway binary and the fake Ollama: sign in, stream text byte-exact (HTML
//! and emoji rendered as text), Stop, reconnect after the gateway restarts,
//! token refresh, a wrong secret, a pasted token at phone width.
//!
//! Chromium is Debian's `chromium` package, driven through its
//! `chromium-driver` (chromedriver, W3C WebDriver on loopback) by the
//! `fantoccini` crate. It trusts exactly the test gateway's self-signed
//! certificate: `--ignore-certificate-errors-spki-list` pins the SHA-256 of
//! its public key (no blanket `--ignore-certificate-errors`). `.ci/run`
//! installs both packages; where they are missing every browser test prints
//! `SKIPPED: chromium not available` and passes, so the rest of the suite
//! still runs. The HTTP-level tests at the end need no browser.
//!
//! `TARS_CHROMIUM` and `TARS_CHROMEDRIVER` name other binaries (a path that
//! does not exist skips the browser tests).
//! `TARS_UPDATE_SCREENSHOT=1 cargo test --test browser` rewrites
//! `docs/screenshot.png` (the page mid-answer); otherwise the screenshot goes
//! to a temporary folder.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::fake_ollama::{Behavior, FakeOllama};
use support::*;

const CLIENT: &str = "web";
const SECRET: &str = "web-secret";
const MODELS: [&str; 2] = ["mistral:7b-instruct", "llama3.2:3b"];
/// How long any one condition in the page may take to come true.
const WAIT: Duration = Duration::from_secs(20);

/// Browser tests share 2 cores: one Chromium at a time.
static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- Chromium ------------------------------------------------------------

/// The Chromium binary and chromedriver, when installed.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    // An explicit path wins (and, when it does not exist, skips the tests);
    // /usr/lib/chromium/chromium is the real binary behind Debian's
    // /usr/bin/chromium wrapper script.
    let find = |var: &str, defaults: [&str; 2]| match std::env::var_os(var) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => defaults
            .map(PathBuf::from)
            .into_iter()
            .find(|p| p.is_file()),
    };
    let chromium = find(
        "TARS_CHROMIUM",
        ["/usr/lib/chromium/chromium", "/usr/bin/chromium"],
    )?;
    let driver = find(
        "TARS_CHROMEDRIVER",
        ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
    )?;
    Some((chromium, driver))
}

/// Print past the test harness's output capture, so a skip is seen.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `base64(sha256(SubjectPublicKeyInfo))` of the gateway's key: what
/// Chromium's `--ignore-certificate-errors-spki-list` pins.
fn spki_pin(gw: &Gateway) -> String {
    use rcgen::PublicKeyData;
    let key = gw.cert.as_ref().unwrap().with_file_name("tars.key");
    let pem = std::fs::read_to_string(&key).unwrap();
    let spki = rcgen::KeyPair::from_pem(&pem)
        .unwrap()
        .subject_public_key_info();
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A headless Chromium behind its own chromedriver, with a fresh profile.
struct Browser {
    c: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _lock: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// Start Chromium trusting `gw`'s certificate, or `None` (after saying
    /// so) when it is not installed.
    async fn start(gw: &Gateway, test: &str) -> Option<Browser> {
        Self::start_with(gw, test, None).await
    }

    /// [`Self::start`], with chromedriver's `mobileEmulation` set to a
    /// `width`×`height` CSS-pixel screen when given.
    async fn start_with(gw: &Gateway, test: &str, phone: Option<(u32, u32)>) -> Option<Browser> {
        let Some((chromium, driver_bin)) = browser_binaries() else {
            say(&format!(
                "SKIPPED: chromium not available (install Debian's chromium and chromium-driver; .ci/run does): {test}"
            ));
            return None;
        };
        let lock = BROWSER_LOCK.lock().await;
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).unwrap();
        let mut driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let data_dir = profile.path().join("profile");
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=960,720".into(),
            format!("--user-data-dir={}", data_dir.display()),
            format!("--ignore-certificate-errors-spki-list={}", spki_pin(gw)),
        ];
        let mut caps = serde_json::Map::new();
        let mut options = json!({"binary": chromium, "args": args});
        if let Some((width, height)) = phone {
            options["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2, "touch": true}
            });
        }
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = match ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.kill();
                let log = std::fs::read_to_string(profile.path().join("chromedriver.log"))
                    .unwrap_or_default();
                panic!("chromium did not start through chromedriver: {e}\n{log}");
            }
        };
        Some(Browser {
            c,
            driver,
            _profile: profile,
            _lock: lock,
        })
    }

    async fn goto(&self, gw: &Gateway) {
        self.c.goto(&format!("{}/", gw.base_url())).await.unwrap();
    }

    /// Run `script` (a function body) in the page and return its value.
    async fn js(&self, script: &str) -> Value {
        self.c
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Poll `script` until it returns something truthy; return that value.
    async fn until(&self, what: &str, script: &str) -> Value {
        let end = Instant::now() + WAIT;
        loop {
            let v = self.js(script).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > end {
                let page = self.js(PAGE_STATE).await;
                panic!("timed out waiting for {what}; page: {page:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Fill the sign-in form and submit it.
    async fn sign_in(&self, client: &str, secret: &str) {
        self.fill("#client-id", client).await;
        self.fill("#client-secret", secret).await;
        self.click("#sign-in").await;
    }

    async fn wait_connected(&self) {
        self.until(
            "the page to connect",
            "return document.getElementById('status').dataset.state === 'connected'",
        )
        .await;
    }

    /// Type a prompt and press Send.
    async fn ask(&self, prompt: &str) {
        self.until(
            "Send to be enabled",
            "return !document.getElementById('send').disabled",
        )
        .await;
        // The value is set by script: chromedriver's send_keys cannot type
        // characters outside the Basic Multilingual Plane (emoji).
        self.c
            .execute(
                "document.getElementById('prompt').value = arguments[0];",
                vec![json!(prompt)],
            )
            .await
            .unwrap();
        self.click("#send").await;
    }

    /// The last answer: text, thinking, stats, how it ended, and whether any
    /// element was created inside the answer text.
    async fn last_answer(&self) -> Value {
        self.js(LAST_ANSWER).await
    }

    /// Wait until the last answer has ended; return [`Self::last_answer`].
    async fn answer_done(&self) -> Value {
        self.until(
            "the answer to end",
            "const a = [...document.querySelectorAll('.msg.assistant')].pop(); \
             return !!(a && a.dataset.done);",
        )
        .await;
        self.last_answer().await
    }

    async fn quit(mut self) {
        let _ = self.c.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const LAST_ANSWER: &str = r#"
    const a = [...document.querySelectorAll('.msg.assistant')].pop();
    if (!a) return null;
    const text = a.querySelector('.answer');
    return {
        text: text.textContent,
        elements_inside: text.querySelectorAll('*').length,
        thinking: a.querySelector('.thinking').textContent,
        thinking_shown: !a.querySelector('.thinking').hidden,
        stats: a.querySelector('.stats').textContent,
        done: a.dataset.done || null,
        who: a.querySelector('.who').textContent,
    };
"#;

/// [viewport width, nothing wider than it, the visible view's last control
/// on screen].
const FITS: &str = r#"
    const w = window.innerWidth;
    const view = document.getElementById('chat-view').hidden ? '#sign-in-view' : '#composer';
    const r = document.querySelector(view).getBoundingClientRect();
    return [w, document.documentElement.scrollWidth <= w,
            r.right <= w && r.bottom <= window.innerHeight];
"#;

const PAGE_STATE: &str = r#"
    return {
        status: document.getElementById('status').textContent,
        state: document.getElementById('status').dataset.state,
        sign_in_error: document.getElementById('sign-in-error').textContent,
        log: document.getElementById('log').innerText,
    };
"#;

/// `Drop` kills chromedriver even when a test panics.
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn start_gateway(fake: &FakeOllama) -> Gateway {
    gateway()
        .ollama(&fake.url())
        .client(CLIENT, SECRET, false)
        .set("ollama.model", MODELS[0])
        .set("ollama.allowed_models", MODELS.to_vec())
        .start()
}

async fn session_storage(b: &Browser, key: &str) -> Option<String> {
    b.c.execute(
        "return sessionStorage.getItem(arguments[0]);",
        vec![json!(key)],
    )
    .await
    .unwrap()
    .as_str()
    .map(str::to_string)
}

fn screenshot_path() -> (PathBuf, bool) {
    if std::env::var_os("TARS_UPDATE_SCREENSHOT").is_some() {
        (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshot.png"),
            true,
        )
    } else {
        (
            std::env::temp_dir().join("tars-browser-screenshot.png"),
            false,
        )
    }
}

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

    // Tokens live in sessionStorage only.
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
    assert_eq!(a["text"], json!(expected), "{a:#}");
    assert_eq!(a["elements_inside"], 0, "model output became HTML: {a:#}");
    assert_eq!(a["thinking"], "Let me think <i>carefully</i>.");
    assert_eq!(a["thinking_shown"], true);
    assert_eq!(a["done"], "stop");
    assert_eq!(a["who"], MODELS[1]);
    let stats = a["stats"].as_str().unwrap();
    assert!(
        stats.starts_with(&format!("{} tokens · first token ", tokens.len())),
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
    let png = b.c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let (path, committed) = screenshot_path();
    std::fs::write(&path, &png).unwrap();
    if committed {
        say(&format!("screenshot written to {}", path.display()));
    }
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
    let Some(b) = Browser::start_with(&gw, "phone_width_and_pasted_token", phone).await else {
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
    let png = b.c.screenshot().await.unwrap();
    std::fs::write(std::env::temp_dir().join("tars-browser-phone.png"), png).unwrap();

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
    assert_eq!(r.json(), json!({"default": MODELS[0], "models": MODELS}));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}
