//! Reload without dropping anything: [`reload`] (called through
//! [`crate::Handle::reload`], which the `tars` binary wires to SIGHUP)
//! re-reads `config.toml` and the certificate files, validates them, and
//! swaps the whole configuration at once; certificate files replaced on disk are picked up by polling their
//! modification time, and a saved `config.toml` by polling its contents
//! ([`spawn_config_watch`], every `tls.watch_interval_secs`: what makes
//! `tars client add` take effect with no restart and no signal). Open connections and running streams keep what they
//! have; new handshakes, requests and chats see the new settings.
//!
//! A bad new configuration is refused with a logged error, the old one stays
//! in force, and `tars_config_reloads_total{kind="error"}` counts it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{self, Config, ConfigError};
use crate::metrics::KindLabel;
use crate::state::AppState;
use crate::tls::{self, TlsError};

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Tls { path: String, source: TlsError },
}

pub(crate) fn count(state: &AppState, kind: &'static str) {
    state
        .metrics
        .config_reloads
        .get_or_create(&KindLabel { kind })
        .inc();
}

/// Settings that cannot change while running; named in the log.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    if old.server.listen != new.server.listen {
        v.push("server.listen");
    }
    if old.server.max_http_connections != new.server.max_http_connections {
        v.push("server.max_http_connections");
    }
    if old.server.data_dir != new.server.data_dir {
        v.push("server.data_dir");
    }
    if old.tls.enabled != new.tls.enabled {
        v.push("tls.enabled");
    }
    if old.log.level != new.log.level
        || old.log.format != new.log.format
        || old.log.file != new.log.file
    {
        v.push("log");
    }
    let (ol, nl) = (&old.limits, &new.limits);
    if (
        ol.chat_per_minute,
        ol.auth_per_minute,
        ol.connections_per_second,
        ol.max_connections_per_ip,
        ol.ipv6_prefix_len,
    ) != (
        nl.chat_per_minute,
        nl.auth_per_minute,
        nl.connections_per_second,
        nl.max_connections_per_ip,
        nl.ipv6_prefix_len,
    ) {
        v.push("limits (rates and per-IP connections)");
    }
    // By value: the `Debug` of an inline key is redacted, so two different
    // keys would render the same.
    if old.auth.secret != new.auth.secret || old.auth.algorithm != new.auth.algorithm {
        v.push("auth.secret/auth.algorithm");
    }
    v
}

/// Re-read and apply the configuration. On error nothing changes.
pub fn reload(state: &AppState) -> Result<(), ReloadError> {
    let old = state.config();
    let new = config::load(&old.source)?;
    if let Some(store) = &state.certs {
        if new.tls.enabled {
            let ck = tls::load_certified_key(&new.tls.cert, &new.tls.key).map_err(|source| {
                ReloadError::Tls {
                    path: new.source.display().to_string(),
                    source,
                }
            })?;
            store.replace(ck);
        }
    }
    let later = restart_only(&old, &new);
    if !later.is_empty() {
        warn!(keys = %later.join(", "), "these settings changed but take effect only after a restart");
    }
    // Upstreams added, removed or changed; running streams keep theirs.
    if old.upstreams != new.upstreams || old.routing != new.routing {
        info!(upstreams = new.upstreams.len(), "reload: upstreams updated");
    }
    state.pool.reconfigure(&new, crate::state::pool_queue(&new));
    // Clients removed, re-keyed or with other permissions lose their
    // sessions (1008, the reason); the epoch moved too, so every other
    // session re-checks its token (open enrollment turned off, ...).
    let changes = state.auth.auth.reload(&new);
    for (client, reason) in &changes.ended {
        let closed = state.ws.sessions.close_client(client, reason);
        if closed > 0 {
            info!(client_id = %client, reason, sessions_closed = closed, "reload: sessions closed");
        }
    }
    state.replace_config(new);
    Ok(())
}

/// [`reload`] with its count and log line, for a request that needs the
/// file's clients now (`POST /auth/pair` with a client `tars pair` has just
/// registered). The old config stays on error.
pub fn reload_now(state: &AppState) {
    match reload(state) {
        Ok(()) => {
            count(state, "ok");
            info!("configuration reloaded (a pairing code's client was not known yet)");
        }
        Err(e) => {
            count(state, "error");
            tracing::error!(error = %e, "reload refused; the previous configuration stays in force");
        }
    }
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Poll the certificate and key files; when either changes and the pair
/// loads, serve it to new handshakes.
/// Ends when the server starts draining.
pub fn spawn_cert_watch(state: Arc<AppState>, every: Duration) -> Option<JoinHandle<()>> {
    let store = state.certs.clone()?;
    Some(tokio::spawn(async move {
        let paths = |s: &AppState| -> (PathBuf, PathBuf) {
            let c = s.config();
            (c.tls.cert.clone(), c.tls.key.clone())
        };
        let (c, k) = paths(&state);
        let mut last = (stamp(&c), stamp(&k));
        let mut warned = last;
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = state.shutdown.cancelled() => return,
            }
            let (c, k) = paths(&state);
            let now = (stamp(&c), stamp(&k));
            if now == last {
                continue;
            }
            match tls::load_certified_key(&c, &k) {
                Ok(ck) => {
                    last = now;
                    store.replace(ck);
                    count(&state, "certificate");
                    info!(cert = %c.display(), sha256 = %store.fingerprint(), "certificate files changed: new handshakes use the new certificate");
                }
                Err(e) if now != warned => {
                    // Often a renewal caught half-written: the next poll
                    // retries; warn once per state of the files.
                    warned = now;
                    count(&state, "certificate_error");
                    warn!(error = %e, "certificate files changed but do not load; still serving the previous certificate");
                }
                Err(_) => {}
            }
        }
    }))
}

/// The file's inode, modification time and SHA-256; `None` when it cannot
/// be read. The inode and time matter too: a file edited back to bytes the
/// watcher saw before (add, then remove a client) may differ from what a
/// reload in between applied.
fn digest(p: &Path) -> Digest {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(p).ok()?;
    let bytes = std::fs::read(p).ok()?;
    Some((
        meta.ino(),
        meta.modified().ok(),
        Sha256::digest(&bytes).into(),
    ))
}

/// How long the config watcher looks away before it reads a changed file
/// again, to tell a saved state from a save caught half-way.
const SETTLE: Duration = Duration::from_millis(50);

type Digest = Option<(u64, Option<SystemTime>, [u8; 32])>;

/// The file's new [`digest`] when it differs from `last` and stays the same
/// across `pause`; `None` when it is unchanged, gone for a moment (an
/// editor's save), or still moving. A save that is not atomic (truncate,
/// then write) shows a poll states that were never meant: the empty file,
/// or the time of the truncation with the bytes of the write. Applying such
/// a state and then the saved one applies (or refuses) one save twice, and
/// may briefly apply half a file; a file caught moving is left for the next
/// poll.
async fn settled_change(
    p: &Path,
    last: &Digest,
    pause: impl std::future::Future,
) -> Option<Digest> {
    let now = digest(p);
    if now == *last || now.is_none() {
        return None;
    }
    pause.await;
    (digest(p) == now).then_some(now)
}

/// Poll the config file the server was started from; when its contents
/// change, call `apply` (the full reload of [`crate::Handle::reload`]: a
/// change that validates is applied, clients removed or re-keyed lose their
/// tokens and sessions; one that does not is logged with its one-line
/// reason and the running configuration stays). Each state of the file is
/// applied (or refused) once. `None` for a config that came from no file.
/// Ends when the server starts draining.
pub fn spawn_config_watch<F, Fut>(
    state: Arc<AppState>,
    every: Duration,
    apply: F,
) -> Option<JoinHandle<()>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), ReloadError>> + Send,
{
    let source = state.config().source.clone();
    if !source.is_file() {
        return None;
    }
    // The baseline is taken now, before the server says it listens: a save
    // that lands right after start-up is a change, not the baseline.
    let mut last = digest(&source);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = state.shutdown.cancelled() => return,
            }
            let Some(now) = settled_change(&source, &last, tokio::time::sleep(SETTLE)).await else {
                continue;
            };
            last = now;
            info!(config = %source.display(), "configuration file changed: reloading");
            // Logged and counted by `apply`; the old config stays on error.
            let _ = apply().await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that changes again while the watcher looks away is not
    /// applied yet; one that holds still is, once.
    #[tokio::test]
    async fn a_file_still_moving_is_left_for_the_next_poll() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "a = 1\n").unwrap();
        let last = digest(&p);
        assert_eq!(settled_change(&p, &last, async {}).await, None, "unchanged");
        // Truncated, and written while the watcher looks away.
        std::fs::write(&p, "").unwrap();
        let written = async { std::fs::write(&p, "a = 2\n").unwrap() };
        assert_eq!(settled_change(&p, &last, written).await, None, "moving");
        let saved = settled_change(&p, &last, async {}).await;
        assert_eq!(saved, Some(digest(&p)), "the saved state");
        assert_eq!(settled_change(&p, &saved.unwrap(), async {}).await, None);
    }

    #[test]
    fn a_changed_inline_key_is_noticed_though_its_debug_is_redacted() {
        let cfg = |key: &str| {
            let text = format!("[tls]\nenabled = false\n[auth]\nsecret = \"{key}\"\n");
            config::from_toml_str(&text, Some(Path::new("/x/config.toml"))).unwrap()
        };
        let (a, b) = (cfg(&"a".repeat(40)), cfg(&"b".repeat(40)));
        assert_eq!(
            format!("{:?}", a.auth.secret),
            format!("{:?}", b.auth.secret)
        );
        assert_eq!(restart_only(&a, &b), vec!["auth.secret/auth.algorithm"]);
        assert!(restart_only(&a, &a.clone()).is_empty());
    }
}
