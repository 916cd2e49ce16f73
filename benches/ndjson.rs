//! Micro benches of the hot path from Ollama's body to a token: the NDJSON
//! splitter over realistic chunkings, and `parse_chat_line` on typical lines.
//!
//! `cargo bench --bench ndjson -- --measurement-time 3 --warm-up-time 1`

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tars::ollama::{parse_chat_line, ChatLine, NdjsonSplitter};

const CONTENT: &str = r#"{"model":"llama3.2","created_at":"2024-11-05T08:52:19.385406455Z","message":{"role":"assistant","content":" the"},"done":false}"#;
const ESCAPED: &str = r#"{"model":"llama3.2","created_at":"2024-11-05T08:52:19.385406455Z","message":{"role":"assistant","content":"\"\u003cb\u003e\"\n\tüñ😀"},"done":false}"#;
const THINKING: &str = r#"{"model":"qwen3","created_at":"2025-05-05T08:52:19.385406455Z","message":{"role":"assistant","content":"","thinking":" Let me think"},"done":false}"#;
const GENERATE: &str = r#"{"model":"gemma3","created_at":"2025-10-26T17:15:24.097767Z","response":"That","done":false}"#;
const FINAL: &str = r#"{"model":"llama3.2","created_at":"2024-11-05T19:22:45.499127Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#;

/// A whole answer: 500 content lines and the final line.
fn body() -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..500 {
        b.extend_from_slice(if i % 10 == 0 { ESCAPED } else { CONTENT }.as_bytes());
        b.push(b'\n');
    }
    b.extend_from_slice(FINAL.as_bytes());
    b.push(b'\n');
    b
}

/// Lines of `body` counted through a fresh splitter fed `chunks`.
fn split(chunks: &[&[u8]]) -> usize {
    let mut s = NdjsonSplitter::new(1 << 20);
    let mut n = 0;
    for c in chunks {
        s.push(c);
        while let Some(l) = s.next_line().unwrap() {
            n += black_box(l).len();
        }
    }
    n
}

fn splitter(c: &mut Criterion) {
    let body = body();
    let per_line: Vec<&[u8]> = body.split_inclusive(|&b| b == b'\n').collect();
    let lines_per_chunk: Vec<&[u8]> = {
        // 16 lines per chunk, cut on line boundaries.
        let mut v = Vec::new();
        let mut start = 0;
        for (i, l) in per_line.iter().enumerate() {
            if i % 16 == 15 || i == per_line.len() - 1 {
                let end = l.as_ptr() as usize - body.as_ptr() as usize + l.len();
                v.push(&body[start..end]);
                start = end;
            }
        }
        v
    };
    let mut g = c.benchmark_group("splitter");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("one_line_per_chunk", |b| b.iter(|| split(&per_line)));
    g.bench_function("16_lines_per_chunk", |b| b.iter(|| split(&lines_per_chunk)));
    for n in [1460, 97, 7] {
        let chunks: Vec<&[u8]> = body.chunks(n).collect();
        g.bench_function(format!("split_across_{n}_byte_chunks"), |b| {
            b.iter(|| split(&chunks))
        });
    }
    g.finish();
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_chat_line");
    for (name, line) in [
        ("content", CONTENT),
        ("content_escaped", ESCAPED),
        ("thinking", THINKING),
        ("generate", GENERATE),
        ("final", FINAL),
    ] {
        g.throughput(Throughput::Bytes(line.len() as u64));
        g.bench_function(name, |b| {
            b.iter(
                || match parse_chat_line(black_box(line.as_bytes())).unwrap() {
                    ChatLine::Content { content, .. } => content.get().len(),
                    ChatLine::Done { stats, .. } => stats.eval_count.unwrap_or(0) as usize,
                    ChatLine::Error(m) => m.len(),
                },
            )
        });
    }
    g.finish();
}

fn split_and_parse(c: &mut Criterion) {
    let body = body();
    let chunks: Vec<&[u8]> = body.split_inclusive(|&b| b == b'\n').collect();
    let mut g = c.benchmark_group("split_and_parse");
    g.throughput(Throughput::Elements(chunks.len() as u64));
    g.bench_function("answer_of_501_lines", |b| {
        b.iter_batched_ref(
            || NdjsonSplitter::new(1 << 20),
            |s| {
                let mut n = 0;
                for c in &chunks {
                    s.push(c);
                    while let Some(l) = s.next_line().unwrap() {
                        if let ChatLine::Content { content, .. } = parse_chat_line(l).unwrap() {
                            n += content.get().len();
                        }
                    }
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, splitter, parse, split_and_parse);
criterion_main!(benches);
