//! Resume (issue 17) end to end: the gateway in-process over real TLS and
//! WebSocket, the fake Ollama paced so that a dropped socket lands
//! mid-answer; a new session of the same client sends `resume` and must get
//! the rest of the answer byte-exact, once.

use std::time::{Duration, Instant};

use crate::support::chat::*;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::*;
use serde_json::{json, Value};

/// Pace of the fake's tokens: 200 tokens take about a second.
const PACE: Duration = Duration::from_millis(5);

fn gw_for(fake: &FakeOllama) -> GatewayBuilder {
    gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("ollama.retries", 0)
        .set("websocket.max_connections", 200)
}

/// `n` distinct tokens, some with characters that need JSON escapes.
fn tokens(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| match i % 7 {
            0 => format!(" \"q{i}\" \\ 🦀\n"),
            3 => format!(" <b>{i}</b> &"),
            _ => format!(" w{i}"),
        })
        .collect()
}

async fn resume(ws: &mut Ws, conv: &str, last_seq: u64) {
    send(
        ws,
        &json!({"type": "resume", "conversation_id": conv, "last_seq": last_seq}),
    )
    .await;
}

/// Tokens are numbered 1, 2, ... from `first` on, without a gap.
fn assert_contiguous(frames: &[Value], first: u64) {
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["seq"], first + i as u64, "{f}");
    }
}

/// The session is alive (a `ping` gets its `pong`) and sends nothing else.
async fn assert_alive(ws: &mut Ws) {
    send(ws, &json!({"type": "ping"})).await;
    let v = recv(ws).await;
    assert_eq!(v["type"], "pong", "{v}");
}

async fn metrics_text(gw: &Endpoint) -> String {
    get(gw, "/metrics").await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mid_answer_is_contiguous_and_byte_exact() {
    let fake = FakeOllama::start().await;
    let toks = tokens(200);
    fake.set(Behavior::stream(toks.clone()).delay(PACE));
    let gw = gw_for(&fake).serve();
    let token = token_for(&gw, "phone", None).await;
    let (mut ws, ack) = open_chat(&gw, &token).await;
    assert_eq!(ack["resume_window_secs"], 60);
    send_chat(&mut ws, "go", Some("r1")).await;
    let first = read_tokens(&mut ws, 10).await;
    drop(ws); // abrupt: no close frame

    let (mut ws, _) = open_chat(&gw, &token).await;
    // Replay from 5: the frames already seen come back identical (same
    // text, seq and timestamp: the very bytes of the first session).
    resume(&mut ws, "r1", 5).await;
    let g = collect(&mut ws).await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.end["total_tokens"], 200);
    assert_eq!(g.end["conversation_id"], "r1");
    assert_contiguous(&g.tokens, 6);
    assert_eq!(g.tokens.len(), 195);
    assert_eq!(&g.tokens[..5], &first[5..]);
    let mut whole = text_of(&first);
    whole.push_str(&text_of(&g.tokens[5..]));
    assert_eq!(whole, toks.concat());
    assert_eq!(fake.chat_count(), 1, "answered once, never asked again");

    // An ordinary session afterwards: the conversation goes on with the
    // whole answer in its history.
    fake.set(Behavior::stream(["next"]));
    let g2 = chat(&mut ws, "and then?", Some("r1")).await;
    assert_eq!(g2.text(), "next");
    let sent = fake.requests();
    let msgs = sent.last().unwrap()["messages"].as_array().unwrap().clone();
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"], toks.concat());
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("tars_resume_total{outcome=\"resumed\"} 1"),
        "{m}"
    );
    assert!(m.contains("tars_resume_buffered_bytes"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_the_answer_finished_during_the_gap() {
    let fake = FakeOllama::start().await;
    let toks = tokens(40);
    fake.set(Behavior::stream(toks.clone()).delay(Duration::from_millis(2)));
    let gw = gw_for(&fake).serve();
    let token = token_for(&gw, "laptop", None).await;
    let (mut ws, _) = open_chat(&gw, &token).await;
    send_chat(&mut ws, "go", Some("done-in-gap")).await;
    let first = read_tokens(&mut ws, 3).await;
    drop(ws);
    wait_until(
        "the answer ran to its end upstream",
        Duration::from_secs(5),
        || async { fake.closed_streams().len() == 1 },
    )
    .await;
    let rec = &fake.closed_streams()[0];
    assert!(!rec.by_client, "the gateway read the answer to its end");
    assert_eq!(rec.lines, 41);

    let (mut ws, _) = open_chat(&gw, &token).await;
    resume(&mut ws, "done-in-gap", 3).await;
    let g = collect(&mut ws).await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.end["done_reason"], "stop");
    assert_eq!(g.end["total_tokens"], 40);
    assert_contiguous(&g.tokens, 4);
    assert_eq!(text_of(&first) + &text_of(&g.tokens), toks.concat());
    // last_seq 0 replays from the start, as often as asked within the window.
    resume(&mut ws, "done-in-gap", 0).await;
    let g = collect(&mut ws).await;
    assert_contiguous(&g.tokens, 1);
    assert_eq!(text_of(&g.tokens), toks.concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_or_an_unknown_conversation_is_unavailable_and_nothing_leaks() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(tokens(200)).delay(PACE));
    let gw = gw_for(&fake).serve();
    let owner = token_for(&gw, "owner", None).await;
    let (mut ws, _) = open_chat(&gw, &owner).await;
    send_chat(&mut ws, "go", Some("secret-conv")).await;
    read_tokens(&mut ws, 5).await;
    drop(ws);

    let thief = token_for(&gw, "thief", None).await;
    let (mut other, _) = open_chat(&gw, &thief).await;
    resume(&mut other, "secret-conv", 0).await;
    let theirs = recv(&mut other).await;
    resume(&mut other, "never-existed", 0).await;
    let unknown = recv(&mut other).await;
    for v in [&theirs, &unknown] {
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["code"], "resume_unavailable", "{v}");
    }
    // The same words for both: whether the conversation exists is not told.
    assert_eq!(theirs["message"], unknown["message"]);
    assert_alive(&mut other).await;

    // The owner still gets the whole answer.
    let (mut ws, _) = open_chat(&gw, &owner).await;
    resume(&mut ws, "secret-conv", 5).await;
    let g = collect(&mut ws).await;
    assert_eq!(g.end["type"], "complete");
    assert_contiguous(&g.tokens, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_resumes_then_the_upstream_is_dropped_after_the_window() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless { delay: PACE });
    let gw = gw_for(&fake)
        .set("websocket.resume_window_secs", 1)
        .set("websocket.resume_buffer_bytes", 4 * 1024 * 1024)
        .serve();
    let token = token_for(&gw, "c", None).await;
    let (mut ws, ack) = open_chat(&gw, &token).await;
    assert_eq!(ack["resume_window_secs"], 1);
    send_chat(&mut ws, "go", Some("w")).await;
    read_tokens(&mut ws, 3).await;
    let dropped = Instant::now();
    drop(ws);
    let after = fake
        .stream_closed_after(dropped, Duration::from_secs(5))
        .await;
    assert!(
        after >= Duration::from_millis(900) && after <= Duration::from_secs(2),
        "upstream dropped {after:?} after the disconnect (window 1 s)"
    );
    let (mut ws, _) = open_chat(&gw, &token).await;
    resume(&mut ws, "w", 3).await;
    let v = recv(&mut ws).await;
    assert_eq!(v["code"], "resume_unavailable", "{v}");
    wait_until("buffers freed", Duration::from_secs(2), || async {
        metrics_text(&gw)
            .await
            .contains("tars_resume_buffered_bytes 0\n")
    })
    .await;
    assert!(metrics_text(&gw)
        .await
        .contains("tars_resume_total{outcome=\"expired\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_that_fills_while_detached_cancels_upstream() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(1),
    });
    let gw = gw_for(&fake)
        .set("websocket.resume_buffer_bytes", 4096)
        .serve();
    let token = token_for(&gw, "c", None).await;
    let (mut ws, _) = open_chat(&gw, &token).await;
    send_chat(&mut ws, "go", Some("big")).await;
    // While attached the buffer slides: far more than 4 KiB goes through.
    let seen = read_tokens(&mut ws, 100).await;
    drop(ws);
    fake.wait_stream_closed(Duration::from_secs(3))
        .await
        .expect("a full buffer with nobody attached cancels upstream");
    let (mut ws, _) = open_chat(&gw, &token).await;
    resume(
        &mut ws,
        "big",
        seen.last().unwrap()["seq"].as_u64().unwrap(),
    )
    .await;
    let v = recv(&mut ws).await;
    assert_eq!(v["code"], "resume_unavailable", "{v}");
    assert_eq!(v["conversation_id"], "big");
    assert_alive(&mut ws).await;
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("tars_resume_total{outcome=\"overflow\"} 1"),
        "{m}"
    );
}

/// An answer longer than the buffer still resumes: only what is made while
/// nobody is attached counts towards the overflow, and the frames dropped to
/// make room are the oldest ones, sent before the drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_longer_than_the_buffer_resumes() {
    let fake = FakeOllama::start().await;
    let toks = tokens(250);
    fake.set(Behavior::stream(toks.clone()).delay(Duration::from_millis(10)));
    let gw = gw_for(&fake)
        .set("websocket.resume_buffer_bytes", 4096)
        .serve();
    let token = token_for(&gw, "c", None).await;
    let (mut ws, _) = open_chat(&gw, &token).await;
    send_chat(&mut ws, "go", Some("long")).await;
    // 150 frames of about 100 bytes: the buffer slid well past 4 KiB.
    let first = read_tokens(&mut ws, 150).await;
    drop(ws);
    let (mut ws, _) = open_chat(&gw, &token).await;
    resume(&mut ws, "long", 150).await;
    let g = collect(&mut ws).await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_contiguous(&g.tokens, 151);
    assert_eq!(text_of(&first) + &text_of(&g.tokens), toks.concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seq_older_than_the_buffer_is_unavailable() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(tokens(300)));
    let gw = gw_for(&fake)
        .set("websocket.resume_buffer_bytes", 4096)
        .serve();
    let mut ws = session(&gw, "c").await;
    let g = chat(&mut ws, "x", Some("slid")).await;
    assert_eq!(g.tokens.len(), 300);
    resume(&mut ws, "slid", 1).await;
    let v = recv(&mut ws).await;
    assert_eq!(v["code"], "resume_unavailable", "{v}");
    // The tail is still there.
    resume(&mut ws, "slid", 299).await;
    let g = collect(&mut ws).await;
    assert_contiguous(&g.tokens, 300);
    assert_eq!(g.end["total_tokens"], 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_zero_drops_upstream_within_100ms_as_before() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless { delay: PACE });
    let gw = gw_for(&fake).set("websocket.resume_window_secs", 0).serve();
    let token = token_for(&gw, "c", None).await;
    let (mut ws, ack) = open_chat(&gw, &token).await;
    assert_eq!(ack["resume_window_secs"], 0);
    send_chat(&mut ws, "go", Some("z")).await;
    read_tokens(&mut ws, 3).await;
    let dropped = Instant::now();
    drop(ws);
    let took = fake
        .stream_closed_after(dropped, Duration::from_secs(5))
        .await;
    assert!(
        took < Duration::from_millis(100),
        "upstream dropped after {took:?}"
    );
    let (mut ws, _) = open_chat(&gw, &token).await;
    resume(&mut ws, "z", 3).await;
    assert_eq!(recv(&mut ws).await["code"], "resume_unavailable");
}

/// Read a resumed generation until its `complete`, or until the session is
/// told `resumed_elsewhere`. Returns the tokens and the last frame.
async fn follow(ws: &mut Ws) -> (Vec<Value>, Value) {
    let mut toks = Vec::new();
    loop {
        let v = recv(ws).await;
        match v["type"].as_str().unwrap() {
            "token" => toks.push(v),
            "complete" => return (toks, v),
            "error" => return (toks, v),
            other => panic!("{other}: {v}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racing_resumes_one_completes_the_other_is_told_resumed_elsewhere() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(tokens(200)).delay(PACE));
    let gw = gw_for(&fake).serve();
    let token = token_for(&gw, "c", None).await;
    let (mut ws, _) = open_chat(&gw, &token).await;
    send_chat(&mut ws, "go", Some("race")).await;
    read_tokens(&mut ws, 10).await;
    drop(ws);
    let (mut a, _) = open_chat(&gw, &token).await;
    let (mut b, _) = open_chat(&gw, &token).await;
    let (ra, rb) = tokio::join!(
        async {
            resume(&mut a, "race", 10).await;
            follow(&mut a).await
        },
        async {
            resume(&mut b, "race", 10).await;
            follow(&mut b).await
        }
    );
    let ends = [ra.1["type"].clone(), rb.1["type"].clone()];
    let (winner, loser) = if ra.1["type"] == "complete" {
        (ra, rb)
    } else {
        (rb, ra)
    };
    assert_eq!(winner.1["type"], "complete", "{ends:?}");
    assert_eq!(loser.1["code"], "resumed_elsewhere", "{}", loser.1);
    assert_eq!(loser.1["conversation_id"], "race");
    assert_contiguous(&winner.0, 11);
    assert_eq!(winner.1["total_tokens"], 200);
    // The loser's session stays open, and no complete arrives there later.
    assert_alive(&mut a).await;
    assert_alive(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_takes_over_from_a_session_still_open() {
    let fake = FakeOllama::start().await;
    let toks = tokens(200);
    fake.set(Behavior::stream(toks.clone()).delay(PACE));
    let gw = gw_for(&fake).serve();
    let token = token_for(&gw, "c", None).await;
    let (mut old, _) = open_chat(&gw, &token).await;
    send_chat(&mut old, "go", Some("moved")).await;
    let first = read_tokens(&mut old, 10).await;
    // A network change: the old socket looks alive, the client reconnects.
    let (mut new, _) = open_chat(&gw, &token).await;
    resume(&mut new, "moved", 10).await;
    let (old_more, old_end) = follow(&mut old).await;
    assert_eq!(old_end["code"], "resumed_elsewhere", "{old_end}");
    assert_eq!(old_end["conversation_id"], "moved");
    let g = collect(&mut new).await;
    assert_eq!(g.end["type"], "complete");
    assert_contiguous(&g.tokens, 11);
    assert_eq!(text_of(&first) + &text_of(&g.tokens), toks.concat());
    assert_contiguous(&old_more, 11);
    assert_alive(&mut old).await;
    // `cancel` on the new session now reaches this conversation's
    // generation (it is over: nothing left to stop), and chats go on.
    fake.set(Behavior::stream(["ok"]));
    assert_eq!(chat(&mut new, "more", Some("moved")).await.text(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_another_session_drops_a_detached_generation_within_100ms() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless { delay: PACE });
    let gw = gw_for(&fake).serve();
    let token = token_for(&gw, "c", None).await;
    let (mut ws, _) = open_chat(&gw, &token).await;
    send_chat(&mut ws, "go", Some("stop-me")).await;
    read_tokens(&mut ws, 3).await;
    drop(ws);
    let (mut other, _) = open_chat(&gw, &token).await;
    assert_eq!(fake.streams_open(), 1, "still generating, detached");
    let sent = Instant::now();
    send(
        &mut other,
        &json!({"type": "cancel", "conversation_id": "stop-me"}),
    )
    .await;
    let took = fake.stream_closed_after(sent, Duration::from_secs(5)).await;
    assert!(took < Duration::from_millis(100), "dropped after {took:?}");
    resume(&mut other, "stop-me", 3).await;
    assert_eq!(recv(&mut other).await["code"], "resume_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_generation_is_cancelled_by_its_new_session() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless { delay: PACE });
    let gw = gw_for(&fake).serve();
    let token = token_for(&gw, "c", None).await;
    let (mut ws, _) = open_chat(&gw, &token).await;
    send_chat(&mut ws, "go", Some("k")).await;
    read_tokens(&mut ws, 3).await;
    drop(ws);
    let (mut ws, _) = open_chat(&gw, &token).await;
    resume(&mut ws, "k", 3).await;
    read_tokens(&mut ws, 3).await;
    send(&mut ws, &json!({"type": "cancel"})).await;
    let (_, end) = follow(&mut ws).await;
    assert_eq!(end["type"], "complete", "{end}");
    assert_eq!(end["done_reason"], "cancelled");
    assert!(fake
        .wait_stream_closed(Duration::from_secs(2))
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_while_a_generation_waits_for_its_resume() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless { delay: PACE });
    let mut gw = gw_for(&fake).serve();
    let mut ws = session(&gw, "c").await;
    send_chat(&mut ws, "go", Some("d")).await;
    read_tokens(&mut ws, 3).await;
    drop(ws);
    let started = Instant::now();
    gw.begin_shutdown();
    fake.wait_stream_closed(Duration::from_secs(5))
        .await
        .expect("the detached generation is dropped by the drain");
    let stopped = gw.wait_stopped(Duration::from_secs(5)).await;
    assert!(matches!(stopped, Some(Ok(()))), "{stopped:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the drain did not wait for the window: {:?}",
        started.elapsed()
    );
}

/// Property: wherever the connection drops (one or two drops) and whatever
/// `last_seq ≤` the last token seen the client sends, the text it assembles
/// (skipping seqs it already has) equals the text of an undisturbed run.
#[test]
fn property_assembled_text_equals_an_undisturbed_run() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    const N: usize = 60;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let toks = tokens(N);
    let (fake, gw, token) = rt.block_on(async {
        let fake = FakeOllama::start().await;
        fake.set(Behavior::stream(toks.clone()).delay(Duration::from_millis(2)));
        let gw = gw_for(&fake).serve();
        let token = token_for(&gw, "prop", None).await;
        (fake, gw, token)
    });
    let whole = toks.concat();
    let mut runner = TestRunner::new(Config {
        cases: 12,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    let strategy = proptest::collection::vec((1usize..N, 0usize..8), 1..3);
    runner
        .run(&strategy, |drops| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let conv = format!("p{n}");
            let got = rt.block_on(async {
                let (mut ws, _) = open_chat(&gw, &token).await;
                send_chat(&mut ws, "go", Some(&conv)).await;
                let mut text = String::new();
                let mut last = 0u64;
                let mut drops = drops.clone();
                drops.sort();
                for (at, back) in drops {
                    // Read until token `at` (or the end), then drop.
                    loop {
                        if last >= at as u64 {
                            break;
                        }
                        let v = recv(&mut ws).await;
                        match v["type"].as_str().unwrap() {
                            "token" => {
                                let seq = v["seq"].as_u64().unwrap();
                                if seq > last {
                                    assert_eq!(seq, last + 1, "a gap after {last}");
                                    text.push_str(v["token"].as_str().unwrap());
                                    last = seq;
                                }
                            }
                            "complete" => return (text, Some(v)),
                            other => panic!("{other}: {v}"),
                        }
                    }
                    drop(ws);
                    let (w, _) = open_chat(&gw, &token).await;
                    ws = w;
                    resume(&mut ws, &conv, last.saturating_sub(back as u64)).await;
                }
                loop {
                    let v = recv(&mut ws).await;
                    match v["type"].as_str().unwrap() {
                        "token" => {
                            let seq = v["seq"].as_u64().unwrap();
                            if seq > last {
                                assert_eq!(seq, last + 1, "a gap after {last}");
                                text.push_str(v["token"].as_str().unwrap());
                                last = seq;
                            }
                        }
                        "complete" => return (text, Some(v)),
                        _ => return (text, Some(v)),
                    }
                }
            });
            let (text, end) = got;
            let end = end.unwrap();
            prop_assert_eq!(&end["type"], "complete", "{}", end);
            prop_assert_eq!(&end["total_tokens"], N);
            prop_assert_eq!(text, whole.clone());
            Ok(())
        })
        .unwrap();
    drop(gw);
    drop(fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tars_chat_resumes_after_its_connection_is_cut() {
    use crate::support::cut_proxy::CutProxy;
    let fake = FakeOllama::start().await;
    let toks = tokens(200);
    fake.set(Behavior::stream(toks.clone()).delay(PACE));
    let gw = gw_for(&fake).serve();
    let proxy = CutProxy::start(gw.addr).await;
    let url = format!("wss://localhost:{}", proxy.addr.port());
    let ca = gw.cert.clone().unwrap();
    let child = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tars"))
            .args(["chat", "--url", &url, "--client-id", "cli-user"])
            .args(["--ca", ca.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"tell me\n").unwrap();
        child.wait_with_output().unwrap()
    });
    // Cut mid-answer: a few dozen lines of 200 are out.
    wait_until(
        "the answer is under way",
        Duration::from_secs(10),
        || async { fake.lines_written() >= 30 },
    )
    .await;
    assert!(proxy.cut() >= 1);
    let out = child.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming after token"), "{stderr}");
    assert!(stderr.contains("200 tokens"), "{stderr}");
    assert_eq!(stdout, format!("{}\n", toks.concat()), "{stderr}");
    assert_eq!(
        fake.chat_count(),
        1,
        "the answer was resumed, not asked again"
    );
}
