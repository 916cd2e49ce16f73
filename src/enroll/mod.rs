//! Letting a device in without editing a file by hand: `tars client
//! add/list/remove/rotate` ([`clients`]) change `config.toml`'s
//! `[[auth.clients]]` through [`crate::config::edit`]; `tars pair`
//! ([`pair`]) makes a one-time code a phone redeems at `/pair`
//! ([`crate::auth::pairing`] keeps the codes in `data_dir`), printed with
//! its URL as a terminal QR code ([`qr`]). Used by [`crate::cli`] only; a
//! running gateway applies the saved file on its own
//! ([`crate::reload::spawn_config_watch`]).

pub mod clients;
pub mod pair;
pub mod qr;

use std::process::ExitCode;

use crate::config::Config;

/// Print a refusal and return exit code 2 (bad input, a config that does not
/// validate); the file is untouched.
fn refuse(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tars: error: {msg}");
    ExitCode::from(2)
}

/// Print a failure to write and return exit code 1; the file is untouched.
fn failed(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tars: error: {msg}");
    ExitCode::from(1)
}

/// A new 256-bit client secret, as 64 lowercase hex characters.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How soon a running gateway applies a saved config.toml, for messages.
fn applies_when(cfg: &Config) -> String {
    match cfg.tls.watch_interval {
        Some(d) => format!(
            "a running gateway applies it within {} s (tls.watch_interval_secs), no restart needed",
            d.as_secs()
        ),
        None => "tls.watch_interval_secs = 0: send the gateway SIGHUP (systemctl reload tars) to apply it".into(),
    }
}

/// `https://HOST:PORT` for messages and the pairing URL: `host` if given,
/// else the listen address when it is a specific one, else the first of
/// `server.allowed_hosts`, else this machine's address on its default
/// route (no packet is sent), else `localhost`.
pub fn base_url(cfg: &Config, host: Option<&str>) -> String {
    let listen = cfg.server.listen;
    let scheme = if cfg.tls.enabled { "https" } else { "http" };
    let name = match host {
        Some(h) => h.to_string(),
        None if !listen.ip().is_unspecified() => listen.ip().to_string(),
        None => match cfg.server.allowed_hosts.first() {
            Some(h) => h.clone(),
            None => lan_address().unwrap_or_else(|| "localhost".into()),
        },
    };
    let name = if name.contains(':') && !name.starts_with('[') {
        format!("[{name}]")
    } else {
        name
    };
    format!("{scheme}://{name}:{}", listen.port())
}

/// The local address the default route would use (a UDP "connect" sends
/// nothing).
fn lan_address() -> Option<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then(|| ip.to_string())
}
