//! `POST /auth/pair` and `GET /pair` (issue 18), over real TLS: a code
//! stored as `tars pair` stores it redeems once for a working token pair of
//! its client, an expired one is refused, wrong codes count against the
//! per-IP failed-attempt limit shared with `/auth/token`, a code whose
//! client was registered a moment ago works at once, no code reaches the
//! log, and the page and the OpenAPI entry are served.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::chat::*;
use crate::support::*;
use serde_json::json;
use tars::auth::pairing::{self, PairRecord};

fn data_dir(gw: &Server) -> PathBuf {
    gw.dir.path().join("data")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Store a code for `client` as `tars pair` does; returns the code.
fn make_code(gw: &Server, client: &str, expires_at: u64) -> String {
    let code = pairing::new_code();
    let rec = PairRecord {
        client_id: client.into(),
        expires_at,
    };
    pairing::store(&data_dir(gw), &code, &rec).unwrap();
    code
}

async fn redeem(gw: &Server, body: serde_json::Value) -> HttpResponse {
    post_json(gw, "/auth/pair", &body, None).await
}

#[tokio::test]
async fn a_code_redeems_once_for_a_working_token_pair() {
    let gw = gateway().client("phone", "phone-secret-1", false).serve();
    let code = make_code(&gw, "phone", now() + 600);
    // Read as a person types it: lower case, no dash.
    let typed = code.to_lowercase().replace('-', "");
    let r = redeem(&gw, json!({"code": typed, "device_name": "Pixel"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["client_id"], "phone");
    assert_eq!(v["token_type"], "bearer");
    let access = v["access_token"].as_str().unwrap();
    let val = post_json(&gw, "/auth/validate", &json!({}), Some(access)).await;
    assert_eq!(val.status, 200, "{}", val.text());
    assert_eq!(val.json()["client_id"], "phone");
    assert_eq!(val.json()["device_type"], "paired");
    let (mut ws, _) = open_chat(&gw, access).await;
    send(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    // The refresh token works like any other.
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": v["refresh_token"]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Once only.
    let again = redeem(&gw, json!({"code": code})).await;
    assert_eq!(again.status, 401, "{}", again.text());
    assert_eq!(again.json()["error"], "invalid_code");
    // The code is in no log line, in neither form.
    let logs = gw.logs();
    assert!(logs.contains("device paired"), "{logs}");
    assert!(!logs.contains(&code) && !logs.to_uppercase().contains(&typed.to_uppercase()));
    // And nowhere in data_dir.
    assert_eq!(
        std::fs::read_dir(pairing::folder(&data_dir(&gw)))
            .unwrap()
            .count(),
        0,
        "a used code leaves no file"
    );
}

#[tokio::test]
async fn an_expired_code_is_refused_and_gone() {
    let gw = gateway().client("phone", "phone-secret-1", false).serve();
    let code = make_code(&gw, "phone", now() - 1);
    let r = redeem(&gw, json!({"code": code})).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.json()["message"].as_str().unwrap().contains("expired"),
        "{}",
        r.text()
    );
    let r = redeem(&gw, json!({"code": code})).await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["message"].as_str().unwrap().contains("unknown"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn wrong_codes_count_against_the_failed_attempt_limit() {
    let gw = gateway()
        .client("phone", "phone-secret-1", false)
        .set("auth.max_failed_attempts_per_minute", 3)
        .serve();
    let good = make_code(&gw, "phone", now() + 600);
    for wrong in ["22222-22222", "not a code", &pairing::new_code()] {
        let r = redeem(&gw, json!({"code": wrong})).await;
        assert_eq!(r.status, 401, "{wrong}: {}", r.text());
    }
    // Over the limit: even the right code waits, and so does /auth/token.
    let r = redeem(&gw, json!({"code": good})).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    let r = post_json(
        &gw,
        "/auth/token",
        &json!({"client_id": "phone", "client_secret": "phone-secret-1"}),
        None,
    )
    .await;
    assert_eq!(r.status, 429, "the limit is shared: {}", r.text());
    // The code was not used up by the refused attempt.
    assert!(pairing::peek(&data_dir(&gw), &good).is_ok());
}

#[tokio::test]
async fn a_code_for_another_client_is_refused() {
    let gw = gateway()
        .client("phone", "phone-secret-1", false)
        .client("tablet", "tablet-secret-1", false)
        .serve();
    let code = make_code(&gw, "phone", now() + 600);
    let r = redeem(&gw, json!({"code": code, "client_id": "tablet"})).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = redeem(&gw, json!({"code": code, "client_id": "phone"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_client_registered_a_moment_ago_pairs_at_once() {
    // No polling at all: the pairing itself re-reads the file.
    let gw = gateway()
        .set("tls.watch_interval_secs", 0)
        .client("laptop", "laptop-secret-1", false)
        .serve();
    let mut file = tars::config::edit::ConfigFile::open(&gw.config).unwrap();
    file.add_client(
        "device-abcd",
        &hash_secret("unknown-to-all"),
        false,
        None,
        "tars pair",
    )
    .unwrap();
    file.save().unwrap();
    let code = make_code(&gw, "device-abcd", now() + 600);
    let r = redeem(&gw, json!({"code": code})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["client_id"], "device-abcd");

    // A code whose client is gone: refused, the code kept for nobody.
    let code = make_code(&gw, "ghost", now() + 600);
    let r = redeem(&gw, json!({"code": code})).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown_client");
}

#[tokio::test]
async fn the_pair_page_and_its_script_are_served_under_the_page_policy() {
    let gw = gateway().serve();
    let page = get(&gw, "/pair").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = page.text();
    assert!(
        html.contains("/static/pair.js") && !html.contains("<script>"),
        "{html}"
    );
    let js = get(&gw, "/static/pair.js").await;
    assert_eq!(js.status, 200);
    assert!(js.text().contains("location.hash"));
    assert!(js.text().contains("/auth/pair"));

    let doc = get(&gw, "/openapi.json").await.json();
    let op = &doc["paths"]["/auth/pair"]["post"];
    assert!(
        op["responses"]["200"].is_object() && op["responses"]["429"].is_object(),
        "{op}"
    );
    assert!(doc["components"]["schemas"]["PairRequest"]["properties"]["code"].is_object());
    assert!(doc["paths"]["/pair"]["get"].is_object());
}

/// The code never reaches the gateway in a request line: a browser keeps
/// the fragment to itself; a request that put it in the query would be
/// logged by path only (checked here as the weakest guarantee).
#[tokio::test]
async fn a_code_in_a_query_string_is_not_logged() {
    let gw = gateway().serve();
    let code = pairing::new_code();
    let r = request(&gw, "GET", &format!("/pair?{code}"), &[], None).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!gw.logs().contains(&code));
}
