//! Counters, gauges and histograms, registered once in a prometheus-client
//! [`Registry`] and rendered by `GET /metrics` either as Prometheus text or,
//! with `Accept: application/json`, as the seed report's JSON fields.
//!
//! Every metric is a cheap atomic; the hot path only ever calls `inc` or
//! `observe`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

/// Label set with one `kind` label (message type, outcome, error code ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Label set for auth requests: endpoint and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub endpoint: &'static str,
    pub outcome: &'static str,
}

/// Label set with one `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Direction of a WebSocket message.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// Label set for WebSocket messages: direction and type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// `in` (client to gateway) or `out`.
    pub direction: &'static str,
    pub kind: &'static str,
}

/// Label set of the per-upstream metrics: the upstream's configured name
/// (bounded by the configuration, never by client input).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

/// Label set of `tars_upstream_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamOutcomeLabels {
    pub upstream: String,
    /// `ok`, `failover`, `error` or `cancelled`.
    pub outcome: &'static str,
}

/// All of the gateway's metrics. Shared through `AppState`.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<KindLabel, Counter>,
    pub sessions_active: Gauge,
    pub sessions_total: Counter,
    pub unique_clients: Gauge,
    pub ws_messages: Family<MessageLabels, Counter>,
    pub tokens_streamed: Counter,
    pub generations: Family<KindLabel, Counter>,
    pub generations_active: Gauge,
    pub errors_total: Counter,
    pub time_to_first_token: Histogram,
    pub token_added_delay: Histogram,
    pub generation_duration: Histogram,
    pub upstream_requests: Counter,
    pub upstream_retries: Counter,
    pub upstream_failures: Family<KindLabel, Counter>,
    pub upstream_up: Family<UpstreamLabel, Gauge>,
    pub upstream_active: Family<UpstreamLabel, Gauge>,
    pub upstream_requests_by: Family<UpstreamOutcomeLabels, Counter>,
    pub upstream_tokens: Family<UpstreamLabel, Counter>,
    pub auth_requests: Family<AuthLabels, Counter>,
    pub revocations: Counter,
    pub tls_handshake_failures: Counter,
    pub config_reloads: Family<KindLabel, Counter>,
    pub connections_rejected: Family<KindLabel, Counter>,
    /// Frame bytes kept for resumes, over all generations.
    pub resume_buffered_bytes: Gauge,
    /// Resume requests and resumable generations by outcome.
    pub resume: Family<OutcomeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("tars");
        let m = Self {
            http_requests: Family::default(),
            sessions_active: Gauge::default(),
            sessions_total: Counter::default(),
            unique_clients: Gauge::default(),
            ws_messages: Family::default(),
            tokens_streamed: Counter::default(),
            generations: Family::default(),
            generations_active: Gauge::default(),
            errors_total: Counter::default(),
            // 100 µs .. ~100 s
            time_to_first_token: Histogram::new(exponential_buckets(0.0001, 2.0, 21)),
            // 1 µs .. ~1 s: the gateway's own delay per token
            token_added_delay: Histogram::new(exponential_buckets(0.000001, 2.0, 21)),
            // 1 ms .. ~1000 s
            generation_duration: Histogram::new(exponential_buckets(0.001, 2.0, 21)),
            upstream_requests: Counter::default(),
            upstream_retries: Counter::default(),
            upstream_failures: Family::default(),
            upstream_up: Family::default(),
            upstream_active: Family::default(),
            upstream_requests_by: Family::default(),
            upstream_tokens: Family::default(),
            auth_requests: Family::default(),
            revocations: Counter::default(),
            tls_handshake_failures: Counter::default(),
            config_reloads: Family::default(),
            connections_rejected: Family::default(),
            resume_buffered_bytes: Gauge::default(),
            resume: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "http_requests",
            "HTTP requests by route",
            m.http_requests.clone(),
        );
        r.register(
            "sessions_active",
            "WebSocket sessions open now",
            m.sessions_active.clone(),
        );
        r.register(
            "sessions",
            "WebSocket sessions opened since start",
            m.sessions_total.clone(),
        );
        r.register(
            "unique_clients",
            "Distinct client ids with an open session",
            m.unique_clients.clone(),
        );
        r.register(
            "ws_messages",
            "WebSocket messages by direction and type",
            m.ws_messages.clone(),
        );
        r.register(
            "tokens_streamed",
            "Token frames sent to clients",
            m.tokens_streamed.clone(),
        );
        r.register(
            "generations",
            "Generations by outcome (complete, cancelled or an error code)",
            m.generations.clone(),
        );
        r.register(
            "errors",
            "Error frames and failed requests",
            m.errors_total.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "From chat received to first token frame written",
            m.time_to_first_token.clone(),
        );
        r.register(
            "token_added_delay_seconds",
            "From reading a line from Ollama to writing its frame",
            m.token_added_delay.clone(),
        );
        r.register(
            "generation_duration_seconds",
            "From chat received to complete or error",
            m.generation_duration.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests sent to Ollama",
            m.upstream_requests.clone(),
        );
        r.register(
            "upstream_retries",
            "Retries of Ollama requests",
            m.upstream_retries.clone(),
        );
        r.register(
            "upstream_failures",
            "Failed Ollama requests by kind",
            m.upstream_failures.clone(),
        );
        r.register(
            "auth_requests",
            "Auth requests by endpoint and outcome",
            m.auth_requests.clone(),
        );
        r.register("revocations", "Tokens revoked", m.revocations.clone());
        r.register(
            "generations_active",
            "Generations streaming now",
            m.generations_active.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads by result",
            m.config_reloads.clone(),
        );
        r.register(
            "connections_rejected",
            "Connections refused by a limit",
            m.connections_rejected.clone(),
        );
        r.register(
            "resume_buffered_bytes",
            "Frame bytes kept for resumable generations",
            m.resume_buffered_bytes.clone(),
        );
        r.register(
            "resume",
            "Resumes (resumed, unavailable, resumed_elsewhere) and resumable generations dropped (expired, overflow)",
            m.resume.clone(),
        );
        r.register(
            "upstream_up",
            "1 when the upstream is up (taking chats), 0 when down",
            m.upstream_up.clone(),
        );
        r.register(
            "upstream_active",
            "Generations running on the upstream now",
            m.upstream_active.clone(),
        );
        r.register(
            "upstream_requests",
            "Chats sent to the upstream by outcome (ok, failover, error, cancelled)",
            m.upstream_requests_by.clone(),
        );
        r.register(
            "upstream_tokens",
            "Tokens streamed from the upstream",
            m.upstream_tokens.clone(),
        );
        Self { registry: r, ..m }
    }

    /// Count one request to `route` (a fixed label, never the raw path).
    pub fn http(&self, route: &'static str) {
        self.http_requests
            .get_or_create(&KindLabel { kind: route })
            .inc();
    }

    /// Count one auth request.
    pub fn auth(&self, endpoint: &'static str, outcome: &'static str) {
        self.auth_requests
            .get_or_create(&AuthLabels { endpoint, outcome })
            .inc();
    }

    /// Count one WebSocket message.
    pub fn ws_message(&self, direction: Direction, kind: &'static str) {
        self.ws_messages
            .get_or_create(&MessageLabels {
                direction: direction.label(),
                kind,
            })
            .inc();
    }

    /// Count one finished generation by outcome.
    pub fn generation(&self, outcome: &'static str) {
        self.generations
            .get_or_create(&KindLabel { kind: outcome })
            .inc();
    }

    /// Count one resume outcome.
    pub fn resume_outcome(&self, outcome: &'static str) {
        self.resume.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Prometheus text exposition, with process figures appended.
    pub fn render_text(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let p = process_stats();
        out.push_str("# HELP tars_process_resident_memory_bytes Resident memory size in bytes.\n# TYPE tars_process_resident_memory_bytes gauge\n");
        out.push_str(&format!(
            "tars_process_resident_memory_bytes {}\n",
            p.rss_bytes
        ));
        out.push_str("# HELP tars_process_open_fds Open file descriptors.\n# TYPE tars_process_open_fds gauge\n");
        out.push_str(&format!("tars_process_open_fds {}\n", p.open_fds));
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }

    /// The seed report's JSON metrics.
    pub fn seed_json(&self) -> SeedMetrics {
        let total_messages: u64 = ["chat", "pong", "ping", "cancel", "invalid"]
            .iter()
            .map(|k| {
                self.ws_messages
                    .get_or_create(&MessageLabels {
                        direction: "in",
                        kind: k,
                    })
                    .get()
            })
            .sum();
        let p = process_stats();
        SeedMetrics {
            active_connections: self.sessions_active.get().max(0) as u64,
            unique_clients: self.unique_clients.get().max(0) as u64,
            total_connections: self.sessions_total.get(),
            total_messages,
            total_tokens: self.tokens_streamed.get(),
            total_errors: self.errors_total.get(),
            resident_memory_bytes: p.rss_bytes,
            open_fds: p.open_fds,
        }
    }
}

/// `GET /metrics` with `Accept: application/json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeedMetrics {
    pub active_connections: u64,
    pub unique_clients: u64,
    pub total_connections: u64,
    pub total_messages: u64,
    pub total_tokens: u64,
    pub total_errors: u64,
    pub resident_memory_bytes: u64,
    pub open_fds: u64,
}

/// Resident memory and open descriptors of this process (Linux `/proc`;
/// zero elsewhere).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    pub open_fds: u64,
}

pub fn process_stats() -> ProcessStats {
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    ProcessStats {
        rss_bytes: rss_pages * 4096,
        open_fds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_counters_and_process_figures() {
        let m = Metrics::new();
        m.tokens_streamed.inc_by(7);
        m.auth("token", "ok");
        let text = m.render_text();
        assert!(text.contains("tars_tokens_streamed_total 7"), "{text}");
        assert!(
            text.contains("tars_auth_requests_total{endpoint=\"token\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("tars_process_resident_memory_bytes "));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn seed_json_fields() {
        let m = Metrics::new();
        m.sessions_total.inc();
        m.ws_message(Direction::In, "chat");
        let j = serde_json::to_value(m.seed_json()).unwrap();
        assert_eq!(j["total_connections"], 1);
        assert_eq!(j["total_messages"], 1);
        assert!(j["active_connections"].is_u64());
    }
}
