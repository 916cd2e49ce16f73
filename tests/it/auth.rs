//! Authentication end to end against the real binary: `/auth/token` with open
//! enrollment and registered clients, lifetimes, refresh rotation and reuse,
//! `/auth/validate`, `/auth/revoke`, `/auth/health`, the per-IP failure limit
//! and malformed requests. The attack matrix, persistence and CLI live in
//! `auth_attacks.rs`, `auth_persistence.rs` and `auth_cli.rs`.

use crate::support::jwt::claims_of;
use crate::support::*;
use serde_json::json;

async fn issue(gw: &Server, body: serde_json::Value) -> HttpResponse {
    post_json(gw, "/auth/token", &body, None).await
}

async fn validate(gw: &Server, token: &str) -> HttpResponse {
    post_json(gw, "/auth/validate", &json!({}), Some(token)).await
}

#[tokio::test]
async fn seed_curl_examples_with_open_enrollment() {
    let gw = gateway().set("auth.open_enrollment", true).serve();
    gw.wait_for_log("open_enrollment = true", std::time::Duration::from_secs(5));
    let r = issue(
        &gw,
        json!({"client_id": "test-client", "device_name": "Terminal", "device_type": "linux"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["token_type"], "bearer");
    assert_eq!(b["expires_in"], 86400);
    let access = b["access_token"].as_str().unwrap();
    let refresh = b["refresh_token"].as_str().unwrap();
    assert!(access.starts_with("eyJ"));

    // Default lifetimes: 24 h and 7 d; every required claim present.
    let a = claims_of(access);
    assert_eq!(
        a["exp"].as_u64().unwrap() - a["iat"].as_u64().unwrap(),
        86400
    );
    assert_eq!(a["nbf"], a["iat"]);
    assert_eq!(
        (a["typ"].as_str(), a["iss"].as_str(), a["aud"].as_str()),
        (Some("access"), Some("tars"), Some("tars"))
    );
    assert!(uuid::Uuid::parse_str(a["jti"].as_str().unwrap()).is_ok());
    let rc = claims_of(refresh);
    assert_eq!(
        rc["exp"].as_u64().unwrap() - rc["iat"].as_u64().unwrap(),
        7 * 86400
    );
    assert_eq!(rc["typ"], "refresh");

    // The seed's minimal body works too.
    let r = issue(&gw, json!({"client_id": "test-client"})).await;
    assert_eq!(r.status, 200);

    let v = validate(&gw, access).await;
    assert_eq!(v.status, 200, "{}", v.text());
    let v = v.json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["client_id"], "test-client");
    assert_eq!(v["token_type"], "access");
    assert_eq!(v["jti"], a["jti"]);
    assert_eq!(v["device_name"], "Terminal");
    assert_eq!(v["device_type"], "linux");
    let exp = v["expires_at"].as_str().unwrap();
    assert!(exp.ends_with('Z') && exp.contains('T'), "{exp}");
    assert!(v["issued_at"].as_str().unwrap() < exp);

    // Health.
    let h = get(&gw, "/auth/health").await.json();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["algorithm"], "HS256");
    assert_eq!(h["open_enrollment"], true);
    assert_eq!(h["registered_clients"], 0);
    assert_eq!(h["revoked_count"], 0);
}

#[tokio::test]
async fn configured_lifetimes_and_algorithm() {
    let gw = gateway()
        .set("auth.open_enrollment", true)
        .set("auth.access_ttl_hours", 2)
        .set("auth.refresh_ttl_days", 3)
        .set("auth.algorithm", "HS512")
        .serve();
    let b = issue(&gw, json!({"client_id": "x"})).await.json();
    assert_eq!(b["expires_in"], 7200);
    let a = claims_of(b["access_token"].as_str().unwrap());
    assert_eq!(
        a["exp"].as_u64().unwrap() - a["iat"].as_u64().unwrap(),
        7200
    );
    let r = claims_of(b["refresh_token"].as_str().unwrap());
    assert_eq!(
        r["exp"].as_u64().unwrap() - r["iat"].as_u64().unwrap(),
        3 * 86400
    );
    let header = jsonwebtoken::decode_header(b["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS512);
    assert_eq!(
        validate(&gw, b["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );
    assert_eq!(get(&gw, "/auth/health").await.json()["algorithm"], "HS512");
}

#[tokio::test]
async fn registered_clients_need_their_secret() {
    let gw = gateway().client("laptop", "s3cret", false).serve();
    assert!(!gw.logs().contains("open_enrollment = true"));
    let uniform = json!({"error": "invalid_client", "message": "unknown client or wrong secret"});

    let ok = issue(
        &gw,
        json!({"client_id": "laptop", "client_secret": "s3cret"}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let access = ok.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(validate(&gw, &access).await.json()["client_id"], "laptop");

    for body in [
        json!({"client_id": "laptop", "client_secret": "wrong"}),
        json!({"client_id": "laptop"}),
        json!({"client_id": "laptop", "client_secret": ""}),
        json!({"client_id": "stranger", "client_secret": "s3cret"}),
        json!({"client_id": "stranger"}),
    ] {
        let r = issue(&gw, body.clone()).await;
        assert_eq!(r.status, 401, "{body}");
        assert_eq!(r.json(), uniform, "{body}");
    }
    let h = get(&gw, "/auth/health").await.json();
    assert_eq!(
        (
            h["open_enrollment"].as_bool(),
            h["registered_clients"].as_u64()
        ),
        (Some(false), Some(1))
    );
}

#[tokio::test]
async fn open_enrollment_still_checks_registered_clients() {
    let gw = gateway()
        .set("auth.open_enrollment", true)
        .client("laptop", "s3cret", true)
        .serve();
    // Anyone else: no secret needed.
    assert_eq!(issue(&gw, json!({"client_id": "phone"})).await.status, 200);
    // The registered id cannot be claimed without its secret.
    let r = issue(&gw, json!({"client_id": "laptop"})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    let r = issue(&gw, json!({"client_id": "laptop", "client_secret": "nope"})).await;
    assert_eq!(r.status, 401);
    let r = issue(
        &gw,
        json!({"client_id": "laptop", "client_secret": "s3cret"}),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn malformed_requests_are_named() {
    let gw = gateway().set("auth.open_enrollment", true).serve();
    let r = request(
        &gw,
        "POST",
        "/auth/token",
        &[("content-type", "text/plain")],
        Some(b"client_id=x".to_vec()),
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"], "unsupported_media_type");
    let r = request(
        &gw,
        "POST",
        "/auth/token",
        &[("content-type", "application/json")],
        Some(b"{not json".to_vec()),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_body");
    let r = issue(&gw, json!({"device_name": "no id"})).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"].as_str().unwrap().contains("client_id"),
        "{}",
        r.text()
    );
    let big = json!({"client_id": "x", "device_name": "a".repeat(20 * 1024)});
    let r = issue(&gw, big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    for id in ["", "a b", "é", &"x".repeat(129)] {
        let r = issue(&gw, json!({"client_id": id})).await;
        assert_eq!(r.status, 400, "{id:?}");
        assert_eq!(r.json()["error"], "invalid_client_id");
    }
    let r = issue(&gw, json!({"client_id": "x", "device_name": "a\nb"})).await;
    assert_eq!(r.status, 400);
    let r = post_json(&gw, "/auth/refresh", &json!({"token": "x"}), None).await;
    assert_eq!(r.status, 400);
    let r = request(&gw, "GET", "/auth/token", &[], None).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn failed_attempts_are_limited_per_ip() {
    let gw = gateway()
        .set("auth.max_failed_attempts_per_minute", 2)
        .client("laptop", "s3cret", false)
        .serve();
    let good = json!({"client_id": "laptop", "client_secret": "s3cret"});
    let bad = json!({"client_id": "laptop", "client_secret": "guess"});
    // Successes do not count.
    for _ in 0..3 {
        assert_eq!(issue(&gw, good.clone()).await.status, 200);
    }
    // Nor do malformed requests.
    for _ in 0..3 {
        assert_eq!(issue(&gw, json!({"client_id": "a b"})).await.status, 400);
    }
    assert_eq!(issue(&gw, bad.clone()).await.status, 401);
    assert_eq!(issue(&gw, json!({"client_id": "ghost"})).await.status, 401);
    let r = issue(&gw, bad.clone()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "too_many_attempts");
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&secs), "{secs}");
    // While limited, even the right secret waits.
    assert_eq!(issue(&gw, good).await.status, 429);
    // Other endpoints are not limited.
    assert_eq!(get(&gw, "/auth/health").await.status, 200);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_is_refused_and_logged() {
    let gw = gateway().set("auth.open_enrollment", true).serve();
    let first = issue(&gw, json!({"client_id": "tablet", "device_name": "Tab"}))
        .await
        .json();
    let refresh1 = first["refresh_token"].as_str().unwrap().to_string();
    let rjti = claims_of(&refresh1)["jti"].as_str().unwrap().to_string();

    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": refresh1}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = r.json();
    assert_eq!(second["token_type"], "bearer");
    assert_eq!(second["expires_in"], 86400);
    let access2 = second["access_token"].as_str().unwrap();
    let refresh2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(refresh2, refresh1);
    let v = validate(&gw, access2).await.json();
    assert_eq!(
        (v["client_id"].as_str(), v["device_name"].as_str()),
        (Some("tablet"), Some("Tab"))
    );
    // The first access token stays valid until it expires.
    assert_eq!(
        validate(&gw, first["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );

    // Reuse of the used refresh token.
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": refresh1}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "revoked");
    gw.wait_for_log("refresh token reuse", std::time::Duration::from_secs(5));
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains("refresh token reuse"))
        .unwrap()
        .to_string();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("tablet") && line.contains(&rjti), "{line}");
    assert!(!gw.logs().contains(&refresh1));

    // The reuse revoked the whole family: the pair rotated from it (which a
    // thief may hold) is refused too (tests/credentials.rs goes further).
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": refresh2}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "family_revoked");
    assert_eq!(
        validate(&gw, access2).await.json()["reason"],
        "family_revoked"
    );

    // An access token is not a refresh token.
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": access2}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "wrong_token_type");
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": "garbage"}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "malformed");
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_yield_one_pair() {
    let gw = gateway().set("auth.open_enrollment", true).serve();
    let pair = issue(&gw, json!({"client_id": "racer"})).await.json();
    let body = json!({"refresh_token": pair["refresh_token"]});
    let p = || post_json(&gw, "/auth/refresh", &body, None);
    let rs = tokio::join!(p(), p(), p(), p(), p(), p());
    let codes = [
        rs.0.status,
        rs.1.status,
        rs.2.status,
        rs.3.status,
        rs.4.status,
        rs.5.status,
    ];
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 401).count(), 5, "{codes:?}");
}

#[tokio::test]
async fn validate_without_a_token() {
    let gw = gateway().serve();
    let r = request(&gw, "POST", "/auth/validate", &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["valid"], false);
    assert_eq!(r.json()["reason"], "missing_token");
    let r = request(
        &gw,
        "POST",
        "/auth/validate",
        &[("authorization", "Bearer ")],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "missing_token");
    let r = request(
        &gw,
        "POST",
        "/auth/validate",
        &[("authorization", "Basic abc")],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn revoke_by_header_or_body() {
    let gw = gateway().set("auth.open_enrollment", true).serve();
    let a = issue(&gw, json!({"client_id": "one"})).await.json();
    let access = a["access_token"].as_str().unwrap();
    let jti = claims_of(access)["jti"].clone();

    // Bearer header, no body.
    let r = request(
        &gw,
        "POST",
        "/auth/revoke",
        &[("authorization", &format!("Bearer {access}"))],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"revoked": true, "jti": jti, "family": claims_of(access)["fam"], "sessions_closed": 0})
    );
    let v = validate(&gw, access).await;
    assert_eq!(v.status, 401);
    assert_eq!(v.json()["reason"], "revoked");
    // Revoking it again: it is no longer a valid token.
    let r = post_json(&gw, "/auth/revoke", &json!({}), Some(access)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "revoked");

    // Its family went with it: the refresh token minted with it is refused.
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": a["refresh_token"]}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "family_revoked");

    // A refresh token, in the body (the body wins over the header).
    let b = issue(&gw, json!({"client_id": "one"})).await.json();
    let other = issue(&gw, json!({"client_id": "two"})).await.json();
    let refresh = b["refresh_token"].as_str().unwrap();
    let other_access = other["access_token"].as_str().unwrap();
    let r = post_json(
        &gw,
        "/auth/revoke",
        &json!({"token": refresh}),
        Some(other_access),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["jti"], claims_of(refresh)["jti"]);
    assert_eq!(validate(&gw, other_access).await.status, 200);
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": refresh}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);

    // Nothing to revoke, or garbage.
    let r = request(&gw, "POST", "/auth/revoke", &[], None).await;
    assert_eq!(r.status, 401);
    let r = post_json(&gw, "/auth/revoke", &json!({"token": "nope"}), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "malformed");
    let r = request(
        &gw,
        "POST",
        "/auth/revoke",
        &[("content-type", "text/plain")],
        Some(b"x".to_vec()),
    )
    .await;
    assert_eq!(r.status, 415);

    assert_eq!(get(&gw, "/auth/health").await.json()["revoked_count"], 2);
    let m = request(&gw, "GET", "/metrics", &[], None).await.text();
    assert!(m.contains("tars_revocations_total 2"), "{m}");
}
