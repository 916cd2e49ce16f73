//! [`RetryPolicy`]: how hard a chat request is tried and how long its
//! stream may wait, from `[ollama]`. Shared by [`super::chat`] (retries,
//! backoff) and [`super::stream`] (timeouts, line cap).

use std::time::Duration;

use crate::config::OllamaConfig;

/// The longest backoff between two attempts, whatever the base and count.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How hard [`super::OllamaClient::chat`] tries, and how long the stream may wait.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// The first backoff; then doubled each time.
    pub base_delay: Duration,
    /// From sending the request to the first complete line (model loads are
    /// slow).
    pub first_token_timeout: Duration,
    /// Between two lines, once the first arrived.
    pub idle_timeout: Duration,
    pub max_line_bytes: usize,
}

impl RetryPolicy {
    pub fn from_config(cfg: &OllamaConfig) -> Self {
        Self {
            retries: cfg.retries,
            base_delay: cfg.retry_base_delay,
            first_token_timeout: cfg.first_token_timeout,
            idle_timeout: cfg.idle_timeout,
            max_line_bytes: cfg.max_line_bytes,
        }
    }

    /// The wait before retry number `retry` (0-based): base, 2·base, 4·base …
    pub fn backoff(&self, retry: u32) -> Duration {
        self.base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(MAX_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            retries: 3,
            base_delay: Duration::from_secs(2),
            first_token_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_line_bytes: 1,
        };
        assert_eq!(p.backoff(0), Duration::from_secs(2));
        assert_eq!(p.backoff(1), Duration::from_secs(4));
        assert_eq!(p.backoff(2), Duration::from_secs(8));
        assert_eq!(p.backoff(40), MAX_BACKOFF);
    }
}
