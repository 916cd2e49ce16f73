//! Configuration: one TOML file, parsed, overridden from the environment,
//! validated and frozen.
//!
//! `raw.rs` holds the serde structs as written by the user, `env.rs` the
//! environment overrides, `validate.rs` the checks that turn a raw file into
//! the typed [`Config`] the rest of the gateway reads. Every error is one line
//! that names the file (or variable), the key and what to change
//! ([`ConfigError`]); `main` prints it and exits 2. `edit.rs` changes the
//! file's `[[auth.clients]]` in place for `tars client` and `tars pair`.

pub mod edit;
mod env;
mod raw;
mod upstreams;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;

pub use env::OVERRIDES as ENV_OVERRIDES;
pub use raw::RawConfig;
pub use upstreams::{valid_upstream_name, DEFAULT_UPSTREAM, MAX_CONCURRENT_LIMIT};
pub use validate::{check_secret, valid_client_id};

/// Why a configuration was refused. Always renders as a single line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The TOML did not parse or did not fit the schema.
    #[error("{path}: line {line}: key `{key}`: {message}")]
    Parse {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
    /// A key parsed but its value is not acceptable.
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
    /// An environment override did not parse, or its value was refused.
    #[error("environment variable {var} (overrides key `{key}`): {message}")]
    Env {
        var: String,
        key: String,
        message: String,
    },
}

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret's bytes; call only where the secret is used, never to log.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The validated, typed configuration. Built once by [`load`], then shared
/// read-only in an `Arc` and swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; relative paths below are already resolved
    /// against its folder.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub cors: CorsConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub websocket: WebsocketConfig,
    pub ollama: OllamaConfig,
    pub limits: LimitsConfig,
    /// Never empty: the `[[upstreams]]`, or one named `default` at
    /// `[ollama] host`.
    pub upstreams: Vec<UpstreamConfig>,
    pub routing: RoutingConfig,
    /// Notices for the log at start (an ignored `OLLAMA_HOST`).
    pub warnings: Vec<String>,
}

/// The dialect an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamApi {
    /// `POST /api/chat`, NDJSON.
    Ollama,
    /// `POST /v1/chat/completions`, Server-Sent Events.
    OpenAi,
}

impl UpstreamApi {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ollama => "ollama",
            Self::OpenAi => "openai",
        }
    }
}

/// One backend the gateway sends chats to.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// `[a-z0-9_-]{1,32}`, unique: the label in logs and metrics.
    pub name: String,
    /// Base URL without a trailing `/`.
    pub url: String,
    pub api: UpstreamApi,
    /// The models it serves; `None`: discovered.
    pub models: Option<Vec<String>>,
    /// Generations at once on it; more wait.
    pub max_concurrent: usize,
    /// Share among upstreams that are equally free.
    pub weight: u32,
    pub api_key_file: Option<PathBuf>,
    /// Read from `api_key_file` at load; sent as `Authorization: Bearer`.
    pub api_key: Option<Secret>,
    /// `https` only: the PEM file whose certificates are the only roots
    /// trusted for this upstream (ADR 0023); without it, Mozilla's.
    pub ca_file: Option<PathBuf>,
    /// The certificates of `ca_file`, read and checked at load.
    pub ca_certs: Option<Vec<CertificateDer<'static>>>,
    /// Made from `[ollama] host` (no `[[upstreams]]`): behaves as the
    /// single-upstream gateway did — no circuit breaker, probes or
    /// discovery; failures are retried with backoff (ADR 0015).
    pub implicit: bool,
}

/// `[routing]`: health checks, circuit breaker, discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Every upstream is probed this often.
    pub health_interval: Duration,
    /// Consecutive failures (probes or requests) that mark an upstream down.
    pub failure_threshold: u32,
    /// A down upstream is probed again (half-open) after this long.
    pub cooldown: Duration,
    /// Models of upstreams without a static list are asked for this often.
    pub discovery_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// State that must survive restarts: JWT secret, revocation log.
    pub data_dir: PathBuf,
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Connections still speaking HTTP (not upgraded to a WebSocket) at once,
    /// over all clients; more are closed at accept.
    pub max_http_connections: usize,
    /// A write to a client (HTTP response or WebSocket frame) that makes no
    /// progress for this long ends the connection.
    pub write_timeout: Duration,
    /// Host names requests may carry in `Host` (DNS rebinding defence);
    /// empty: any. IP literals of the listen address and `localhost` are
    /// always allowed.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub enabled: bool,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the cert/key files are checked for replacement; `None`
    /// (0 in the file) turns the polling off.
    pub watch_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct CorsConfig {
    /// Exact origins (`scheme://host[:port]`), compared byte for byte.
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// An `EnvFilter` directive, already checked to parse.
    pub level: String,
    pub format: LogFormat,
    /// Also write logs to this file, rotated daily (`tars.2026-11-26.log`
    /// beside it for `file = ".../tars.log"`).
    pub file: Option<PathBuf>,
    /// Rotated files kept.
    pub retention_days: usize,
}

/// Where the JWT signing key comes from. `==` compares the values (an
/// inline key by its bytes), never the redacted `Debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `auth.secret` or `JWT_SECRET_KEY`, already checked for length.
    Inline(Secret),
    /// `auth.secret_file`: read at start, must hold at least 32 bytes.
    File(PathBuf),
    /// Neither set: `{data_dir}/jwt.secret`, created on first start.
    Generated(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
}

impl JwtAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientEntry {
    pub id: String,
    /// argon2id PHC string, checked to parse at load.
    pub secret_hash: String,
    pub admin: bool,
    /// Models this client may use; `None` means every allowed model.
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub secret: SecretSource,
    pub algorithm: JwtAlgorithm,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub leeway_secs: u64,
    pub issuer: String,
    pub audience: String,
    pub open_enrollment: bool,
    /// Failed `/auth/token` attempts one IP may make per minute.
    pub max_failed_attempts_per_minute: u32,
    pub clients: Vec<ClientEntry>,
}

#[derive(Debug, Clone)]
pub struct WebsocketConfig {
    pub heartbeat_interval: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: Option<usize>,
    /// Chats one session may have waiting behind the running one.
    pub message_queue_size: usize,
    /// A client silent this long is closed with 1001.
    pub timeout: Duration,
    pub max_message_bytes: usize,
    pub max_content_bytes: usize,
    /// A client that has not taken a frame for this long is closed.
    pub write_timeout: Duration,
    /// Frames buffered towards one client before the upstream read waits.
    pub outgoing_queue_frames: usize,
    /// How long a generation whose session ended waits for a `resume`
    /// (zero: no resume, a disconnect drops the upstream request).
    pub resume_window: Duration,
    /// Frame bytes one generation keeps for a resume.
    pub resume_buffer_bytes: usize,
    /// Frame bytes all generations together keep for resumes.
    pub resume_total_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct OllamaConfig {
    /// Base URL, `http://host:port`, without a trailing slash: the first
    /// upstream's (the `default` one without `[[upstreams]]`).
    pub host: String,
    pub model: String,
    pub allowed_models: Vec<String>,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u32,
    pub max_tokens: u32,
    pub keep_alive: Option<String>,
    pub pool_max_connections: usize,
    /// Idle connections kept ready ahead of the next chat (≤ `pool_max_connections`).
    pub pool_spare_connections: usize,
    pub retries: u32,
    pub retry_base_delay: Duration,
    pub connect_timeout: Duration,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_line_bytes: usize,
    pub history_turns: usize,
    pub max_conversations_per_client: usize,
    pub conversation_idle: Duration,
    /// Text bytes of all remembered conversations of all clients together;
    /// the least recently used are dropped first beyond it.
    pub max_conversation_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Largest request body accepted on `/auth/*`.
    pub max_body_bytes: usize,
    /// Chat messages one client id may send per minute (burst: the same number).
    pub chat_per_minute: u32,
    /// `/auth/token`, `/auth/refresh` and `/auth/revoke` requests one IP may
    /// make per minute.
    pub auth_per_minute: u32,
    /// New TCP connections one IP may open per second (burst: the same number).
    pub connections_per_second: u32,
    /// TCP connections one IP may hold open at once.
    pub max_connections_per_ip: usize,
    /// IPv6 clients are counted per this many leading address bits in every
    /// per-IP limit (128: each address alone; 64: one home network's hosts
    /// together).
    pub ipv6_prefix_len: u8,
}

/// The configuration in force, shared by every subsystem of one server and
/// swapped whole on reload. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct SharedConfig(std::sync::Arc<arc_swap::ArcSwap<Config>>);

impl SharedConfig {
    pub fn new(config: Config) -> Self {
        Self(std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(config)))
    }

    /// The configuration in force now. Hold the `Arc` for the length of one
    /// request or generation, not longer.
    pub fn get(&self) -> std::sync::Arc<Config> {
        self.0.load_full()
    }

    /// Replace the configuration (reload). Holders of the old `Arc` keep it.
    pub fn replace(&self, config: Config) {
        self.0.store(std::sync::Arc::new(config));
    }
}

/// Read, override from the process environment, and validate `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, &|k| std::env::var(k).ok())
}

/// [`load`] with an injectable environment, for tests.
pub fn load_with_env(
    path: &Path,
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let raw = load_raw(path, get_env)?;
    validate::validate(path, raw).map_err(|e| env::blame(e, get_env))
}

/// Validate `text` as the contents of `path` would be loaded (environment
/// overrides from `get_env` included), without reading `path`: what
/// [`edit`] checks before it writes.
pub fn from_file_text(
    path: &Path,
    text: &str,
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut raw = parse_toml(&path.display().to_string(), text)?;
    env::apply(&mut raw, get_env)?;
    validate::validate(path, raw).map_err(|e| env::blame(e, get_env))
}

/// What [`from_toml_str`] names as the source of a config given no path.
pub const INLINE_SOURCE: &str = "<inline config>";

/// Parse and validate TOML `text` without the environment (for embedding,
/// tests and fuzzing). With `source`, relative paths resolve against its
/// folder, errors name it and a reload re-reads it; without, relative paths
/// resolve against the working directory and errors name
/// [`INLINE_SOURCE`]. Nothing is read from disk except certificate existence.
pub fn from_toml_str(text: &str, source: Option<&Path>) -> Result<Config, ConfigError> {
    let path = source.unwrap_or(Path::new(INLINE_SOURCE));
    let raw = parse_toml(&path.display().to_string(), text)?;
    validate::validate(path, raw)
}

/// Parse the file and apply environment overrides, without validation.
pub fn load_raw(
    path: &Path,
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<RawConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut raw = parse_toml(&shown, &text)?;
    env::apply(&mut raw, get_env)?;
    Ok(raw)
}

/// Parse TOML text into a [`RawConfig`], naming the key of any error.
pub fn parse_toml(shown_path: &str, text: &str) -> Result<RawConfig, ConfigError> {
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
        path: shown_path.to_string(),
        line: line_of(text, e.span()),
        key: "-".into(),
        message: one_line(e.message()),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::Parse {
            path: shown_path.to_string(),
            line: line_of(text, inner.span()),
            key: if key == "." { "-".into() } else { key },
            message: one_line(inner.message()),
        }
    })
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(0)
}

/// The effective configuration as TOML with every secret redacted, for
/// `tars check-config`.
pub fn redacted_toml(raw: &RawConfig) -> String {
    let mut raw = raw.clone();
    if raw.auth.secret.is_some() {
        raw.auth.secret = Some("<redacted>".into());
    }
    for c in &mut raw.auth.clients {
        c.secret_hash = "<redacted>".into();
    }
    toml::to_string_pretty(&raw).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse_toml(
            "c.toml",
            "[server]\nlisten = \"0.0.0.0:1\"\nlisten_port = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("c.toml: line 3: key `server"), "{err}");
        assert!(err.contains("listen_port"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn wrong_type_names_key() {
        let err = parse_toml("c.toml", "[websocket]\nmax_connections = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `websocket.max_connections`"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let raw = parse_toml("c.toml", "").unwrap();
        assert_eq!(raw.server.listen, "0.0.0.0:8443");
        assert_eq!(raw.websocket.max_connections, 10);
        assert_eq!(raw.ollama.model, "mistral:7b-instruct");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("super-secret-value");
        assert!(!format!("{s:?}").contains("super"));
    }
}
