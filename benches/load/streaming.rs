//! The streaming scenarios (issues 6, 14 and 16), each measuring every
//! [`Side`] in one run so that ratios come from the same machine state:
//! direct, gateway (TLS), openai (the TLS gateway in front of the fake's
//! OpenAI dialect; `openai/gateway` is the OpenAI path's share of the Ollama
//! path's speed), gateway (plain) and nginx (TLS, when found).
//!
//! - [`paced`]: N streams at one token per ms (eased so that the offered
//!   load stays near a quarter of the direct limit measured just before);
//!   per-token latency and what each side adds over direct.
//! - [`saturate`]: the fake writes back to back; tokens/s, per-token latency
//!   under saturation, and socket syscalls per token (strace).
//! - [`ttft`]: N chats starting at once, on new and on open connections.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::clients::{now_ns, Window, TOKENS_READ};
use crate::fake_ollama::Behavior;
use crate::report::{num, Summary, Table};
use crate::scenarios::{merge, Plan};
use crate::sides::{Run, Side, Sides};
use crate::syscalls::{Strace, READS, WRITES};

/// One side's figures in one row.
#[derive(Clone, Debug, Default)]
struct Got {
    /// Tokens per second (in the window for saturate, all for paced).
    tok_s: f64,
    lat: Option<Summary>,
    incomplete: usize,
    cpu: Option<f64>,
}

/// Figures per side; `None` for a side not measured (nginx not found).
#[derive(Default)]
struct BySide([Option<Got>; 5]);

impl BySide {
    fn set(&mut self, s: Side, g: Got) {
        self.0[s as usize] = Some(g);
    }
    fn get(&self, s: Side) -> Option<&Got> {
        self.0[s as usize].as_ref()
    }
    /// A number cell from side `s`, empty when it was not measured.
    fn cell(&self, s: Side, f: impl Fn(&Got) -> Option<f64>) -> Value {
        opt(self.get(s).and_then(f))
    }
    fn p(&self, s: Side, f: impl Fn(&Summary) -> f64) -> Option<f64> {
        self.get(s)?.lat.as_ref().map(f)
    }
    /// `a - b` of a latency percentile: what side `a` adds over side `b`.
    fn added(&self, a: Side, b: Side, f: impl Fn(&Summary) -> f64 + Copy) -> Option<f64> {
        Some(self.p(a, f)? - self.p(b, f)?)
    }
}

fn opt(v: Option<f64>) -> Value {
    v.map(num).unwrap_or(Value::Null)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => num(a / b),
        _ => Value::Null,
    }
}

/// Samples of a run → figures; `tokens_by_window` counts only the tokens
/// in the window (saturate) instead of all of them (paced).
fn got(mut r: Run, tokens_by_window: bool, window_secs: f64) -> Got {
    let (mut lat, tokens, in_window, incomplete) = merge(&mut r.samples);
    let tok_s = if tokens_by_window {
        in_window as f64 / window_secs
    } else {
        tokens as f64 / r.secs
    };
    Got {
        tok_s,
        lat: (!lat.is_empty()).then(|| Summary::of(&mut lat)),
        incomplete,
        cpu: r.cpu_pct,
    }
}

/// Tokens per second `n` direct streams read when the fake writes back to
/// back (over `secs` after a short warm-up): the limit the paced load is
/// eased against.
async fn direct_limit(sides: &Sides, p: &Plan, n: usize, secs: f64) -> Result<f64> {
    p.fake.set(Behavior::Clock {
        count: 1_000_000_000,
        interval: Duration::ZERO,
    });
    let warm = secs * 0.3;
    let r = sides
        .streams(Side::Direct, n, || saturated_window(warm, secs))
        .await?;
    Ok(got(r, true, secs).tok_s)
}

fn saturated_window(warm: f64, secs: f64) -> Window {
    let from = now_ns() + (warm * 1e9) as u64;
    Window {
        from_ns: from,
        until_ns: from + (secs * 1e9) as u64,
        by_read: true,
        deadline: Instant::now() + Duration::from_secs_f64(warm + secs + 0.1),
    }
}

/// Scenario 1, paced: N streams at one token per ms each (eased on a slower
/// machine: the interval grows until N / interval is a quarter of the direct
/// limit just measured, since a latency taken at saturation measures
/// queueing); per-token latency (client read − fake wrote) of every side and
/// what each adds over direct at p50 and p99.
pub async fn paced(p: &Plan) -> Result<Table> {
    let secs = p.secs(5.0, 1.0);
    let warm = (secs * 0.2).min(1.0);
    let mut t = Table::new(
        "paced",
        &format!(
            "N streams at 1 token per ms, eased so that the offered load stays <= 1/4 of the direct limit \
             (direct saturated, measured first); per-token latency (client read - fake wrote) in µs, \
             tokens of the first {warm} s not counted; added = side - direct"
        ),
        &[
            "streams",
            "interval µs",
            "offered tok/s",
            "direct limit tok/s",
            "direct p50",
            "direct p99",
            "gateway p50",
            "gateway p99",
            "gateway p99.9",
            "openai p50",
            "openai p99",
            "plain p99",
            "nginx p50",
            "nginx p99",
            "nginx p99.9",
            "gateway added p99",
            "openai added p99",
            "plain added p99",
            "nginx added p99",
            "gateway/nginx added p99",
            "openai/gateway added p99",
            "gateway CPU %",
            "openai CPU %",
            "nginx CPU %",
            "incomplete",
        ],
    );
    for n in p.counts(&[1, 100, 1000], &[2]) {
        let sides = Sides::start(p, 5).await?;
        let limit = direct_limit(&sides, p, n, if p.smoke { 0.3 } else { 1.0 }).await?;
        // Let the limit's streams end in the fake before the paced ones.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let floor = Duration::from_millis(1);
        let eased = Duration::from_secs_f64(n as f64 / (limit / 4.0).max(1.0));
        let interval = if eased <= floor {
            floor
        } else {
            Duration::from_micros(eased.as_micros() as u64 + 1)
        };
        let count = (secs / interval.as_secs_f64()).ceil() as usize;
        p.fake.set(Behavior::Paced { count, interval });
        println!(
            "  paced: {n} streams, direct limit {limit:.0} tok/s, one token every {} µs",
            interval.as_micros()
        );
        let window = || Window {
            from_ns: now_ns() + (warm * 1e9) as u64,
            until_ns: u64::MAX,
            by_read: false,
            deadline: Instant::now() + Duration::from_secs_f64(secs * 2.0 + 5.0),
        };
        let mut by = BySide::default();
        for side in sides.present() {
            let r = sides.streams(side, n, window).await?;
            by.set(side, got(r, false, secs));
        }
        let incomplete: usize = by.0.iter().flatten().map(|g| g.incomplete).sum();
        if p.smoke {
            for side in sides.present() {
                ensure!(
                    by.p(side, |s| s.p50).is_some(),
                    "{side:?}: no tokens measured"
                );
            }
            ensure!(incomplete == 0, "{incomplete} streams did not complete");
        }
        let p50 = |s: &Summary| s.p50;
        let p99 = |s: &Summary| s.p99;
        t.row(vec![
            n.into(),
            (interval.as_micros() as u64).into(),
            num(n as f64 / interval.as_secs_f64()),
            num(limit),
            opt(by.p(Side::Direct, p50)),
            opt(by.p(Side::Direct, p99)),
            opt(by.p(Side::Gateway, p50)),
            opt(by.p(Side::Gateway, p99)),
            opt(by.p(Side::Gateway, |s| s.p999)),
            opt(by.p(Side::OpenAi, p50)),
            opt(by.p(Side::OpenAi, p99)),
            opt(by.p(Side::Plain, p99)),
            opt(by.p(Side::Nginx, p50)),
            opt(by.p(Side::Nginx, p99)),
            opt(by.p(Side::Nginx, |s| s.p999)),
            opt(by.added(Side::Gateway, Side::Direct, p99)),
            opt(by.added(Side::OpenAi, Side::Direct, p99)),
            opt(by.added(Side::Plain, Side::Direct, p99)),
            opt(by.added(Side::Nginx, Side::Direct, p99)),
            ratio(
                by.added(Side::Gateway, Side::Direct, p99),
                by.added(Side::Nginx, Side::Direct, p99),
            ),
            ratio(
                by.added(Side::OpenAi, Side::Direct, p99),
                by.added(Side::Gateway, Side::Direct, p99),
            ),
            by.cell(Side::Gateway, |g| g.cpu),
            by.cell(Side::OpenAi, |g| g.cpu),
            by.cell(Side::Nginx, |g| g.cpu),
            incomplete.into(),
        ]);
    }
    Ok(t)
}

/// Scenario 2, saturate: the fake writes tokens back to back; tokens the
/// clients read per second, per-token latency under saturation (mostly time
/// queued ahead of the reader), and, with strace, socket writes and reads
/// per token of the gateway and of nginx's workers. Three tables.
pub async fn saturate(p: &Plan) -> Result<Vec<Table>> {
    let secs = p.secs(5.0, 1.0);
    let warm = 0.5_f64.min(secs * 0.5);
    let mut thr = Table::new(
        "saturate",
        &format!(
            "the fake writes tokens back to back; tokens the clients read per second over {secs} s after \
             {warm} s of warm-up; CPU in % of one core"
        ),
        &[
            "streams",
            "direct tok/s",
            "gateway tok/s",
            "openai tok/s",
            "plain tok/s",
            "nginx tok/s",
            "gateway/nginx",
            "plain/nginx",
            "gateway/direct",
            "openai/gateway",
            "gateway CPU %",
            "openai CPU %",
            "plain CPU %",
            "nginx CPU %",
        ],
    );
    let mut lat = Table::new(
        "saturate latency",
        "per-token latency under saturation (client read - fake wrote) of the tokens counted above, in µs",
        &[
            "streams",
            "direct p50",
            "direct p99",
            "gateway p50",
            "gateway p99",
            "openai p50",
            "openai p99",
            "plain p50",
            "plain p99",
            "nginx p50",
            "nginx p99",
            "gateway/nginx p50",
            "gateway/nginx p99",
        ],
    );
    let traced = secs.min(2.0);
    let mut sys = Table::new(
        "saturate syscalls",
        &format!(
            "strace -c -f attached for {traced} s of a saturated run (a separate run: strace slows the \
             process, so tok/s traced is not a speed); writes = write+writev+sendmsg+sendto, reads = \
             read+readv+recvfrom+recvmsg (write includes eventfd wake-ups), per token the clients read \
             while attached"
        ),
        &[
            "streams",
            "gateway writes/token",
            "gateway reads/token",
            "gateway tok/s traced",
            "nginx writes/token",
            "nginx reads/token",
            "nginx tok/s traced",
        ],
    );
    p.fake.set(Behavior::Clock {
        count: 1_000_000_000,
        interval: Duration::ZERO,
    });
    for n in p.counts(&[1, 10, 50], &[2]) {
        let sides = Sides::start(p, 5).await?;
        let mut by = BySide::default();
        for side in sides.present() {
            let r = sides
                .streams(side, n, || saturated_window(warm, secs))
                .await?;
            let g = got(r, true, secs);
            if p.smoke {
                ensure!(g.tok_s > 0.0, "{side:?}: no tokens measured");
            }
            by.set(side, g);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let tok = |s: Side| by.get(s).map(|g| g.tok_s);
        thr.row(vec![
            n.into(),
            opt(tok(Side::Direct)),
            opt(tok(Side::Gateway)),
            opt(tok(Side::OpenAi)),
            opt(tok(Side::Plain)),
            opt(tok(Side::Nginx)),
            ratio(tok(Side::Gateway), tok(Side::Nginx)),
            ratio(tok(Side::Plain), tok(Side::Nginx)),
            ratio(tok(Side::Gateway), tok(Side::Direct)),
            ratio(tok(Side::OpenAi), tok(Side::Gateway)),
            by.cell(Side::Gateway, |g| g.cpu),
            by.cell(Side::OpenAi, |g| g.cpu),
            by.cell(Side::Plain, |g| g.cpu),
            by.cell(Side::Nginx, |g| g.cpu),
        ]);
        let (p50, p99) = (|s: &Summary| s.p50, |s: &Summary| s.p99);
        lat.row(vec![
            n.into(),
            opt(by.p(Side::Direct, p50)),
            opt(by.p(Side::Direct, p99)),
            opt(by.p(Side::Gateway, p50)),
            opt(by.p(Side::Gateway, p99)),
            opt(by.p(Side::OpenAi, p50)),
            opt(by.p(Side::OpenAi, p99)),
            opt(by.p(Side::Plain, p50)),
            opt(by.p(Side::Plain, p99)),
            opt(by.p(Side::Nginx, p50)),
            opt(by.p(Side::Nginx, p99)),
            ratio(by.p(Side::Gateway, p50), by.p(Side::Nginx, p50)),
            ratio(by.p(Side::Gateway, p99), by.p(Side::Nginx, p99)),
        ]);
        let mut cells = vec![n.into()];
        for side in [Side::Gateway, Side::Nginx] {
            let traced_side = match &p.strace {
                Some(bin) if sides.present().contains(&side) => {
                    Some(syscalls_per_token(&sides, bin, side, n, warm, traced).await?)
                }
                _ => None,
            };
            if p.smoke && p.strace.is_some() && sides.present().contains(&side) {
                ensure!(traced_side.is_some(), "{side:?}: no syscall count");
            }
            let (w, r, ts) = match traced_side {
                Some((w, r, ts)) => (Some(w), Some(r), Some(ts)),
                None => (None, None, None),
            };
            cells.extend([opt(w), opt(r), opt(ts)]);
        }
        sys.row(cells);
    }
    Ok(vec![thr, lat, sys])
}

/// A saturated run of `n` streams on `side` with strace attached to its
/// processes for `secs` after `warm`: (writes per token, reads per token,
/// tokens per second read while attached).
async fn syscalls_per_token(
    sides: &Sides,
    bin: &std::path::Path,
    side: Side,
    n: usize,
    warm: f64,
    secs: f64,
) -> Result<(f64, f64, f64)> {
    // Streams run until well after the traced window; attaching takes a
    // moment (checked below).
    let slack = 2.0;
    let run = sides.streams(side, n, || saturated_window(warm, secs + slack));
    let pids = sides.pids(side);
    let trace = async {
        tokio::time::sleep(Duration::from_secs_f64(warm)).await;
        let bin = bin.to_path_buf();
        let strace = tokio::task::spawn_blocking(move || Strace::attach(&bin, &pids)).await??;
        let t0 = Instant::now();
        let c0 = TOKENS_READ.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let c1 = TOKENS_READ.load(Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        let counts = tokio::task::spawn_blocking(move || strace.finish()).await??;
        anyhow::Ok((counts, c1 - c0, elapsed))
    };
    let (run, traced) = tokio::join!(run, trace);
    run?;
    let (counts, tokens, elapsed) = traced.context("strace")?;
    ensure!(
        elapsed < secs + slack * 0.5,
        "attaching strace took too long"
    );
    ensure!(tokens > 0, "no token read while strace was attached");
    let t = tokens as f64;
    let of = |names: &[&str]| {
        names
            .iter()
            .filter_map(|n| Some(format!("{n} {}", counts.calls.get(*n)?)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  strace {side:?}: {tokens} tokens read while attached; writes: {}; reads: {}",
        of(WRITES),
        of(READS)
    );
    Ok((
        counts.sum(WRITES) as f64 / t,
        counts.sum(READS) as f64 / t,
        t / elapsed,
    ))
}

/// Scenario 3, ttft: N chats of one token starting at once, in bursts;
/// each side in turn within a burst. "new connection": from nothing (TCP,
/// TLS, and for the gateways the upgrade) to the first token; "open
/// connection": a second chat on the connections just opened, all at once
/// again. Latencies in µs; added = side - direct.
pub async fn ttft(p: &Plan) -> Result<Table> {
    let bursts = if p.smoke { 2 } else { 10 };
    let mut t = Table::new(
        "ttft",
        &format!(
            "time to first token of N one-token chats starting at once, {bursts} bursts per side, sides \
             interleaved; new connection = connect (+ TLS + upgrade) + chat, open connection = a second \
             chat on it; µs; added = side - direct"
        ),
        &[
            "chats",
            "connection",
            "samples",
            "direct p50",
            "direct p99",
            "gateway p50",
            "gateway p99",
            "openai p99",
            "plain p99",
            "nginx p50",
            "nginx p99",
            "gateway added p99",
            "plain added p99",
            "nginx added p99",
            "gateway/nginx added p99",
        ],
    );
    p.fake.set(Behavior::Clock {
        count: 1,
        interval: Duration::ZERO,
    });
    for n in p.counts(&[1, 100], &[2]) {
        let sides = Arc::new(Sides::start(p, 5).await?);
        let mut fresh: [Vec<u32>; 5] = Default::default();
        let mut open: [Vec<u32>; 5] = Default::default();
        for _ in 0..bursts {
            for side in sides.present() {
                let (mut f, mut o) = burst(&sides, side, n).await?;
                fresh[side as usize].append(&mut f);
                open[side as usize].append(&mut o);
            }
        }
        for (label, v) in [("new", &mut fresh), ("open", &mut open)] {
            let mut by = BySide::default();
            let mut counts = Vec::new();
            for side in sides.present() {
                let s = &mut v[side as usize];
                counts.push(s.len().to_string());
                by.set(
                    side,
                    Got {
                        lat: Some(Summary::of(s)),
                        ..Got::default()
                    },
                );
            }
            if p.smoke {
                ensure!(counts.iter().all(|c| c != "0"), "no answers");
            }
            let (p50, p99) = (|s: &Summary| s.p50, |s: &Summary| s.p99);
            t.row(vec![
                n.into(),
                label.into(),
                counts.join("/").into(),
                opt(by.p(Side::Direct, p50)),
                opt(by.p(Side::Direct, p99)),
                opt(by.p(Side::Gateway, p50)),
                opt(by.p(Side::Gateway, p99)),
                opt(by.p(Side::OpenAi, p99)),
                opt(by.p(Side::Plain, p99)),
                opt(by.p(Side::Nginx, p50)),
                opt(by.p(Side::Nginx, p99)),
                opt(by.added(Side::Gateway, Side::Direct, p99)),
                opt(by.added(Side::Plain, Side::Direct, p99)),
                opt(by.added(Side::Nginx, Side::Direct, p99)),
                ratio(
                    by.added(Side::Gateway, Side::Direct, p99),
                    by.added(Side::Nginx, Side::Direct, p99),
                ),
            ]);
        }
    }
    Ok(t)
}

/// One burst on `side`: `n` clients connect and chat at once, then (all
/// answered) chat again at once on the same connections. Returns the
/// time-to-first-token in ns of (new, open) connections.
async fn burst(sides: &Arc<Sides>, side: Side, n: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let start = Arc::new(Barrier::new(n));
    let again = Arc::new(Barrier::new(n));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (sides, start, again) = (sides.clone(), start.clone(), again.clone());
        set.spawn(async move {
            start.wait().await;
            let t0 = Instant::now();
            let conn = sides.connect_one(side).await;
            let first = match conn {
                Ok(mut c) => {
                    let t1 = Instant::now();
                    let s = c.stream(Window::whole_answer()).await;
                    Ok((c, t1 - t0, s))
                }
                Err(e) => Err(e),
            };
            // Every client reaches the second barrier, even after an error,
            // so that none waits forever.
            again.wait().await;
            let (mut c, setup, s) = first.with_context(|| format!("{side:?}: connecting"))?;
            let s = s.with_context(|| format!("{side:?}: first chat"))?;
            ensure!(s.completed, "{side:?}: an answer did not complete");
            let fresh = setup + s.first_token.context("no token")?;
            let s2 = c
                .stream(Window::whole_answer())
                .await
                .with_context(|| format!("{side:?}: second chat"))?;
            ensure!(s2.completed, "{side:?}: an answer did not complete");
            let open = s2.first_token.context("no token")?;
            c.close().await;
            anyhow::Ok((fresh.as_nanos() as u32, open.as_nanos() as u32))
        });
    }
    let (mut f, mut o) = (Vec::with_capacity(n), Vec::with_capacity(n));
    while let Some(r) = set.join_next().await {
        let (a, b) = r??;
        f.push(a);
        o.push(b);
    }
    Ok((f, o))
}
