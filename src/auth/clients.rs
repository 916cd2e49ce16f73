//! Who may get tokens: the registered clients with their argon2id secret
//! hashes, admin flag and model list, plus the open-enrollment switch and
//! token lifetimes. [`Policy`] is the reloadable part of auth (swapped whole
//! through an `ArcSwap` in [`super::Auth`]); the secret helpers here are
//! blocking and run under `spawn_blocking`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::config::{AuthConfig, ClientEntry};

/// The reloadable auth settings.
#[derive(Debug, Clone)]
pub struct Policy {
    clients: HashMap<String, ClientEntry>,
    /// A PHC string with the registered clients' argon2 parameters (the
    /// most common ones) and a random salt and hash: unknown client ids are
    /// checked against it, so they cost what a known id costs.
    dummy_phc: String,
    pub open_enrollment: bool,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub max_failed_attempts_per_minute: u32,
}

/// How `/auth/token` must treat a client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Registered: the secret must match this PHC string.
    Registered(String),
    /// Not registered, and open enrollment is on: no secret needed.
    Open,
    /// Not registered, open enrollment off: check against this dummy PHC
    /// string (same parameters as the registered ones) and fail.
    Unknown(String),
}

impl Policy {
    pub fn from_config(cfg: &AuthConfig) -> Self {
        Self {
            dummy_phc: dummy_phc(cfg.clients.iter().map(|c| c.secret_hash.as_str())),
            clients: cfg
                .clients
                .iter()
                .map(|c| (c.id.clone(), c.clone()))
                .collect(),
            open_enrollment: cfg.open_enrollment,
            access_ttl: cfg.access_ttl,
            refresh_ttl: cfg.refresh_ttl,
            max_failed_attempts_per_minute: cfg.max_failed_attempts_per_minute,
        }
    }

    /// What `client_id` must present.
    pub fn credential(&self, client_id: &str) -> Credential {
        match self.clients.get(client_id) {
            Some(c) => Credential::Registered(c.secret_hash.clone()),
            None if self.open_enrollment => Credential::Open,
            None => Credential::Unknown(self.dummy_phc.clone()),
        }
    }

    /// True when tokens of `client_id` are honoured: it is registered, or
    /// open enrollment is on.
    pub fn permits(&self, client_id: &str) -> bool {
        self.open_enrollment || self.clients.contains_key(client_id)
    }

    pub fn is_admin(&self, client_id: &str) -> bool {
        self.clients.get(client_id).is_some_and(|c| c.admin)
    }

    /// The models `client_id` may use: its own list, or every allowed model.
    pub fn allowed_models(&self, client_id: &str, all: &[String]) -> Vec<String> {
        match self.clients.get(client_id).and_then(|c| c.models.as_ref()) {
            Some(own) => all.iter().filter(|m| own.contains(m)).cloned().collect(),
            None => all.to_vec(),
        }
    }

    pub fn registered_clients(&self) -> usize {
        self.clients.len()
    }

    /// Registered clients whose sessions must end when `new` replaces this
    /// policy, sorted by id: removed, `secret_hash` changed (the values are
    /// compared, never a redacted rendering), or `admin`/`models` changed.
    pub fn changes_to(&self, new: &Policy) -> Vec<(String, &'static str)> {
        use super::end_reason::*;
        let mut ended: Vec<(String, &'static str)> = self
            .clients
            .values()
            .filter_map(|old| {
                let reason = match new.clients.get(&old.id) {
                    None => REMOVED,
                    Some(c) if c.secret_hash != old.secret_hash => SECRET_CHANGED,
                    Some(c) if c.admin != old.admin || c.models != old.models => {
                        PERMISSIONS_CHANGED
                    }
                    Some(_) => return None,
                };
                Some((old.id.clone(), reason))
            })
            .collect();
        ended.sort();
        ended
    }
}

/// argon2id PHC string for `secret` with the crate's default parameters
/// (m = 19 MiB, t = 2, p = 1). Blocking: tens of milliseconds.
pub fn hash_secret(secret: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(secret, &salt)?.to_string())
}

/// True when `secret` matches `phc`. Blocking: tens of milliseconds.
pub fn verify_secret(phc: &str, secret: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(secret, &h).is_ok(),
        Err(_) => false,
    }
}

/// A PHC string nobody knows the secret of, with the argon2 algorithm,
/// version, parameters and output length most common among `hashes` (the
/// crate's defaults when there are none), so verifying against it costs what
/// verifying a registered client's secret costs. Cheap: no hashing.
pub fn dummy_phc<'a>(hashes: impl Iterator<Item = &'a str>) -> String {
    let mut seen: Vec<(PasswordHash<'a>, usize)> = Vec::new();
    for h in hashes.filter_map(|s| PasswordHash::new(s).ok()) {
        let same = |x: &PasswordHash| {
            x.algorithm == h.algorithm
                && x.version == h.version
                && x.params == h.params
                && x.hash.map(|o| o.len()) == h.hash.map(|o| o.len())
        };
        match seen.iter_mut().find(|(x, _)| same(x)) {
            Some((_, n)) => *n += 1,
            None => seen.push((h, 1)),
        }
    }
    // The first of the most common (max_by_key keeps the last of equals).
    let model = seen
        .iter()
        .rev()
        .max_by_key(|(_, n)| *n)
        .map(|(h, _)| h.clone());
    let Some(mut model) = model else {
        return default_dummy().to_string();
    };
    let salt = SaltString::generate(&mut OsRng);
    let mut random = vec![0u8; model.hash.map_or(32, |o| o.len())];
    OsRng.fill_bytes(&mut random);
    let Ok(output) = argon2::password_hash::Output::new(&random) else {
        return default_dummy().to_string();
    };
    model.salt = Some(salt.as_salt());
    model.hash = Some(output);
    model.to_string()
}

/// The dummy for the crate's default parameters (no registered client).
fn default_dummy() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut random = [0u8; 32];
        OsRng.fill_bytes(&mut random);
        hash_secret(&random).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;

    fn cfg(open: bool) -> AuthConfig {
        AuthConfig {
            secret: SecretSource::Generated("/x".into()),
            algorithm: crate::config::JwtAlgorithm::HS256,
            access_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(86400),
            leeway_secs: 5,
            issuer: "tars".into(),
            audience: "tars".into(),
            open_enrollment: open,
            max_failed_attempts_per_minute: 10,
            clients: vec![
                ClientEntry {
                    id: "boss".into(),
                    secret_hash: "$argon2id$x".into(),
                    admin: true,
                    models: None,
                },
                ClientEntry {
                    id: "kid".into(),
                    secret_hash: "$argon2id$y".into(),
                    admin: false,
                    models: Some(vec!["small".into()]),
                },
            ],
        }
    }

    #[test]
    fn credentials_by_enrollment() {
        let closed = Policy::from_config(&cfg(false));
        assert_eq!(
            closed.credential("boss"),
            Credential::Registered("$argon2id$x".into())
        );
        assert!(matches!(
            closed.credential("nobody"),
            Credential::Unknown(_)
        ));
        assert!(!closed.permits("nobody") && closed.permits("kid"));
        let open = Policy::from_config(&cfg(true));
        assert_eq!(open.credential("nobody"), Credential::Open);
        assert_eq!(
            open.credential("kid"),
            Credential::Registered("$argon2id$y".into())
        );
        assert!(open.permits("nobody"));
    }

    #[test]
    fn reload_changes_compare_values() {
        use crate::auth::end_reason::*;
        let old = Policy::from_config(&cfg(false));
        assert!(old.changes_to(&Policy::from_config(&cfg(true))).is_empty());
        let mut c = cfg(false);
        c.clients[0].secret_hash = "$argon2id$z".into();
        c.clients[1].models = None;
        c.clients.push(ClientEntry {
            id: "new".into(),
            secret_hash: "$argon2id$n".into(),
            admin: false,
            models: None,
        });
        assert_eq!(
            old.changes_to(&Policy::from_config(&c)),
            vec![
                ("boss".into(), SECRET_CHANGED),
                ("kid".into(), PERMISSIONS_CHANGED)
            ]
        );
        c.clients.remove(0);
        c.clients[0].admin = true;
        assert_eq!(
            old.changes_to(&Policy::from_config(&c)),
            vec![
                ("boss".into(), REMOVED),
                ("kid".into(), PERMISSIONS_CHANGED)
            ]
        );
    }

    #[test]
    fn admin_and_models() {
        let p = Policy::from_config(&cfg(false));
        let all = vec!["big".to_string(), "small".to_string()];
        assert!(p.is_admin("boss") && !p.is_admin("kid") && !p.is_admin("nobody"));
        assert_eq!(p.allowed_models("kid", &all), vec!["small"]);
        assert_eq!(p.allowed_models("boss", &all), all);
        assert_eq!(p.allowed_models("nobody", &all), all);
    }

    #[test]
    fn hash_and_verify() {
        let phc = hash_secret(b"s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_secret(&phc, b"s3cret"));
        assert!(!verify_secret(&phc, b"s3creT"));
        assert!(!verify_secret("garbage", b"s3cret"));
    }

    #[test]
    fn dummy_has_the_registered_parameters() {
        let params = |phc: &str| {
            let h = PasswordHash::new(phc).unwrap();
            (
                h.algorithm.to_string(),
                h.version,
                h.params.to_string(),
                h.hash.unwrap().len(),
            )
        };
        let heavy = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8 * 1024, 3, 2, Some(48)).unwrap(),
        );
        let salt = SaltString::generate(&mut OsRng);
        let a = heavy.hash_password(b"a", &salt).unwrap().to_string();
        let b = heavy.hash_password(b"b", &salt).unwrap().to_string();
        let light = hash_secret(b"c").unwrap();
        let d = dummy_phc([light.as_str(), a.as_str(), b.as_str()].into_iter());
        assert_eq!(params(&d), params(&a));
        assert_ne!(
            PasswordHash::new(&d).unwrap().salt,
            PasswordHash::new(&a).unwrap().salt
        );
        assert!(!verify_secret(&d, b"a") && !verify_secret(&d, b""));
        // No clients: the defaults, as `tars hash-secret` writes them.
        let none = dummy_phc(std::iter::empty());
        assert_eq!(params(&none), params(&light));
        assert!(!verify_secret(&none, b""));
    }
}
