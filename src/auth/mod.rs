//! Authentication (placeholder until the auth issue lands).

pub mod handlers;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum AuthInitError {
    #[error("key `auth.secret`: {0}")]
    Secret(String),
}

pub struct Auth;

impl Auth {
    pub fn new(_cfg: &Config) -> Result<Self, AuthInitError> {
        Ok(Self)
    }
}
