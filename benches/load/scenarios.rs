//! The plan of a run and the non-streaming scenarios of issue 6 (idle,
//! connect, validate, leak, and issue 7's soak; the streaming ones are in
//! `streaming.rs`). Each starts a fresh gateway (so one scenario's memory
//! does not colour the next), sets the fake's behaviour, measures, and
//! returns one [`Table`]. Under `--smoke` the counts and durations are tiny
//! and anything that did not work is an error; otherwise what happened
//! (dropped sessions, errors) is reported in the table.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::clients::{self, next, Kind, Samples, Target, Window, Ws};
use crate::fake_ollama::{Behavior, FakeOllama};
use crate::gateway::{Gateway, Options};
use crate::report::{num, Summary, Table};

/// What the command line asked for.
pub struct Plan {
    pub bin: PathBuf,
    pub fake: FakeOllama,
    pub smoke: bool,
    pub duration: Option<f64>,
    pub streams: Option<Vec<usize>>,
    /// The nginx binary, when found (and not `--no-nginx`).
    pub nginx: Option<PathBuf>,
    /// The strace binary, when found (and not `--no-strace`).
    pub strace: Option<PathBuf>,
    /// RLIMIT_NOFILE in force (the gateway inherits it).
    pub nofile: u64,
    /// Measure the `openai` side (a gateway whose upstream is the fake's
    /// OpenAI dialect) beside the others; off with `--no-openai`.
    pub openai: bool,
}

/// Handshakes in flight at once when opening many sessions.
const OPEN_PARALLEL: usize = 128;

impl Plan {
    pub fn counts(&self, default: &[usize], smoke: &[usize]) -> Vec<usize> {
        match (&self.streams, self.smoke) {
            (Some(s), _) => s.clone(),
            (None, true) => smoke.to_vec(),
            (None, false) => default.to_vec(),
        }
    }

    pub fn secs(&self, default: f64, smoke: f64) -> f64 {
        match (self.duration, self.smoke) {
            (Some(d), _) => d,
            (None, true) => smoke,
            (None, false) => default,
        }
    }

    /// A fresh gateway (TLS on) and an access token for it.
    async fn gateway(&self, heartbeat_secs: u64) -> Result<(Gateway, Target)> {
        self.gateway_with(heartbeat_secs, true, false).await
    }

    /// A fresh gateway, TLS on or off, its upstream the fake's Ollama or
    /// OpenAI dialect, and an access token for it.
    pub async fn gateway_with(
        &self,
        heartbeat_secs: u64,
        tls: bool,
        openai: bool,
    ) -> Result<(Gateway, Target)> {
        let (bin, url) = (self.bin.clone(), self.fake.url());
        let gw = tokio::task::spawn_blocking(move || {
            Gateway::start(
                &bin,
                &url,
                &Options {
                    heartbeat_secs,
                    tls,
                    openai,
                },
            )
        })
        .await??;
        println!(
            "  gateway{}{} pid {} at {}: {} threads, RSS {} KiB",
            if tls { "" } else { " (plain)" },
            if openai { " (openai upstream)" } else { "" },
            gw.pid(),
            gw.addr,
            gw.threads(),
            gw.rss_kib()
        );
        let mut target = Target {
            addr: gw.addr,
            tls: gw.tls.clone(),
            token: "".into(),
        };
        target.token = clients::mint_token(&target, "load-tool").await?.into();
        Ok((gw, target))
    }
}

/// Open `n` sessions, `OPEN_PARALLEL` handshakes at a time.
pub async fn open_many(t: &Target, n: usize) -> Result<Vec<Ws>> {
    let sem = Arc::new(Semaphore::new(OPEN_PARALLEL));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (t, sem) = (t.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            clients::open_session(&t).await
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r?.context("opening a session")?);
    }
    Ok(out)
}

/// Every stream's samples together: (latencies, tokens, tokens in the
/// window, streams that did not complete).
pub fn merge(s: &mut [Samples]) -> (Vec<u32>, u64, u64, usize) {
    let mut lat = Vec::new();
    let (mut tokens, mut in_window, mut incomplete) = (0, 0, 0);
    for x in s.iter_mut() {
        lat.append(&mut x.lat_ns);
        tokens += x.tokens;
        in_window += x.in_window;
        incomplete += usize::from(!x.completed);
    }
    (lat, tokens, in_window, incomplete)
}

/// Scenario 4: many idle sessions held open, each answering the gateway's
/// `ping` with `pong`; none may be dropped; the gateway's resident memory.
pub async fn idle(p: &Plan) -> Result<Table> {
    let hold = p.secs(60.0, 2.5);
    let heartbeat = if p.smoke { 1 } else { 5 };
    let mut t = Table::new(
        "idle",
        &format!(
            "TLS WebSocket sessions opened ({OPEN_PARALLEL} handshakes at a time), then held {hold} s \
             answering pings (heartbeat_interval_secs = {heartbeat}); gateway RSS from /proc: before, \
             once opened, at the end of the hold (all still open); KiB/session = (end - before) / sessions"
        ),
        &[
            "sessions",
            "open s",
            "held s",
            "dropped",
            "pings answered",
            "active (/ws/health)",
            "RSS before MiB",
            "RSS opened MiB",
            "RSS end MiB",
            "RSS peak MiB",
            "KiB/session",
        ],
    );
    for want in p.counts(&[10_000], &[2_000]) {
        // Each session is a descriptor here (and one in the gateway, which
        // inherited the same limit); keep a margin for everything else.
        let n = want.min(p.nofile.saturating_sub(256) as usize).max(1);
        if n < want {
            println!(
                "  idle: RLIMIT_NOFILE {} allows {n} sessions, not {want}",
                p.nofile
            );
        }
        let (gw, target) = p.gateway(heartbeat).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss0 = gw.rss_kib();
        let t0 = Instant::now();
        let sessions = open_many(&target, n).await?;
        let open_s = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let opened = gw.rss_kib();
        let end = Instant::now() + Duration::from_secs_f64(hold);
        let mut set = JoinSet::new();
        for mut ws in sessions {
            set.spawn(async move {
                let mut pings = 0u64;
                loop {
                    match tokio::time::timeout_at(end.into(), next(&mut ws)).await {
                        Err(_) => return (pings, false, ws),
                        Ok(Ok(Kind::Ping)) => {
                            pings += 1;
                            if clients::send(&mut ws, clients::PONG).await.is_err() {
                                return (pings, true, ws);
                            }
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => return (pings, true, ws),
                    }
                }
            });
        }
        let mut peak = opened;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(500)).await;
            peak = peak.max(gw.rss_kib());
        }
        let rss_end = gw.rss_kib();
        peak = peak.max(rss_end);
        let active = ws_health_active(&target).await.unwrap_or(-1);
        let (mut pings, mut dropped) = (0u64, 0usize);
        let mut held = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            let (pg, drop, ws) = r?;
            pings += pg;
            dropped += usize::from(drop);
            held.push(ws);
        }
        drop(held);
        let per_session = rss_end.saturating_sub(rss0) as f64 / n as f64;
        if p.smoke {
            ensure!(dropped == 0, "{dropped} sessions dropped");
            ensure!(pings > 0, "no ping arrived");
            // The figure only has to be computed here; its threshold
            // (16 KiB) belongs to the benchmark report.
            ensure!(
                rss0 > 0 && rss_end > 0 && per_session.is_finite(),
                "RSS per idle session not computed (RSS {rss0} -> {rss_end} KiB)"
            );
        }
        t.row(vec![
            n.into(),
            num(open_s),
            num(hold),
            dropped.into(),
            pings.into(),
            active.into(),
            num(rss0 as f64 / 1024.0),
            num(opened as f64 / 1024.0),
            num(rss_end as f64 / 1024.0),
            num(peak as f64 / 1024.0),
            num(per_session),
        ]);
        drop(gw);
    }
    Ok(t)
}

/// `active_connections` of `GET /ws/health`.
async fn ws_health_active(t: &Target) -> Result<i64> {
    let mut s = clients::https_connect(t).await?;
    let req = http::Request::get("/ws/health")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))?;
    let (status, body) = clients::request(&mut s, req).await?;
    ensure!(status == 200, "/ws/health answered {status}");
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["active_connections"]
        .as_i64()
        .context("no active_connections")
}

/// Scenario 5: connect + TLS + upgrade + `connection_ack`, then close; each
/// worker back to back for `secs`.
pub async fn connect(p: &Plan) -> Result<Table> {
    let secs = p.secs(5.0, 1.0);
    let mut t = Table::new(
        "connect",
        &format!(
            "TCP connect + TLS handshake + WebSocket upgrade + connection_ack, in ms; each worker opens and \
             closes sessions back to back for {secs} s"
        ),
        &["workers", "sessions", "sessions/s", "p50 ms", "p99 ms", "max ms"],
    );
    for n in p.counts(&[1, 32], &[2]) {
        let (_gw, target) = p.gateway(5).await?;
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let started = Instant::now();
        let mut set = JoinSet::new();
        for _ in 0..n {
            let target = target.clone();
            set.spawn(async move {
                let mut v = Vec::new();
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let ws = clients::open_session(&target).await?;
                    v.push(t0.elapsed().as_nanos() as u32);
                    clients::close(ws).await;
                }
                anyhow::Ok(v)
            });
        }
        let mut all = Vec::new();
        while let Some(r) = set.join_next().await {
            all.append(&mut r??);
        }
        let wall = started.elapsed().as_secs_f64();
        let s = Summary::of(&mut all);
        if p.smoke {
            ensure!(s.n > 0, "no session opened");
        }
        t.row(vec![
            n.into(),
            s.n.into(),
            num(s.n as f64 / wall),
            num(s.p50 / 1e3),
            num(s.p99 / 1e3),
            num(s.max / 1e3),
        ]);
    }
    Ok(t)
}

/// Scenario 6: `POST /auth/validate` over keep-alive connections.
pub async fn validate(p: &Plan) -> Result<Table> {
    let secs = p.secs(5.0, 1.0);
    let mut t = Table::new(
        "validate",
        &format!(
            "POST /auth/validate with a bearer access token, back to back on each keep-alive HTTPS \
             connection for {secs} s; latency in µs"
        ),
        &[
            "connections",
            "requests",
            "req/s",
            "p50 µs",
            "p99 µs",
            "non-200",
        ],
    );
    for n in p.counts(&[4, 16], &[2]) {
        let (_gw, target) = p.gateway(5).await?;
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let started = Instant::now();
        let mut set = JoinSet::new();
        for _ in 0..n {
            let target = target.clone();
            set.spawn(async move {
                let mut c = clients::https_connect(&target).await?;
                let auth = format!("Bearer {}", target.token);
                let (mut v, mut bad) = (Vec::new(), 0u64);
                while Instant::now() < end {
                    let req = http::Request::post("/auth/validate")
                        .header("host", "localhost")
                        .header("authorization", auth.as_str())
                        .body(Full::new(Bytes::new()))?;
                    let t0 = Instant::now();
                    let (status, _) = clients::request(&mut c, req).await?;
                    v.push(t0.elapsed().as_nanos() as u32);
                    bad += u64::from(status != 200);
                }
                anyhow::Ok((v, bad))
            });
        }
        let (mut all, mut bad) = (Vec::new(), 0);
        while let Some(r) = set.join_next().await {
            let (mut v, b) = r??;
            all.append(&mut v);
            bad += b;
        }
        let wall = started.elapsed().as_secs_f64();
        let s = Summary::of(&mut all);
        if p.smoke {
            ensure!(s.n > 0 && bad == 0, "{} requests, {bad} not 200", s.n);
        }
        t.row(vec![
            n.into(),
            s.n.into(),
            num(s.n as f64 / wall),
            num(s.p50),
            num(s.p99),
            bad.into(),
        ]);
    }
    Ok(t)
}

/// Scenario 7: resident memory after 1,000, 10,000 and 100,000 short
/// generations (5 tokens each) on a few long-lived sessions.
pub async fn leak(p: &Plan) -> Result<Table> {
    let checkpoints: Vec<usize> = if p.smoke {
        vec![20, 200]
    } else {
        vec![1_000, 10_000, 100_000]
    };
    p.fake.set(Behavior::Clock {
        count: 5,
        interval: Duration::ZERO,
    });
    let mut t = Table::new(
        "leak",
        "gateway RSS after N generations of 5 tokens each, run back to back on each session \
         (RSS read 1 s after the last one ends)",
        &[
            "sessions",
            "generations",
            "gens/s",
            "errors",
            "RSS MiB",
            "growth since first KiB",
        ],
    );
    for n in p.counts(&[16], &[2]) {
        let (gw, target) = p.gateway(5).await?;
        let mut sessions = open_many(&target, n).await?;
        let done = Arc::new(AtomicUsize::new(0));
        let mut first_rss = None;
        for &goal in &checkpoints {
            let started = Instant::now();
            let before = done.load(Ordering::SeqCst);
            let mut set = JoinSet::new();
            for mut ws in sessions.drain(..) {
                let done = done.clone();
                set.spawn(async move {
                    let mut errors = 0u64;
                    while done.fetch_add(1, Ordering::SeqCst) < goal {
                        let w = Window::whole_answer();
                        match clients::gateway_stream(&mut ws, w).await {
                            Ok(s) if s.completed && s.tokens == 5 => {}
                            Ok(_) => errors += 1,
                            Err(e) => {
                                if errors == 0 {
                                    eprintln!("load: leak: {e:#}");
                                }
                                errors += 1;
                                break;
                            }
                        }
                    }
                    done.fetch_sub(1, Ordering::SeqCst);
                    (errors, ws)
                });
            }
            let mut errors = 0;
            while let Some(r) = set.join_next().await {
                let (e, ws) = r?;
                errors += e;
                sessions.push(ws);
            }
            let ran = done.load(Ordering::SeqCst).min(goal) - before;
            let rate = ran as f64 / started.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let rss = gw.rss_kib();
            let first = *first_rss.get_or_insert(rss);
            if p.smoke {
                ensure!(errors == 0, "{errors} generations failed");
            }
            t.row(vec![
                n.into(),
                goal.into(),
                num(rate),
                errors.into(),
                num(rss as f64 / 1024.0),
                num(rss as f64 - first as f64),
            ]);
        }
        drop(sessions);
        drop(gw);
    }
    Ok(t)
}

/// Open file descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The soak (issue 7): N sessions stream back-to-back answers (10 tokens,
/// 100 ms apart) for the duration; RSS and descriptors are sampled as it
/// runs, then every session closes and the descriptors must return to the
/// baseline taken before the first session opened, plus the idle keep-alive
/// connections to Ollama the pool may keep (at most
/// `ollama.pool_max_connections`, which the bench sets to [`crate::gateway::pool_max`]).
pub async fn soak(p: &Plan) -> Result<Table> {
    let n = p.counts(&[1_000], &[4])[0];
    let secs = p.secs(600.0, 2.0);
    let every = if p.smoke { 0.5 } else { 30.0 };
    p.fake.set(Behavior::Clock {
        count: 10,
        interval: Duration::from_millis(100),
    });
    let mut t = Table::new(
        "soak",
        "N sessions streaming answers of 10 tokens at 10 tokens/s back to back; gateway RSS and \
         open descriptors sampled while it runs, then after every session closed",
        &["t s", "sessions", "generations", "errors", "RSS MiB", "fds"],
    );
    let (gw, target) = p.gateway(30).await?;
    let baseline_fds = fd_count(gw.pid());
    let sessions = open_many(&target, n).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let generations = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for mut ws in sessions {
        let (stop, generations, errors) = (stop.clone(), generations.clone(), errors.clone());
        set.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let w = Window::whole_answer();
                match clients::gateway_stream(&mut ws, w).await {
                    Ok(s) if s.completed && s.tokens == 10 => {
                        generations.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("load: soak: {e:#}");
                        errors.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
            clients::close(ws).await;
        });
    }
    let started = Instant::now();
    let mut next_sample = 0.0;
    while started.elapsed().as_secs_f64() < secs {
        let el = started.elapsed().as_secs_f64();
        if el >= next_sample {
            t.row(vec![
                num(el.round()),
                n.into(),
                generations.load(Ordering::SeqCst).into(),
                errors.load(Ordering::SeqCst).into(),
                num(gw.rss_kib() as f64 / 1024.0),
                fd_count(gw.pid()).into(),
            ]);
            next_sample += every;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = set.join_next().await {
        r?;
    }
    // Let the gateway notice every close.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pool_max = crate::gateway::pool_max();
    let allowed = baseline_fds + pool_max;
    while fd_count(gw.pid()) > allowed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end_fds = fd_count(gw.pid());
    let errs = errors.load(Ordering::SeqCst);
    t.row(vec![
        num(started.elapsed().as_secs_f64().round()),
        0usize.into(),
        generations.load(Ordering::SeqCst).into(),
        errs.into(),
        num(gw.rss_kib() as f64 / 1024.0),
        format!("{end_fds} (baseline {baseline_fds} + up to {pool_max} pooled)").into(),
    ]);
    if p.smoke {
        ensure!(errs == 0, "{errs} generations failed");
        ensure!(
            end_fds <= allowed,
            "descriptors {end_fds} > baseline {baseline_fds} + {pool_max} pooled"
        );
    }
    drop(gw);
    Ok(t)
}
