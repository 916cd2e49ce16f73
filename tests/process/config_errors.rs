//! Bad configuration is refused clearly (issue 2): every class of mistake
//! makes both `tars check-config` and `tars` (serve) exit 2 with exactly one
//! line on stderr naming the file (or variable) and the key — no panic, no
//! backtrace, nothing served.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

/// Run `args` and assert the one-line refusal: exit 2, one stderr line that
/// contains every `expect`, nothing on stdout, no panic or backtrace.
fn assert_refused(args: &[&str], env: &[(&str, &str)], expect: &[&str]) -> String {
    let mut env = env.to_vec();
    env.push(("RUST_BACKTRACE", "1"));
    let (code, out, err) = run_tars_timeout(args, &env, Duration::from_secs(20));
    let ctx = format!("tars {args:?} env {env:?}\nstdout: {out}\nstderr: {err}");
    assert_eq!(code, 2, "{ctx}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {ctx}");
    assert!(err.starts_with("tars: error: "), "{ctx}");
    for e in expect {
        assert!(err.contains(e), "{e:?} missing: {ctx}");
    }
    assert!(
        !err.contains("panicked") && !err.to_lowercase().contains("backtrace"),
        "{ctx}"
    );
    assert!(out.is_empty(), "{ctx}");
    err
}

/// Both `check-config` and serving refuse `config` the same way.
fn refused_both_ways(config: &Path, env: &[(&str, &str)], expect: &[&str]) {
    let c = config.to_str().unwrap();
    let a = assert_refused(&["--config", c, "check-config"], env, expect);
    let b = assert_refused(&["--config", c], env, expect);
    assert_eq!(a, b, "check-config and serve disagree");
}

/// A plain-HTTP config on port 0 (so a wrongly accepted config would serve,
/// and the timeout would catch it) with `key = value` set.
fn plain() -> GatewayBuilder {
    gateway().plain()
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn unknown_key() {
    let b = plain().set("server.listen_port", 8443);
    let cfg = b.write_config();
    refused_both_ways(
        &cfg,
        &[],
        &[&shown(&cfg), "server.listen_port", "unknown field"],
    );

    let b = plain().set("colour.scheme", "dark");
    let cfg = b.write_config();
    refused_both_ways(&cfg, &[], &[&shown(&cfg), "colour"]);
}

#[test]
fn wrong_type() {
    let b = plain().set("websocket.max_connections", "many");
    let cfg = b.write_config();
    refused_both_ways(
        &cfg,
        &[],
        &[&shown(&cfg), "key `websocket.max_connections`"],
    );

    let b = plain().set("server.header_read_timeout_secs", -1);
    let cfg = b.write_config();
    refused_both_ways(
        &cfg,
        &[],
        &[&shown(&cfg), "key `server.header_read_timeout_secs`"],
    );

    let b = plain().set("tls.enabled", "yes");
    let cfg = b.write_config();
    refused_both_ways(&cfg, &[], &[&shown(&cfg), "key `tls.enabled`"]);
}

#[test]
fn not_toml_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[server\nlisten = \"0.0.0.0:8443\"\n").unwrap();
    refused_both_ways(&cfg, &[], &[&shown(&cfg), "line 1"]);
}

#[test]
fn bad_values() {
    for (key, value, expect) in [
        ("server.listen", "localhost", "IP:PORT"),
        ("server.listen", "0.0.0.0", "IP:PORT"),
        ("server.listen", "0.0.0.0:70000", "out of range"),
        ("server.listen", "0.0.0.0:-1", "IP:PORT"),
        ("server.header_read_timeout_secs", "0", "at least 1"),
        ("log.format", "xml", "\"text\" or \"json\""),
        ("log.level", "loud", "not a level"),
        ("ollama.host", "localhost:11434", "http://"),
        ("cors.origins", "[\"nas.local\"]", "scheme://host"),
    ] {
        let v: toml::Value = if value.starts_with('[') || value.parse::<i64>().is_ok() {
            format!("x = {value}").parse::<toml::Table>().unwrap()["x"].clone()
        } else {
            value.into()
        };
        let b = plain().set(key, v);
        let cfg = b.write_config();
        refused_both_ways(&cfg, &[], &[&shown(&cfg), &format!("key `{key}`"), expect]);
    }
}

#[test]
fn unreadable_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    refused_both_ways(&missing, &[], &[&shown(&missing), "cannot read"]);
    // A folder where the file should be (tests run as root, so a mode-000
    // file would still be readable).
    let folder = dir.path().join("config.toml");
    std::fs::create_dir(&folder).unwrap();
    refused_both_ways(&folder, &[], &[&shown(&folder), "cannot read"]);
}

#[test]
fn bad_env_override_values() {
    let b = plain();
    let cfg = b.write_config();
    for (var, value, key) in [
        ("WS_MAX_CONNECTIONS", "ten", "websocket.max_connections"),
        ("HTTPS_ENABLED", "maybe", "tls.enabled"),
        ("MODEL_TOP_K", "-3", "ollama.top_k"),
        ("JWT_EXPIRATION_HOURS", "1.5", "auth.access_ttl_hours"),
        // These parse, then validation refuses them: still the variable is
        // named, not the file (where the user would look in vain).
        ("TARS_LISTEN", "nowhere", "server.listen"),
        ("MODEL_TEMPERATURE", "5", "ollama.temperature"),
        ("OLLAMA_HOST", "ftp://x", "ollama.host"),
        ("JWT_SECRET_KEY", "short", "auth.secret"),
    ] {
        let err = assert_refused(
            &["--config", cfg.to_str().unwrap(), "check-config"],
            &[(var, value)],
            &[&format!("environment variable {var}"), key],
        );
        assert!(!err.contains(&shown(&cfg)), "blames the file: {err}");
        assert_refused(
            &["--config", cfg.to_str().unwrap()],
            &[(var, value)],
            &[var, key],
        );
    }
}

/// A TLS config whose certificate and key files live at `certs/tars.crt`
/// and `certs/tars.key`, with a real generated pair in place.
fn tls_with_pair() -> (GatewayBuilder, PathBuf, PathBuf, PathBuf) {
    let b = gateway();
    let cfg = b.write_config();
    let (code, _, err) = run_tars(&["--config", cfg.to_str().unwrap(), "gen-cert"], &[]);
    assert_eq!(code, 0, "{err}");
    let crt = b.dir().join("certs/tars.crt");
    let key = b.dir().join("certs/tars.key");
    (b, cfg, crt, key)
}

#[test]
fn malformed_certificate_pem() {
    for garbage in [
        "this is not a certificate\n",
        "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
    ] {
        let (_b, cfg, crt, _) = tls_with_pair();
        std::fs::write(&crt, garbage).unwrap();
        refused_both_ways(&cfg, &[], &[&shown(&cfg), "key `tls.cert`", &shown(&crt)]);
    }
}

#[test]
fn malformed_or_mismatched_key_pem() {
    let (_b, cfg, _, key) = tls_with_pair();
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    refused_both_ways(&cfg, &[], &[&shown(&cfg), "key `tls.key`", &shown(&key)]);

    let (_b, cfg, _, key) = tls_with_pair();
    std::fs::write(&key, "no key here\n").unwrap();
    refused_both_ways(&cfg, &[], &[&shown(&cfg), "key `tls.key`", &shown(&key)]);

    // A well-formed key that belongs to another certificate.
    let (_b, cfg, _, key) = tls_with_pair();
    let (_other, _, _, other_key) = tls_with_pair();
    std::fs::copy(&other_key, &key).unwrap();
    refused_both_ways(
        &cfg,
        &[],
        &[&shown(&cfg), "key `tls.key`", "does not match"],
    );
}

#[test]
fn unreadable_certificate_or_key() {
    let (_b, cfg, crt, _) = tls_with_pair();
    std::fs::remove_file(&crt).unwrap();
    std::fs::create_dir(&crt).unwrap();
    refused_both_ways(&cfg, &[], &[&shown(&cfg), "key `tls.cert`", &shown(&crt)]);

    let (_b, cfg, _, key) = tls_with_pair();
    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    refused_both_ways(&cfg, &[], &[&shown(&cfg), "key `tls.key`", &shown(&key)]);
}

#[test]
fn only_one_of_certificate_and_key() {
    let (_b, cfg, crt, key) = tls_with_pair();
    std::fs::remove_file(&key).unwrap();
    let before = std::fs::read(&crt).unwrap();
    refused_both_ways(&cfg, &[], &[&shown(&cfg), "key `tls.key`", &shown(&key)]);
    // Nothing generated, nothing overwritten.
    assert!(!key.exists());
    assert_eq!(std::fs::read(&crt).unwrap(), before);

    let (_b, cfg, crt, key) = tls_with_pair();
    std::fs::remove_file(&crt).unwrap();
    let before = std::fs::read(&key).unwrap();
    refused_both_ways(&cfg, &[], &[&shown(&cfg), "key `tls.cert`", &shown(&crt)]);
    assert!(!crt.exists());
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn valid_config_passes_check_config() {
    let b = plain();
    let cfg = b.write_config();
    let (code, out, err) = run_tars(&["--config", cfg.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("[server]") && out.contains("listen = \"127.0.0.1:0\""),
        "{out}"
    );
    assert!(err.contains("is valid"), "{err}");

    // The shipped config.toml is valid as it stands.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let (code, out, err) = run_tars(&["--config", shipped, "check-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("listen = \"0.0.0.0:8443\""), "{out}");
}

#[test]
fn bad_upstreams_are_refused() {
    let ok = |name: &str| {
        let mut t = toml::Table::new();
        t.insert("max_concurrent".into(), 2.into());
        plain().upstream(name, "http://127.0.0.1:9", "ollama", t)
    };
    // A duplicate name.
    let b = ok("desktop").upstream(
        "desktop",
        "http://127.0.0.1:10",
        "openai",
        toml::Table::new(),
    );
    let cfg = b.write_config();
    refused_both_ways(
        &cfg,
        &[],
        &[&shown(&cfg), "key `upstreams[1].name`", "used twice"],
    );
    // max_concurrent = 0.
    let mut t = toml::Table::new();
    t.insert("max_concurrent".into(), 0.into());
    let b = plain().upstream("nas", "http://127.0.0.1:9", "ollama", t);
    let cfg = b.write_config();
    refused_both_ways(
        &cfg,
        &[],
        &[&shown(&cfg), "key `upstreams[0].max_concurrent`"],
    );
    // [ollama] host beside [[upstreams]].
    let b = ok("nas").set("ollama.host", "http://127.0.0.1:11434");
    let cfg = b.write_config();
    refused_both_ways(
        &cfg,
        &[],
        &[&shown(&cfg), "key `ollama.host`", "[[upstreams]]"],
    );
    // OLLAMA_HOST in the environment is only a warning beside [[upstreams]]:
    // check-config passes and prints the upstreams.
    let b = ok("nas");
    let cfg = b.write_config();
    let (code, out, err) = run_tars(
        &["--config", cfg.to_str().unwrap(), "check-config"],
        &[("OLLAMA_HOST", "http://127.0.0.1:11434")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("name = \"nas\""), "{out}");
    assert!(err.contains("OLLAMA_HOST"), "{err}");
}

#[test]
fn bad_ca_files_are_refused() {
    let ca = crate::support::upstream_tls::TestCa::new();
    let with_ca = |url: &str, ca_file: &Path| {
        let mut t = toml::Table::new();
        t.insert("ca_file".into(), ca_file.display().to_string().into());
        plain().upstream("lab", url, "ollama", t)
    };
    let https = "https://127.0.0.1:9";
    let not_pem = ca.dir().join("notes.txt");
    std::fs::write(&not_pem, "my lab CA is somewhere\n").unwrap();
    let empty = ca.dir().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = ca.dir().join("missing.pem");
    for (file, says) in [
        (&missing, "cannot read"),
        (&not_pem, "holds no certificate"),
        (&empty, "holds no certificate"),
    ] {
        let b = with_ca(https, file);
        let cfg = b.write_config();
        refused_both_ways(
            &cfg,
            &[],
            &[
                &shown(&cfg),
                "key `upstreams[0].ca_file`",
                &shown(file),
                says,
                "give the PEM file of the CA",
            ],
        );
    }
    // On an http:// upstream it would be ignored: refused.
    let b = with_ca("http://127.0.0.1:9", &ca.ca_file());
    let cfg = b.write_config();
    refused_both_ways(
        &cfg,
        &[],
        &[
            &shown(&cfg),
            "key `upstreams[0].ca_file`",
            "https:// upstreams only",
        ],
    );
    // A good one: check-config passes and says which roots the upstream trusts.
    let b = with_ca(https, &ca.ca_file());
    let cfg = b.write_config();
    let (code, _, err) = run_tars(&["--config", cfg.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("ca_file={}", ca.ca_file().display())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_command_asks_each_upstream_now() {
    let fake = crate::support::fake_ollama::FakeOllama::start().await;
    fake.set_tags(&["qwen2.5:0.5b"]);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let b = plain()
        .upstream("desk", &fake.url(), "ollama", toml::Table::new())
        .upstream("gone", &closed, "openai", toml::Table::new());
    let cfg = b.write_config();
    let path = cfg.to_str().unwrap().to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_tars(&["--config", &path, "upstreams"], &[]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    assert!(
        lines[1].starts_with("desk ")
            && lines[1].contains(" yes ")
            && lines[1].ends_with("qwen2.5:0.5b"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("gone ") && lines[2].contains(" no "),
        "{out}"
    );
    assert!(lines[3].starts_with("gone: "), "{out}");
    // None up: exit 1.
    fake.stop().await;
    let path = cfg.to_str().unwrap().to_string();
    let (code, out, _) =
        tokio::task::spawn_blocking(move || run_tars(&["--config", &path, "upstreams"], &[]))
            .await
            .unwrap();
    assert_eq!(code, 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_command_speaks_tls_with_the_ca_file_only() {
    let ca = crate::support::upstream_tls::TestCa::new();
    let fake = crate::support::fake_ollama::FakeOllama::start_tls(ca.acceptor()).await;
    fake.set_tags(&["qwen2.5:0.5b"]);
    let mut with_ca = toml::Table::new();
    with_ca.insert("ca_file".into(), ca.ca_file().display().to_string().into());
    let b = plain()
        .upstream("lab", &fake.url(), "ollama", with_ca)
        .upstream("public", &fake.url(), "ollama", toml::Table::new());
    let cfg = b.write_config();
    let path = cfg.to_str().unwrap().to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_tars(&["--config", &path, "upstreams"], &[]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].starts_with("lab ")
            && lines[1].contains(" https://127.0.0.1:")
            && lines[1].contains(" yes ")
            && lines[1].ends_with("qwen2.5:0.5b"),
        "{out}"
    );
    // The same server, trusting the public roots only: down, saying why.
    assert!(
        lines[2].starts_with("public ") && lines[2].contains(" no "),
        "{out}"
    );
    assert!(
        lines[3].starts_with("public: ")
            && lines[3].contains("TLS handshake with 127.0.0.1 failed: invalid peer certificate"),
        "{out}"
    );
}
