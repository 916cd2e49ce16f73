//! Micro benches of the per-token hot path and of client message parsing,
//! with heap allocations counted by a counting global allocator.
//!
//! - `token/*`: one Ollama `/api/chat` NDJSON line → [`parse_chat_line`] →
//!   [`TokenEncoder::encode`] → a `token` frame, as `ws::generation` does it
//!   for every token (the clock read included).
//! - `client_message/*`: [`parse_client_message`] on the messages a client
//!   sends (`chat` small and large, with options, `ping`, `cancel`).
//!
//! Before criterion runs, each case is run 100,000 times outside criterion
//! and the allocations it made are printed per call: a report, not an
//! assertion (the frame arena allocates once per block, not per token, and
//! only while earlier frames are still held by the writer).
//!
//! `cargo bench --bench hot_path -- --measurement-time 3 --warm-up-time 1`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tars::ollama::{parse_chat_line, ChatLine};
use tars::ws::protocol::parse_client_message;
use tars::ws::token_frame::TokenEncoder;

/// The system allocator, counting every allocation and reallocation.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A content line exactly as Ollama 0.5+ writes it for llama3.2.
const LINE: &str = r#"{"model":"llama3.2","created_at":"2024-11-05T08:52:19.385406455Z","message":{"role":"assistant","content":" the"},"done":false}"#;
/// A content line with Go's escapes (quotes, HTML, newline, tab, emoji).
const ESCAPED: &str = r#"{"model":"llama3.2","created_at":"2024-11-05T08:52:19.385406455Z","message":{"role":"assistant","content":"\"\u003cb\u003e\"\n\tüñ😀"},"done":false}"#;

/// What `ws::generation` does with one line: parse, encode, hand the frame on.
fn token(enc: &mut TokenEncoder, line: &[u8], seq: u64) -> Bytes {
    match parse_chat_line(line).expect("a content line") {
        ChatLine::Content { content, .. } => {
            enc.encode("token", content.get(), seq, time::OffsetDateTime::now_utc())
        }
        other => panic!("not a content line: {other:?}"),
    }
}

/// Allocations and bytes per call of `f`, over `n` calls after a warm-up.
fn per_call(n: u64, mut f: impl FnMut(u64)) -> (f64, f64) {
    for i in 0..1000 {
        f(i);
    }
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for i in 0..n {
        f(i);
    }
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    ((a1 - a0) as f64 / n as f64, (b1 - b0) as f64 / n as f64)
}

/// Print the allocation report once, before the timed runs.
fn report_allocations() {
    const N: u64 = 100_000;
    let mut rows: Vec<(&str, (f64, f64))> = Vec::new();
    let mut enc = TokenEncoder::new(Some("conv-42"));
    rows.push((
        "token: line -> frame, frame dropped at once",
        per_call(N, |i| drop(black_box(token(&mut enc, LINE.as_bytes(), i)))),
    ));
    let mut enc = TokenEncoder::new(Some("conv-42"));
    let mut in_flight: VecDeque<Bytes> = VecDeque::with_capacity(64);
    rows.push((
        "token: line -> frame, 64 frames held (writer behind)",
        per_call(N, |i| {
            if in_flight.len() == 64 {
                in_flight.pop_front();
            }
            in_flight.push_back(token(&mut enc, LINE.as_bytes(), i));
        }),
    ));
    let mut enc = TokenEncoder::new(Some("conv-42"));
    rows.push((
        "token: escaped line -> frame",
        per_call(N, |i| {
            drop(black_box(token(&mut enc, ESCAPED.as_bytes(), i)))
        }),
    ));
    rows.push((
        "parse_chat_line only",
        per_call(N, |_| {
            black_box(parse_chat_line(black_box(LINE.as_bytes())).unwrap());
        }),
    ));
    for (name, msg) in MESSAGES {
        rows.push((
            name,
            per_call(N / 10, |_| {
                black_box(parse_client_message(msg.as_bytes(), 32768).unwrap());
            }),
        ));
    }
    println!("\nheap allocations per call (counting global allocator, {N} calls):");
    for (name, (allocs, bytes)) in rows {
        println!("  {name:<55} {allocs:>7.3} allocs  {bytes:>9.1} bytes");
    }
    println!();
}

const MESSAGES: [(&str, &str); 5] = [
    (
        "client_message: chat",
        r#"{"type":"chat","content":"Why is the sky blue?"}"#,
    ),
    (
        "client_message: chat with conversation, model, options",
        r#"{"type":"chat","content":"And at sunset?","conversation_id":"conv-42","model":"llama3.2","system":"Be brief.","options":{"temperature":0.2,"top_p":0.9,"top_k":40,"max_tokens":256}}"#,
    ),
    ("client_message: ping", r#"{"type":"ping"}"#),
    ("client_message: pong", r#"{"type":"pong"}"#),
    (
        "client_message: cancel",
        r#"{"type":"cancel","conversation_id":"conv-42"}"#,
    ),
];

fn token_bench(c: &mut Criterion) {
    report_allocations();
    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    let mut enc = TokenEncoder::new(Some("conv-42"));
    let mut seq = 0u64;
    g.bench_function("line_to_frame", |b| {
        b.iter(|| {
            seq += 1;
            token(&mut enc, black_box(LINE.as_bytes()), seq)
        })
    });
    g.bench_function("escaped_line_to_frame", |b| {
        b.iter(|| {
            seq += 1;
            token(&mut enc, black_box(ESCAPED.as_bytes()), seq)
        })
    });
    g.bench_function("parse_only", |b| {
        b.iter(|| match parse_chat_line(black_box(LINE.as_bytes())) {
            Ok(ChatLine::Content { content, .. }) => content.get().len(),
            _ => 0,
        })
    });
    g.bench_function("encode_only", |b| {
        let now = time::OffsetDateTime::now_utc();
        b.iter(|| {
            seq += 1;
            enc.encode("token", black_box("\" the\""), seq, now)
        })
    });
    g.finish();
}

fn client_message_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("client_message");
    let large = format!(
        r#"{{"type":"chat","content":"{}","conversation_id":"conv-42"}}"#,
        "Summarise this paragraph, please. ".repeat(120)
    );
    let mut cases: Vec<(&str, &str)> = MESSAGES
        .iter()
        .map(|(n, m)| (n.trim_start_matches("client_message: "), *m))
        .collect();
    cases.push(("chat 4 KiB", large.as_str()));
    for (name, msg) in cases {
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(name.replace(' ', "_").replace(',', ""), |b| {
            b.iter(|| parse_client_message(black_box(msg.as_bytes()), 32768).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, token_bench, client_message_bench);
criterion_main!(benches);
