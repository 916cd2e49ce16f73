//! Environment overrides with the seed report's variable names.
//!
//! Each variable replaces one key of the raw file before validation, so a
//! value from the environment is checked exactly like one from the file. A
//! variable that does not parse is an error naming the variable, never
//! silently ignored.

use super::raw::RawConfig;
use super::ConfigError;

/// The variables honoured, with the key each overrides (for `--help` and docs).
pub const OVERRIDES: &[(&str, &str)] = &[
    ("TARS_LISTEN", "server.listen"),
    ("JWT_SECRET_KEY", "auth.secret"),
    ("JWT_ALGORITHM", "auth.algorithm"),
    ("JWT_EXPIRATION_HOURS", "auth.access_ttl_hours"),
    ("JWT_REFRESH_EXPIRATION_DAYS", "auth.refresh_ttl_days"),
    ("WS_HEARTBEAT_INTERVAL", "websocket.heartbeat_interval_secs"),
    ("WS_MAX_CONNECTIONS", "websocket.max_connections"),
    ("WS_MESSAGE_QUEUE_SIZE", "websocket.message_queue_size"),
    ("WS_TIMEOUT_SECONDS", "websocket.timeout_secs"),
    ("OLLAMA_HOST", "ollama.host"),
    ("OLLAMA_MODEL", "ollama.model"),
    ("MODEL_TEMPERATURE", "ollama.temperature"),
    ("MODEL_TOP_P", "ollama.top_p"),
    ("MODEL_TOP_K", "ollama.top_k"),
    ("MODEL_MAX_TOKENS", "ollama.max_tokens"),
    ("CORS_ORIGINS", "cors.origins"),
    ("HTTPS_ENABLED", "tls.enabled"),
    ("TLS_CERT_PATH", "tls.cert"),
    ("TLS_KEY_PATH", "tls.key"),
];

fn num<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not {what}"))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{value:?} is not a boolean (use true or false)")),
    }
}

/// Apply every set variable of [`OVERRIDES`] to `raw`. `get` reads one
/// variable; `main` passes `std::env::var`, tests pass a map.
pub fn apply(raw: &mut RawConfig, get: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    for (var, key) in OVERRIDES {
        let Some(value) = get(var) else { continue };
        set(raw, var, &value).map_err(|message| ConfigError::Env {
            var: var.to_string(),
            key: key.to_string(),
            message,
        })?;
    }
    Ok(())
}

/// Set the key `var` overrides to `value`, or say why `value` does not parse.
fn set(raw: &mut RawConfig, var: &str, value: &str) -> Result<(), String> {
    let v = value;
    match var {
        "TARS_LISTEN" => raw.server.listen = value.to_string(),
        "JWT_SECRET_KEY" => raw.auth.secret = Some(value.to_string()),
        "JWT_ALGORITHM" => raw.auth.algorithm = value.to_string(),
        "JWT_EXPIRATION_HOURS" => raw.auth.access_ttl_hours = num(v, "a whole number of hours")?,
        "JWT_REFRESH_EXPIRATION_DAYS" => {
            raw.auth.refresh_ttl_days = num(v, "a whole number of days")?
        }
        "WS_HEARTBEAT_INTERVAL" => {
            raw.websocket.heartbeat_interval_secs = num(v, "a whole number of seconds")?
        }
        "WS_MAX_CONNECTIONS" => raw.websocket.max_connections = num(v, "a whole number")?,
        "WS_MESSAGE_QUEUE_SIZE" => raw.websocket.message_queue_size = num(v, "a whole number")?,
        "WS_TIMEOUT_SECONDS" => raw.websocket.timeout_secs = num(v, "a whole number of seconds")?,
        "OLLAMA_HOST" if !raw.upstreams.is_empty() => raw.warnings.push(
            "OLLAMA_HOST is set in the environment but the configuration has [[upstreams]]: OLLAMA_HOST is ignored".into(),
        ),
        "OLLAMA_HOST" => raw.ollama.host = Some(value.to_string()),
        "OLLAMA_MODEL" => raw.ollama.model = value.to_string(),
        "MODEL_TEMPERATURE" => raw.ollama.temperature = num(v, "a number")?,
        "MODEL_TOP_P" => raw.ollama.top_p = num(v, "a number")?,
        "MODEL_TOP_K" => raw.ollama.top_k = num(v, "a whole number")?,
        "MODEL_MAX_TOKENS" => raw.ollama.max_tokens = num(v, "a whole number")?,
        "CORS_ORIGINS" => {
            raw.cors.origins = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        }
        "HTTPS_ENABLED" => raw.tls.enabled = boolean(v)?,
        "TLS_CERT_PATH" => raw.tls.cert = value.to_string(),
        "TLS_KEY_PATH" => raw.tls.key = value.to_string(),
        other => unreachable!("override {other} listed but not applied"),
    }
    Ok(())
}

/// A value refused by validation came from the environment when a set
/// variable overrides its key: name the variable, not the file, so the user
/// looks in the right place.
pub fn blame(err: ConfigError, get: &dyn Fn(&str) -> Option<String>) -> ConfigError {
    match err {
        ConfigError::Invalid { path, key, message } => {
            match OVERRIDES
                .iter()
                .find(|(var, k)| *k == key && get(var).is_some())
            {
                Some((var, _)) => ConfigError::Env {
                    var: var.to_string(),
                    key,
                    message,
                },
                None => ConfigError::Invalid { path, key, message },
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn overrides_replace_file_values() {
        let mut raw = RawConfig::default();
        apply(
            &mut raw,
            &env(&[
                ("WS_MAX_CONNECTIONS", "42"),
                ("CORS_ORIGINS", "https://a.lan, https://b.lan"),
                ("HTTPS_ENABLED", "false"),
                ("OLLAMA_MODEL", "llama3.2"),
            ]),
        )
        .unwrap();
        assert_eq!(raw.websocket.max_connections, 42);
        assert_eq!(raw.cors.origins, vec!["https://a.lan", "https://b.lan"]);
        assert!(!raw.tls.enabled);
        assert_eq!(raw.ollama.model, "llama3.2");
    }

    #[test]
    fn unparsable_override_names_the_variable() {
        let mut raw = RawConfig::default();
        let err = apply(&mut raw, &env(&[("WS_MAX_CONNECTIONS", "ten")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("WS_MAX_CONNECTIONS"), "{text}");
        assert!(text.contains("websocket.max_connections"), "{text}");
        assert!(text.contains("\"ten\""), "{text}");
    }

    #[test]
    fn invalid_overridden_value_blames_the_variable() {
        let e = ConfigError::Invalid {
            path: "c.toml".into(),
            key: "server.listen".into(),
            message: "bad".into(),
        };
        let text = blame(e, &env(&[("TARS_LISTEN", "x")])).to_string();
        assert!(
            text.starts_with("environment variable TARS_LISTEN"),
            "{text}"
        );
        let e = ConfigError::Invalid {
            path: "c.toml".into(),
            key: "server.listen".into(),
            message: "bad".into(),
        };
        let text = blame(e, &env(&[("OLLAMA_HOST", "x")])).to_string();
        assert!(text.starts_with("c.toml: key `server.listen`"), "{text}");
    }
}
