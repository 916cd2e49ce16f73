//! Raw file → typed [`Config`]: every check that a value makes sense, each
//! failure one [`ConfigError::Invalid`] naming the key and the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawConfig;
use super::*;

/// Secrets that ship in examples and must never be used for real.
const PLACEHOLDER_SECRETS: &[&str] = &[
    "your-secret-key-change-this-in-production",
    "change-me",
    "changeme",
    "secret",
];

/// Minimum JWT secret length in bytes (256 bits for HS256).
pub const MIN_SECRET_BYTES: usize = 32;

struct Checker<'a> {
    path: &'a Path,
    dir: PathBuf,
}

impl Checker<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn positive_secs(&self, key: &str, secs: u64) -> Result<Duration, ConfigError> {
        if secs == 0 {
            return Err(self.err(key, "must be at least 1 second"));
        }
        Ok(Duration::from_secs(secs))
    }

    fn at_least(&self, key: &str, value: usize, min: usize) -> Result<usize, ConfigError> {
        if value < min {
            return Err(self.err(key, format!("is {value}, must be at least {min}")));
        }
        Ok(value)
    }

    fn range_f64(&self, key: &str, v: f64, lo: f64, hi: f64) -> Result<f64, ConfigError> {
        if !(v.is_finite() && v >= lo && v <= hi) {
            return Err(self.err(key, format!("is {v}, must be between {lo} and {hi}")));
        }
        Ok(v)
    }

    /// Relative paths resolve against the config file's folder.
    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

fn parse_listen(c: &Checker, s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some((_, port)) = s.rsplit_once(':') {
        if let Ok(n) = port.parse::<u64>() {
            if n > 65535 {
                return Err(c.err(
                    "server.listen",
                    format!("port {n} is out of range: use 1-65535 (or 0 for any free port)"),
                ));
            }
        }
    }
    Err(c.err(
        "server.listen",
        format!("{s:?} is not an IP:PORT address: write e.g. \"0.0.0.0:8443\" or \"[::]:8443\""),
    ))
}

fn check_origin(c: &Checker, o: &str) -> Result<(), ConfigError> {
    let ok = o
        .split_once("://")
        .map(|(scheme, rest)| {
            (scheme == "http" || scheme == "https")
                && !rest.is_empty()
                && !rest.contains('/')
                && !rest.contains(char::is_whitespace)
        })
        .unwrap_or(false);
    if !ok {
        return Err(c.err(
            "cors.origins",
            format!("{o:?} is not an origin: write scheme://host[:port] with no path, e.g. \"https://nas.local:8443\""),
        ));
    }
    Ok(())
}

fn check_model_name(c: &Checker, key: &str, m: &str) -> Result<(), ConfigError> {
    if m.is_empty() || m.len() > 200 || m.contains(char::is_whitespace) {
        return Err(c.err(
            key,
            format!("{m:?} is not a model name (e.g. \"mistral:7b-instruct\")"),
        ));
    }
    Ok(())
}

/// True when `s` is a level or a tracing filter whose every directive names a
/// level. `EnvFilter` alone would take a misspelt level such as `"inof"` as a
/// target name and silently log nothing.
fn valid_log_level(s: &str) -> bool {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |l: &str| LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
    !s.trim().is_empty()
        && tracing_subscriber::EnvFilter::try_new(s).is_ok()
        && s.split(',').all(|d| match d.rsplit_once('=') {
            Some((_, level)) => is_level(level),
            None => is_level(d) || d.contains('['),
        })
}

/// True for `[A-Za-z0-9._-]{1,128}`: the client ids the gateway accepts.
pub fn valid_client_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Check an inline or file secret: long enough and not a known placeholder.
pub fn check_secret(bytes: &[u8]) -> Result<(), String> {
    let trimmed = String::from_utf8_lossy(bytes);
    let lower = trimmed.trim().to_ascii_lowercase();
    if PLACEHOLDER_SECRETS.iter().any(|p| lower == *p) {
        return Err("is a placeholder from an example: generate one with `openssl rand -hex 32`, or remove it to let tars create data_dir/jwt.secret".into());
    }
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "is {} bytes, must be at least {MIN_SECRET_BYTES}: generate one with `openssl rand -hex 32`",
            bytes.len()
        ));
    }
    Ok(())
}

pub fn validate(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        })
        .unwrap_or_else(|| PathBuf::from("."));
    let c = Checker { path, dir };

    // [server]
    let s = &raw.server;
    let server = ServerConfig {
        listen: parse_listen(&c, &s.listen)?,
        data_dir: c.path(&s.data_dir),
        header_read_timeout: c.positive_secs(
            "server.header_read_timeout_secs",
            s.header_read_timeout_secs,
        )?,
        tls_handshake_timeout: c.positive_secs(
            "server.tls_handshake_timeout_secs",
            s.tls_handshake_timeout_secs,
        )?,
        shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
        max_header_bytes: c.at_least("server.max_header_bytes", s.max_header_bytes, 1024)?,
        max_headers: c.at_least("server.max_headers", s.max_headers, 8)?,
        max_http_connections: c.at_least(
            "server.max_http_connections",
            s.max_http_connections,
            1,
        )?,
        write_timeout: c.positive_secs("server.write_timeout_secs", s.write_timeout_secs)?,
        allowed_hosts: match &s.allowed_hosts {
            None => Vec::new(),
            Some(list) => {
                for h in list {
                    let ok = !h.is_empty()
                        && h.len() <= 253
                        && h.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                    if !ok {
                        return Err(c.err(
                            "server.allowed_hosts",
                            format!("{h:?} is not a host name: write names without scheme or port, e.g. [\"nas.local\"]"),
                        ));
                    }
                }
                if list.is_empty() {
                    return Err(c.err(
                        "server.allowed_hosts",
                        "is empty: list the names clients use (e.g. [\"nas.local\"]), or remove the key to allow any",
                    ));
                }
                list.iter().map(|h| h.to_ascii_lowercase()).collect()
            }
        },
    };
    if s.data_dir.is_empty() {
        return Err(c.err("server.data_dir", "must name a folder, e.g. \"data\""));
    }

    // [tls]
    if raw.tls.enabled && (raw.tls.cert.is_empty() || raw.tls.key.is_empty()) {
        return Err(c.err(
            "tls.cert",
            "tls.cert and tls.key must both name PEM files when tls.enabled = true",
        ));
    }
    let tls = TlsConfig {
        enabled: raw.tls.enabled,
        cert: c.path(&raw.tls.cert),
        key: c.path(&raw.tls.key),
        watch_interval: (raw.tls.watch_interval_secs > 0)
            .then(|| Duration::from_secs(raw.tls.watch_interval_secs)),
    };
    if tls.enabled {
        match (tls.cert.exists(), tls.key.exists()) {
            (true, false) => {
                return Err(c.err("tls.key", format!("{} does not exist but tls.cert {} does: supply both files, or remove both to let tars generate a self-signed pair", tls.key.display(), tls.cert.display())))
            }
            (false, true) => {
                return Err(c.err("tls.cert", format!("{} does not exist but tls.key {} does: supply both files, or remove both to let tars generate a self-signed pair", tls.cert.display(), tls.key.display())))
            }
            _ => {}
        }
    }

    // [cors]
    for o in &raw.cors.origins {
        check_origin(&c, o)?;
    }
    let cors = CorsConfig {
        origins: raw.cors.origins.clone(),
    };

    // [log]
    if !valid_log_level(&raw.log.level) {
        return Err(c.err("log.level", format!("{:?} is not a level: use error, warn, info, debug or trace (or a filter such as \"tars=debug,info\")", raw.log.level)));
    }
    let format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(c.err(
                "log.format",
                format!("{other:?} is not a format: use \"text\" or \"json\""),
            ))
        }
    };
    let file = match raw.log.file.as_deref() {
        None | Some("") => None,
        Some(f) => {
            let p = c.path(f);
            if p.file_name().is_none() {
                return Err(c.err(
                    "log.file",
                    format!("{f:?} names no file: write e.g. \"/var/log/tars/tars.log\""),
                ));
            }
            Some(p)
        }
    };
    if raw.log.retention_days == 0 {
        return Err(c.err("log.retention_days", "must be at least 1"));
    }
    let log = LogConfig {
        level: raw.log.level.clone(),
        format,
        file,
        retention_days: raw.log.retention_days,
    };

    // [ollama]
    let o = &raw.ollama;
    let upstreams =
        super::upstreams::upstreams(path, &c.dir, &raw, &|key, m| check_model_name(&c, key, m))?;
    let routing = super::upstreams::routing(path, &raw)?;
    let host = upstreams[0].url.clone();
    check_model_name(&c, "ollama.model", &o.model)?;
    let allowed_models = match &o.allowed_models {
        None => vec![o.model.clone()],
        Some(list) => {
            for m in list {
                check_model_name(&c, "ollama.allowed_models", m)?;
            }
            if !list.contains(&o.model) {
                return Err(c.err(
                    "ollama.allowed_models",
                    format!("must include the default model {:?}", o.model),
                ));
            }
            list.clone()
        }
    };
    if !o.retry_base_delay_secs.is_finite()
        || o.retry_base_delay_secs < 0.0
        || o.retry_base_delay_secs > 60.0
    {
        return Err(c.err(
            "ollama.retry_base_delay_secs",
            "must be between 0 and 60 seconds",
        ));
    }
    if o.retries > 10 {
        return Err(c.err(
            "ollama.retries",
            format!("is {}, must be at most 10", o.retries),
        ));
    }
    let ollama = OllamaConfig {
        host,
        model: o.model.clone(),
        allowed_models,
        temperature: c.range_f64("ollama.temperature", o.temperature, 0.0, 2.0)?,
        top_p: c.range_f64("ollama.top_p", o.top_p, 0.0, 1.0)?,
        top_k: o.top_k,
        max_tokens: c.at_least("ollama.max_tokens", o.max_tokens as usize, 1)? as u32,
        keep_alive: o.keep_alive.clone(),
        pool_max_connections: c.at_least(
            "ollama.pool_max_connections",
            o.pool_max_connections,
            1,
        )?,
        pool_spare_connections: if o.pool_spare_connections > o.pool_max_connections {
            return Err(c.err(
                "ollama.pool_spare_connections",
                format!(
                    "is {}, must be at most ollama.pool_max_connections ({})",
                    o.pool_spare_connections, o.pool_max_connections
                ),
            ));
        } else {
            o.pool_spare_connections
        },
        retries: o.retries,
        retry_base_delay: Duration::from_secs_f64(o.retry_base_delay_secs),
        connect_timeout: c.positive_secs("ollama.connect_timeout_secs", o.connect_timeout_secs)?,
        first_token_timeout: c.positive_secs(
            "ollama.first_token_timeout_secs",
            o.first_token_timeout_secs,
        )?,
        idle_timeout: c.positive_secs("ollama.idle_timeout_secs", o.idle_timeout_secs)?,
        max_line_bytes: c.at_least("ollama.max_line_bytes", o.max_line_bytes, 1024)?,
        history_turns: o.history_turns,
        max_conversations_per_client: c.at_least(
            "ollama.max_conversations_per_client",
            o.max_conversations_per_client,
            1,
        )?,
        conversation_idle: c
            .positive_secs("ollama.conversation_idle_secs", o.conversation_idle_secs)?,
        max_conversation_bytes: c.at_least(
            "ollama.max_conversation_bytes",
            o.max_conversation_bytes,
            1024,
        )?,
    };

    // [auth]
    let a = &raw.auth;
    let secret = match (&a.secret, &a.secret_file) {
        (Some(_), Some(_)) => {
            return Err(c.err(
                "auth.secret",
                "set auth.secret or auth.secret_file, not both",
            ))
        }
        (Some(s), None) => {
            check_secret(s.as_bytes()).map_err(|m| c.err("auth.secret", m))?;
            SecretSource::Inline(Secret::new(s.clone()))
        }
        (None, Some(f)) => SecretSource::File(c.path(f)),
        (None, None) => SecretSource::Generated(server.data_dir.join("jwt.secret")),
    };
    let algorithm = match a.algorithm.as_str() {
        "HS256" => JwtAlgorithm::HS256,
        "HS384" => JwtAlgorithm::HS384,
        "HS512" => JwtAlgorithm::HS512,
        other => {
            return Err(c.err(
                "auth.algorithm",
                format!("{other:?} is not supported: use \"HS256\", \"HS384\" or \"HS512\""),
            ))
        }
    };
    if a.access_ttl_hours == 0 || a.access_ttl_hours > 24 * 366 {
        return Err(c.err("auth.access_ttl_hours", "must be between 1 and 8784 hours"));
    }
    if a.refresh_ttl_days == 0 || a.refresh_ttl_days > 366 {
        return Err(c.err("auth.refresh_ttl_days", "must be between 1 and 366 days"));
    }
    if a.leeway_secs > 300 {
        return Err(c.err("auth.leeway_secs", "must be at most 300 seconds"));
    }
    if a.issuer.is_empty() || a.audience.is_empty() {
        return Err(c.err(
            "auth.issuer",
            "auth.issuer and auth.audience must not be empty",
        ));
    }
    if a.max_failed_attempts_per_minute == 0 {
        return Err(c.err("auth.max_failed_attempts_per_minute", "must be at least 1"));
    }
    let mut clients: Vec<ClientEntry> = Vec::with_capacity(a.clients.len());
    for (i, rc) in a.clients.iter().enumerate() {
        let key = |k: &str| format!("auth.clients[{i}].{k}");
        if !valid_client_id(&rc.id) {
            return Err(c.err(
                &key("id"),
                format!(
                    "{:?} is not a client id: 1-128 characters of A-Z a-z 0-9 . _ -",
                    rc.id
                ),
            ));
        }
        if clients.iter().any(|x| x.id == rc.id) {
            return Err(c.err(&key("id"), format!("{:?} is listed twice", rc.id)));
        }
        match argon2::PasswordHash::new(&rc.secret_hash) {
            Ok(h) if h.algorithm.as_str() == "argon2id" => {}
            _ => {
                return Err(c.err(
                    &key("secret_hash"),
                    "is not an argon2id PHC string: create one with `tars hash-secret`",
                ))
            }
        }
        if let Some(models) = &rc.models {
            for m in models {
                if !ollama.allowed_models.contains(m) {
                    return Err(c.err(
                        &key("models"),
                        format!("{m:?} is not in ollama.allowed_models"),
                    ));
                }
            }
        }
        clients.push(ClientEntry {
            id: rc.id.clone(),
            secret_hash: rc.secret_hash.clone(),
            admin: rc.admin,
            models: rc.models.clone(),
        });
    }
    let auth = AuthConfig {
        secret,
        algorithm,
        access_ttl: Duration::from_secs(a.access_ttl_hours * 3600),
        refresh_ttl: Duration::from_secs(a.refresh_ttl_days * 86400),
        leeway_secs: a.leeway_secs,
        issuer: a.issuer.clone(),
        audience: a.audience.clone(),
        open_enrollment: a.open_enrollment,
        max_failed_attempts_per_minute: a.max_failed_attempts_per_minute,
        clients,
    };

    // [websocket]
    let w = &raw.websocket;
    let websocket = WebsocketConfig {
        heartbeat_interval: c.positive_secs(
            "websocket.heartbeat_interval_secs",
            w.heartbeat_interval_secs,
        )?,
        max_connections: c.at_least("websocket.max_connections", w.max_connections, 1)?,
        max_connections_per_client: match w.max_connections_per_client {
            Some(n) => Some(c.at_least("websocket.max_connections_per_client", n, 1)?),
            None => None,
        },
        message_queue_size: c.at_least("websocket.message_queue_size", w.message_queue_size, 1)?,
        timeout: c.positive_secs("websocket.timeout_secs", w.timeout_secs)?,
        max_message_bytes: c.at_least("websocket.max_message_bytes", w.max_message_bytes, 1024)?,
        max_content_bytes: c.at_least("websocket.max_content_bytes", w.max_content_bytes, 1)?,
        write_timeout: c.positive_secs("websocket.write_timeout_secs", w.write_timeout_secs)?,
        outgoing_queue_frames: c.at_least(
            "websocket.outgoing_queue_frames",
            w.outgoing_queue_frames,
            4,
        )?,
        resume_window: Duration::from_secs(w.resume_window_secs),
        resume_buffer_bytes: c.at_least(
            "websocket.resume_buffer_bytes",
            w.resume_buffer_bytes,
            4096,
        )?,
        resume_total_bytes: w.resume_total_bytes,
    };
    if websocket.resume_total_bytes < websocket.resume_buffer_bytes {
        return Err(c.err(
            "websocket.resume_total_bytes",
            "must be at least websocket.resume_buffer_bytes",
        ));
    }
    if websocket.resume_window > Duration::from_secs(3600) {
        return Err(c.err(
            "websocket.resume_window_secs",
            "must be at most 3600 (one hour); 0 turns resume off",
        ));
    }
    if websocket.max_message_bytes > 16 * 1024 * 1024 {
        return Err(c.err(
            "websocket.max_message_bytes",
            "must be at most 16 MiB (16777216)",
        ));
    }
    if websocket.max_content_bytes > websocket.max_message_bytes {
        return Err(c.err(
            "websocket.max_content_bytes",
            "must not exceed websocket.max_message_bytes",
        ));
    }

    let l = &raw.limits;
    let positive = |key: &str, v: u32| -> Result<u32, ConfigError> {
        if v == 0 {
            return Err(c.err(key, "must be at least 1"));
        }
        Ok(v)
    };
    let limits = LimitsConfig {
        max_body_bytes: c.at_least("limits.max_body_bytes", l.max_body_bytes, 256)?,
        chat_per_minute: positive("limits.chat_per_minute", l.chat_per_minute)?,
        auth_per_minute: positive("limits.auth_per_minute", l.auth_per_minute)?,
        connections_per_second: positive(
            "limits.connections_per_second",
            l.connections_per_second,
        )?,
        max_connections_per_ip: c.at_least(
            "limits.max_connections_per_ip",
            l.max_connections_per_ip,
            1,
        )?,
        ipv6_prefix_len: match l.ipv6_prefix_len {
            n @ 1..=128 => n,
            n => {
                return Err(c.err(
                    "limits.ipv6_prefix_len",
                    format!(
                        "is {n}, must be between 1 and 128 (128: per address, 64: per network)"
                    ),
                ))
            }
        },
    };

    Ok(Config {
        source: path.to_path_buf(),
        server,
        tls,
        cors,
        log,
        auth,
        websocket,
        ollama,
        limits,
        upstreams,
        routing,
        warnings: raw.warnings,
    })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
