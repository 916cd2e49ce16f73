//! The per-upstream metrics (`tars_upstream_up`, `_active`,
//! `_requests_total{outcome}`, `_tokens_total`), labelled by the configured
//! names only; an upstream removed on reload has its series removed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::metrics::{Metrics, UpstreamLabel, UpstreamOutcomeLabels};

/// Every outcome label `tars_upstream_requests_total` uses.
pub const OUTCOMES: [&str; 4] = ["ok", "failover", "error", "cancelled"];

/// Handle on the gateway's registry for the pool. Only names of configured
/// upstreams are written: a generation still running on a removed upstream
/// does not bring its series back.
pub struct UpstreamMetrics(Arc<Metrics>, Mutex<HashSet<String>>);

fn label(name: &str) -> UpstreamLabel {
    UpstreamLabel {
        upstream: name.to_string(),
    }
}

impl UpstreamMetrics {
    pub fn register(m: &Arc<Metrics>) -> Self {
        Self(m.clone(), Mutex::new(HashSet::new()))
    }

    fn live(&self, name: &str) -> bool {
        self.1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// Start writing `name`'s series (a configured upstream): up, 0 active.
    pub fn admit(&self, name: &str) {
        self.1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        self.set_up(name, true);
        self.set_active(name, 0);
    }

    pub fn set_up(&self, name: &str, up: bool) {
        if !self.live(name) {
            return;
        }
        self.0
            .upstream_up
            .get_or_create(&label(name))
            .set(i64::from(up));
    }

    pub fn set_active(&self, name: &str, n: usize) {
        if !self.live(name) {
            return;
        }
        self.0
            .upstream_active
            .get_or_create(&label(name))
            .set(n as i64);
    }

    pub fn request(&self, name: &str, outcome: &'static str) {
        if !self.live(name) {
            return;
        }
        self.0
            .upstream_requests_by
            .get_or_create(&UpstreamOutcomeLabels {
                upstream: name.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn tokens(&self, name: &str, n: u64) {
        if !self.live(name) {
            return;
        }
        self.0.upstream_tokens.get_or_create(&label(name)).inc_by(n);
    }

    /// Drop every series of a removed upstream.
    pub fn forget(&self, name: &str) {
        self.1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let l = label(name);
        self.0.upstream_up.remove(&l);
        self.0.upstream_active.remove(&l);
        self.0.upstream_tokens.remove(&l);
        for outcome in OUTCOMES {
            self.0.upstream_requests_by.remove(&UpstreamOutcomeLabels {
                upstream: name.to_string(),
                outcome,
            });
        }
    }
}
