//! The attack matrix: hostile and broken tokens, each refused by
//! `/auth/validate` with 401 `{valid: false, reason}`; and a full auth flow
//! at `log.level = "trace"` whose logs must contain no token and no secret.

use crate::support::jwt::*;
use crate::support::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

async fn validate(gw: &Server, token: &str) -> HttpResponse {
    post_json(gw, "/auth/validate", &json!({}), Some(token)).await
}

/// Every case with the reasons it may be refused with.
fn cases(
    access: &str,
    refresh: &str,
    revoked: &str,
) -> Vec<(&'static str, String, &'static [&'static str])> {
    let key = TEST_SECRET.as_bytes();
    let other_key = b"a-completely-different-key-of-32-bytes-or-more";
    let good = good_claims("attacker");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let now = now();
    let big = format!(
        "{}.{}.{}",
        "e".repeat(5000),
        "x".repeat(5000),
        "y".repeat(400)
    );
    vec![
        (
            "alg none",
            forge(&json!({"alg": "none", "typ": "JWT"}), &good, None),
            &["malformed", "wrong_algorithm", "invalid_signature"],
        ),
        (
            "alg none, trailing signature",
            forge(&json!({"alg": "none", "typ": "JWT"}), &good, Some(key)),
            &["malformed", "wrong_algorithm"],
        ),
        (
            "signed with another key",
            sign(&good, other_key, Algorithm::HS256),
            &["invalid_signature"],
        ),
        (
            "re-signed HS512",
            sign(&good, key, Algorithm::HS512),
            &["wrong_algorithm"],
        ),
        (
            "re-signed HS384",
            sign(&good, key, Algorithm::HS384),
            &["wrong_algorithm"],
        ),
        (
            "RS256 header, HMAC with the secret",
            forge(&json!({"alg": "RS256", "typ": "JWT"}), &good, Some(key)),
            &["wrong_algorithm"],
        ),
        (
            "expired",
            sign(
                &with(&|c| {
                    c["iat"] = json!(now - 7200);
                    c["nbf"] = json!(now - 7200);
                    c["exp"] = json!(now - 3600);
                }),
                key,
                Algorithm::HS256,
            ),
            &["expired"],
        ),
        (
            "nbf in the future",
            sign(
                &with(&|c| c["nbf"] = json!(now + 3600)),
                key,
                Algorithm::HS256,
            ),
            &["not_yet_valid"],
        ),
        (
            "no exp",
            sign(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                key,
                Algorithm::HS256,
            ),
            &["missing_claim", "malformed"],
        ),
        (
            "no nbf",
            sign(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("nbf");
                }),
                key,
                Algorithm::HS256,
            ),
            &["missing_claim", "malformed"],
        ),
        (
            "string-typed exp",
            sign(
                &with(&|c| c["exp"] = json!((now + 3600).to_string())),
                key,
                Algorithm::HS256,
            ),
            &["invalid_claim", "malformed"],
        ),
        (
            "string-typed exp in the past",
            sign(&with(&|c| c["exp"] = json!("1")), key, Algorithm::HS256),
            &["invalid_claim", "malformed"],
        ),
        (
            "wrong iss",
            sign(&with(&|c| c["iss"] = json!("evil")), key, Algorithm::HS256),
            &["wrong_issuer"],
        ),
        (
            "no iss",
            sign(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("iss");
                }),
                key,
                Algorithm::HS256,
            ),
            &["missing_claim", "malformed"],
        ),
        (
            "wrong aud",
            sign(&with(&|c| c["aud"] = json!("other")), key, Algorithm::HS256),
            &["wrong_audience"],
        ),
        (
            "no typ",
            sign(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("typ");
                }),
                key,
                Algorithm::HS256,
            ),
            &["malformed"],
        ),
        (
            "unknown typ",
            sign(&with(&|c| c["typ"] = json!("admin")), key, Algorithm::HS256),
            &["malformed"],
        ),
        (
            "refresh token used as access",
            refresh.to_string(),
            &["wrong_token_type"],
        ),
        (
            "forged refresh typ",
            sign(
                &with(&|c| c["typ"] = json!("refresh")),
                key,
                Algorithm::HS256,
            ),
            &["wrong_token_type"],
        ),
        ("revoked jti", revoked.to_string(), &["revoked"]),
        (
            "payload changed under the original signature",
            swap_payload(
                access,
                &with(&|c| {
                    c["sub"] = json!("someone-else");
                    c["exp"] = json!(now + 365 * 86400);
                }),
            ),
            &["invalid_signature"],
        ),
        ("10 KiB token", big, &["too_long"]),
        ("garbage", "garbage".to_string(), &["malformed"]),
        ("three dots of garbage", "a.b.c".to_string(), &["malformed"]),
        ("empty parts", "..".to_string(), &["malformed"]),
    ]
}

async fn issue(gw: &Server, id: &str) -> HttpResponse {
    post_json(gw, "/auth/token", &json!({"client_id": id}), None).await
}

#[tokio::test]
async fn attack_matrix_is_refused_by_validate() {
    let gw = gateway().set("auth.open_enrollment", true).serve();
    let a = issue(&gw, "victim").await.json();
    let access = a["access_token"].as_str().unwrap().to_string();
    let refresh = a["refresh_token"].as_str().unwrap().to_string();
    let r = issue(&gw, "revokee").await.json();
    let revoked = r["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        post_json(&gw, "/auth/revoke", &json!({}), Some(&revoked))
            .await
            .status,
        200
    );

    // Control: the forging helpers produce a token the gateway accepts, so
    // every refusal below is due to the one thing each case spoils.
    let control = sign(
        &good_claims("attacker"),
        TEST_SECRET.as_bytes(),
        Algorithm::HS256,
    );
    let v = validate(&gw, &control).await;
    assert_eq!(v.status, 200, "control token refused: {}", v.text());
    assert_eq!(validate(&gw, &access).await.status, 200);

    let mut failures = Vec::new();
    for (name, token, reasons) in cases(&access, &refresh, &revoked) {
        let r = validate(&gw, &token).await;
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let reason = body["reason"].as_str().unwrap_or("");
        if r.status != 401 || body["valid"] != false || !reasons.contains(&reason) {
            failures.push(format!("{name}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        failures.is_empty(),
        "accepted or wrong reason:\n{}",
        failures.join("\n")
    );

    // Empty bearer.
    let r = request(
        &gw,
        "POST",
        "/auth/validate",
        &[("authorization", "Bearer")],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["valid"], false);

    // The reverse type confusion: an access token (or a forged one) at /auth/refresh.
    for token in [
        access.clone(),
        sign(
            &good_claims("attacker"),
            TEST_SECRET.as_bytes(),
            Algorithm::HS256,
        ),
    ] {
        let r = post_json(&gw, "/auth/refresh", &json!({"refresh_token": token}), None).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["reason"], "wrong_token_type");
    }
    // A refresh token for a forged subject with another key.
    let mut c = good_claims("attacker");
    c["typ"] = json!("refresh");
    let r = post_json(&gw, "/auth/refresh", &json!({"refresh_token": sign(&c, b"another-key-another-key-another-key", Algorithm::HS256)}), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "invalid_signature");
}

#[tokio::test]
async fn unregistered_subjects_are_refused_without_open_enrollment() {
    let gw = gateway().client("laptop", "s3cret", false).serve();
    // Signed with the right key but for a client that is not registered.
    let t = sign(
        &good_claims("stranger"),
        TEST_SECRET.as_bytes(),
        Algorithm::HS256,
    );
    let r = validate(&gw, &t).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "unknown_client");
    let t = sign(
        &good_claims("laptop"),
        TEST_SECRET.as_bytes(),
        Algorithm::HS256,
    );
    assert_eq!(validate(&gw, &t).await.status, 200);
}

#[tokio::test]
async fn no_token_or_secret_in_logs_at_trace_level() {
    let client_secret = "correct-horse-battery-staple-77";
    let gw = gateway()
        .set("log.level", "trace")
        .set("auth.open_enrollment", true)
        .client("laptop", client_secret, true)
        .serve();
    let mut tokens: Vec<String> = Vec::new();
    let take = |r: &HttpResponse, tokens: &mut Vec<String>| {
        let b = r.json();
        for k in ["access_token", "refresh_token"] {
            tokens.push(b[k].as_str().unwrap().to_string());
        }
    };
    let r = post_json(
        &gw,
        "/auth/token",
        &json!({"client_id": "laptop", "client_secret": client_secret}),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    take(&r, &mut tokens);
    let r = post_json(
        &gw,
        "/auth/token",
        &json!({"client_id": "laptop", "client_secret": "wrong-secret-value-123"}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = post_json(
        &gw,
        "/auth/token",
        &json!({"client_id": "walk-in", "device_name": "Phone"}),
        None,
    )
    .await;
    take(&r, &mut tokens);
    assert_eq!(validate(&gw, &tokens[0]).await.status, 200);
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": tokens[1]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    take(&r, &mut tokens);
    // Reuse (logs a warning), revoke by header and by body, validate a revoked one.
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": tokens[1]}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    // (The reuse revoked tokens[4]'s family; revoke the walk-in's pair.)
    assert_eq!(
        post_json(&gw, "/auth/revoke", &json!({}), Some(&tokens[2]))
            .await
            .status,
        200
    );
    let r = post_json(&gw, "/auth/token", &json!({"client_id": "walk-in"}), None).await;
    take(&r, &mut tokens);
    assert_eq!(
        post_json(&gw, "/auth/revoke", &json!({"token": tokens[7]}), None)
            .await
            .status,
        200
    );
    assert_eq!(validate(&gw, &tokens[4]).await.status, 401);
    let forged = sign(
        &good_claims("x"),
        b"another-key-another-key-another-key",
        Algorithm::HS256,
    );
    assert_eq!(validate(&gw, &forged).await.status, 401);
    tokens.push(forged);
    gw.wait_for_log("refresh token reuse", std::time::Duration::from_secs(5));

    let logs = gw.logs();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging not on:\n{logs}"
    );
    for secret in [client_secret, "wrong-secret-value-123", TEST_SECRET] {
        assert!(!logs.contains(secret), "a secret was logged");
    }
    for t in &tokens {
        assert!(!logs.contains(t.as_str()), "a token was logged");
        // Nor its signature or payload alone.
        for part in t.split('.').skip(1) {
            assert!(!logs.contains(part), "part of a token was logged");
        }
    }
}
