//! `tars hash-secret` and `tars token`: a hash made by the command works as
//! a registered client's `secret_hash`, and tokens minted offline are
//! accepted by a running gateway with the same configuration.

use std::time::Duration;

use crate::support::jwt::{claims_of, run_tars_input};
use crate::support::*;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn hash_secret_output_registers_a_client() {
    let (code, out, err) = run_tars_input(&["hash-secret"], b"pa55-word\n", T);
    assert_eq!(code, 0, "{err}");
    let phc = out.trim();
    assert!(phc.starts_with("$argon2id$v=19$"), "{out}");
    assert_eq!(out.lines().count(), 1);
    assert!(!out.contains("pa55-word") && !err.contains("pa55-word"));
    // CRLF and no trailing newline give the same secret.
    let (_, out2, _) = run_tars_input(&["hash-secret"], b"pa55-word\r\n", T);
    let (_, out3, _) = run_tars_input(&["hash-secret"], b"pa55-word", T);

    // Register the three hashes as three clients.
    let mut clients = Vec::new();
    for (id, hash) in [("a", phc), ("b", out2.trim()), ("c", out3.trim())] {
        let mut t = toml::Table::new();
        t.insert("id".into(), id.into());
        t.insert("secret_hash".into(), hash.into());
        clients.push(toml::Value::Table(t));
    }
    let gw = gateway()
        .set("auth.clients", toml::Value::Array(clients))
        .serve();
    for id in ["a", "b", "c"] {
        let r = post_json(
            &gw,
            "/auth/token",
            &json!({"client_id": id, "client_secret": "pa55-word"}),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        let r = post_json(
            &gw,
            "/auth/token",
            &json!({"client_id": id, "client_secret": "pa55-word\r"}),
            None,
        )
        .await;
        assert_eq!(r.status, 401, "{id}");
    }
}

#[test]
fn hash_secret_refuses_empty_input() {
    for input in [&b""[..], b"\n", b"\r\n"] {
        let (code, out, err) = run_tars_input(&["hash-secret"], input, T);
        assert_eq!(code, 2, "{input:?}: {err}");
        assert!(out.is_empty());
        assert!(err.contains("no secret on stdin"), "{err}");
    }
}

#[tokio::test]
async fn offline_tokens_are_accepted_by_the_gateway() {
    let gw = gateway().client("laptop", "s3cret", false).serve();
    let config = gw.config.to_str().unwrap().to_string();
    let (code, out, err) = run_tars_input(
        &[
            "--config",
            &config,
            "token",
            "--client-id",
            "laptop",
            "--ttl-hours",
            "2",
        ],
        b"",
        T,
    );
    assert_eq!(code, 0, "{err}");
    let pair: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pair["token_type"], "bearer");
    assert_eq!(pair["expires_in"], 7200);
    let access = pair["access_token"].as_str().unwrap();
    let c = claims_of(access);
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        7200
    );
    let v = post_json(&gw, "/auth/validate", &json!({}), Some(access)).await;
    assert_eq!(v.status, 200, "{}", v.text());
    assert_eq!(v.json()["client_id"], "laptop");
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": pair["refresh_token"]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200);

    // Default lifetime.
    let (_, out, _) = run_tars_input(
        &["--config", &config, "token", "--client-id", "laptop"],
        b"",
        T,
    );
    let pair: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pair["expires_in"], 86400);

    // Not registered, no open enrollment: refused rather than minting useless tokens.
    let (code, out, err) = run_tars_input(
        &["--config", &config, "token", "--client-id", "stranger"],
        b"",
        T,
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("stranger") && err.contains("open_enrollment"),
        "{err}"
    );
    let (code, _, err) = run_tars_input(
        &["--config", &config, "token", "--client-id", "a b"],
        b"",
        T,
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run_tars_input(
        &[
            "--config",
            &config,
            "token",
            "--client-id",
            "laptop",
            "--ttl-hours",
            "0",
        ],
        b"",
        T,
    );
    assert_eq!(code, 2);
}

#[tokio::test]
async fn offline_tokens_use_the_generated_key() {
    // `tars token` before the first start creates the key the server then uses.
    let b = gateway()
        .unset("auth.secret")
        .set("auth.open_enrollment", true);
    let config = b.write_config();
    let (code, out, err) = run_tars_input(
        &[
            "--config",
            config.to_str().unwrap(),
            "token",
            "--client-id",
            "script",
        ],
        b"",
        T,
    );
    assert_eq!(code, 0, "{err}");
    assert!(b.dir().join("data/jwt.secret").exists());
    assert!(
        !b.dir().join("data/revoked.log").exists(),
        "tars token touched the revocation log"
    );
    let gw = b.serve();
    let pair: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = post_json(
        &gw,
        "/auth/validate",
        &json!({}),
        pair["access_token"].as_str(),
    )
    .await;
    assert_eq!(v.status, 200, "{}", v.text());
}
