//! Micro benches of token work without argon2: minting a pair, minting one
//! access token, and the checks every WebSocket upgrade and `/auth/validate`
//! run (`Auth::verify_access`: length cap, pinned HMAC, claims, type,
//! revocation and client lookups), for a valid token and for a forged one.
//!
//! `cargo bench --bench tokens -- --measurement-time 3 --warm-up-time 1`

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tars::auth::tokens::now_secs;
use tars::auth::{Auth, Subject, TokenType};

/// A config with a fixed key and a data_dir in `dir`.
fn config(dir: &std::path::Path, algorithm: &str) -> tars::config::Config {
    let path = dir.join("config.toml");
    let text = format!(
        "[server]\ndata_dir = \"data\"\n[tls]\nenabled = false\n[auth]\nalgorithm = \"{algorithm}\"\n\
         secret = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n\
         open_enrollment = true\n"
    );
    std::fs::write(&path, text).unwrap();
    tars::config::load_with_env(&path, &|_| None).unwrap()
}

fn who() -> Subject {
    Subject {
        client_id: "laptop-0042".into(),
        device_name: Some("Windows Desktop".into()),
        device_type: Some("windows".into()),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    for alg in ["HS256", "HS512"] {
        let cfg = config(dir.path(), alg);
        let auth = Auth::new(&cfg).unwrap();
        let keys = tars::auth::token_keys(&cfg).unwrap();
        let who = who();
        let mut g = c.benchmark_group(format!("tokens/{alg}"));
        g.bench_function("issue_pair", |b| {
            b.iter(|| auth.issue_pair(black_box(&who), None).unwrap())
        });
        g.bench_function("issue_access", |b| {
            b.iter(|| {
                keys.issue(
                    black_box(&who),
                    TokenType::Access,
                    now_secs(),
                    Duration::from_secs(86400),
                )
                .unwrap()
            })
        });
        let pair = auth.issue_pair(&who, None).unwrap();
        g.bench_function("verify_access", |b| {
            b.iter(|| auth.verify_access(black_box(&pair.access_token)).unwrap())
        });
        // Same header and payload, one signature character changed.
        let mut forged = pair.access_token.clone().into_bytes();
        let i = forged.len() - 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        g.bench_function("verify_forged", |b| {
            b.iter(|| auth.verify_access(black_box(&forged)).unwrap_err())
        });
        g.bench_function("verify_oversized", |b| {
            let big = "x".repeat(10 * 1024);
            b.iter(|| auth.verify_access(black_box(&big)).unwrap_err())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
