//! Every abuse limit of a server, in one [`Limits`]: new connections per IP
//! per second and open connections per IP (checked at accept, before any
//! TLS work), `/auth/*` requests per IP per minute, failed `/auth/token`
//! attempts per IP per minute ([`FailureLimiter`]), and chat messages per
//! client per minute. Rates use governor's keyed GCRA limiters; the
//! open-connection count is a plain counted map with a guard.
//!
//! Failed attempts use a token bucket per address instead of GCRA: every
//! attempt takes a token up front (so parallel guesses cannot overshoot the
//! limit, and a limited address costs no argon2 work) and an attempt that did
//! not fail on credentials gives it back ([`FailureLimiter::refund`]). Full
//! buckets are forgotten when the map grows, so memory stays bounded by the
//! number of recently failing addresses.
//!
//! IPv6 clients are counted per `[limits] ipv6_prefix_len` leading bits
//! (default 128: each address alone; 64 groups the hosts of one network, for
//! clients that rotate privacy addresses), and IPv4-mapped IPv6 addresses as
//! the IPv4 address ([`ip_key`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;

/// The key an address is counted under: an IPv4 address (mapped ones
/// unwrapped) as it is, an IPv6 address with all but its first
/// `v6_prefix_len` bits (1-128; larger counts as 128) cleared.
pub fn ip_key(ip: IpAddr, v6_prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let keep = u32::from(v6_prefix_len.min(128));
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// Too many new connections per second from this address.
    Rate,
    /// Too many open connections from this address.
    Open,
}

impl ConnRefusal {
    pub fn label(self) -> &'static str {
        match self {
            Self::Rate => "ip_connection_rate",
            Self::Open => "ip_open_connections",
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("max(1) is non-zero")
}

/// All limiters; built once from `[limits]` (changes need a restart).
pub struct Limits {
    clock: DefaultClock,
    connect: DefaultKeyedRateLimiter<IpAddr>,
    auth: DefaultKeyedRateLimiter<IpAddr>,
    chat: DefaultKeyedRateLimiter<String>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_open: usize,
    /// `[limits] ipv6_prefix_len`, for [`ip_key`].
    v6_prefix: u8,
    /// Failed `/auth/token` attempts (its rate is reloadable, so it is
    /// passed on each call from `auth.max_failed_attempts_per_minute`).
    pub auth_failures: FailureLimiter,
}

/// One connection's open-connection slot, shareable: the HTTP connection
/// holds it, and so does a WebSocket session upgraded from it (it travels
/// in the request's extensions), so the slot is freed only when both ended:
/// `max_connections_per_ip` counts sessions for their whole life.
#[derive(Clone)]
pub struct HeldConn {
    _guard: Arc<ConnGuard>,
}

impl HeldConn {
    pub fn new(guard: ConnGuard) -> Self {
        Self {
            _guard: Arc::new(guard),
        }
    }
}

/// Holds one open-connection slot of an address; frees it on drop.
pub struct ConnGuard {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = g.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.key);
            }
        }
    }
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Self {
            clock: DefaultClock::default(),
            connect: RateLimiter::keyed(Quota::per_second(nz(cfg.connections_per_second))),
            auth: RateLimiter::keyed(Quota::per_minute(nz(cfg.auth_per_minute))),
            chat: RateLimiter::keyed(Quota::per_minute(nz(cfg.chat_per_minute))),
            open: Arc::new(Mutex::new(HashMap::new())),
            max_open: cfg.max_connections_per_ip,
            v6_prefix: cfg.ipv6_prefix_len,
            auth_failures: FailureLimiter::new(cfg.ipv6_prefix_len),
        }
    }

    /// Admit a new connection from `ip`, or say why not. Keep the guard for
    /// as long as the connection is open.
    pub fn admit_connection(&self, ip: IpAddr) -> Result<ConnGuard, ConnRefusal> {
        let key = ip_key(ip, self.v6_prefix);
        let mut g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.get(&key).copied().unwrap_or(0);
        if n >= self.max_open {
            return Err(ConnRefusal::Open);
        }
        if self.connect.check_key(&key).is_err() {
            return Err(ConnRefusal::Rate);
        }
        g.insert(key, n + 1);
        Ok(ConnGuard {
            open: self.open.clone(),
            key,
        })
    }

    fn wait(
        &self,
        r: Result<(), governor::NotUntil<governor::clock::QuantaInstant>>,
    ) -> Result<(), Duration> {
        r.map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// One `/auth/*` request from `ip`; `Err` is how long to wait.
    pub fn auth(&self, ip: IpAddr) -> Result<(), Duration> {
        self.wait(self.auth.check_key(&ip_key(ip, self.v6_prefix)))
    }

    /// One chat message from `client_id`; `Err` is how long to wait.
    pub fn chat(&self, client_id: &str) -> Result<(), Duration> {
        self.wait(self.chat.check_key(&client_id.to_string()))
    }

    /// Forget addresses and clients whose limits have fully recovered
    /// (called periodically so the maps stay small).
    pub fn sweep(&self) {
        self.connect.retain_recent();
        self.auth.retain_recent();
        self.chat.retain_recent();
        self.connect.shrink_to_fit();
        self.auth.shrink_to_fit();
        self.chat.shrink_to_fit();
    }

    /// Addresses with an open connection now.
    pub fn open_addresses(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Forget full buckets once the map holds this many addresses.
const PRUNE_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Failed-attempt buckets by client address (keyed by [`ip_key`], as
/// everywhere here).
#[derive(Debug, Default)]
pub struct FailureLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// `[limits] ipv6_prefix_len` (0, the default: 128).
    v6_prefix: u8,
}

fn refill(b: &mut Bucket, per_minute: u32, now: Instant) {
    let cap = f64::from(per_minute);
    let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
    b.tokens = (b.tokens + elapsed * cap / 60.0).min(cap);
    b.updated = now;
}

impl FailureLimiter {
    /// Buckets keyed by [`ip_key`] with `v6_prefix_len`.
    pub fn new(v6_prefix_len: u8) -> Self {
        Self {
            buckets: Mutex::default(),
            v6_prefix: v6_prefix_len,
        }
    }

    fn key(&self, ip: IpAddr) -> IpAddr {
        ip_key(
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

    fn cfg() -> LimitsConfig {
        LimitsConfig {
            max_body_bytes: 1024,
            chat_per_minute: 2,
            auth_per_minute: 3,
            connections_per_second: 3,
            max_connections_per_ip: 2,
            ipv6_prefix_len: 128,
        }
    }

    #[test]
    fn open_connections_are_counted_and_freed() {
        let l = Limits::new(&cfg());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = l.admit_connection(ip).unwrap();
        let _b = l.admit_connection(ip).unwrap();
        assert_eq!(l.admit_connection(ip).err(), Some(ConnRefusal::Open));
        assert!(l.admit_connection("10.0.0.2".parse().unwrap()).is_ok());
        drop(a);
        // Third new connection this second: the rate limit, not the count.
        assert!(l.admit_connection(ip).is_ok());
        drop(l.admit_connection("10.0.0.9".parse().unwrap()));
        assert_eq!(l.open_addresses(), 1);
    }

    #[test]
    fn connection_rate() {
        let l = Limits::new(&LimitsConfig {
            max_connections_per_ip: 100,
            ..cfg()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            drop(l.admit_connection(ip).unwrap());
        }
        assert_eq!(l.admit_connection(ip).err(), Some(ConnRefusal::Rate));
    }

    #[test]
    fn chat_and_auth_rates_say_how_long_to_wait() {
        let l = Limits::new(&cfg());
        assert!(l.chat("c").is_ok() && l.chat("c").is_ok());
        let wait = l.chat("c").unwrap_err();
        assert!(
            wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(l.chat("other").is_ok());
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..3 {
            l.auth(ip).unwrap();
        }
        assert!(l.auth(ip).is_err());
    }

    #[test]
    fn ipv6_per_prefix_and_mapped_v4_unwrapped() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (a, b) = (ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:bbbb::2"));
        assert_ne!(ip_key(a, 128), ip_key(b, 128));
        assert_eq!(ip_key(a, 128), a);
        assert_eq!(ip_key(a, 64), ip_key(b, 64));
        assert_eq!(ip_key(a, 64), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(a, 56), ip("2001:db8:1::"));
        assert_eq!(ip_key(a, 1), ip("::"));
        assert_ne!(ip_key(ip("2001:db8:1:3::1"), 64), ip_key(a, 64));
        let m = ip("::ffff:192.168.1.5");
        assert_eq!(ip_key(m, 64), ip("192.168.1.5"));
        assert_eq!(ip_key(ip("10.1.2.3"), 1), ip("10.1.2.3"));
    }

    #[test]
    fn ipv6_prefix_groups_open_connections() {
        let per_address = Limits::new(&cfg());
        let (a, b) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let _g = [
            per_address.admit_connection(a),
            per_address.admit_connection(a),
        ];
        assert!(per_address.admit_connection(b).is_ok());
        let per_net = Limits::new(&LimitsConfig {
            ipv6_prefix_len: 64,
            ..cfg()
        });
        let _h = [per_net.admit_connection(a), per_net.admit_connection(b)];
        assert_eq!(per_net.admit_connection(a).err(), Some(ConnRefusal::Open));
    }

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
    fn failure_buckets_group_ipv6_by_prefix_and_unwrap_mapped_v4() {
        let l = FailureLimiter::new(64);
        let t0 = Instant::now();
        l.acquire(ip("2001:db8::1"), 1, t0).unwrap();
        assert!(l.acquire(ip("2001:db8::ffff:2"), 1, t0).is_err());
        l.acquire(ip("::ffff:10.0.0.9"), 1, t0).unwrap();
        assert!(l.acquire(ip("10.0.0.9"), 1, t0).is_err());
        assert_eq!(l.tracked(), 2);
    }
}
