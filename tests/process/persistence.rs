//! What survives a restart: revocations acknowledged with 200 (even after
//! `kill -9`), used refresh tokens, and the generated signing key; what
//! happens when the revocation log cannot be written; start-up refusals of a
//! bad key.

use std::time::Duration;

use crate::support::jwt::{claims_of, run_tars_input};
use crate::support::*;
use serde_json::json;

async fn validate(gw: &Endpoint, token: &str) -> HttpResponse {
    post_json(gw, "/auth/validate", &json!({}), Some(token)).await
}

async fn pair(gw: &Endpoint, id: &str) -> (String, String) {
    let b = post_json(gw, "/auth/token", &json!({"client_id": id}), None)
        .await
        .json();
    (
        b["access_token"].as_str().unwrap().to_string(),
        b["refresh_token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn revocation_survives_kill_9() {
    let gw = gateway().set("auth.open_enrollment", true).start();
    let (revoked, _) = pair(&gw, "a").await;
    let (b_access, used_refresh) = pair(&gw, "b").await;
    let (kept, _) = pair(&gw, "c").await;
    // A used refresh token is a revocation too.
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": used_refresh}),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_json(&gw, "/auth/revoke", &json!({}), Some(&revoked)).await;
    assert_eq!(r.status, 200);
    // No grace period: kill at once.
    gw.signal("KILL");

    let gw = gw.restart();
    gw.wait_for_log("revocation log loaded", Duration::from_secs(5));
    let v = validate(&gw, &revoked).await;
    assert_eq!(v.status, 401, "{}", v.text());
    assert_eq!(v.json()["reason"], "revoked");
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": used_refresh}),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "revoked");
    // That reuse (after the restart) revoked b's whole family.
    assert_eq!(
        validate(&gw, &b_access).await.json()["reason"],
        "family_revoked"
    );
    assert_eq!(validate(&gw, &kept).await.status, 200);
    assert_eq!(get(&gw, "/auth/health").await.json()["revoked_count"], 2);
}

#[tokio::test]
async fn torn_last_line_is_ignored_at_start() {
    let gw = gateway().set("auth.open_enrollment", true).start();
    let (revoked, _) = pair(&gw, "a").await;
    assert_eq!(
        post_json(&gw, "/auth/revoke", &json!({}), Some(&revoked))
            .await
            .status,
        200
    );
    gw.signal("KILL");
    let log = gw.dir.path().join("data/revoked.log");
    // A crash in the middle of a later append.
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("{\"jti\":\"half-writ");
    std::fs::write(&log, text).unwrap();

    let gw = gw.restart();
    assert_eq!(validate(&gw, &revoked).await.json()["reason"], "revoked");
    let (other, _) = pair(&gw, "c").await;
    assert_eq!(
        post_json(&gw, "/auth/revoke", &json!({}), Some(&other))
            .await
            .status,
        200
    );
    // Compacted at start: the torn tail is gone and new lines are whole
    // (two per revocation: the token and its family).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("half-writ"), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[tokio::test]
async fn unwritable_revocation_log_answers_500_and_revokes_nothing() {
    let gw = gateway().set("auth.open_enrollment", true).serve();
    let (access, refresh) = pair(&gw, "a").await;
    // A full disk: every write fails with ENOSPC.
    let log = gw.dir.path().join("data/revoked.log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();

    let r = post_json(&gw, "/auth/revoke", &json!({}), Some(&access)).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["error"], "revocation_not_stored");
    assert_eq!(
        validate(&gw, &access).await.status,
        200,
        "reported revoked after a failed write"
    );
    // Rotation needs the store too: no new tokens without recording the old one.
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": refresh}),
        None,
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"], "revocation_not_stored");
    assert!(gw.logs().contains("cannot store a revocation"));
    assert_eq!(get(&gw, "/auth/health").await.json()["revoked_count"], 0);

    // Disk back: the same token can now be revoked.
    std::fs::remove_file(&log).unwrap();
    let r = post_json(&gw, "/auth/revoke", &json!({}), Some(&access)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(validate(&gw, &access).await.status, 401);
}

#[tokio::test]
async fn generated_key_is_created_once_and_reused() {
    let gw = gateway()
        .unset("auth.secret")
        .set("auth.open_enrollment", true)
        .serve();
    let key_path = gw.dir.path().join("data/jwt.secret");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&key_path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let key = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(key.trim().len(), 64);
    let (access, _) = pair(&gw, "a").await;
    assert!(!gw.logs().contains(key.trim()));

    let gw = gw.restart();
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), key);
    let v = validate(&gw, &access).await;
    assert_eq!(
        v.status,
        200,
        "token minted before the restart: {}",
        v.text()
    );
    assert_eq!(v.json()["jti"], claims_of(&access)["jti"]);
}

#[test]
fn weak_keys_are_refused_at_start() {
    let b = gateway().unset("auth.secret");
    let dir = b.dir().to_path_buf();
    std::fs::write(dir.join("short.key"), "twelve bytes\n").unwrap();
    let b = b.set("auth.secret_file", "short.key");
    let config = b.write_config();
    let (code, _, err) = run_tars_input(
        &["--config", config.to_str().unwrap()],
        b"",
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("key `auth.secret_file`"), "{err}");
    assert!(
        err.contains("short.key") && err.contains("12 bytes") && err.contains("at least 32"),
        "{err}"
    );
    let refusal: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("tars: error:"))
        .collect();
    assert_eq!(refusal.len(), 1, "{err}");
    assert!(refusal[0].contains("auth.secret_file"), "{err}");

    // A generated key file that was truncated.
    let b = gateway().unset("auth.secret");
    std::fs::create_dir_all(b.dir().join("data")).unwrap();
    std::fs::write(b.dir().join("data/jwt.secret"), "abc").unwrap();
    let config = b.write_config();
    let (code, _, err) = run_tars_input(
        &["--config", config.to_str().unwrap()],
        b"",
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("jwt.secret") && err.contains("at least 32"),
        "{err}"
    );

    // JWT_SECRET_KEY too short or a placeholder.
    let b = gateway().unset("auth.secret");
    let config = b.write_config();
    let (code, _, err) = run_tars(
        &["--config", config.to_str().unwrap(), "check-config"],
        &[(
            "JWT_SECRET_KEY",
            "your-secret-key-change-this-in-production",
        )],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("placeholder"), "{err}");
}
