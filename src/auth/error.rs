//! The auth module's errors: [`AuthError`] for a token or a credential that is
//! refused (each with a short, stable [`AuthError::reason`] for 401 bodies),
//! [`AuthInitError`] for a key or revocation store that cannot be loaded at
//! start (one line naming the key and the fix; `main` exits 2).

use std::path::PathBuf;

/// Why a token was refused. Never carries the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or an empty one.
    #[error("no token was presented")]
    Missing,
    /// Longer than [`crate::auth::MAX_TOKEN_BYTES`]; refused before decoding.
    #[error("the token is longer than {max} bytes")]
    TooLong { max: usize },
    /// Not three base64url parts of JSON, or claims of the wrong shape.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// The header names an algorithm other than the configured one.
    #[error("the token is signed with an algorithm this gateway does not accept")]
    WrongAlgorithm,
    /// The signature does not match the header and payload.
    #[error("the token's signature is not valid")]
    InvalidSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// A required claim (`exp`, `nbf`, `iss`, `aud`, `sub`) is absent.
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(String),
    /// A claim is present with the wrong type (e.g. a string `exp`).
    #[error("the token's `{0}` claim has the wrong type")]
    InvalidClaim(String),
    /// `iss` is not the configured issuer.
    #[error("the token was issued by someone else")]
    WrongIssuer,
    /// `aud` is not the configured audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// A refresh token where an access token is expected, or the reverse.
    #[error("a {found} token was presented where a {expected} token is required")]
    WrongTokenType {
        expected: &'static str,
        found: &'static str,
    },
    /// The token's `jti` is in the revocation store.
    #[error("the token has been revoked")]
    Revoked,
    /// The token's family was revoked: one of its refresh tokens was
    /// presented twice (possible theft), or one of its tokens was revoked.
    #[error("the token's family has been revoked")]
    FamilyRevoked,
    /// The token was issued at or before its client's cutoff (an admin
    /// revoked the client, or its entry was removed or its secret changed).
    #[error("the token was issued before its client's tokens were revoked")]
    ClientRevoked,
    /// `sub` is neither a registered client nor allowed by open enrollment.
    #[error("the token's client is not registered")]
    UnknownClient,
    /// Signing failed (cannot happen with an HMAC key; kept for completeness).
    #[error("the token could not be signed")]
    Signing,
}

impl AuthError {
    /// The reason a live session closes with (1008) when its token is
    /// refused for this: says why, in a few words.
    pub fn close_reason(&self) -> &'static str {
        match self {
            Self::Expired => "token expired",
            Self::Revoked => "token revoked",
            Self::FamilyRevoked => "token family revoked",
            Self::ClientRevoked => "client revoked",
            Self::UnknownClient => "client removed",
            _ => "token refused",
        }
    }

    /// A short, stable code for 401 bodies and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::TooLong { .. } => "too_long",
            Self::Malformed => "malformed",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::InvalidSignature => "invalid_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim(_) => "invalid_claim",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::WrongTokenType { .. } => "wrong_token_type",
            Self::Revoked => "revoked",
            Self::FamilyRevoked => "family_revoked",
            Self::ClientRevoked => "client_revoked",
            Self::UnknownClient => "unknown_client",
            Self::Signing => "signing_failed",
        }
    }
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.into_kind() {
            K::InvalidSignature => Self::InvalidSignature,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
                Self::WrongAlgorithm
            }
            K::ExpiredSignature => Self::Expired,
            K::ImmatureSignature => Self::NotYetValid,
            K::MissingRequiredClaim(c) => Self::MissingClaim(c),
            K::InvalidClaimFormat(c) => Self::InvalidClaim(c),
            K::InvalidIssuer => Self::WrongIssuer,
            K::InvalidAudience | K::InvalidSubject => Self::WrongAudience,
            _ => Self::Malformed,
        }
    }
}

/// Why the auth module could not start. Renders as one line naming the
/// configuration key, the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum AuthInitError {
    /// The JWT key could not be read, created, or is too weak.
    #[error("key `{key}`: {path}: {message}", path = .path.display())]
    Secret {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    /// A file in `data_dir` is a symbolic link (see [`super::files`]).
    #[error("key `server.data_dir`: {0}")]
    Link(std::io::Error),
    /// `cutoffs.json` could not be read or does not parse.
    #[error("key `server.data_dir`: {path}: cannot load the client cutoffs: {source}", path = .path.display())]
    Cutoffs {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The revocation store could not be loaded or rewritten.
    #[error("key `server.data_dir`: {path}: cannot {action} the revocation log: {source}: make the folder writable by the tars user", path = .path.display())]
    Store {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
}

impl AuthInitError {
    /// A cutoffs error, or [`Self::Link`] when `source` is a refused link.
    pub(crate) fn cutoffs(path: &std::path::Path, source: std::io::Error) -> Self {
        if super::files::is_symlink_refusal(&source) {
            Self::Link(source)
        } else {
            Self::Cutoffs {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// A store error, or [`Self::Link`] when `source` is a refused link.
    pub(crate) fn store(
        path: &std::path::Path,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        if super::files::is_symlink_refusal(&source) {
            Self::Link(source)
        } else {
            Self::Store {
                path: path.to_path_buf(),
                action,
                source,
            }
        }
    }
}
