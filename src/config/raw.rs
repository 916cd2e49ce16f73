//! The TOML file as written by the user: serde structs with defaults and
//! `deny_unknown_fields`, nothing validated yet. `validate.rs` turns a
//! [`RawConfig`] into the typed [`super::Config`].
//!
//! Defaults here are the seed report's values, so an empty file is a valid
//! configuration and the shipped `config.toml` only has to say what differs.

use serde::{Deserialize, Serialize};

/// Top level of `config.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub tls: RawTls,
    pub cors: RawCors,
    pub log: RawLog,
    pub auth: RawAuth,
    pub websocket: RawWebsocket,
    pub ollama: RawOllama,
    pub limits: RawLimits,
    pub routing: RawRouting,
    /// `[[upstreams]]`; empty: `[ollama] host` is the one upstream.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<RawUpstream>,
    /// Notices from reading the environment (an ignored `OLLAMA_HOST`),
    /// logged once the logger is up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `[server]`: the listening socket and the HTTP layer's timeouts and limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub data_dir: String,
    pub header_read_timeout_secs: u64,
    pub tls_handshake_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_http_connections: usize,
    pub write_timeout_secs: u64,
    pub allowed_hosts: Option<Vec<String>>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8443".into(),
            data_dir: "data".into(),
            header_read_timeout_secs: 10,
            tls_handshake_timeout_secs: 10,
            shutdown_grace_secs: 30,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_http_connections: 256,
            write_timeout_secs: 30,
            allowed_hosts: None,
        }
    }
}

/// `[tls]`: certificate and key in PEM.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub enabled: bool,
    pub cert: String,
    pub key: String,
    pub watch_interval_secs: u64,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            enabled: true,
            cert: "certs/tars.crt".into(),
            key: "certs/tars.key".into(),
            watch_interval_secs: 5,
        }
    }
}

/// `[cors]`: browser origins allowed to call the API and open WebSockets.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCors {
    pub origins: Vec<String>,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
    pub file: Option<String>,
    pub retention_days: usize,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            file: None,
            retention_days: 7,
        }
    }
}

/// `[auth]`: JWT signing and the registered clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    pub algorithm: String,
    pub access_ttl_hours: u64,
    pub refresh_ttl_days: u64,
    pub leeway_secs: u64,
    pub issuer: String,
    pub audience: String,
    pub open_enrollment: bool,
    pub max_failed_attempts_per_minute: u32,
    pub clients: Vec<RawClient>,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            algorithm: "HS256".into(),
            access_ttl_hours: 24,
            refresh_ttl_days: 7,
            leeway_secs: 5,
            issuer: "tars".into(),
            audience: "tars".into(),
            open_enrollment: false,
            max_failed_attempts_per_minute: 10,
            clients: Vec::new(),
        }
    }
}

/// One `[[auth.clients]]` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub id: String,
    pub secret_hash: String,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// `[websocket]`: the seed's `WS_*` settings plus size caps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebsocket {
    pub heartbeat_interval_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_client: Option<usize>,
    pub message_queue_size: usize,
    pub timeout_secs: u64,
    pub max_message_bytes: usize,
    pub max_content_bytes: usize,
    pub write_timeout_secs: u64,
    pub outgoing_queue_frames: usize,
    pub resume_window_secs: u64,
    pub resume_buffer_bytes: usize,
    pub resume_total_bytes: usize,
}

impl Default for RawWebsocket {
    fn default() -> Self {
        Self {
            heartbeat_interval_secs: 30,
            max_connections: 10,
            max_connections_per_client: None,
            message_queue_size: 100,
            timeout_secs: 300,
            max_message_bytes: 64 * 1024,
            max_content_bytes: 32 * 1024,
            write_timeout_secs: 30,
            outgoing_queue_frames: 256,
            resume_window_secs: 60,
            resume_buffer_bytes: 1024 * 1024,
            resume_total_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[ollama]`: the upstream server and the generation defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOllama {
    /// `None` when the file (and `OLLAMA_HOST`) leave it out: the default
    /// host applies, and `[[upstreams]]` may be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub model: String,
    pub allowed_models: Option<Vec<String>>,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u32,
    pub max_tokens: u32,
    pub keep_alive: Option<String>,
    pub pool_max_connections: usize,
    pub pool_spare_connections: usize,
    pub retries: u32,
    pub retry_base_delay_secs: f64,
    pub connect_timeout_secs: u64,
    pub first_token_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_line_bytes: usize,
    pub history_turns: usize,
    pub max_conversations_per_client: usize,
    pub conversation_idle_secs: u64,
    pub max_conversation_bytes: usize,
}

impl Default for RawOllama {
    fn default() -> Self {
        Self {
            host: None,
            model: "mistral:7b-instruct".into(),
            allowed_models: None,
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            max_tokens: 2048,
            keep_alive: None,
            pool_max_connections: 20,
            pool_spare_connections: 2,
            retries: 3,
            retry_base_delay_secs: 2.0,
            connect_timeout_secs: 5,
            first_token_timeout_secs: 120,
            idle_timeout_secs: 60,
            max_line_bytes: 1024 * 1024,
            history_turns: 20,
            max_conversations_per_client: 32,
            conversation_idle_secs: 3600,
            max_conversation_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[limits]`: abuse limits for a gateway with nothing in front of it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_body_bytes: usize,
    pub chat_per_minute: u32,
    pub auth_per_minute: u32,
    pub connections_per_second: u32,
    pub max_connections_per_ip: usize,
    pub ipv6_prefix_len: u8,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            chat_per_minute: 30,
            auth_per_minute: 30,
            connections_per_second: 20,
            max_connections_per_ip: 128,
            ipv6_prefix_len: 128,
        }
    }
}

/// The Ollama host used when neither `[ollama] host` nor `[[upstreams]]` is given.
pub const DEFAULT_OLLAMA_HOST: &str = "http://127.0.0.1:11434";

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub url: String,
    #[serde(default = "default_api")]
    pub api: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<String>,
    /// https only: PEM file of the CA(s) to trust instead of the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

fn default_api() -> String {
    "ollama".into()
}
fn default_max_concurrent() -> usize {
    4
}
fn default_weight() -> u32 {
    1
}

/// `[routing]`: health checks, circuit breaker and model discovery of the
/// upstreams.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRouting {
    pub health_interval_secs: u64,
    pub failure_threshold: u32,
    pub cooldown_secs: u64,
    pub discovery_interval_secs: u64,
}

impl Default for RawRouting {
    fn default() -> Self {
        Self {
            health_interval_secs: 5,
            failure_threshold: 3,
            cooldown_secs: 10,
            discovery_interval_secs: 60,
        }
    }
}
