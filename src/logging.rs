//! Logging set-up with tracing: text or JSON per `[log]`, without the
//! timestamp when journald (which stamps lines itself) is the receiver, and
//! optionally also to a daily-rotated file with a retention count.
//!
//! A session's lines carry its span (`session_id`, `client_id`, `ip`) and a
//! generation's also `conversation_id` and `model`: in text as the
//! `session{..}:generation{..}:` prefix, in JSON under `span` / `spans`.
//!
//! Nothing logged anywhere in the gateway may contain a token or a secret:
//! handlers log client ids, session ids and `jti`s, never the JWT itself.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Why the log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("key `log.file`: {path}: {message}")]
pub struct LogFileError {
    path: String,
    message: String,
}

fn file_writer(
    cfg: &LogConfig,
) -> Result<Option<(tracing_appender::non_blocking::NonBlocking, WorkerGuard)>, LogFileError> {
    let Some(path) = &cfg.file else {
        return Ok(None);
    };
    let err = |message: String| LogFileError {
        path: path.display().to_string(),
        message,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("tars");
    let mut builder = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(stem)
        .max_log_files(cfg.retention_days);
    if let Some(ext) = path.extension().and_then(|s| s.to_str()) {
        builder = builder.filename_suffix(ext);
    }
    let appender = builder.build(dir).map_err(|e| err(e.to_string()))?;
    Ok(Some(tracing_appender::non_blocking(appender)))
}

/// Install the global subscriber. `RUST_LOG`, when set, wins over
/// `log.level` (for debugging a running install). Keep the returned guard
/// alive for the life of the process: it flushes the file writer.
pub fn init(cfg: &LogConfig) -> Result<Option<WorkerGuard>, LogFileError> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.level));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let (writer, guard) = match file_writer(cfg)? {
        Some((file, guard)) => (BoxMakeWriter::new(std::io::stderr.and(file)), Some(guard)),
        None => (BoxMakeWriter::new(std::io::stderr), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false);
    let _ = match (cfg.format, under_journald) {
        // Event fields at the top level; the innermost span's fields under
        // "span" and every open span (session, then generation) under "spans".
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
    Ok(guard)
}
