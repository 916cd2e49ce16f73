//! `tars client add/list/remove/rotate` (issue 18): the command edits a
//! commented config.toml in place (golden file: byte-identical outside the
//! new entry, mode kept), prints a secret that verifies against the stored
//! argon2id hash, and every bad input (existing or invalid name, a config
//! that does not validate, a file it cannot write) is one line on stderr, a
//! non-zero exit and the file byte for byte as it was. A running gateway
//! applies the saved file on its own: an added client signs in within
//! `watch_interval_secs + 1` s, a removed one loses its session and tokens,
//! and a saved file that does not validate is logged and changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::chat::*;
use crate::support::*;
use serde_json::json;

const BEFORE: &str = include_str!("../data/client_cli_before.toml");
const GOLDEN: &str = include_str!("../data/client_cli_after.golden");

/// A folder holding `config.toml` with `text`, mode 0640.
fn config_with(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    (dir, p)
}

fn tars_on(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run_tars(&all, &[])
}

/// The `secret: ...` line of the command's output.
fn printed_secret(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap_or_else(|| panic!("no secret line in {out}"))
        .to_string()
}

/// The `secret_hash` of client `id` in the file.
fn stored_hash(config: &Path, id: &str) -> String {
    let t: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    t["auth"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"].as_str() == Some(id))
        .unwrap_or_else(|| panic!("no client {id}"))["secret_hash"]
        .as_str()
        .unwrap()
        .to_string()
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .date()
        .to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn client_add_edits_a_commented_config_in_place() {
    let (_dir, config) = config_with(BEFORE);
    let (code, out, err) = tars_on(
        &config,
        &["client", "add", "phone", "--admin", "--models", "m2"],
    );
    assert_eq!(code, 0, "{err}");
    let secret = printed_secret(&out);
    assert_eq!(secret.len(), 64, "256 bits as hex: {secret}");
    assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        out.contains("--client-id phone"),
        "says how to use it: {out}"
    );
    let hash = stored_hash(&config, "phone");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(tars::auth::clients::verify_secret(&hash, secret.as_bytes()));
    assert!(!std::fs::read_to_string(&config).unwrap().contains(&secret));

    let text = std::fs::read_to_string(&config).unwrap();
    let want = GOLDEN.replace("HASH", &hash).replace("DATE", &today());
    assert_eq!(text, want, "only the new entry differs");
    assert_eq!(mode(&config), 0o640, "the file's mode is kept");
    let leftovers: Vec<_> = std::fs::read_dir(config.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    let (code, out, err) = tars_on(&config, &["client", "list"]);
    assert_eq!(code, 0, "{err}");
    let laptop = out.lines().find(|l| l.starts_with("laptop ")).unwrap();
    let phone = out.lines().find(|l| l.starts_with("phone ")).unwrap();
    assert!(
        laptop.contains(" no ") && laptop.contains("m1") && laptop.ends_with("by hand"),
        "{out}"
    );
    assert!(
        phone.contains(" yes ")
            && phone.contains("m2")
            && phone.ends_with(&format!("tars client add, {}", today())),
        "{out}"
    );
    assert!(!out.contains("argon2"), "no hash in the list: {out}");
}

#[test]
fn rotate_rekeys_and_remove_restores_the_file() {
    let (_dir, config) = config_with(BEFORE);
    let (code, out, _) = tars_on(
        &config,
        &["client", "add", "phone", "--admin", "--models", "m2"],
    );
    assert_eq!(code, 0);
    let old_secret = printed_secret(&out);
    let old_hash = stored_hash(&config, "phone");

    let (code, out, err) = tars_on(&config, &["client", "rotate", "phone"]);
    assert_eq!(code, 0, "{err}");
    let new_secret = printed_secret(&out);
    let new_hash = stored_hash(&config, "phone");
    assert_ne!(new_secret, old_secret);
    assert_ne!(new_hash, old_hash);
    assert!(tars::auth::clients::verify_secret(
        &new_hash,
        new_secret.as_bytes()
    ));
    assert!(!tars::auth::clients::verify_secret(
        &new_hash,
        old_secret.as_bytes()
    ));
    let want = GOLDEN.replace("HASH", &new_hash).replace("DATE", &today());
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        want,
        "only the hash changed"
    );

    let (code, out, err) = tars_on(&config, &["client", "remove", "phone"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"), "{out}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), BEFORE);
    assert_eq!(mode(&config), 0o640);
}

/// Run `args` and check the refusal: non-zero, one line naming `needle`,
/// and the file unchanged to the byte.
fn refused(config: &Path, args: &[&str], needle: &str) {
    let before = std::fs::read(config).unwrap();
    let (code, out, err) = tars_on(config, args);
    assert_ne!(code, 0, "{args:?} succeeded: {out}");
    assert!(err.starts_with("tars: error: "), "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(
        err.contains(needle),
        "{args:?}: {err:?} does not say {needle:?}"
    );
    assert_eq!(
        std::fs::read(config).unwrap(),
        before,
        "{args:?} changed the file"
    );
    assert!(!out.contains("secret:"), "{args:?} printed a secret: {out}");
}

#[test]
fn bad_input_leaves_the_config_byte_identical() {
    let (_dir, config) = config_with(BEFORE);
    refused(&config, &["client", "add", "laptop"], "already exists");
    refused(&config, &["client", "add", "bad name"], "A-Z a-z 0-9");
    refused(&config, &["client", "add", "x/../y"], "A-Z a-z 0-9");
    refused(
        &config,
        &["client", "add", "tab", "--models", "m1,nope"],
        "allowed_models",
    );
    refused(
        &config,
        &["client", "remove", "ghost"],
        "no client \"ghost\"",
    );
    refused(
        &config,
        &["client", "rotate", "ghost"],
        "no client \"ghost\"",
    );
    refused(&config, &["client", "remove", "bad name"], "A-Z a-z 0-9");

    // A config that does not validate is refused before any edit.
    let bad = BEFORE.replace("access_ttl_hours = 24", "access_ttl_hours = \"soon\"");
    let (_dir2, bad_config) = config_with(&bad);
    refused(
        &bad_config,
        &["client", "add", "phone"],
        "auth.access_ttl_hours",
    );
    refused(
        &bad_config,
        &["client", "remove", "laptop"],
        "auth.access_ttl_hours",
    );
    // A missing file.
    let missing = bad_config.with_file_name("nope.toml");
    let (code, _, err) = tars_on(&missing, &["client", "add", "phone"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("nope.toml") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!missing.exists());
}

#[test]
fn a_config_it_cannot_write_is_refused_untouched() {
    let (dir, config) = config_with(BEFORE);
    let before = std::fs::read(&config).unwrap();
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut cmd = tars_command(
        &[
            "--config",
            config.to_str().unwrap(),
            "client",
            "add",
            "phone",
        ],
        &[],
    );
    if is_root {
        // Root writes anywhere: run as nobody, who may read but not write.
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        cmd.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = wait_output(cmd.spawn().unwrap(), Duration::from_secs(60), "client add");
    let err = String::from_utf8_lossy(&out.stderr);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write the configuration file"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret:"));
    assert_eq!(std::fs::read(&config).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left");
}

async fn sign_in(gw: &Gateway, id: &str, secret: &str) -> HttpResponse {
    post_json(
        gw,
        "/auth/token",
        &json!({"client_id": id, "client_secret": secret}),
        None,
    )
    .await
}

/// The close of a session, skipping other frames.
async fn closed(ws: &mut Ws) -> Option<(u16, String)> {
    loop {
        if let Event::Closed(c) = next_event(ws).await {
            return c;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_gateway_applies_added_and_removed_clients_on_its_own() {
    let watch: u64 = 1;
    let gw = gateway()
        .client("laptop", "laptop-secret-1", false)
        .set("tls.watch_interval_secs", watch as i64)
        // The polls below are refused (401) until the watcher applied the
        // file; on a loaded machine more than the default 10 a minute.
        .set("auth.max_failed_attempts_per_minute", 1000)
        .start();
    let config = gw.config.clone();
    let (code, out, err) = tars_on(&config, &["client", "add", "phone"]);
    assert_eq!(code, 0, "{err}");
    let saved = Instant::now();
    let secret = printed_secret(&out);
    // Accepted within watch_interval_secs + 1 s, with no signal sent.
    let deadline = saved + Duration::from_secs(watch + 1);
    let pair = loop {
        let r = sign_in(&gw, "phone", &secret).await;
        if r.status == 200 {
            break r.json();
        }
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "the added client was not accepted in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let access = pair["access_token"].as_str().unwrap().to_string();
    let (mut ws, _) = open_chat(&gw, &access).await;
    let (mut laptop_ws, _) = open_chat(
        &gw,
        &token_for(&gw, "laptop", Some("laptop-secret-1")).await,
    )
    .await;

    let (code, _, err) = tars_on(&config, &["client", "remove", "phone"]);
    assert_eq!(code, 0, "{err}");
    let close = tokio::time::timeout(Duration::from_secs(watch + 1), closed(&mut ws))
        .await
        .expect("the removed client's session did not end in time");
    assert_eq!(close, Some((1008, "client removed".into())));
    assert_eq!(sign_in(&gw, "phone", &secret).await.status, 401);
    let r = post_json(&gw, "/auth/validate", &json!({}), Some(&access)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": pair["refresh_token"]}),
        None,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    // Other clients' sessions carry on.
    send(&mut laptop_ws, &json!({"type": "ping"})).await;
    assert_eq!(recv(&mut laptop_ws).await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_config_that_does_not_validate_is_logged_and_changes_nothing() {
    let gw = gateway()
        .client("laptop", "laptop-secret-1", false)
        .set("tls.watch_interval_secs", 1)
        .start();
    let good = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        format!("{good}\n[websocket]\nmax_connections = 0\n"),
    )
    .unwrap();
    gw.wait_log("reload refused", Duration::from_secs(5)).await;
    let logs = gw.logs();
    let line = logs.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        line.contains("websocket.max_connections"),
        "names the key: {line}"
    );
    assert_eq!(get(&gw, "/ws/health").await.json()["max_connections"], 10);
    assert_eq!(sign_in(&gw, "laptop", "laptop-secret-1").await.status, 200);
    // Refused once per state of the file, not at every poll.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let logs = gw.logs();
    assert_eq!(logs.matches("reload refused").count(), 1, "{logs}");
    // Fixed: applied.
    std::fs::write(
        &gw.config,
        good.replace("[auth]", "[websocket]\nmax_connections = 7\n\n[auth]"),
    )
    .unwrap();
    wait_until(
        "the fixed file is applied",
        Duration::from_secs(5),
        || async { get(&gw, "/ws/health").await.json()["max_connections"] == 7 },
    )
    .await;
}
