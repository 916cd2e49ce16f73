//! Credentials an attacker (or an admin who lost a device) cares about, each
//! tried the way an attacker would: a replayed refresh token, a revoked
//! access token's refresh sibling, an admin cutting a client off (online and
//! with `tars revoke` offline), a symlink planted in `data_dir`, timing that
//! would tell which client ids exist, an oversized `max_tokens`, IPv6
//! neighbours sharing a limit.
//!
//! Self-contained on purpose (only `support`'s gateway, clients and fake
//! Ollama), so it moves easily when the harness changes.

use std::time::{Duration, Instant};

use crate::support::chat::*;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use serde_json::json;

use crate::support::jwt::claims_of;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_is_a_ceiling() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Echo);
    let gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("ollama.max_tokens", 300)
        .start();
    let mut ws = session(&gw, "greedy").await;
    for (asked, sent) in [(Some(100_000), 300), (Some(12), 12), (None, 300)] {
        let mut m = json!({"type": "chat", "content": "hi"});
        if let Some(n) = asked {
            m["options"] = json!({"max_tokens": n});
        }
        send(&mut ws, &m).await;
        let g = collect(&mut ws).await;
        assert_eq!(g.end["type"], "complete", "{}", g.end);
        let req = fake.requests().pop().unwrap();
        assert_eq!(
            req["options"]["num_predict"], sent,
            "asked {asked:?}: {req}"
        );
    }
}

/// `[limits] ipv6_prefix_len`: per address by default, per network when
/// asked, in every per-IP limit (they all key through `ip_key`).
#[test]
fn ipv6_clients_limited_per_address_or_per_prefix() {
    use std::net::IpAddr;
    use tars::limits::{ip_key, ConnRefusal, Limits};
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let cfg = |prefix: Option<i64>| {
        let mut text = "[tls]\nenabled = false\n[limits]\nmax_connections_per_ip = 2\n".to_string();
        if let Some(p) = prefix {
            text.push_str(&format!("ipv6_prefix_len = {p}\n"));
        }
        tars::config::from_toml_str(&text, None).unwrap()
    };
    let default = cfg(None);
    assert_eq!(default.limits.ipv6_prefix_len, 128);
    let (a, b) = (ip("2001:db8:0:1::a"), ip("2001:db8:0:1::b"));
    assert_ne!(ip_key(a, 128), ip_key(b, 128));
    assert_eq!(ip_key(a, 64), ip_key(b, 64));

    // Two neighbours on one /64: separate slots by default ...
    let per_address = Limits::new(&default.limits);
    let _held = [
        per_address.admit_connection(a),
        per_address.admit_connection(a),
    ];
    assert_eq!(
        per_address.admit_connection(a).err(),
        Some(ConnRefusal::Open)
    );
    assert!(per_address.admit_connection(b).is_ok());
    // ... one shared budget with a /64 prefix.
    let per_net = Limits::new(&cfg(Some(64)).limits);
    let _held = [per_net.admit_connection(a), per_net.admit_connection(b)];
    assert_eq!(per_net.admit_connection(b).err(), Some(ConnRefusal::Open));
    assert!(per_net.admit_connection(ip("2001:db8:0:2::a")).is_ok());

    let e = tars::config::from_toml_str(
        "[tls]\nenabled = false\n[limits]\nipv6_prefix_len = 129\n",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("limits.ipv6_prefix_len") && e.contains("between 1 and 128"),
        "{e}"
    );
}

/// A link planted in `data_dir` (here: the revocation log pointing at a file
/// the attacker wants overwritten) stops the start with one line naming it;
/// the target is left alone.
#[test]
fn planted_symlink_in_data_dir_is_refused() {
    for name in ["revoked.log", "jwt.secret"] {
        let gw = gateway().plain().unset("auth.secret");
        let config = gw.write_config();
        let data = gw.dir().join("data");
        std::fs::create_dir(&data).unwrap();
        let target = gw.dir().join("precious");
        std::fs::write(&target, "do not touch\n").unwrap();
        let link = data.join(name);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (code, _, err) = run_tars_timeout(
            &["--config", config.to_str().unwrap()],
            &[],
            Duration::from_secs(20),
        );
        assert_eq!(code, 2, "{name}: {err}");
        let line = err.lines().find(|l| l.contains("error")).unwrap_or(&err);
        assert!(
            line.contains(&link.display().to_string()) && line.contains("symbolic link"),
            "{name}: {err}"
        );
        assert!(line.contains("server.data_dir"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "do not touch\n");
    }
}

/// New files in `data_dir` are private: folder 0700, files 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let gw = gateway()
        .plain()
        .unset("auth.secret")
        .set("auth.open_enrollment", true)
        .start();
    let pair = post_json(&gw, "/auth/token", &json!({"client_id": "a"}), None)
        .await
        .json();
    let r = post_json(
        &gw,
        "/auth/refresh",
        &json!({"refresh_token": pair["refresh_token"]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let data = gw.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in ["jwt.secret", "revoked.log"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}

/// CPU time the process `pid` has used so far (all its threads, the ones
/// that have exited included), with nanosecond resolution: the work the
/// process did, whatever else the machine was busy with.
fn process_cpu_time(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain out-parameters, valid for the duration of each call.
    unsafe {
        assert_eq!(libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock), 0);
        assert_eq!(libc::clock_gettime(clock, &mut ts), 0);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Unknown client ids cost what a wrong secret for a known id costs, even
/// when the registered hashes use heavier argon2 parameters than the
/// defaults: timing does not tell which ids exist.
///
/// What is compared is the gateway process's own CPU time per attempt, not
/// the wall time the client sees: the wall time is that work plus however
/// long the scheduler kept the gateway waiting, and with the suite's other
/// tests on the same two cores the waiting varies more than the 30 % this
/// test must resolve (it failed with a ratio of 1.53 under
/// `--test-threads 8`). The attempts run in rounds of four, back to back,
/// so a burst of load that slows one round slows both kinds, and the median
/// of the per-round ratios ignores the rounds a burst split. Without
/// the dummy hash the unknown id costs next to nothing (ratio ~0.0); with a
/// dummy of the default parameters it costs a third (ratio ~0.33).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_id_and_wrong_secret_take_the_same_time() {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    // Three times the default work (t = 6 instead of 2).
    let heavy = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(19 * 1024, 6, 1, None).unwrap(),
    );
    let phc = heavy
        .hash_password(b"the-right-secret", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
    let mut client = toml::Table::new();
    client.insert("id".into(), "known".into());
    client.insert("secret_hash".into(), phc.into());
    let gw = gateway()
        .plain()
        .set("auth.clients", toml::Value::Array(vec![client.into()]))
        .set("auth.max_failed_attempts_per_minute", 1000)
        .start();
    let pid = gw.child.id();
    // One refused attempt: the gateway's CPU time and the client's wall
    // time it took.
    let refused = |id: &'static str, secret: &'static str| {
        let gw = &gw;
        async move {
            let body = json!({"client_id": id, "client_secret": secret});
            let (cpu, wall) = (process_cpu_time(pid), Instant::now());
            let r = post_json(gw, "/auth/token", &body, None).await;
            let took = (process_cpu_time(pid) - cpu, wall.elapsed());
            assert_eq!(
                (r.status, r.json()["error"].clone()),
                (401, json!("invalid_client")),
                "{id}"
            );
            took
        }
    };
    let ok = post_json(
        &gw,
        "/auth/token",
        &json!({"client_id": "known", "client_secret": "the-right-secret"}),
        None,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Warm up both paths (the blocking pool's threads, the allocator).
    refused("nobody-here", "x").await;
    refused("known", "x").await;
    // Rounds of four, unknown-wrong-wrong-unknown: within a pair the
    // second attempt costs measurably more CPU than the first (~15 %,
    // whichever it is), so each kind goes first once and second once.
    let (mut ratios, mut walls) = (Vec::new(), Vec::new());
    for _ in 0..16 {
        let u1 = refused("nobody-here", "guess-1").await;
        let w1 = refused("known", "guess-2").await;
        let w2 = refused("known", "guess-3").await;
        let u2 = refused("nobody-here", "guess-4").await;
        let ratio = |u: Duration, w: Duration| u.as_secs_f64() / w.as_secs_f64();
        ratios.push(ratio(u1.0 + u2.0, w1.0 + w2.0));
        walls.push(ratio(u1.1 + u2.1, w1.1 + w2.1));
    }
    let ratio = median(ratios.clone());
    assert!(
        (0.7..=1.3).contains(&ratio),
        "median CPU-time ratio unknown id / wrong secret {ratio:.2} \
         (per round: {ratios:.2?}; wall-time ratios, for comparison: {walls:.2?})"
    );
}

async fn validate(gw: &Gateway, token: &str) -> HttpResponse {
    post_json(gw, "/auth/validate", &json!({}), Some(token)).await
}

async fn sign_in(gw: &Gateway, id: &str, secret: Option<&str>) -> serde_json::Value {
    let mut body = json!({"client_id": id});
    if let Some(s) = secret {
        body["client_secret"] = json!(s);
    }
    let r = post_json(gw, "/auth/token", &body, None).await;
    assert_eq!(r.status, 200, "/auth/token {id}: {}", r.text());
    r.json()
}

async fn refresh(gw: &Gateway, refresh_token: &serde_json::Value) -> HttpResponse {
    post_json(
        gw,
        "/auth/refresh",
        &json!({"refresh_token": refresh_token}),
        None,
    )
    .await
}

fn reason(r: &HttpResponse) -> String {
    r.json()["reason"].as_str().unwrap_or("").to_string()
}

/// RFC 9700 §4.14.2: a thief who replays a stolen refresh token first gets
/// a pair; when the victim then presents the same (already used) refresh
/// token, the whole family dies: the thief's access and refresh tokens are
/// refused at once, it is logged with client id and address (never the
/// token), and it survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_refresh_token_kills_the_thiefs_pair() {
    let gw = gateway().set("auth.open_enrollment", true).start();
    let victim = sign_in(&gw, "phone", None).await;
    let other = sign_in(&gw, "phone", None).await; // another family of the same client
    assert_eq!(
        claims_of(victim["access_token"].as_str().unwrap())["fam"],
        claims_of(victim["refresh_token"].as_str().unwrap())["fam"]
    );

    // The thief uses the stolen refresh token first.
    let r = refresh(&gw, &victim["refresh_token"]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let thief = r.json();
    let fam = claims_of(victim["refresh_token"].as_str().unwrap())["fam"].clone();
    assert_eq!(
        claims_of(thief["refresh_token"].as_str().unwrap())["fam"],
        fam,
        "a refresh keeps the family"
    );
    let thief_access = thief["access_token"].as_str().unwrap();
    assert_eq!(validate(&gw, thief_access).await.status, 200);

    // The victim's client presents it too: reuse.
    let r = refresh(&gw, &victim["refresh_token"]).await;
    assert_eq!((r.status, reason(&r)), (401, "revoked".into()));
    let v = validate(&gw, thief_access).await;
    assert_eq!((v.status, reason(&v)), (401, "family_revoked".into()));
    let r = refresh(&gw, &thief["refresh_token"]).await;
    assert_eq!((r.status, reason(&r)), (401, "family_revoked".into()));
    // Other families of the same client are untouched.
    assert_eq!(
        validate(&gw, other["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );

    gw.wait_for_log("refresh token reuse", Duration::from_secs(5));
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("refresh token reuse"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("phone") && line.contains("127.0.0.1"),
        "{line}"
    );
    for t in [&victim, &thief] {
        for k in ["access_token", "refresh_token"] {
            assert!(!logs.contains(t[k].as_str().unwrap()), "a token was logged");
        }
    }

    // Persisted: the family stays dead after a restart.
    let gw = gw.restart();
    let v = validate(&gw, thief_access).await;
    assert_eq!((v.status, reason(&v)), (401, "family_revoked".into()));
    assert_eq!(get(&gw, "/auth/health").await.json()["revoked_families"], 1);
}

/// Revoking an access token (as the bearer) revokes its family: the refresh
/// token minted with it can no longer buy a new pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_access_token_kills_its_refresh_token() {
    let gw = gateway().set("auth.open_enrollment", true).start();
    let pair = sign_in(&gw, "laptop", None).await;
    let access = pair["access_token"].as_str().unwrap();
    let r = request(
        &gw,
        "POST",
        "/auth/revoke",
        &[("authorization", &format!("Bearer {access}"))],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["family"], claims_of(access)["fam"]);
    let r = refresh(&gw, &pair["refresh_token"]).await;
    assert_eq!((r.status, reason(&r)), (401, "family_revoked".into()));
    // A new sign-in is a new family and works.
    let again = sign_in(&gw, "laptop", None).await;
    let r = refresh(&gw, &again["refresh_token"]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// An admin cuts a lost phone off: every token it holds is refused (also
/// after a restart), a non-admin may not do it, and the phone can sign in
/// again at once, in the same second as the cutoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revokes_a_client_by_id() {
    let gw = gateway()
        .client("boss", "boss-secret-123", true)
        .client("phone", "phone-secret-456", false)
        .start();
    let boss = sign_in(&gw, "boss", Some("boss-secret-123")).await;
    let boss_access = boss["access_token"].as_str().unwrap();
    let phone = sign_in(&gw, "phone", Some("phone-secret-456")).await;
    let phone_access = phone["access_token"].as_str().unwrap();

    // Not an admin: 403, nothing revoked. No bearer: 401.
    let r = post_json(
        &gw,
        "/auth/revoke",
        &json!({"client_id": "boss"}),
        Some(phone_access),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (403, json!("forbidden"))
    );
    assert_eq!(validate(&gw, boss_access).await.status, 200);
    let r = post_json(&gw, "/auth/revoke", &json!({"client_id": "phone"}), None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post_json(
        &gw,
        "/auth/revoke",
        &json!({"client_id": "phone", "token": phone_access}),
        Some(boss_access),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());

    let r = post_json(
        &gw,
        "/auth/revoke",
        &json!({"client_id": "phone"}),
        Some(boss_access),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(
        (b["revoked"].clone(), b["client_id"].clone()),
        (json!(true), json!("phone"))
    );
    assert!(b["not_before"].as_str().unwrap().ends_with('Z'), "{b}");
    // At once, without waiting for anything.
    let v = validate(&gw, phone_access).await;
    assert_eq!((v.status, reason(&v)), (401, "client_revoked".into()));
    let r = refresh(&gw, &phone["refresh_token"]).await;
    assert_eq!((r.status, reason(&r)), (401, "client_revoked".into()));
    assert_eq!(validate(&gw, boss_access).await.status, 200);

    // Signing in again right away (most likely the same second) works.
    let fresh = sign_in(&gw, "phone", Some("phone-secret-456")).await;
    let fresh_access = fresh["access_token"].as_str().unwrap();
    assert_eq!(validate(&gw, fresh_access).await.status, 200);
    let r = refresh(&gw, &fresh["refresh_token"]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh_access = r.json()["access_token"].as_str().unwrap().to_string();

    let gw = gw.restart();
    assert_eq!(reason(&validate(&gw, phone_access).await), "client_revoked");
    assert_eq!(validate(&gw, &fresh_access).await.status, 200);
    assert_eq!(get(&gw, "/auth/health").await.json()["client_cutoffs"], 1);
}

/// `tars revoke --client X` on the gateway's own config while it runs: the
/// gateway applies it through data_dir without a restart or a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_revoke_is_picked_up_by_a_running_gateway() {
    let gw = gateway().set("auth.open_enrollment", true).start();
    let x = sign_in(&gw, "tablet", None).await;
    let y = sign_in(&gw, "desktop", None).await;
    let x_access = x["access_token"].as_str().unwrap();
    let config = gw.config.to_str().unwrap().to_string();

    let (code, out, err) = run_tars(&["--config", &config, "revoke", "--client", "tablet"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tablet") && out.contains("cutoffs.json"),
        "{out}"
    );
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let v = validate(&gw, x_access).await;
        if v.status == 401 {
            assert_eq!(reason(&v), "client_revoked");
            break;
        }
        assert!(
            Instant::now() < end,
            "the running gateway did not apply the cutoff"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = refresh(&gw, &x["refresh_token"]).await;
    assert_eq!((r.status, reason(&r)), (401, "client_revoked".into()));
    assert_eq!(
        validate(&gw, y["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );
    let again = sign_in(&gw, "tablet", None).await;
    assert_eq!(
        validate(&gw, again["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );

    // A bad id is refused in one line, naming the flag.
    let (code, _, err) = run_tars(
        &["--config", &config, "revoke", "--client", "no spaces"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--client") && err.lines().count() == 1,
        "{err}"
    );
}

fn edit_clients(gw: &Gateway, f: impl FnOnce(&mut Vec<toml::Value>)) {
    let mut t: toml::Table = std::fs::read_to_string(&gw.config)
        .unwrap()
        .parse()
        .unwrap();
    let clients = t["auth"]["clients"].as_array_mut().unwrap();
    f(clients);
    std::fs::write(&gw.config, toml::to_string(&t).unwrap()).unwrap();
}

/// Reload: a removed client's tokens and the tokens of a client whose
/// secret changed are refused from then on, also after the removed client
/// comes back and after a restart; an unchanged client keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removing_a_client_or_changing_its_secret_ends_its_tokens() {
    let gw = gateway()
        .client("gone", "gone-secret-1", false)
        .client("rotated", "old-secret-22", false)
        .client("stays", "stay-secret-3", false)
        // SIGHUP alone: this test counts the reloads it causes.
        .set("tls.watch_interval_secs", 0)
        .start();
    let gone = sign_in(&gw, "gone", Some("gone-secret-1")).await;
    let rotated = sign_in(&gw, "rotated", Some("old-secret-22")).await;
    let stays = sign_in(&gw, "stays", Some("stay-secret-3")).await;
    let token = |v: &serde_json::Value| v["access_token"].as_str().unwrap().to_string();
    let removed_entry = std::cell::RefCell::new(None);
    edit_clients(&gw, |clients| {
        let i = clients
            .iter()
            .position(|c| c["id"].as_str() == Some("gone"))
            .unwrap();
        *removed_entry.borrow_mut() = Some(clients.remove(i));
        let r = clients
            .iter_mut()
            .find(|c| c["id"].as_str() == Some("rotated"))
            .unwrap();
        r["secret_hash"] = hash_secret("new-secret-33").into();
    });
    gw.signal("HUP");
    gw.wait_for_log("configuration reloaded", Duration::from_secs(10));
    assert_eq!(
        reason(&validate(&gw, &token(&gone)).await),
        "unknown_client"
    );
    assert_eq!(
        reason(&validate(&gw, &token(&rotated)).await),
        "client_revoked"
    );
    let r = refresh(&gw, &rotated["refresh_token"]).await;
    assert_eq!((r.status, reason(&r)), (401, "client_revoked".into()));
    assert_eq!(validate(&gw, &token(&stays)).await.status, 200);
    let new_rotated = sign_in(&gw, "rotated", Some("new-secret-33")).await;
    assert_eq!(validate(&gw, &token(&new_rotated)).await.status, 200);

    // The removed client comes back: its old tokens stay dead.
    edit_clients(&gw, |clients| clients.push(removed_entry.take().unwrap()));
    gw.signal("HUP");
    let end = Instant::now() + Duration::from_secs(10);
    while gw.logs().matches("configuration reloaded").count() < 2 {
        assert!(Instant::now() < end, "second reload not logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        reason(&validate(&gw, &token(&gone)).await),
        "client_revoked"
    );

    let gw = gw.restart();
    assert_eq!(
        reason(&validate(&gw, &token(&gone)).await),
        "client_revoked"
    );
    assert_eq!(
        reason(&validate(&gw, &token(&rotated)).await),
        "client_revoked"
    );
    assert_eq!(validate(&gw, &token(&new_rotated)).await.status, 200);
    assert_eq!(validate(&gw, &token(&stays)).await.status, 200);
}

/// Open enrollment says at start what it costs: per-client limits mean
/// nothing when any id gets tokens.
#[test]
fn open_enrollment_warning_says_per_client_limits_mean_nothing() {
    let gw = gateway().plain().set("auth.open_enrollment", true).start();
    gw.wait_for_log("per-client limits", Duration::from_secs(5));
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("per-client limits"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("max_connections_per_client"),
        "{line}"
    );
}
