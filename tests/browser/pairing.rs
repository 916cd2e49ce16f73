//! Pairing a phone end to end (issue 18): `tars pair` prints a URL, a
//! headless Chromium at phone width opens it, and the `/pair` page redeems
//! the code from the fragment and lands on the chat page signed in and
//! connected, with the fragment gone from the address bar. The code never
//! reaches the server: it is in no log line. The same URL a second time
//! says the code is used.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::support::fake_ollama::FakeOllama;
use crate::support::*;

/// Poll `script` until it returns `true`, tolerating the moments a
/// navigation makes a script fail.
async fn settle(b: &Browser, what: &str, script: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Value::Bool(true)) = b.c.execute(script, vec![]).await {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_pairs_from_the_url_and_chats_signed_in() {
    let fake = FakeOllama::start().await;
    let gw = start_gateway(&fake).await;
    let host = format!("localhost:{}", gw.addr.port());
    let (code, out, err) = run_tars(
        &[
            "--config",
            gw.config.to_str().unwrap(),
            "pair",
            "--client",
            CLIENT,
            "--host",
            &host,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let url = out
        .lines()
        .find_map(|l| l.split_once("or open ").map(|(_, u)| u.trim().to_string()))
        .unwrap();
    let pair_code = url.split_once('#').unwrap().1.to_string();
    let Some(b) =
        Browser::start_with(&gw, "a_phone_pairs_from_the_url", Some((360, 740)), &[]).await
    else {
        return;
    };
    b.c.goto(&url).await.unwrap();
    settle(
        &b,
        "the chat page, signed in",
        "return location.pathname === '/' && !document.getElementById('chat-view').hidden",
    )
    .await;
    b.wait_connected().await;
    let href = b.js("return location.href").await;
    assert!(!href.as_str().unwrap().contains(&pair_code), "{href}");
    assert_eq!(
        session_storage(&b, "tars.client_id").await.as_deref(),
        Some(CLIENT)
    );
    assert!(session_storage(&b, "tars.refresh_token").await.is_some());
    let logs = gw.logs();
    assert!(logs.contains("device paired"), "{logs}");
    assert!(
        !logs.contains(&pair_code),
        "the code reached the server's log"
    );

    // The same URL again: the code is used up, the page says so.
    b.c.goto(&url).await.unwrap();
    settle(
        &b,
        "the refusal",
        "const s = document.getElementById('pair-status'); \
         return !!s && s.classList.contains('error') && s.textContent.includes('already used')",
    )
    .await;
    b.quit().await;
}
