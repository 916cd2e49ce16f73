//! `[[upstreams]]` and `[routing]` → [`UpstreamConfig`]s and a
//! [`RoutingConfig`]: names, URLs, dialects, concurrency, API keys. A config
//! without `[[upstreams]]` gets one upstream named `default` at
//! `[ollama] host`; with them, `[ollama] host` in the file is refused.
//! An `https://` upstream's `ca_file` is read and checked here, so a bad
//! one stops the start (or the reload) with one line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::raw::{RawConfig, RawUpstream, DEFAULT_OLLAMA_HOST};
use super::{ConfigError, RoutingConfig, Secret, UpstreamApi, UpstreamConfig};

/// Largest `max_concurrent` accepted (a typo guard, not a real limit).
pub const MAX_CONCURRENT_LIMIT: usize = 1024;

/// The name of the upstream made from `[ollama] host`.
pub const DEFAULT_UPSTREAM: &str = "default";

/// True for `[a-z0-9_-]{1,32}`.
pub fn valid_upstream_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `path` relative to the config file's directory.
fn beside(dir: &Path, path: &str) -> PathBuf {
    if Path::new(path).is_absolute() {
        Path::new(path).to_path_buf()
    } else {
        dir.join(path)
    }
}

/// The certificates of a `ca_file`: PEM, at least one `CERTIFICATE`, each
/// one usable as a trust anchor. `Err` is the message for the key.
fn read_ca_file(p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let fix =
        "give the PEM file of the CA that signed the upstream's certificate, or remove the key";
    let bytes = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}: {fix}", p.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM ({e}): {fix}", p.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (no -----BEGIN CERTIFICATE----- block): {fix}",
            p.display()
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        rustls::RootCertStore::empty().add(c.clone()).map_err(|e| {
            format!(
                "certificate {} of {} cannot be a trusted root ({e}): {fix}",
                i + 1,
                p.display()
            )
        })?;
    }
    Ok(certs)
}

/// Check a base URL; returns it without a trailing `/`.
fn check_url(url: &str, api: UpstreamApi) -> Result<String, String> {
    let trimmed = url.trim_end_matches('/').to_string();
    let uri = trimmed
        .parse::<http::Uri>()
        .map_err(|_| format!("{url:?} is not a URL: write e.g. \"http://192.168.1.20:11434\""))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "{url:?} has no http:// or https:// scheme: write e.g. \"http://192.168.1.20:11434\""
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{url:?}: a base URL takes no query string"));
    }
    if api == UpstreamApi::OpenAi && uri.path().trim_end_matches('/').ends_with("/v1") {
        return Err(format!(
            "{url:?}: give the base URL without /v1 (the gateway adds /v1/chat/completions)"
        ));
    }
    Ok(trimmed)
}

fn one(
    path: &Path,
    dir: &Path,
    i: usize,
    u: &RawUpstream,
    check_model: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
) -> Result<UpstreamConfig, ConfigError> {
    let err = |field: &str, message: String| ConfigError::Invalid {
        path: path.display().to_string(),
        key: format!("upstreams[{i}].{field}"),
        message,
    };
    if !valid_upstream_name(&u.name) {
        return Err(err(
            "name",
            format!(
                "{:?} is not a name: use 1-32 of a-z, 0-9, _ and - (e.g. \"desktop\")",
                u.name
            ),
        ));
    }
    let api = match u.api.as_str() {
        "ollama" => UpstreamApi::Ollama,
        "openai" => UpstreamApi::OpenAi,
        other => {
            return Err(err(
                "api",
                format!("{other:?} is not a dialect: use \"ollama\" or \"openai\""),
            ))
        }
    };
    let url = check_url(&u.url, api).map_err(|m| err("url", m))?;
    if u.max_concurrent == 0 || u.max_concurrent > MAX_CONCURRENT_LIMIT {
        return Err(err(
            "max_concurrent",
            format!(
                "is {}, must be between 1 and {MAX_CONCURRENT_LIMIT}",
                u.max_concurrent
            ),
        ));
    }
    if u.weight == 0 || u.weight > 1000 {
        return Err(err(
            "weight",
            format!("is {}, must be between 1 and 1000", u.weight),
        ));
    }
    if let Some(models) = &u.models {
        for m in models {
            check_model(&format!("upstreams[{i}].models"), m)?;
        }
    }
    let (api_key_file, api_key) = match &u.api_key_file {
        None => (None, None),
        Some(f) => {
            let p = beside(dir, f);
            let text = std::fs::read_to_string(&p).map_err(|e| {
                err(
                    "api_key_file",
                    format!(
                        "cannot read {}: {e}: create it or remove the key",
                        p.display()
                    ),
                )
            })?;
            let key = text.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(err(
                    "api_key_file",
                    format!("{} must hold one API key on one line", p.display()),
                ));
            }
            (Some(p), Some(Secret::new(key)))
        }
    };
    let (ca_file, ca_certs) = match &u.ca_file {
        None => (None, None),
        Some(_) if !url.starts_with("https://") => {
            return Err(err(
                "ca_file",
                format!(
                    "applies to https:// upstreams only and {url:?} is http://: remove ca_file, or use https:// in url"
                ),
            ))
        }
        Some(f) => {
            let p = beside(dir, f);
            let certs = read_ca_file(&p).map_err(|m| err("ca_file", m))?;
            (Some(p), Some(certs))
        }
    };
    Ok(UpstreamConfig {
        name: u.name.clone(),
        url,
        api,
        models: u.models.clone(),
        max_concurrent: u.max_concurrent,
        weight: u.weight,
        api_key_file,
        api_key,
        ca_file,
        ca_certs,
        implicit: false,
    })
}

/// The upstreams of `raw`: its `[[upstreams]]`, or `default` at
/// `[ollama] host`.
pub fn upstreams(
    path: &Path,
    dir: &Path,
    raw: &RawConfig,
    check_model: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
) -> Result<Vec<UpstreamConfig>, ConfigError> {
    if raw.upstreams.is_empty() {
        let host = raw.ollama.host.as_deref().unwrap_or(DEFAULT_OLLAMA_HOST);
        let url = check_url(host, UpstreamApi::Ollama).map_err(|m| ConfigError::Invalid {
            path: path.display().to_string(),
            key: "ollama.host".into(),
            message: m,
        })?;
        return Ok(vec![UpstreamConfig {
            name: DEFAULT_UPSTREAM.into(),
            url,
            api: UpstreamApi::Ollama,
            models: None,
            max_concurrent: MAX_CONCURRENT_LIMIT,
            weight: 1,
            api_key_file: None,
            api_key: None,
            ca_file: None,
            ca_certs: None,
            implicit: true,
        }]);
    }
    if raw.ollama.host.is_some() {
        return Err(ConfigError::Invalid {
            path: path.display().to_string(),
            key: "ollama.host".into(),
            message: "cannot be used together with [[upstreams]]: move it into an [[upstreams]] entry (url = ...) and remove it from [ollama]".into(),
        });
    }
    let mut out: Vec<UpstreamConfig> = Vec::with_capacity(raw.upstreams.len());
    for (i, u) in raw.upstreams.iter().enumerate() {
        let up = one(path, dir, i, u, check_model)?;
        if out.iter().any(|o| o.name == up.name) {
            return Err(ConfigError::Invalid {
                path: path.display().to_string(),
                key: format!("upstreams[{i}].name"),
                message: format!(
                    "{:?} is used twice: give every upstream its own name",
                    up.name
                ),
            });
        }
        out.push(up);
    }
    Ok(out)
}

/// `[routing]`.
pub fn routing(path: &Path, raw: &RawConfig) -> Result<RoutingConfig, ConfigError> {
    let r = &raw.routing;
    let err = |key: &str, message: String| ConfigError::Invalid {
        path: path.display().to_string(),
        key: format!("routing.{key}"),
        message,
    };
    let secs = |key: &str, v: u64| {
        if v == 0 || v > 86_400 {
            Err(err(
                key,
                format!("is {v}, must be between 1 and 86400 seconds"),
            ))
        } else {
            Ok(Duration::from_secs(v))
        }
    };
    if r.failure_threshold == 0 || r.failure_threshold > 1000 {
        return Err(err(
            "failure_threshold",
            format!("is {}, must be between 1 and 1000", r.failure_threshold),
        ));
    }
    Ok(RoutingConfig {
        health_interval: secs("health_interval_secs", r.health_interval_secs)?,
        failure_threshold: r.failure_threshold,
        cooldown: secs("cooldown_secs", r.cooldown_secs)?,
        discovery_interval: secs("discovery_interval_secs", r.discovery_interval_secs)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{from_toml_str, load_with_env, Config};
    use super::*;

    const BASE: &str = "[tls]\nenabled = false\n";

    fn check(extra: &str) -> Result<Config, String> {
        from_toml_str(&format!("{BASE}{extra}"), Some(Path::new("/x/c.toml")))
            .map_err(|e| e.to_string())
    }

    fn up(fields: &str) -> String {
        format!("[[upstreams]]\n{fields}\n")
    }

    #[test]
    fn without_upstreams_ollama_host_is_the_default_upstream() {
        let c = check("").unwrap();
        assert_eq!(c.upstreams.len(), 1);
        let u = &c.upstreams[0];
        assert_eq!(
            (u.name.as_str(), u.url.as_str()),
            ("default", DEFAULT_OLLAMA_HOST)
        );
        assert_eq!(u.api, UpstreamApi::Ollama);
        let c = check("[ollama]\nhost = \"http://10.0.0.2:11434/\"\n").unwrap();
        assert_eq!(c.upstreams[0].url, "http://10.0.0.2:11434");
        assert_eq!(c.ollama.host, "http://10.0.0.2:11434");
        assert_eq!(c.routing.failure_threshold, 3);
        assert_eq!(c.routing.cooldown, Duration::from_secs(10));
    }

    #[test]
    fn two_upstreams_parse_with_defaults() {
        let c = check(&format!(
            "{}{}[routing]\ncooldown_secs = 2\n",
            up("name = \"desktop\"\nurl = \"http://192.168.1.20:11434\"\nmodels = [\"mistral:7b-instruct\"]"),
            up("name = \"laptop\"\nurl = \"http://192.168.1.30:8080\"\napi = \"openai\"\nmax_concurrent = 1\nweight = 3")
        ))
        .unwrap();
        let [a, b] = &c.upstreams[..] else {
            panic!("two upstreams")
        };
        assert_eq!(
            (a.max_concurrent, a.weight, a.api),
            (4, 1, UpstreamApi::Ollama)
        );
        assert_eq!(
            a.models.as_deref(),
            Some(&["mistral:7b-instruct".to_string()][..])
        );
        assert_eq!(
            (b.max_concurrent, b.weight, b.api),
            (1, 3, UpstreamApi::OpenAi)
        );
        assert_eq!(b.models, None);
        assert_eq!(c.routing.cooldown, Duration::from_secs(2));
    }

    #[test]
    fn bad_upstreams_are_refused_in_one_line_naming_the_key() {
        let u = |f: &str| up(&format!("name = \"a\"\nurl = \"http://h:1\"\n{f}"));
        let cases = [
            (
                up("name = \"Desk Top\"\nurl = \"http://h:1\""),
                "upstreams[0].name",
            ),
            (format!("{}{}", u(""), u("")), "upstreams[1].name"),
            (up("name = \"a\"\nurl = \"nope nope\""), "upstreams[0].url"),
            (up("name = \"a\"\nurl = \"ftp://h:1\""), "upstreams[0].url"),
            (up("name = \"a\"\nurl = \"h:11434\""), "upstreams[0].url"),
            (u("api = \"grpc\""), "upstreams[0].api"),
            (u("max_concurrent = 0"), "upstreams[0].max_concurrent"),
            (u("weight = 0"), "upstreams[0].weight"),
            (
                u("api_key_file = \"/nonexistent/tars-key\""),
                "upstreams[0].api_key_file",
            ),
            (u("models = [\"a b\"]"), "upstreams[0].models"),
            (
                up("name = \"a\"\nurl = \"http://h:1/v1\"\napi = \"openai\""),
                "upstreams[0].url",
            ),
            (
                format!("[ollama]\nhost = \"http://h:2\"\n{}", u("")),
                "ollama.host",
            ),
            (
                "[routing]\nfailure_threshold = 0\n".into(),
                "routing.failure_threshold",
            ),
            (
                "[routing]\ncooldown_secs = 0\n".into(),
                "routing.cooldown_secs",
            ),
        ];
        for (text, key) in cases {
            let e = check(&text).expect_err(&text);
            assert!(e.contains(&format!("key `{key}`")), "{text}: {e}");
            assert!(e.starts_with("/x/c.toml"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = check(&format!("[ollama]\nhost = \"http://h:2\"\n{}", u(""))).unwrap_err();
        assert!(e.contains("move it into an [[upstreams]] entry"), "{e}");
    }

    #[test]
    fn api_key_file_is_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "sk-very-secret\n").unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "{BASE}{}",
                up("name = \"l\"\nurl = \"http://h:1\"\napi = \"openai\"\napi_key_file = \"key\"")
            ),
        )
        .unwrap();
        let c = load_with_env(&path, &|_| None).unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.api_key.as_ref().unwrap().expose(), b"sk-very-secret");
        assert!(!format!("{c:?}").contains("very-secret"));
    }

    #[test]
    fn ca_file_is_read_checked_and_only_for_https() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["lab".to_string()]).unwrap();
        let files = [
            ("ca.pem", ca.cert.pem()),
            ("two.pem", format!("{}{}", ca.cert.pem(), ca.cert.pem())),
            ("key.pem", ca.signing_key.serialize_pem()),
            ("text.pem", "not a certificate\n".into()),
            (
                "broken.pem",
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into(),
            ),
            (
                "junk.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            ),
        ];
        for (name, text) in &files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let path = dir.path().join("c.toml");
        let load = |url: &str, ca_file: &str| {
            std::fs::write(
                &path,
                format!(
                    "{BASE}{}",
                    up(&format!(
                        "name = \"lab\"\nurl = \"{url}\"\nca_file = \"{ca_file}\""
                    ))
                ),
            )
            .unwrap();
            load_with_env(&path, &|_| None).map_err(|e| e.to_string())
        };
        let c = load("https://lab.local:11434", "ca.pem").unwrap();
        let u = &c.upstreams[0];
        assert_eq!(
            u.ca_file.as_deref(),
            Some(dir.path().join("ca.pem").as_path())
        );
        assert_eq!(
            u.ca_certs.as_ref().unwrap()[0].as_ref(),
            ca.cert.der().as_ref()
        );
        let c = load("https://lab.local", "two.pem").unwrap();
        assert_eq!(c.upstreams[0].ca_certs.as_ref().unwrap().len(), 2);
        for (file, says) in [
            ("missing.pem", "cannot read"),
            ("key.pem", "holds no certificate"),
            ("text.pem", "holds no certificate"),
            ("broken.pem", "is not valid PEM"),
            ("junk.pem", "cannot be a trusted root"),
        ] {
            let e = load("https://lab.local", file).unwrap_err();
            assert!(e.contains("key `upstreams[0].ca_file`"), "{file}: {e}");
            assert!(e.contains(file) && e.contains(says), "{file}: {e}");
            assert!(e.contains("give the PEM file of the CA"), "{file}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = load("http://lab.local", "ca.pem").unwrap_err();
        assert!(e.contains("key `upstreams[0].ca_file`"), "{e}");
        assert!(e.contains("https:// upstreams only"), "{e}");
    }

    #[test]
    fn ollama_host_from_the_environment_is_ignored_with_upstreams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!("{BASE}{}", up("name = \"a\"\nurl = \"http://h:1\"")),
        )
        .unwrap();
        let env = |k: &str| (k == "OLLAMA_HOST").then(|| "http://elsewhere:11434".to_string());
        let c = load_with_env(&path, &env).unwrap();
        assert_eq!(c.upstreams.len(), 1);
        assert_eq!(c.upstreams[0].url, "http://h:1");
        assert!(c.warnings[0].contains("OLLAMA_HOST"), "{:?}", c.warnings);
        // Without [[upstreams]] it still sets the host.
        std::fs::write(&path, BASE).unwrap();
        let c = load_with_env(&path, &env).unwrap();
        assert_eq!(c.upstreams[0].url, "http://elsewhere:11434");
        assert!(c.warnings.is_empty());
    }
}
