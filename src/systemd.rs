//! systemd integration: the notify protocol (`READY=1`, `STATUS=`,
//! `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`) through the sd-notify crate,
//! and socket activation (`LISTEN_FDS`).
//!
//! Every call is a no-op when the gateway does not run under systemd
//! (`NOTIFY_SOCKET` unset), so [`crate::cli`] calls them unconditionally.
//! Only the `tars` binary uses this module; an embedded server never touches
//! the notify socket or `LISTEN_FDS`.

use std::os::fd::FromRawFd;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, info, warn};

use crate::app::Handle;

/// How often `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(10);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// The listener is bound and the configuration loaded.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (`RELOADING=1` with the `MONOTONIC_USEC` systemd wants).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// A listening socket passed by systemd (`tars.socket`), if any. Only the
/// first passed descriptor is used.
pub fn inherited_listener() -> std::io::Result<Option<std::net::TcpListener>> {
    let mut fds = sd_notify::listen_fds()?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    // SAFETY: systemd passed this descriptor to us (LISTEN_PID matched) and
    // nothing else in the process owns it.
    let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    l.set_nonblocking(true)?;
    info!(fd, "using the socket passed by systemd");
    Ok(Some(l))
}

/// `WATCHDOG_USEC` when the watchdog is meant for this process. Like
/// libsystemd's `sd_watchdog_enabled` (and unlike the sd-notify crate, which
/// requires it), a missing `WATCHDOG_PID` does not disable the watchdog.
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then_some(usec)
}

/// Start the watchdog and status tasks (when systemd asked for them); both
/// end when `server` starts draining.
pub fn spawn_tasks(server: Handle) {
    if let Some(usec) = watchdog_usec() {
        let every = Duration::from_micros(usec / 2);
        info!(
            interval_ms = every.as_millis() as u64,
            "systemd watchdog enabled"
        );
        let st = server.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = st.draining() => return,
                }
                // Prove the runtime still schedules work: a fresh task must
                // run and finish within the interval.
                let probe = tokio::spawn(async {});
                match tokio::time::timeout(every, probe).await {
                    Ok(Ok(())) => send(&[NotifyState::Watchdog]),
                    _ => warn!("runtime did not run a probe task in time; withholding WATCHDOG=1"),
                }
            }
        });
    }
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATUS_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => status(&server.status_line()),
                    _ = server.draining() => return,
                }
            }
        });
    }
}
