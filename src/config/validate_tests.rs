//! Unit tests of `validate.rs` (kept apart so that file stays one screenful of checks).

use super::*;

fn check(text: &str) -> Result<Config, ConfigError> {
    let raw = crate::config::parse_toml("t.toml", text)?;
    validate(Path::new("/nonexistent/t.toml"), raw)
}

fn msg(text: &str) -> String {
    check(text).unwrap_err().to_string()
}

#[test]
fn defaults_validate() {
    let c = check("[tls]\nenabled = false\n").unwrap();
    assert_eq!(c.server.listen.port(), 8443);
    assert_eq!(c.server.data_dir, Path::new("/nonexistent/data"));
    assert_eq!(c.ollama.allowed_models, vec!["mistral:7b-instruct"]);
    assert!(matches!(c.auth.secret, SecretSource::Generated(_)));
}

#[test]
fn port_out_of_range() {
    let m = msg("[server]\nlisten = \"0.0.0.0:70000\"\n");
    assert!(
        m.contains("key `server.listen`") && m.contains("out of range"),
        "{m}"
    );
}

#[test]
fn bad_address() {
    let m = msg("[server]\nlisten = \"localhost\"\n");
    assert!(
        m.contains("key `server.listen`") && m.contains("IP:PORT"),
        "{m}"
    );
}

#[test]
fn short_and_placeholder_secrets() {
    assert!(msg("[auth]\nsecret = \"short\"\n").contains("at least 32"));
    assert!(
        msg("[auth]\nsecret = \"your-secret-key-change-this-in-production\"\n")
            .contains("placeholder")
    );
}

#[test]
fn algorithm_pinned_to_hmac() {
    assert!(msg("[auth]\nalgorithm = \"none\"\n").contains("key `auth.algorithm`"));
    assert!(msg("[auth]\nalgorithm = \"RS256\"\n").contains("not supported"));
}

#[test]
fn client_hash_must_be_argon2id() {
    let m = msg("[[auth.clients]]\nid = \"a\"\nsecret_hash = \"plain\"\n");
    assert!(m.contains("auth.clients[0].secret_hash"), "{m}");
}

#[test]
fn ollama_host_must_be_http_or_https() {
    assert!(msg("[ollama]\nhost = \"ftp://x\"\n").contains("ollama.host"));
    let c = from_toml_str(
        "[tls]\nenabled = false\n[ollama]\nhost = \"https://x:1\"\n",
        None,
    )
    .unwrap();
    assert_eq!(c.upstreams[0].url, "https://x:1");
    assert_eq!(c.upstreams[0].ca_certs, None, "the public roots");
}

#[test]
fn log_levels() {
    for ok in [
        "info",
        "DEBUG",
        "warn",
        "tars=debug,info",
        "tars=trace,hyper=warn",
    ] {
        assert!(valid_log_level(ok), "{ok}");
    }
    for bad in ["", "loud", "inof", "tars=loud", "info,,debug"] {
        assert!(!valid_log_level(bad), "{bad}");
    }
    assert!(msg("[log]\nlevel = \"loud\"\n").contains("key `log.level`"));
}

#[test]
fn client_ids() {
    assert!(valid_client_id("client-001"));
    assert!(valid_client_id("a.b_c-D9"));
    assert!(!valid_client_id(""));
    assert!(!valid_client_id("a b"));
    assert!(!valid_client_id(&"x".repeat(129)));
}

#[test]
fn server_limits_and_allowed_hosts() {
    let c = check("[tls]\nenabled = false\n").unwrap();
    assert_eq!(c.server.max_http_connections, 256);
    assert_eq!(c.server.write_timeout, Duration::from_secs(30));
    assert!(c.server.allowed_hosts.is_empty());
    let c = check("[tls]\nenabled = false\n[server]\nallowed_hosts = [\"NAS.local\"]\n").unwrap();
    assert_eq!(c.server.allowed_hosts, vec!["nas.local"]);
    for bad in ["[\"https://nas.local\"]", "[\"nas.local:8443\"]", "[]"] {
        let m = msg(&format!("[server]\nallowed_hosts = {bad}\n"));
        assert!(m.contains("key `server.allowed_hosts`"), "{bad}: {m}");
    }
    assert!(msg("[server]\nmax_http_connections = 0\n").contains("server.max_http_connections"));
    assert!(msg("[server]\nwrite_timeout_secs = 0\n").contains("server.write_timeout_secs"));
}

#[test]
fn resume_keys() {
    let c = check("[tls]\nenabled = false\n").unwrap();
    assert_eq!(c.websocket.resume_window, Duration::from_secs(60));
    assert_eq!(c.websocket.resume_buffer_bytes, 1024 * 1024);
    assert_eq!(c.websocket.resume_total_bytes, 64 * 1024 * 1024);
    let c = check("[tls]\nenabled = false\n[websocket]\nresume_window_secs = 0\n").unwrap();
    assert!(c.websocket.resume_window.is_zero());
    for (bad, key) in [
        ("resume_buffer_bytes = 100", "websocket.resume_buffer_bytes"),
        (
            "resume_buffer_bytes = 8192\nresume_total_bytes = 4096",
            "websocket.resume_total_bytes",
        ),
        ("resume_window_secs = 86400", "websocket.resume_window_secs"),
        ("resume_window_secs = -1", "websocket.resume_window_secs"),
    ] {
        let m = msg(&format!("[websocket]\n{bad}\n"));
        assert!(m.contains(&format!("key `{key}`")), "{bad}: {m}");
    }
}

#[test]
fn spare_connections_within_the_pool() {
    let c = check("[tls]\nenabled = false\n").unwrap();
    assert_eq!(c.ollama.pool_spare_connections, 2);
    let c = check("[tls]\nenabled = false\n[ollama]\npool_spare_connections = 0\n").unwrap();
    assert_eq!(c.ollama.pool_spare_connections, 0);
    let m = msg("[ollama]\npool_max_connections = 4\npool_spare_connections = 5\n");
    assert!(
        m.contains("key `ollama.pool_spare_connections`")
            && m.contains("at most ollama.pool_max_connections (4)"),
        "{m}"
    );
}
