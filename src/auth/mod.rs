//! Authentication: JWT access and refresh tokens, registered clients with
//! argon2id secrets (or open enrollment), and a revocation store that
//! survives restarts.
//!
//! - [`tokens`]: claims, minting, strict decoding (alg pinned, 4 KiB cap).
//! - [`secret`]: the signing key (inline, file, or generated in `data_dir`).
//! - [`clients`]: the reloadable [`clients::Policy`] and argon2 helpers.
//! - [`revocation`]: `{data_dir}/revoked.log`, fsynced before a 200.
//! - [`files`]: `data_dir` files: 0700/0600, `O_NOFOLLOW`, atomic replace.
//! - [`limiter`]: per-IP limit on failed `/auth/token` attempts.
//! - [`handlers`]: the `/auth/*` endpoints.
//!
//! [`Auth`] ties them together; the WebSocket upgrade calls
//! [`Auth::verify_access`], which is synchronous, cheap and does no I/O.

pub mod clients;
mod error;
pub mod files;
pub mod handlers;
pub mod limiter;
pub mod revocation;
pub mod secret;
pub mod tokens;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::warn;

pub use error::{AuthError, AuthInitError};
pub use tokens::{Claims, Subject, TokenPair, TokenType, MAX_TOKEN_BYTES};

use crate::config::{Config, JwtAlgorithm};
use clients::Policy;
use limiter::FailureLimiter;
use revocation::RevocationStore;
use tokens::TokenKeys;

/// The gateway's authentication state, shared through `AppState`.
pub struct Auth {
    keys: TokenKeys,
    algorithm: JwtAlgorithm,
    /// Clients, open enrollment, lifetimes: swapped whole by [`Auth::reload`].
    policy: ArcSwap<Policy>,
    /// Shared with `spawn_blocking` writers.
    store: Arc<RevocationStore>,
    limiter: FailureLimiter,
    /// Bounds concurrent argon2 verifications (each takes ~19 MiB and a core
    /// for tens of milliseconds).
    argon2_slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("keys", &self.keys)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Build the token keys from `cfg` alone, loading or generating the signing
/// key exactly as the server does. Used by `tars token`, which must not touch
/// the revocation log of a running server.
pub fn token_keys(cfg: &Config) -> Result<TokenKeys, AuthInitError> {
    let key = secret::load_key(&cfg.auth.secret)?;
    Ok(TokenKeys::new(key.expose(), &cfg.auth))
}

impl Auth {
    /// Load the key and the revocation store. Logs a warning when open
    /// enrollment is on.
    pub fn new(cfg: &Config) -> Result<Self, AuthInitError> {
        let keys = token_keys(cfg)?;
        let (store, _) = RevocationStore::open(
            &cfg.server.data_dir,
            tokens::now_secs(),
            cfg.auth.leeway_secs,
        )?;
        if cfg.auth.open_enrollment {
            warn!(
                "auth.open_enrollment = true: any client id gets tokens without a secret; \
                 this is insecure on a shared network: register clients and turn it off"
            );
        }
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            keys,
            algorithm: cfg.auth.algorithm,
            policy: ArcSwap::from_pointee(Policy::from_config(&cfg.auth)),
            store: Arc::new(store),
            limiter: FailureLimiter::new(cfg.limits.ipv6_prefix_len),
            argon2_slots: tokio::sync::Semaphore::new(slots),
        })
    }

    /// Full check of an access token: length, algorithm, signature, claims,
    /// `typ == "access"`, not revoked, client still permitted.
    pub fn verify_access(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify(token, Some(TokenType::Access))
    }

    /// [`Self::verify_access`] for any expected type (`None`: either).
    pub fn verify(&self, token: &str, expected: Option<TokenType>) -> Result<Claims, AuthError> {
        let claims = self.decode(token, expected)?;
        if self.store.is_revoked(&claims.jti) {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }

    /// Everything but the revocation check (the refresh endpoint checks and
    /// consumes atomically in the store instead).
    pub(crate) fn decode(
        &self,
        token: &str,
        expected: Option<TokenType>,
    ) -> Result<Claims, AuthError> {
        let claims = self.keys.decode(token, expected)?;
        if !self.policy.load().permits(&claims.sub) {
            return Err(AuthError::UnknownClient);
        }
        Ok(claims)
    }

    /// Mint a pair for `who` with the configured lifetimes.
    pub fn issue_pair(&self, who: &Subject) -> Result<TokenPair, AuthError> {
        let p = self.policy.load();
        self.keys.issue_pair(who, p.access_ttl, p.refresh_ttl)
    }

    /// True when `jti` is revoked. O(1).
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.store.is_revoked(jti)
    }

    /// True for a registered client with `admin = true`.
    pub fn is_admin(&self, client_id: &str) -> bool {
        self.policy.load().is_admin(client_id)
    }

    /// The models `client_id` may use out of `all` (the allowed models): a
    /// registered client's own list, otherwise all of them.
    pub fn allowed_models(&self, client_id: &str, all: &[String]) -> Vec<String> {
        self.policy.load().allowed_models(client_id, all)
    }

    /// Swap in the client list, open enrollment, lifetimes and attempt limit
    /// of `cfg`. The key, algorithm, issuer, audience and leeway need a
    /// restart (changing them would invalidate every issued token).
    pub fn reload(&self, cfg: &Config) {
        if cfg.auth.open_enrollment && !self.policy.load().open_enrollment {
            warn!("auth.open_enrollment turned on by reload: any client id gets tokens without a secret");
        }
        self.policy.store(Arc::new(Policy::from_config(&cfg.auth)));
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Revoked token ids held in memory.
    pub fn revoked_count(&self) -> usize {
        self.store.len()
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    pub(crate) fn store(&self) -> &Arc<RevocationStore> {
        &self.store
    }

    pub(crate) fn limiter(&self) -> &FailureLimiter {
        &self.limiter
    }

    pub(crate) fn argon2_slots(&self) -> &tokio::sync::Semaphore {
        &self.argon2_slots
    }
}
