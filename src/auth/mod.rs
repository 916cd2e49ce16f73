//! Authentication: JWT access and refresh tokens, registered clients with
//! argon2id secrets (or open enrollment), and the ledger that takes tokens
//! back: revoked tokens, revoked token families, per-client cutoffs, all
//! surviving restarts.
//!
//! - [`tokens`]: claims, minting, strict decoding (alg pinned, 4 KiB cap).
//! - [`secret`]: the signing key (inline, file, or generated in `data_dir`).
//! - [`clients`]: the reloadable [`clients::Policy`] and argon2 helpers.
//! - [`ledger`]: one check over the two stores below, and the epoch.
//! - [`revocation`]: `{data_dir}/revoked.log` (token ids, families), fsynced before a 200.
//! - [`cutoffs`]: `{data_dir}/cutoffs.json` (per-client "not before").
//! - [`files`]: `data_dir` files: 0700/0600, `O_NOFOLLOW`, atomic replace.
//! - [`handlers`]: the `/auth/*` endpoints (`revoke.rs`: `/auth/revoke`).
//! - [`pairing`]: one-time pairing codes in `{data_dir}/pairing/` (stored hashed);
//!   [`pair`]: `POST /auth/pair`, which redeems one for a token pair.
//!
//! [`Auth`] ties them together; the WebSocket upgrade calls
//! [`Auth::verify_access`], which is synchronous, cheap and does no I/O; a
//! live session calls [`Auth::recheck`] on its events, which costs one
//! atomic load unless the ledger or the client list changed.

pub mod clients;
pub mod cutoffs;
mod error;
pub mod files;
pub mod handlers;
pub mod ledger;
pub mod pair;
pub mod pairing;
pub mod revocation;
mod revoke;
pub mod secret;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use error::{AuthError, AuthInitError};
pub use tokens::{Claims, Issue, Subject, TokenPair, TokenType, MAX_TOKEN_BYTES};

use crate::config::{Config, JwtAlgorithm, SharedConfig};
use crate::limits::Limits;
use crate::metrics::Metrics;
use clients::Policy;
use ledger::Ledger;
use tokens::TokenKeys;

/// Logged at every start (and reload) with open enrollment on.
pub const OPEN_ENROLLMENT_WARNING: &str = "auth.open_enrollment = true: any client id gets tokens without a secret, \
     so per-client limits (chat_per_minute, max_connections_per_client, max_conversations_per_client) \
     mean nothing: a client takes another id; only the global and per-IP caps hold. \
     Insecure on a shared network: register clients and turn it off";

/// How often `data_dir` is checked for a cutoff written by `tars revoke`.
pub const DISK_POLL_EVERY: Duration = Duration::from_secs(1);

/// The sessions of the server, as far as auth needs them: revoking a token
/// closes the sessions it opened. Implemented by the WebSocket session
/// manager; auth knows nothing else of WebSockets.
pub trait LiveSessions: Send + Sync {
    /// Close every session opened with token `jti` (1008); returns how many.
    fn revoke_jti(&self, jti: &str) -> usize;
    /// Sessions running on token `jti` now.
    fn count_jti(&self, jti: &str) -> usize;
}

/// What the `/auth/*` endpoints need, and nothing more: built once by
/// [`crate::state::AppState::new`].
pub struct AuthState {
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub config: SharedConfig,
    pub sessions: Arc<dyn LiveSessions>,
    /// The server's limits: failed `/auth/token` attempts per IP.
    pub limits: Arc<Limits>,
}

impl AuthState {
    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }
}

/// The gateway's authentication state: keys, client policy, revocations.
pub struct Auth {
    keys: TokenKeys,
    algorithm: JwtAlgorithm,
    /// `auth.leeway_secs` (restart only, like the keys).
    leeway: u64,
    /// Clients, open enrollment, lifetimes: swapped whole by [`Auth::reload`].
    policy: ArcSwap<Policy>,
    /// Shared with `spawn_blocking` writers.
    ledger: Arc<Ledger>,
    /// Bounds concurrent argon2 verifications (each takes ~19 MiB and a core
    /// for tens of milliseconds).
    argon2_slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("keys", &self.keys)
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

/// Why [`Auth::reload`] ended a client's sessions.
pub mod end_reason {
    pub const REMOVED: &str = "client removed";
    pub const SECRET_CHANGED: &str = "client secret changed";
    pub const PERMISSIONS_CHANGED: &str = "client permissions changed";
}

/// What a reload changed for live sessions: every client listed must lose
/// its sessions (close 1008 with the reason). Removed clients and changed
/// secrets also got a cutoff (their older tokens are refused from now on).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadChanges {
    /// `(client_id, reason)`, reasons from [`end_reason`].
    pub ended: Vec<(String, &'static str)>,
}

/// Build the token keys from `cfg` alone, loading or generating the signing
/// key exactly as the server does. Used by `tars token`, which must not touch
/// the revocation log of a running server.
pub fn token_keys(cfg: &Config) -> Result<TokenKeys, AuthInitError> {
    let key = secret::load_key(&cfg.auth.secret)?;
    Ok(TokenKeys::new(key.expose(), &cfg.auth))
}

/// The longest lifetime a token minted under `cfg` can have, in seconds.
pub fn max_ttl_secs(cfg: &crate::config::AuthConfig) -> u64 {
    cfg.access_ttl.max(cfg.refresh_ttl).as_secs()
}

/// `tars revoke --client`: refuse every token `client_id` holds now, in
/// `cfg`'s data folder; a running gateway picks it up within
/// [`DISK_POLL_EVERY`]. Returns the file written and the cutoff (µs).
pub fn revoke_client_offline(
    cfg: &Config,
    client_id: &str,
) -> std::io::Result<(std::path::PathBuf, u64)> {
    ledger::cut_off_offline(
        &cfg.server.data_dir,
        client_id,
        max_ttl_secs(&cfg.auth),
        cfg.auth.leeway_secs,
    )
}

impl Auth {
    /// Load the key and the ledger. Logs a warning when open enrollment is on.
    pub fn new(cfg: &Config) -> Result<Self, AuthInitError> {
        let keys = token_keys(cfg)?;
        let ledger = Ledger::open(
            &cfg.server.data_dir,
            tokens::now_secs(),
            cfg.auth.leeway_secs,
            max_ttl_secs(&cfg.auth),
        )?;
        if cfg.auth.open_enrollment {
            warn!("{OPEN_ENROLLMENT_WARNING}");
        }
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            keys,
            algorithm: cfg.auth.algorithm,
            leeway: cfg.auth.leeway_secs,
            policy: ArcSwap::from_pointee(Policy::from_config(&cfg.auth)),
            ledger: Arc::new(ledger),
            argon2_slots: tokio::sync::Semaphore::new(slots),
        })
    }

    /// Full check of an access token: length, algorithm, signature, claims,
    /// `typ == "access"`, not revoked (itself, its family, its client's
    /// cutoff), client still permitted.
    pub fn verify_access(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify(token, Some(TokenType::Access))
    }

    /// [`Self::verify_access`] for any expected type (`None`: either).
    pub fn verify(&self, token: &str, expected: Option<TokenType>) -> Result<Claims, AuthError> {
        let claims = self.decode(token, expected)?;
        self.ledger.check(&claims)?;
        Ok(claims)
    }

    /// Everything but the ledger (the refresh endpoint consumes the token
    /// atomically in the store instead).
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

    /// Is a token that verified earlier still good? Not expired (with the
    /// leeway), its client still permitted, not revoked (itself, its family,
    /// its client's cutoff). No I/O, no allocation: cheap enough for every
    /// event of a session, though [`Self::recheck`] is cheaper still.
    pub fn still_valid(&self, claims: &Claims) -> Result<(), AuthError> {
        if tokens::now_secs() > claims.exp.saturating_add(self.leeway) {
            return Err(AuthError::Expired);
        }
        if !self.policy.load().permits(&claims.sub) {
            return Err(AuthError::UnknownClient);
        }
        self.ledger.check(claims)
    }

    /// [`Self::still_valid`] only when the ledger or the client list changed
    /// since `seen` (an [`Self::epoch`] value the caller keeps, updated
    /// here): one atomic load otherwise. Expiry is not an event: sessions
    /// time it themselves.
    pub fn recheck(&self, claims: &Claims, seen: &mut u64) -> Result<(), AuthError> {
        let now = self.ledger.epoch();
        if now == *seen {
            return Ok(());
        }
        self.still_valid(claims)?;
        *seen = now;
        Ok(())
    }

    /// Moves whenever a token may have been taken back (revocation, family,
    /// cutoff, reload, cutoff file changed on disk).
    pub fn epoch(&self) -> u64 {
        self.ledger.epoch()
    }

    /// A receiver that wakes whenever [`Self::epoch`] moves: a live session
    /// waits on it and then calls [`Self::recheck`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ledger.subscribe()
    }

    /// `auth.leeway_secs`: a token is honoured this long after its `exp`.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway
    }

    /// Mint a pair for `who` with the configured lifetimes: in `family`
    /// (a refresh) or a new one (`None`), after the client's cutoff.
    pub fn issue_pair(
        &self,
        who: &Subject,
        family: Option<String>,
    ) -> Result<TokenPair, AuthError> {
        let p = self.policy.load();
        let at = Issue::now(family, self.ledger.not_before(&who.client_id));
        self.keys.issue_pair(who, p.access_ttl, p.refresh_ttl, at)
    }

    /// True when `token` is a valid access token of an admin client.
    pub fn is_admin_token(&self, token: &str) -> bool {
        self.verify_access(token)
            .is_ok_and(|c| self.is_admin(&c.sub))
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
    ///
    /// A client removed, or whose `secret_hash` changed (the values are
    /// compared), gets a cutoff now (persisted: its older tokens stay
    /// refused after a restart); those and clients whose `admin` or `models`
    /// changed are returned, so their live sessions can be ended. The epoch
    /// moves, so every session re-checks (open enrollment turned off ends
    /// the sessions of unregistered clients that way).
    pub fn reload(&self, cfg: &Config) -> ReloadChanges {
        let old = self.policy.load_full();
        let new = Policy::from_config(&cfg.auth);
        if cfg.auth.open_enrollment && !old.open_enrollment {
            warn!("turned on by reload: {OPEN_ENROLLMENT_WARNING}");
        }
        let changes = ReloadChanges {
            ended: old.changes_to(&new),
        };
        self.ledger.note_ttl(max_ttl_secs(&cfg.auth));
        // The new client list first: a session woken by a cutoff below
        // then sees its client gone ("client removed"), not only cut off.
        self.policy.store(Arc::new(new));
        let at = cutoffs::now_us();
        for (client, reason) in &changes.ended {
            info!(client_id = %client, reason, "reload: the client's sessions end");
            if *reason == end_reason::PERMISSIONS_CHANGED {
                continue;
            }
            if let Err(e) = self.ledger.cut_off(client, at) {
                error!(client_id = %client, error = %e, "reload: cannot store the client's cutoff; its older tokens are refused until a restart only");
            }
        }
        self.ledger.bump();
        changes
    }

    /// Poll `data_dir` for cutoffs written by `tars revoke` until `shutdown`.
    pub async fn watch_data_dir(&self, shutdown: &CancellationToken) {
        let mut tick = tokio::time::interval(DISK_POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            if self.ledger.poll_disk() {
                info!("client cutoffs changed on disk (tars revoke): applied");
            }
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Revoked token ids held in memory.
    pub fn revoked_count(&self) -> usize {
        self.ledger.revoked_tokens()
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    pub(crate) fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub(crate) fn argon2_slots(&self) -> &tokio::sync::Semaphore {
        &self.argon2_slots
    }
}
