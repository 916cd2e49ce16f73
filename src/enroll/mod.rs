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

/// `https://HOST:PORT` for messages and the pairing URL: `host` if given
/// (`NAME` or `NAME:PORT`, e.g. behind a port mapping), else the listen
/// address when it is a specific one, else the first of
/// `server.allowed_hosts`, else this machine's address on its default
/// route (no packet is sent), else `localhost`; the port is the listen
/// port unless `host` names one.
pub fn base_url(cfg: &Config, host: Option<&str>) -> String {
    let listen = cfg.server.listen;
    let scheme = if cfg.tls.enabled { "https" } else { "http" };
    if let Some((name, port)) = host.and_then(|h| h.rsplit_once(':')) {
        if !name.contains(':') && port.parse::<u16>().is_ok() {
            return format!("{scheme}://{name}:{port}");
        }
        if let Some(v6) = name.strip_prefix('[').filter(|n| n.ends_with(']')) {
            if port.parse::<u16>().is_ok() {
                return format!("{scheme}://[{v6}:{port}");
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listen: &str, hosts: &str) -> Config {
        let text = format!("[server]\nlisten = \"{listen}\"\n{hosts}\n[tls]\nenabled = true\n");
        crate::config::from_toml_str(&text, None).unwrap()
    }

    #[test]
    fn the_url_names_a_host_the_phone_can_reach() {
        let c = cfg("0.0.0.0:8443", "allowed_hosts = [\"nas.local\"]");
        assert_eq!(base_url(&c, None), "https://nas.local:8443");
        assert_eq!(base_url(&c, Some("10.0.0.5")), "https://10.0.0.5:8443");
        assert_eq!(
            base_url(&c, Some("nas.example:443")),
            "https://nas.example:443"
        );
        assert_eq!(base_url(&c, Some("fd00::5")), "https://[fd00::5]:8443");
        assert_eq!(
            base_url(&c, Some("[fd00::5]:9000")),
            "https://[fd00::5]:9000"
        );
        let c = cfg("192.168.1.20:9443", "");
        assert_eq!(base_url(&c, None), "https://192.168.1.20:9443");
    }
}
