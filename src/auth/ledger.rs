//! The ledger: everything that can take back a token that still verifies —
//! revoked or used token ids and revoked families ([`super::revocation`],
//! `revoked.log`) and per-client cutoffs ([`super::cutoffs`],
//! `cutoffs.json`) — behind one check, plus an epoch counter that moves on
//! every change so a live session re-checks its token only when something
//! may have changed.
//!
//! Checks take read locks on maps that change only on a revocation, do no
//! I/O and allocate nothing. Changes are blocking (they write and fsync
//! before they take effect): call them from `spawn_blocking`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::cutoffs::{self, CutoffStore};
use super::error::{AuthError, AuthInitError};
use super::revocation::{RevocationStore, Revoke};
use super::tokens::Claims;

/// Revocations, families and cutoffs; see the module doc.
#[derive(Debug)]
pub struct Ledger {
    log: RevocationStore,
    cutoffs: CutoffStore,
    /// Moves on every revocation, cutoff, reload or cutoff file change.
    epoch: AtomicU64,
    /// Tells live sessions the epoch moved (they re-check their token).
    notify: tokio::sync::watch::Sender<u64>,
    /// `auth.leeway_secs`: how long after `exp` an entry is kept.
    leeway: u64,
    /// The longest token lifetime (seconds) this process has issued with:
    /// a family's or a cutoff's entry lives this long.
    max_ttl: AtomicU64,
}

/// What revoking one token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRevoke {
    pub token: Revoke,
    pub family: Revoke,
}

impl Ledger {
    /// Load both files from `dir`.
    pub fn open(dir: &Path, now: u64, leeway: u64, max_ttl: u64) -> Result<Self, AuthInitError> {
        let (log, _) = RevocationStore::open(dir, now, leeway)?;
        let cutoffs = CutoffStore::open(dir)?;
        Ok(Self {
            log,
            cutoffs,
            epoch: AtomicU64::new(0),
            notify: tokio::sync::watch::Sender::new(0),
            leeway,
            max_ttl: AtomicU64::new(max_ttl),
        })
    }

    /// Changes on every revocation, cutoff and reload: a session whose
    /// token was checked at epoch `e` need not check again while it is `e`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Move the epoch (after a change is visible) and wake the sessions.
    pub fn bump(&self) {
        let now = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.notify.send_replace(now);
    }

    /// Wakes (`changed()`) whenever the epoch moves.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Remember a (possibly longer) token lifetime, e.g. after a reload.
    pub fn note_ttl(&self, secs: u64) {
        self.max_ttl.fetch_max(secs, Ordering::AcqRel);
    }

    /// `claims` is neither revoked itself, nor in a revoked family, nor
    /// issued at or before its client's cutoff. No I/O, no allocation.
    pub fn check(&self, claims: &Claims) -> Result<(), AuthError> {
        if self.log.is_revoked(&claims.jti) {
            return Err(AuthError::Revoked);
        }
        self.check_family_and_client(claims)
    }

    /// [`Self::check`] without the token's own id (the refresh endpoint
    /// consumes that atomically instead).
    pub fn check_family_and_client(&self, claims: &Claims) -> Result<(), AuthError> {
        if self.log.is_family_revoked(claims.family()) {
            return Err(AuthError::FamilyRevoked);
        }
        if self
            .cutoffs
            .get(&claims.sub)
            .is_some_and(|cut| claims.issued_us() <= cut)
        {
            return Err(AuthError::ClientRevoked);
        }
        Ok(())
    }

    /// The cutoff of `client_id` (µs), for minting after it.
    pub fn not_before(&self, client_id: &str) -> Option<u64> {
        self.cutoffs.get(client_id)
    }

    /// The latest expiry a token of a family revoked at `now` can have.
    fn family_exp(&self, claims: &Claims, now: u64) -> u64 {
        claims
            .exp
            .max(now.saturating_add(self.max_ttl.load(Ordering::Acquire)))
    }

    /// Mark a refresh token used. `AlreadyRevoked`: it was used (or revoked)
    /// before. Blocking.
    pub fn consume_refresh(&self, claims: &Claims, now: u64) -> std::io::Result<Revoke> {
        let r = self.log.revoke(&claims.jti, claims.exp, now)?;
        self.bump();
        Ok(r)
    }

    /// Revoke `claims`' whole family (a reused refresh token). Blocking.
    pub fn revoke_family(&self, claims: &Claims, now: u64) -> std::io::Result<Revoke> {
        let r = self
            .log
            .revoke_family(claims.family(), self.family_exp(claims, now), now)?;
        self.bump();
        Ok(r)
    }

    /// Revoke the token and its family (`POST /auth/revoke`). Blocking.
    pub fn revoke_token(&self, claims: &Claims, now: u64) -> std::io::Result<TokenRevoke> {
        let token = self.log.revoke(&claims.jti, claims.exp, now)?;
        self.bump();
        let family = self.revoke_family(claims, now)?;
        Ok(TokenRevoke { token, family })
    }

    /// Refuse every token of `client_id` issued at or before `at_us`, and
    /// persist it. Blocking. On `Err` the cutoff holds in memory only
    /// until a restart (the caller reports that it is not on disk).
    pub fn cut_off(&self, client_id: &str, at_us: u64) -> std::io::Result<()> {
        let r = self
            .cutoffs
            .set(client_id, at_us, self.drop_cutoffs_before(at_us));
        if r.is_err() {
            self.cutoffs.set_in_memory(client_id, at_us);
        }
        self.bump();
        r
    }

    /// Cutoffs older than this refuse nothing that is not expired anyway.
    fn drop_cutoffs_before(&self, now_us: u64) -> u64 {
        let keep = self
            .max_ttl
            .load(Ordering::Acquire)
            .saturating_add(self.leeway);
        now_us.saturating_sub(keep.saturating_mul(1_000_000))
    }

    /// Pick up a cutoff file changed by another process. True (and the
    /// epoch moved) when something changed.
    pub fn poll_disk(&self) -> bool {
        let changed = self.cutoffs.poll();
        if changed {
            self.bump();
        }
        changed
    }

    /// Revoked token ids held.
    pub fn revoked_tokens(&self) -> usize {
        self.log.len()
    }

    /// Revoked families held.
    pub fn revoked_families(&self) -> usize {
        self.log.families()
    }

    /// Clients with a cutoff.
    pub fn client_cutoffs(&self) -> usize {
        self.cutoffs.len()
    }
}

/// `tars revoke --client`: cut `client_id` off now in `dir`, for a gateway
/// that is not running or runs elsewhere on this data folder.
pub fn cut_off_offline(
    dir: &Path,
    client_id: &str,
    max_ttl: u64,
    leeway: u64,
) -> std::io::Result<(std::path::PathBuf, u64)> {
    let at = cutoffs::now_us();
    let keep = max_ttl.saturating_add(leeway).saturating_mul(1_000_000);
    let path = cutoffs::set_offline(dir, client_id, at, at.saturating_sub(keep))?;
    Ok((path, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::TokenType;

    fn claims(sub: &str, jti: &str, fam: Option<&str>, iat_us: u64) -> Claims {
        Claims {
            sub: sub.into(),
            jti: jti.into(),
            exp: iat_us / 1_000_000 + 3600,
            iat: iat_us / 1_000_000,
            nbf: iat_us / 1_000_000,
            typ: TokenType::Refresh,
            iss: "tars".into(),
            aud: "tars".into(),
            device_name: None,
            device_type: None,
            fam: fam.map(str::to_string),
            iat_us: Some(iat_us),
        }
    }

    #[test]
    fn families_cutoffs_and_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let now = super::super::tokens::now_secs();
        let l = Ledger::open(dir.path(), now, 5, 86400).unwrap();
        let t0 = cutoffs::now_us();
        let r1 = claims("a", "r1", Some("f"), t0);
        let a2 = claims("a", "a2", Some("f"), t0 + 10);
        let other = claims("a", "x", Some("g"), t0 + 10);
        assert!(l.check(&r1).is_ok());
        let e0 = l.epoch();

        assert_eq!(l.consume_refresh(&r1, now).unwrap(), Revoke::Stored);
        assert_eq!(l.check(&r1), Err(AuthError::Revoked));
        assert!(l.check(&a2).is_ok());
        assert_eq!(l.consume_refresh(&r1, now).unwrap(), Revoke::AlreadyRevoked);
        l.revoke_family(&r1, now).unwrap();
        assert_eq!(l.check(&a2), Err(AuthError::FamilyRevoked));
        assert!(l.check(&other).is_ok());
        assert!(l.epoch() > e0);

        // A cutoff in the same second: strictly by microseconds.
        let e1 = l.epoch();
        l.cut_off("a", t0 + 5).unwrap();
        assert!(l.epoch() > e1);
        assert_eq!(
            l.check(&claims("a", "y", None, t0 + 5)),
            Err(AuthError::ClientRevoked)
        );
        assert!(l.check(&claims("a", "z", None, t0 + 6)).is_ok());
        assert!(l.check(&claims("b", "w", None, t0)).is_ok());
        // Older tokens without iat_us count from the start of their second.
        let mut legacy = claims("a", "old", None, t0 + 6);
        legacy.iat_us = None;
        assert_eq!(l.check(&legacy), Err(AuthError::ClientRevoked));
        assert_eq!(l.not_before("a"), Some(t0 + 5));

        // Everything survives a restart.
        drop(l);
        let l = Ledger::open(dir.path(), now, 5, 86400).unwrap();
        assert_eq!(l.check(&a2), Err(AuthError::FamilyRevoked));
        assert_eq!(
            l.check(&claims("a", "y", None, t0 + 5)),
            Err(AuthError::ClientRevoked)
        );

        // An offline cut-off is picked up by polling, and moves the epoch.
        let e2 = l.epoch();
        let (_, at) = cut_off_offline(dir.path(), "b", 86400, 5).unwrap();
        assert!(l.poll_disk());
        assert!(l.epoch() > e2);
        assert_eq!(l.not_before("b"), Some(at));
        assert!(!l.poll_disk());
    }
}
