//! Per-IP limit on failed `/auth/token` attempts, so a LAN host cannot
//! guess client secrets at argon2 speed.
//!
//! A token bucket per address: `max_failed_attempts_per_minute` tokens,
//! refilled evenly over a minute. Every attempt takes a token up front (so
//! parallel guesses cannot overshoot the limit, and a limited address costs
//! no argon2 work); an attempt that did not fail on credentials gives it back
//! ([`FailureLimiter::refund`]). An empty bucket answers 429 with the seconds
//! until the next token. Addresses are keyed as every per-IP limit is
//! ([`crate::limits::ip_key`], `[limits] ipv6_prefix_len`). Full buckets are forgotten when the map grows, so memory
//! stays bounded by the number of recently failing addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::limits::ip_key as key;

/// Forget full buckets once the map holds this many addresses.
const PRUNE_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Failed-attempt buckets by client address.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// `[limits] ipv6_prefix_len` (0 until set: treated as 128).
    v6_prefix: u8,
}

fn refill(b: &mut Bucket, per_minute: u32, now: Instant) {
    let cap = f64::from(per_minute);
    let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
    b.tokens = (b.tokens + elapsed * cap / 60.0).min(cap);
    b.updated = now;
}

impl FailureLimiter {
    /// Buckets keyed by [`crate::limits::ip_key`] with `v6_prefix_len`.
    pub fn new(v6_prefix_len: u8) -> Self {
        Self {
            buckets: Mutex::default(),
            v6_prefix: v6_prefix_len,
        }
    }

    fn key(&self, ip: IpAddr) -> IpAddr {
        key(
            ip,
            if self.v6_prefix == 0 {
                128
            } else {
                self.v6_prefix
            },
        )
    }

    /// Take one attempt for `ip`. `Err(secs)` when the address is limited:
    /// retry after that many seconds (at least 1).
    pub fn acquire(&self, ip: IpAddr, per_minute: u32, now: Instant) -> Result<(), u64> {
        let per_minute = per_minute.max(1);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PRUNE_AT {
            let cap = f64::from(per_minute);
            map.retain(|_, b| {
                refill(b, per_minute, now);
                b.tokens < cap
            });
        }
        let b = map.entry(self.key(ip)).or_insert(Bucket {
            tokens: f64::from(per_minute),
            updated: now,
        });
        refill(b, per_minute, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let secs = (1.0 - b.tokens) * 60.0 / f64::from(per_minute);
            Err((secs.ceil() as u64).max(1))
        }
    }

    /// Give back the attempt taken by [`Self::acquire`]: it did not fail on
    /// credentials.
    pub fn refund(&self, ip: IpAddr, per_minute: u32, now: Instant) {
        let per_minute = per_minute.max(1);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get_mut(&self.key(ip)) {
            refill(b, per_minute, now);
            b.tokens = (b.tokens + 1.0).min(f64::from(per_minute));
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limit_then_refill() {
        let l = FailureLimiter::new(128);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.acquire(ip("10.0.0.1"), 3, t0).unwrap();
        }
        let retry = l.acquire(ip("10.0.0.1"), 3, t0).unwrap_err();
        assert_eq!(retry, 20);
        // Another address is unaffected.
        l.acquire(ip("10.0.0.2"), 3, t0).unwrap();
        // One token back after 20 s.
        l.acquire(ip("10.0.0.1"), 3, t0 + Duration::from_secs(20))
            .unwrap();
        assert!(l
            .acquire(ip("10.0.0.1"), 3, t0 + Duration::from_secs(20))
            .is_err());
    }

    #[test]
    fn refund_returns_the_attempt() {
        let l = FailureLimiter::new(128);
        let t0 = Instant::now();
        for _ in 0..10 {
            l.acquire(ip("10.0.0.1"), 2, t0).unwrap();
            l.refund(ip("10.0.0.1"), 2, t0);
        }
    }

    #[test]
    fn ipv6_grouped_by_prefix_and_mapped_v4_unwrapped() {
        let l = FailureLimiter::new(64);
        let t0 = Instant::now();
        l.acquire(ip("2001:db8::1"), 1, t0).unwrap();
        assert!(l.acquire(ip("2001:db8::ffff:2"), 1, t0).is_err());
        l.acquire(ip("::ffff:10.0.0.9"), 1, t0).unwrap();
        assert!(l.acquire(ip("10.0.0.9"), 1, t0).is_err());
        assert_eq!(l.tracked(), 2);
    }
}
