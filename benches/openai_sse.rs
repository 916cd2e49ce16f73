//! Micro benches of the OpenAI dialect's hot path: the body of a streaming
//! `/v1/chat/completions` answer → `SseParser` → one `Delta` per token, next
//! to the Ollama path's NDJSON splitter + `parse_chat_line` on the same
//! answer (500 tokens, every tenth with escapes), so the per-delta cost of
//! the two dialects can be compared in one run (issue 16: within 10%).
//!
//! Before criterion runs, each case is run outside criterion and the heap
//! allocations per delta are printed (a report, not an assertion).
//!
//! `cargo bench --bench openai_sse -- --measurement-time 3 --warm-up-time 1`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tars::ollama::{parse_chat_line, ChatLine, NdjsonSplitter};

use tars::upstream::openai_sse::{SseEvent, SseParser};

/// The system allocator, counting allocations.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TOKENS: usize = 500;

/// llama-cpp-python's layout (as in tests/data/openai_sse_smollm2.txt):
/// CRLF, Python's separators, non-ASCII as `\u` escapes.
const PY_DELTA: &str = "data: {\"id\": \"chatcmpl-3c6f0c0e-5b5a-4a57-9d0b-2b1e0f3d8a11\", \"object\": \"chat.completion.chunk\", \"created\": 1764640000, \"model\": \"smollm2\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \" the\"}, \"logprobs\": null, \"finish_reason\": null}]}\r\n\r\n";
const PY_ESCAPED: &str = "data: {\"id\": \"chatcmpl-3c6f0c0e-5b5a-4a57-9d0b-2b1e0f3d8a11\", \"object\": \"chat.completion.chunk\", \"created\": 1764640000, \"model\": \"smollm2\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"\\\"<b>\\\"\\n\\t\\u00fc\\u00f1\\ud83d\\ude00\"}, \"logprobs\": null, \"finish_reason\": null}]}\r\n\r\n";
const PY_END: &str = "data: {\"id\": \"chatcmpl-3c6f0c0e-5b5a-4a57-9d0b-2b1e0f3d8a11\", \"object\": \"chat.completion.chunk\", \"created\": 1764640000, \"model\": \"smollm2\", \"choices\": [{\"index\": 0, \"delta\": {}, \"logprobs\": null, \"finish_reason\": \"stop\"}]}\r\n\r\ndata: {\"id\": \"chatcmpl-3c6f0c0e-5b5a-4a57-9d0b-2b1e0f3d8a11\", \"object\": \"chat.completion.chunk\", \"created\": 1764640000, \"model\": \"smollm2\", \"choices\": [], \"usage\": {\"prompt_tokens\": 26, \"completion_tokens\": 500, \"total_tokens\": 526}}\r\n\r\ndata: [DONE]\r\n\r\n";

/// OpenAI's layout: LF, compact JSON, raw UTF-8, `usage: null` on every chunk.
const OA_DELTA: &str = "data: {\"id\":\"chatcmpl-AbCdEf123\",\"object\":\"chat.completion.chunk\",\"created\":1764640000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" the\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";
const OA_ESCAPED: &str = "data: {\"id\":\"chatcmpl-AbCdEf123\",\"object\":\"chat.completion.chunk\",\"created\":1764640000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\"<b>\\\"\\n\\tüñ😀\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";
const OA_END: &str = "data: {\"id\":\"chatcmpl-AbCdEf123\",\"object\":\"chat.completion.chunk\",\"created\":1764640000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-AbCdEf123\",\"object\":\"chat.completion.chunk\",\"created\":1764640000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[],\"usage\":{\"prompt_tokens\":26,\"completion_tokens\":500,\"total_tokens\":526}}\n\ndata: [DONE]\n\n";

/// The same answer from Ollama (benches/ndjson.rs's lines).
const OL_DELTA: &str = "{\"model\":\"llama3.2\",\"created_at\":\"2024-11-05T08:52:19.385406455Z\",\"message\":{\"role\":\"assistant\",\"content\":\" the\"},\"done\":false}\n";
const OL_ESCAPED: &str = "{\"model\":\"llama3.2\",\"created_at\":\"2024-11-05T08:52:19.385406455Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\\\"\\u003cb\\u003e\\\"\\n\\tüñ😀\"},\"done\":false}\n";
const OL_END: &str = "{\"model\":\"llama3.2\",\"created_at\":\"2024-11-05T19:22:45.499127Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":4883583458,\"load_duration\":1334875,\"prompt_eval_count\":26,\"prompt_eval_duration\":342546000,\"eval_count\":500,\"eval_duration\":4535599000}\n";

/// One chunk per event (per line for Ollama), as the servers send them.
fn answer(delta: &str, escaped: &str, end: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..TOKENS)
        .map(|i| {
            if i % 10 == 0 { escaped } else { delta }
                .as_bytes()
                .to_vec()
        })
        .collect();
    v.push(end.as_bytes().to_vec());
    v
}

/// Bytes of all deltas' literals (what `token` frames copy), through a new
/// parser, as each answer gets one.
fn run_sse(chunks: &[&[u8]]) -> usize {
    let mut p = SseParser::new(1 << 20);
    let mut n = 0;
    for c in chunks {
        p.push(c);
        while let Some(e) = p.next_event().unwrap() {
            if let SseEvent::Delta { content } = e {
                n += black_box(content).len();
            }
        }
    }
    n
}

/// [`run_sse`] plus what `upstream::openai::OpenAiStream::next` adds per
/// delta to hand it out as the Ollama path's `ChatLine` (the literal taken
/// as a borrowed `RawValue`, which checks it once more).
fn run_sse_chatline(chunks: &[&[u8]]) -> usize {
    let mut p = SseParser::new(1 << 20);
    let mut n = 0;
    for c in chunks {
        p.push(c);
        while let Some(e) = p.next_event().unwrap() {
            if let SseEvent::Delta { content } = e {
                let raw: &serde_json::value::RawValue = serde_json::from_str(content).unwrap();
                let line = ChatLine::Content {
                    content: raw,
                    thinking: None,
                };
                if let ChatLine::Content { content, .. } = black_box(line) {
                    n += content.get().len();
                }
            }
        }
    }
    n
}

fn run_ndjson(chunks: &[&[u8]]) -> usize {
    let mut s = NdjsonSplitter::new(1 << 20);
    let mut n = 0;
    for c in chunks {
        s.push(c);
        while let Some(l) = s.next_line().unwrap() {
            if let ChatLine::Content { content, .. } = parse_chat_line(l).unwrap() {
                n += black_box(content.get()).len();
            }
        }
    }
    n
}

/// Allocations per delta of whole answers (the parser's own buffers
/// included).
fn allocs_per_delta(f: &mut dyn FnMut() -> usize) -> f64 {
    f();
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..100 {
        f();
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / (100 * TOKENS) as f64
}

fn per_delta(c: &mut Criterion) {
    let py = answer(PY_DELTA, PY_ESCAPED, PY_END);
    let oa = answer(OA_DELTA, OA_ESCAPED, OA_END);
    let ol = answer(OL_DELTA, OL_ESCAPED, OL_END);
    let py: Vec<&[u8]> = py.iter().map(Vec::as_slice).collect();
    let oa: Vec<&[u8]> = oa.iter().map(Vec::as_slice).collect();
    let ol: Vec<&[u8]> = ol.iter().map(Vec::as_slice).collect();
    let py_joined = py.concat();
    let py_97: Vec<&[u8]> = py_joined.chunks(97).collect();

    // The same text through each path: 450 ` the` and 50 escaped literals.
    for n in [
        run_sse(&py),
        run_sse(&oa),
        run_sse(&py_97),
        run_sse_chatline(&oa),
        run_ndjson(&ol),
    ] {
        assert!(n >= 450 * 6, "{n}");
    }
    println!(
        "allocations per delta: sse llama_cpp_python {:.3}, sse openai {:.3}, ollama ndjson {:.3}",
        allocs_per_delta(&mut || run_sse(&py)),
        allocs_per_delta(&mut || run_sse(&oa)),
        allocs_per_delta(&mut || run_ndjson(&ol)),
    );

    let mut g = c.benchmark_group("answer_of_500_deltas");
    g.throughput(Throughput::Elements(TOKENS as u64));
    g.bench_function("sse_llama_cpp_python", |b| b.iter(|| run_sse(&py)));
    g.bench_function("sse_openai", |b| b.iter(|| run_sse(&oa)));
    g.bench_function("sse_openai_as_chatline", |b| {
        b.iter(|| run_sse_chatline(&oa))
    });
    g.bench_function("sse_llama_cpp_python_97_byte_chunks", |b| {
        b.iter(|| run_sse(&py_97))
    });
    g.bench_function("ollama_ndjson", |b| b.iter(|| run_ndjson(&ol)));
    g.finish();
}

criterion_group!(benches, per_delta);
criterion_main!(benches);
