//! Micro bench of the cost resume adds per frame (issue 17, ADR 0019): one
//! token frame sent through a generation's [`Output`] into its session's
//! bounded queue, drained on the same thread — `Output::Direct` (resume off,
//! or a chat without `conversation_id`: the old path) against
//! `Output::Resumable` (the frame also logged for a `resume`, with the
//! per-generation buffer sliding as it does while a session is attached).
//!
//! `cargo bench --bench resume -- --measurement-time 3 --warm-up-time 1`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tars::metrics::Metrics;
use tars::ws::replay::{Holder, Output, ResumeParams, ResumeRegistry};
use tars::ws::token_frame::TokenEncoder;
use tars::ws::writer::Out;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("resume");
    g.throughput(Throughput::Elements(1));
    for resumable in [false, true] {
        let (tx, mut rx) = mpsc::channel::<Out>(256);
        let cancel = CancellationToken::new();
        let registry = Arc::new(ResumeRegistry::new(Arc::new(Metrics::new())));
        let mut out = if resumable {
            let holder = Holder {
                session_id: "s".into(),
                tx,
                session: CancellationToken::new(),
            };
            let p = ResumeParams {
                window: Duration::from_secs(60),
                buffer_bytes: 1024 * 1024,
                total_bytes: 64 * 1024 * 1024,
                write_timeout: Duration::from_secs(30),
                draining: CancellationToken::new(),
                tasks: TaskTracker::new(),
            };
            Output::resumable(&registry, "client", "conv-1", &cancel, holder, p)
        } else {
            Output::Direct(tx)
        };
        let mut enc = TokenEncoder::new(Some("conv-1"));
        let mut seq = 0u64;
        let name = if resumable { "resumable" } else { "direct" };
        g.bench_function(format!("send_token/{name}"), |b| {
            b.iter(|| {
                seq += 1;
                let frame = enc.encode("token", "\" Paris\"", seq, time::OffsetDateTime::now_utc());
                rt.block_on(async {
                    out.send(Out::Token(frame, Instant::now()), seq - 1, &cancel)
                        .await
                        .unwrap();
                    rx.recv().await.unwrap();
                });
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
