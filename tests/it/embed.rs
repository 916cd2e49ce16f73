//! The library embeds in another program: `tars::serve` called directly on
//! the test's own runtime, twice in one process — two servers side by side,
//! each chatting through its own fake Ollama, then one after the other on
//! the same port — and every one shuts down cleanly (`serve` returns `Ok`)
//! when its shutdown future resolves. Nothing is process-global: each
//! server's metrics count only its own traffic.

use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::chat::*;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::*;

/// One embedded server: where it answers, how to stop it, what it returned.
struct Embedded {
    endpoint: Endpoint,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tars::Error>>,
    _dir: tempfile::TempDir,
}

/// Build a config in a temp folder, bind `listen`, and spawn `tars::serve`
/// on the current runtime with a oneshot as its shutdown future.
async fn embed(fake: &FakeOllama, listen: &str) -> Embedded {
    let b = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("server.listen", listen);
    let (config, _) = b.build_config();
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tars::serve(config, listener, async move {
        let _ = stopped.await;
    }));
    Embedded {
        endpoint: Endpoint {
            addr,
            tls: true,
            cert: Some(b.dir().join("certs/tars.crt")),
        },
        stop,
        task,
        _dir: b.dir,
    }
}

impl Embedded {
    /// Resolve the shutdown future and wait for `serve` to return.
    async fn shutdown(self) -> Result<(), tars::Error> {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("serve returns within 15 s of its shutdown")
            .expect("serve does not panic")
    }
}

/// A chat through `ep` streams `fake`'s answer; returns the text.
async fn chat_once(ep: &Endpoint, client: &str) -> String {
    let token = token_for(ep, client, None).await;
    let (mut ws, ack) = open_chat(ep, &token).await;
    assert!(ack["session_id"].is_string(), "{ack}");
    let g = chat(&mut ws, "hello", None).await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    g.text()
}

/// `total_messages` in the server's JSON metrics.
async fn messages(ep: &Endpoint) -> serde_json::Value {
    request(
        ep,
        "GET",
        "/metrics",
        &[("accept", "application/json")],
        None,
    )
    .await
    .json()["total_messages"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_side_by_side_then_one_after_the_other() {
    let (fa, fb) = (FakeOllama::start().await, FakeOllama::start().await);
    fa.set(Behavior::stream(["from", " A"]));
    fb.set(Behavior::stream(["from", " B"]));

    // Side by side: each answers with its own upstream, counts its own.
    let a = embed(&fa, "127.0.0.1:0").await;
    let b = embed(&fb, "127.0.0.1:0").await;
    assert_ne!(a.endpoint.addr, b.endpoint.addr);
    assert_eq!(chat_once(&a.endpoint, "alice").await, "from A");
    assert_eq!(chat_once(&b.endpoint, "bob").await, "from B");
    assert_eq!(chat_once(&b.endpoint, "bob").await, "from B");
    assert_eq!(messages(&a.endpoint).await, json!(1));
    assert_eq!(messages(&b.endpoint).await, json!(2));
    assert_eq!((fa.chat_count(), fb.chat_count()), (1, 2));

    // A stops; B still serves; then B stops.
    let port = a.endpoint.addr.port();
    a.shutdown().await.expect("first server shuts down cleanly");
    assert_eq!(chat_once(&b.endpoint, "bob").await, "from B");
    b.shutdown()
        .await
        .expect("second server shuts down cleanly");

    // One after the other: a third server on the port the first one left.
    let c = embed(&fa, &format!("127.0.0.1:{port}")).await;
    assert_eq!(chat_once(&c.endpoint, "carol").await, "from A");
    assert_eq!(messages(&c.endpoint).await, json!(1), "a fresh registry");
    c.shutdown().await.expect("third server shuts down cleanly");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nothing listens after serve returned"
    );
}

/// The drain of an embedded server: a session streaming when the shutdown
/// future resolves gets its answer's end and a close, and `serve` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_session_streaming_returns_ok() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::stream(["a", "b", "c", "d"]).delay(Duration::from_millis(100)));
    let s = embed(&fake, "127.0.0.1:0").await;
    let token = token_for(&s.endpoint, "c", None).await;
    let (mut ws, _) = open_chat(&s.endpoint, &token).await;
    send_chat(&mut ws, "go", None).await;
    assert_eq!(recv(&mut ws).await["type"], "token");
    let stopping = tokio::spawn(s.shutdown());
    // A notice, the rest of the running answer, then 1001.
    let (mut notice, mut tokens) = (false, 1);
    let end = loop {
        let v = recv(&mut ws).await;
        match v["type"].as_str().unwrap() {
            "system" => notice = true,
            "token" => tokens += 1,
            _ => break v,
        }
    };
    assert!(notice, "a shutdown notice was sent");
    assert_eq!(end["type"], "complete", "{end}");
    assert_eq!(tokens, 4);
    assert_eq!(expect_close(&mut ws).await, Some(1001));
    stopping
        .await
        .unwrap()
        .expect("serve returns Ok after the drain");
}
