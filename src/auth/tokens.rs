//! JWTs: the claims the gateway writes, minting access/refresh pairs, and the
//! strict decoder every presented token goes through.
//!
//! [`TokenKeys`] holds the HMAC key, the one pinned algorithm and a prepared
//! [`Validation`]. Decoding checks, in order: length (≤ [`MAX_TOKEN_BYTES`],
//! before any base64), the header's `alg`, the signature, the required claims
//! (`exp`, `nbf`, `iss`, `aud`, `sub`) and their types (a string `exp` is
//! refused), expiry and not-before with the configured leeway, issuer,
//! audience, and finally `typ` against the use. Revocation and the client list
//! are checked one level up, in [`super::Auth`].
//!
//! Everything here is pure CPU work with no I/O, so the WebSocket upgrade
//! can call it inline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::error::AuthError;
use crate::config::{AuthConfig, JwtAlgorithm};

/// Longest token accepted; anything longer is refused before decoding.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Which use a token was minted for; written as the `typ` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    /// Presented to `/ws/chat` and `/auth/validate`.
    Access,
    /// Presented only to `/auth/refresh`, once.
    Refresh,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
        }
    }
}

/// The claims of every token the gateway issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The client id.
    pub sub: String,
    /// UUID v4; the key of the revocation store.
    pub jti: String,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub typ: TokenType,
    pub iss: String,
    pub aud: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// The token family (RFC 9700 §4.14.2): a UUID set by `/auth/token` and
    /// kept by every `/auth/refresh` of the chain, shared by each pair's
    /// access and refresh token. Revoked whole when a refresh token of it is
    /// reused or one of its tokens is revoked. Absent in tokens from before
    /// families: such a token is its own family ([`Claims::family`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
    /// The issue instant in microseconds since the Unix epoch, compared with
    /// the client's cutoff (`iat` has only whole seconds). Never at or before
    /// a cutoff the issuer knew. Absent in older tokens: see
    /// [`Claims::issued_us`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_us: Option<u64>,
}

impl Claims {
    /// The family id: `fam`, or the token's own `jti` for older tokens.
    pub fn family(&self) -> &str {
        self.fam.as_deref().unwrap_or(&self.jti)
    }

    /// The issue instant in microseconds: `iat_us`, or the start of the
    /// `iat` second for older tokens (so a cutoff in that second refuses
    /// them: the safe side).
    pub fn issued_us(&self) -> u64 {
        self.iat_us
            .unwrap_or_else(|| self.iat.saturating_mul(1_000_000))
    }
}

/// When and in which family a pair is minted.
#[derive(Debug, Clone)]
pub struct Issue {
    /// Microseconds since the Unix epoch; `iat`, `nbf` and `exp` count from
    /// its whole seconds.
    pub at_us: u64,
    /// The family: a refresh keeps its token's; `None` starts a new one.
    pub family: Option<String>,
}

impl Issue {
    /// Now, in a new family, at least 1 µs after `not_before_us` (the
    /// client's cutoff) even if the clock says otherwise.
    pub fn new_family(not_before_us: Option<u64>) -> Self {
        Self::now(None, not_before_us)
    }

    /// Now, in `family` (`None`: a new one), after `not_before_us`.
    pub fn now(family: Option<String>, not_before_us: Option<u64>) -> Self {
        let now = super::cutoffs::now_us();
        Self {
            at_us: not_before_us.map_or(now, |c| now.max(c.saturating_add(1))),
            family,
        }
    }
}

/// An access and a refresh token minted together. `Debug` hides the tokens.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// Present it as `Authorization: Bearer <access_token>` or `/ws/chat?token=<access_token>`.
    pub access_token: String,
    /// Present it once to `POST /auth/refresh` for a new pair.
    pub refresh_token: String,
    /// Always `"bearer"`.
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
    /// Refresh token lifetime in seconds.
    pub refresh_expires_in: u64,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("expires_in", &self.expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .finish_non_exhaustive()
    }
}

/// Who a pair is minted for.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub client_id: String,
    pub device_name: Option<String>,
    pub device_type: Option<String>,
}

/// The signing key and the frozen validation rules.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    header: Header,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("algorithm", &self.header.alg)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKeys {
    /// Keys for `secret` with the algorithm, issuer, audience and leeway of
    /// `cfg`.
    pub fn new(secret: &[u8], cfg: &AuthConfig) -> Self {
        let alg = algorithm(cfg.algorithm);
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = cfg.leeway_secs;
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            header: Header::new(alg),
            validation,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
        }
    }

    /// Mint one token of type `typ` for `who`, valid for `ttl` from `now`,
    /// in no family (tests and tools; pairs come from [`Self::issue_pair`]).
    pub fn issue(
        &self,
        who: &Subject,
        typ: TokenType,
        now: u64,
        ttl: Duration,
    ) -> Result<(String, Claims), AuthError> {
        self.issue_at(who, typ, now, None, None, ttl)
    }

    fn issue_at(
        &self,
        who: &Subject,
        typ: TokenType,
        now: u64,
        iat_us: Option<u64>,
        fam: Option<String>,
        ttl: Duration,
    ) -> Result<(String, Claims), AuthError> {
        let claims = Claims {
            sub: who.client_id.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            exp: now + ttl.as_secs(),
            iat: now,
            nbf: now,
            typ,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            device_name: who.device_name.clone(),
            device_type: who.device_type.clone(),
            fam,
            iat_us,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.encoding)
            .map_err(|_| AuthError::Signing)?;
        Ok((token, claims))
    }

    /// Mint an access and a refresh token for `who`, both in the family of
    /// `at` (a new one when it names none) and stamped with its instant.
    pub fn issue_pair(
        &self,
        who: &Subject,
        access_ttl: Duration,
        refresh_ttl: Duration,
        at: Issue,
    ) -> Result<TokenPair, AuthError> {
        // Whole seconds of the instant, but never ahead of the clock (a
        // cutoff-bumped instant must not make the token "not yet valid").
        let now = (at.at_us / 1_000_000).min(now_secs().max(1));
        let fam = at
            .family
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let us = Some(at.at_us);
        let (access_token, _) = self.issue_at(
            who,
            TokenType::Access,
            now,
            us,
            Some(fam.clone()),
            access_ttl,
        )?;
        let (refresh_token, _) =
            self.issue_at(who, TokenType::Refresh, now, us, Some(fam), refresh_ttl)?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            token_type: "bearer",
            expires_in: access_ttl.as_secs(),
            refresh_expires_in: refresh_ttl.as_secs(),
        })
    }

    /// Decode and check `token`: everything but revocation and the client
    /// list. `expected = None` accepts either type (for `/auth/revoke`).
    pub fn decode(&self, token: &str, expected: Option<TokenType>) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong {
                max: MAX_TOKEN_BYTES,
            });
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        let claims = data.claims;
        if let Some(expected) = expected {
            if claims.typ != expected {
                return Err(AuthError::WrongTokenType {
                    expected: expected.as_str(),
                    found: claims.typ.as_str(),
                });
            }
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;

    fn cfg() -> AuthConfig {
        AuthConfig {
            secret: SecretSource::Generated("/nonexistent".into()),
            algorithm: JwtAlgorithm::HS256,
            access_ttl: Duration::from_secs(24 * 3600),
            refresh_ttl: Duration::from_secs(7 * 86400),
            leeway_secs: 5,
            issuer: "tars".into(),
            audience: "tars".into(),
            open_enrollment: false,
            max_failed_attempts_per_minute: 10,
            clients: vec![],
        }
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn who() -> Subject {
        Subject {
            client_id: "laptop".into(),
            device_name: Some("Terminal".into()),
            device_type: None,
        }
    }

    #[test]
    fn pair_round_trips_with_lifetimes() {
        let c = cfg();
        let keys = TokenKeys::new(KEY, &c);
        let pair = keys
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl, Issue::new_family(None))
            .unwrap();
        assert_eq!(pair.expires_in, 86400);
        let a = keys
            .decode(&pair.access_token, Some(TokenType::Access))
            .unwrap();
        assert_eq!(a.sub, "laptop");
        assert_eq!(a.exp - a.iat, 86400);
        assert_eq!(a.nbf, a.iat);
        assert_eq!(a.device_name.as_deref(), Some("Terminal"));
        let r = keys
            .decode(&pair.refresh_token, Some(TokenType::Refresh))
            .unwrap();
        assert_eq!(r.exp - r.iat, 7 * 86400);
        assert_ne!(a.jti, r.jti);
        assert!(uuid::Uuid::parse_str(&a.jti).is_ok());
        // One family, one instant, for both.
        assert!(a.fam.is_some() && a.fam == r.fam && a.family() != a.jti);
        assert!(a.iat_us.is_some() && a.iat_us == r.iat_us);
        assert_eq!(a.issued_us() / 1_000_000, a.iat);
    }

    #[test]
    fn family_kept_and_cutoff_respected() {
        let c = cfg();
        let keys = TokenKeys::new(KEY, &c);
        let fam = "f-1".to_string();
        let later = crate::auth::cutoffs::now_us() + 5_000_000;
        let pair = keys
            .issue_pair(
                &who(),
                c.access_ttl,
                c.refresh_ttl,
                Issue::now(Some(fam), Some(later)),
            )
            .unwrap();
        let a = keys.decode(&pair.access_token, None).unwrap();
        assert_eq!(a.family(), "f-1");
        // Issued after the cutoff, though the clock was behind it, and still
        // valid now (not "not yet valid").
        assert_eq!(a.issued_us(), later + 1);
        assert!(a.iat <= now_secs());
        // A token without the new claims: its own family, start of its second.
        let (t, old) = keys
            .issue(&who(), TokenType::Access, now_secs(), c.access_ttl)
            .unwrap();
        assert!(keys.decode(&t, None).is_ok());
        assert_eq!(
            (old.family(), old.issued_us()),
            (old.jti.as_str(), old.iat * 1_000_000)
        );
    }

    #[test]
    fn types_are_not_interchangeable() {
        let c = cfg();
        let keys = TokenKeys::new(KEY, &c);
        let pair = keys
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl, Issue::new_family(None))
            .unwrap();
        let e = keys
            .decode(&pair.refresh_token, Some(TokenType::Access))
            .unwrap_err();
        assert_eq!(e.reason(), "wrong_token_type");
        let e = keys
            .decode(&pair.access_token, Some(TokenType::Refresh))
            .unwrap_err();
        assert_eq!(e.reason(), "wrong_token_type");
        assert!(keys.decode(&pair.access_token, None).is_ok());
    }

    #[test]
    fn other_key_and_other_algorithm_refused() {
        let c = cfg();
        let keys = TokenKeys::new(KEY, &c);
        let other = TokenKeys::new(b"another-key-another-key-another-key!", &c);
        let t = other
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl, Issue::new_family(None))
            .unwrap();
        let e = keys.decode(&t.access_token, None).unwrap_err();
        assert_eq!(e, AuthError::InvalidSignature);
        let mut c512 = cfg();
        c512.algorithm = JwtAlgorithm::HS512;
        let k512 = TokenKeys::new(KEY, &c512);
        let t = k512
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl, Issue::new_family(None))
            .unwrap();
        assert_eq!(
            keys.decode(&t.access_token, None).unwrap_err(),
            AuthError::WrongAlgorithm
        );
    }

    #[test]
    fn expired_and_future_refused_with_leeway() {
        let c = cfg();
        let keys = TokenKeys::new(KEY, &c);
        let now = now_secs();
        let (t, _) = keys
            .issue(
                &who(),
                TokenType::Access,
                now - 100,
                Duration::from_secs(90),
            )
            .unwrap();
        assert_eq!(keys.decode(&t, None).unwrap_err(), AuthError::Expired);
        // Expired 2 s ago: inside the 5 s leeway.
        let (t, _) = keys
            .issue(
                &who(),
                TokenType::Access,
                now - 100,
                Duration::from_secs(98),
            )
            .unwrap();
        assert!(keys.decode(&t, None).is_ok());
        let (t, _) = keys
            .issue(
                &who(),
                TokenType::Access,
                now + 60,
                Duration::from_secs(600),
            )
            .unwrap();
        assert_eq!(keys.decode(&t, None).unwrap_err(), AuthError::NotYetValid);
    }

    #[test]
    fn length_cap_before_decoding() {
        let keys = TokenKeys::new(KEY, &cfg());
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(keys.decode(&long, None).unwrap_err().reason(), "too_long");
        assert_eq!(keys.decode("", None).unwrap_err().reason(), "missing_token");
        assert_eq!(
            keys.decode("garbage", None).unwrap_err().reason(),
            "malformed"
        );
    }

    #[test]
    fn wrong_issuer_and_audience() {
        let keys = TokenKeys::new(KEY, &cfg());
        let mut c = cfg();
        c.issuer = "evil".into();
        let t = TokenKeys::new(KEY, &c)
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl, Issue::new_family(None))
            .unwrap();
        assert_eq!(
            keys.decode(&t.access_token, None).unwrap_err(),
            AuthError::WrongIssuer
        );
        let mut c = cfg();
        c.audience = "other".into();
        let t = TokenKeys::new(KEY, &c)
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl, Issue::new_family(None))
            .unwrap();
        assert_eq!(
            keys.decode(&t.access_token, None).unwrap_err(),
            AuthError::WrongAudience
        );
    }
}
