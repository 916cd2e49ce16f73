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

    /// Mint one token of type `typ` for `who`, valid for `ttl` from `now`.
    pub fn issue(
        &self,
        who: &Subject,
        typ: TokenType,
        now: u64,
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
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.encoding)
            .map_err(|_| AuthError::Signing)?;
        Ok((token, claims))
    }

    /// Mint an access and a refresh token for `who`.
    pub fn issue_pair(
        &self,
        who: &Subject,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> Result<TokenPair, AuthError> {
        let now = now_secs();
        let (access_token, _) = self.issue(who, TokenType::Access, now, access_ttl)?;
        let (refresh_token, _) = self.issue(who, TokenType::Refresh, now, refresh_ttl)?;
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
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl)
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
    }

    #[test]
    fn types_are_not_interchangeable() {
        let c = cfg();
        let keys = TokenKeys::new(KEY, &c);
        let pair = keys
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl)
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
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl)
            .unwrap();
        let e = keys.decode(&t.access_token, None).unwrap_err();
        assert_eq!(e, AuthError::InvalidSignature);
        let mut c512 = cfg();
        c512.algorithm = JwtAlgorithm::HS512;
        let k512 = TokenKeys::new(KEY, &c512);
        let t = k512
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl)
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
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl)
            .unwrap();
        assert_eq!(
            keys.decode(&t.access_token, None).unwrap_err(),
            AuthError::WrongIssuer
        );
        let mut c = cfg();
        c.audience = "other".into();
        let t = TokenKeys::new(KEY, &c)
            .issue_pair(&who(), c.access_ttl, c.refresh_ttl)
            .unwrap();
        assert_eq!(
            keys.decode(&t.access_token, None).unwrap_err(),
            AuthError::WrongAudience
        );
    }
}
