//! The browser tests' harness: a headless Chromium behind its own
//! chromedriver (fantoccini), trusting exactly the test gateway's
//! certificate, and helpers that poll the page against a deadline.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::fake_ollama::FakeOllama;
use crate::support::*;

pub(crate) const CLIENT: &str = "web";
pub(crate) const SECRET: &str = "web-secret";
pub(crate) const MODELS: [&str; 2] = ["mistral:7b-instruct", "llama3.2:3b"];
/// How long any one condition in the page may take to come true.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Browser tests share 2 cores: one Chromium at a time.
pub(crate) static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- Chromium ------------------------------------------------------------

/// The Chromium binary and chromedriver, when installed.
pub(crate) fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
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
pub(crate) fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `base64(sha256(SubjectPublicKeyInfo))` of the gateway's key: what
/// Chromium's `--ignore-certificate-errors-spki-list` pins.
pub(crate) fn spki_pin(gw: &Gateway) -> String {
    use rcgen::PublicKeyData;
    let key = gw.cert.as_ref().unwrap().with_file_name("tars.key");
    let pem = std::fs::read_to_string(&key).unwrap();
    let spki = rcgen::KeyPair::from_pem(&pem)
        .unwrap()
        .subject_public_key_info();
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki))
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A headless Chromium behind its own chromedriver, with a fresh profile.
pub(crate) struct Browser {
    pub(crate) c: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _lock: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// Start Chromium trusting `gw`'s certificate, or `None` (after saying
    /// so) when it is not installed.
    pub(crate) async fn start(gw: &Gateway, test: &str) -> Option<Browser> {
        Self::start_with(gw, test, None, &[]).await
    }

    /// [`Self::start`], with chromedriver's `mobileEmulation` set to a
    /// `width`×`height` CSS-pixel screen when given, and `extra` Chromium
    /// flags (`--force-dark-mode`).
    pub(crate) async fn start_with(
        gw: &Gateway,
        test: &str,
        phone: Option<(u32, u32)>,
        extra: &[&str],
    ) -> Option<Browser> {
        let Some((chromium, driver_bin)) = browser_binaries() else {
            // Fails under CI=true (or CI=1), where .ci/run installs both.
            crate::support::tools::skip(
                test,
                "chromium not available (install Debian's chromium and chromium-driver; .ci/run does)",
            );
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
        let args: Vec<String> = args
            .into_iter()
            .chain(extra.iter().map(|a| a.to_string()))
            .collect();
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

    pub(crate) async fn goto(&self, gw: &Gateway) {
        self.c.goto(&format!("{}/", gw.base_url())).await.unwrap();
    }

    /// Run `script` (a function body) in the page and return its value.
    pub(crate) async fn js(&self, script: &str) -> Value {
        self.c
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Poll `script` until it returns something truthy; return that value.
    pub(crate) async fn until(&self, what: &str, script: &str) -> Value {
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

    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub(crate) async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Fill the sign-in form and submit it.
    pub(crate) async fn sign_in(&self, client: &str, secret: &str) {
        self.fill("#client-id", client).await;
        self.fill("#client-secret", secret).await;
        self.click("#sign-in").await;
    }

    pub(crate) async fn wait_connected(&self) {
        self.until(
            "the page to connect",
            "return document.getElementById('status').dataset.state === 'connected'",
        )
        .await;
    }

    /// Type a prompt and press Send.
    pub(crate) async fn ask(&self, prompt: &str) {
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
    pub(crate) async fn last_answer(&self) -> Value {
        self.js(LAST_ANSWER).await
    }

    /// Wait until the last answer has ended; return [`Self::last_answer`].
    pub(crate) async fn answer_done(&self) -> Value {
        self.until(
            "the answer to end",
            "const a = [...document.querySelectorAll('.msg.assistant')].pop(); \
             return !!(a && a.dataset.done);",
        )
        .await;
        self.last_answer().await
    }

    pub(crate) async fn quit(mut self) {
        let _ = self.c.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub(crate) const LAST_ANSWER: &str = r#"
    const a = [...document.querySelectorAll('.msg.assistant')].pop();
    if (!a) return null;
    const text = a.querySelector('.answer');
    // The Markdown source as kept in localStorage for this conversation.
    const key = 'tars.conversation:' + sessionStorage.getItem('tars.client_id') + ':'
        + sessionStorage.getItem('tars.conversation_id');
    const conv = JSON.parse(localStorage.getItem(key) || 'null');
    // Anything but what the Markdown renderer makes (and the copy buttons),
    // and any event-handler or style attribute, is model output turned
    // into markup.
    const made = new Set(['P', 'BR', 'HR', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'STRONG',
        'EM', 'DEL', 'S', 'CODE', 'PRE', 'BLOCKQUOTE', 'UL', 'OL', 'LI', 'TABLE', 'THEAD',
        'TBODY', 'TR', 'TH', 'TD', 'A', 'INPUT', 'BUTTON']);
    const all = [...text.querySelectorAll('*')];
    return {
        text: text.textContent,
        source: conv && conv.turns.length ? conv.turns[conv.turns.length - 1].answer : null,
        foreign_elements: all.filter(e => !made.has(e.tagName)).map(e => e.tagName),
        handler_attributes: all.flatMap(e => [...e.attributes])
            .filter(x => /^on|^style$|^src/i.test(x.name)).map(x => x.name),
        thinking: a.querySelector('.thinking').textContent,
        thinking_shown: !a.querySelector('.thinking').hidden,
        stats: a.querySelector('.stats').textContent,
        done: a.dataset.done || null,
        who: a.querySelector('.who').textContent,
    };
"#;

/// [viewport width, nothing wider than it, the visible view's last control
/// on screen].
pub(crate) const FITS: &str = r#"
    const w = window.innerWidth;
    const view = document.getElementById('chat-view').hidden ? '#sign-in-view' : '#composer';
    const r = document.querySelector(view).getBoundingClientRect();
    return [w, document.documentElement.scrollWidth <= w,
            r.right <= w && r.bottom <= window.innerHeight];
"#;

pub(crate) const PAGE_STATE: &str = r#"
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

pub(crate) async fn start_gateway(fake: &FakeOllama) -> Gateway {
    gateway()
        .ollama(&fake.url())
        .client(CLIENT, SECRET, false)
        .set("ollama.model", MODELS[0])
        .set("ollama.allowed_models", MODELS.to_vec())
        .start()
}

pub(crate) async fn session_storage(b: &Browser, key: &str) -> Option<String> {
    b.c.execute(
        "return sessionStorage.getItem(arguments[0]);",
        vec![json!(key)],
    )
    .await
    .unwrap()
    .as_str()
    .map(str::to_string)
}

/// Where a screenshot named `name` goes: `docs/<name>` under
/// `TARS_UPDATE_SCREENSHOT=1` (true), else a temporary folder.
pub(crate) fn screenshot_path(name: &str) -> (PathBuf, bool) {
    if std::env::var_os("TARS_UPDATE_SCREENSHOT").is_some() {
        (
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("docs")
                .join(name),
            true,
        )
    } else {
        (
            std::env::temp_dir().join(format!("tars-browser-{name}")),
            false,
        )
    }
}

/// Take a screenshot and write it to [`screenshot_path`].
pub(crate) async fn screenshot(b: &Browser, name: &str) {
    let png = b.c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let (path, committed) = screenshot_path(name);
    std::fs::write(&path, &png).unwrap();
    if committed {
        say(&format!("screenshot written to {}", path.display()));
    }
}
