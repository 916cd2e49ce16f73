//! `https://` upstreams (ADR 0023), over real TLS: the fake Ollama and the
//! fake OpenAI upstream serve a certificate from a private CA made per test
//! ([`TestCa`]). With that CA as the upstream's `ca_file`, chats stream
//! byte-exact, health probes and discovery work, and the chat stream's own
//! keep-alive connection is reused. Without it (the compiled-in public
//! roots do not know the CA) the handshake fails: a connect failure, so the
//! chat fails over (or is `upstream_unavailable` when nothing else serves
//! the model), the upstream goes down in `/ready`, and the reason says TLS.
//! A reload re-reads `ca_file` and rebuilds the upstream when it changed.

use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tars::metrics::Metrics;
use tars::ollama::{
    ChatMessage, ChatOptions, ChatRequest, Connector, OllamaClient, RetryPolicy, Role,
};
use tokio_util::sync::CancellationToken;

use crate::pool::{base, chat_model, fields, models, ready_entry, MISTRAL, TRICKY};
use crate::support::chat::session;
use crate::support::fake_ollama::{self, Behavior, FakeOllama};
use crate::support::fake_openai::{self, FakeOpenAi};
use crate::support::upstream_tls::TestCa;
use crate::support::*;

fn ca_file(ca: &TestCa) -> toml::Value {
    ca.ca_file().display().to_string().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_ollama_upstream_with_its_ca_file_streams_byte_exact() {
    let ca = TestCa::new();
    let o = FakeOllama::start_tls(ca.acceptor()).await;
    assert!(o.url().starts_with("https://127.0.0.1:"), "{}", o.url());
    let tokens = fake_ollama::split_tokens(TRICKY);
    o.set(Behavior::stream(tokens.clone()));
    o.set_tags(&[MISTRAL]);
    let gw = base()
        .upstream(
            "lab",
            &o.url(),
            "ollama",
            fields(&[("ca_file", ca_file(&ca))]),
        )
        .serve();
    // Discovery (/api/tags) and the health probe (/api/version) over TLS.
    wait_until("lab discovered", Duration::from_secs(10), || async {
        ready_entry(&gw, "lab").await["models"] == serde_json::json!([MISTRAL])
    })
    .await;
    let lab = ready_entry(&gw, "lab").await;
    assert_eq!(lab["up"], true, "{lab}");
    assert_eq!(lab["routable"], true, "{lab}");
    assert_eq!(lab["version"], fake_ollama::VERSION, "{lab}");
    let mut ws = session(&gw, "c").await;
    for conv in ["t1", "t2"] {
        let g = chat_model(&mut ws, MISTRAL, "say it", conv).await;
        assert_eq!(g.end["type"], "complete", "{}", g.end);
        assert_eq!(g.end["upstream"], "lab");
        assert_eq!(g.text(), TRICKY);
        let texts: Vec<&str> = g
            .tokens
            .iter()
            .map(|t| t["token"].as_str().unwrap())
            .collect();
        assert_eq!(texts, tokens.iter().map(String::as_str).collect::<Vec<_>>());
    }
    assert_eq!(o.chat_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_openai_upstream_is_discovered_and_streams_byte_exact() {
    let ca = TestCa::new();
    let o = FakeOpenAi::start_tls(ca.acceptor()).await;
    o.set_models(["smollm2"]);
    o.require_api_key("sk-tls-key");
    let tokens = fake_openai::split_tokens(TRICKY);
    o.set(fake_openai::Behavior::stream(tokens.clone()));
    let b = base();
    let key = b.dir().join("hosted.key");
    std::fs::write(&key, "sk-tls-key\n").unwrap();
    let gw = b
        .upstream(
            "hosted",
            &o.url(),
            "openai",
            fields(&[
                ("ca_file", ca_file(&ca)),
                ("api_key_file", key.display().to_string().into()),
            ]),
        )
        .serve();
    // No static models: /v1/models over TLS, with the key.
    wait_until("hosted discovered", Duration::from_secs(10), || async {
        ready_entry(&gw, "hosted").await["models"] == serde_json::json!(["smollm2"])
    })
    .await;
    let mut ws = session(&gw, "c").await;
    let g = chat_model(&mut ws, "smollm2", "say it", "o1").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.end["upstream"], "hosted");
    assert_eq!(g.text(), TRICKY);
    assert_eq!(g.tokens.len(), tokens.len());
    assert!(!gw.logs().contains("sk-tls-key"), "the key was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_over_and_marks_the_upstream_down() {
    let ca = TestCa::new();
    let lab = FakeOllama::start_tls(ca.acceptor()).await;
    let plain = FakeOllama::start().await;
    plain.set(Behavior::stream(["from ", "plain"]));
    // No ca_file: the public roots, which do not know the test CA. The lab
    // upstream is first in order and preferred (the plain one has nothing
    // loaded), so the first chat tries it before any probe marked it down.
    plain.set_ps(&[]);
    let gw = base()
        .set("routing.failure_threshold", 5)
        .set("routing.health_interval_secs", 60)
        .upstream(
            "lab",
            &lab.url(),
            "ollama",
            fields(&[("models", models(&[MISTRAL]))]),
        )
        .upstream(
            "plain",
            &plain.url(),
            "ollama",
            fields(&[("models", models(&[MISTRAL]))]),
        )
        .serve();
    let mut ws = session(&gw, "c").await;
    let g = chat_model(&mut ws, MISTRAL, "hi", "u1").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.end["upstream"], "plain");
    assert_eq!(g.text(), "from plain");
    assert_eq!(lab.chat_count(), 0, "no request got past the handshake");
    let m = get(&gw, "/metrics").await.text();
    assert!(
        m.contains(r#"tars_upstream_requests_total{upstream="lab",outcome="failover"} 1"#),
        "{m}"
    );
    // /ready probes now: lab is down, and says why.
    let entry = ready_entry(&gw, "lab").await;
    assert_eq!(entry["up"], false, "{entry}");
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("TLS handshake with 127.0.0.1 failed")
            && reason.contains("invalid peer certificate"),
        "{entry}"
    );
    assert!(
        gw.logs().lines().any(
            |l| l.contains("failing over") && l.contains("TLS handshake with 127.0.0.1 failed")
        ),
        "the failover's log line does not say TLS: {}",
        gw.logs()
    );
    assert_eq!(get(&gw, "/ready").await.status, 200, "plain is up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_only_upstream_is_upstream_unavailable() {
    let ca = TestCa::new();
    let lab = FakeOpenAi::start_tls(ca.acceptor()).await;
    let gw = base()
        .upstream(
            "lab",
            &lab.url(),
            "openai",
            fields(&[("models", models(&["smollm2"]))]),
        )
        .serve();
    // The health probe (GET /v1/models over TLS) fails the handshake: down.
    wait_until("lab marked down", Duration::from_secs(10), || async {
        ready_entry(&gw, "lab").await["routable"] == false
    })
    .await;
    let r = get(&gw, "/ready").await;
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("invalid peer certificate"),
        "{}",
        r.text()
    );
    let mut ws = session(&gw, "c").await;
    let g = chat_model(&mut ws, "smollm2", "hi", "u2").await;
    assert_eq!(g.end["code"], "upstream_unavailable", "{}", g.end);
    assert_eq!(lab.chat_count(), 0);
}

#[tokio::test]
async fn a_finished_chats_tls_connection_is_reused() {
    let ca = TestCa::new();
    let o = FakeOllama::start_tls(ca.acceptor()).await;
    o.set(Behavior::stream(["a", "b", "c"]));
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca.ca_file())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // `upstream::config`: no warm spares, so the test counts one connection.
    let cfg = crate::upstream::config(&o.url());
    let client = OllamaClient::with_connector(
        &cfg,
        &o.url(),
        Connector::new(cfg.connect_timeout, Some(&roots)),
    );
    let policy = RetryPolicy {
        retries: 0,
        base_delay: Duration::from_millis(20),
        first_token_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_line_bytes: 1 << 20,
    };
    let req = ChatRequest::new(
        "llama3.2",
        vec![ChatMessage::new(Role::User, "hello")],
        ChatOptions::default(),
        None,
    );
    let (cancel, metrics) = (CancellationToken::new(), Metrics::new());
    for round in 1..=3 {
        let mut stream = client
            .chat(&req, &policy, &cancel, &metrics)
            .await
            .expect("the fake answers over TLS");
        let mut lines = 0;
        while stream.next_line().await.expect("a clean stream").is_some() {
            lines += 1;
        }
        assert_eq!(lines, 4, "three tokens and the final line");
        drop(stream);
        assert_eq!(client.idle_chat_connections(), 1, "round {round}");
    }
    assert_eq!(o.chat_count(), 3);
    assert_eq!(
        o.connections_accepted(),
        1,
        "one TLS connection for three chats"
    );
    // The small calls share the connector (and so the trust).
    assert_eq!(
        client.version(Duration::from_secs(3)).await.unwrap(),
        fake_ollama::VERSION
    );
    // Trusting the public roots instead, the handshake is refused, named.
    let public = OllamaClient::with_base(&cfg, &o.url());
    let e = public.version(Duration::from_secs(3)).await.unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("TLS handshake with 127.0.0.1 failed: invalid peer certificate"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_new_ca_file_content_takes_the_new_roots() {
    let (ca, other) = (TestCa::new(), TestCa::new());
    let o = FakeOllama::start_tls(ca.acceptor()).await;
    o.set(Behavior::stream(["over ", "tls"]));
    let b = base();
    // The file first holds another CA: the handshake fails, lab goes down.
    let ca_path = b.dir().join("lab-ca.pem");
    std::fs::copy(other.ca_file(), &ca_path).unwrap();
    let gw = b
        .upstream(
            "lab",
            &o.url(),
            "ollama",
            fields(&[
                ("ca_file", ca_path.display().to_string().into()),
                ("models", models(&[MISTRAL])),
            ]),
        )
        .serve();
    wait_until("lab marked down", Duration::from_secs(10), || async {
        ready_entry(&gw, "lab").await["routable"] == false
    })
    .await;
    // The right CA in the same file, the config text unchanged: a reload
    // reads it and rebuilds the upstream's connector.
    std::fs::copy(ca.ca_file(), &ca_path).unwrap();
    gw.handle.as_ref().unwrap().reload().await.unwrap();
    wait_until("lab up", Duration::from_secs(10), || async {
        ready_entry(&gw, "lab").await["routable"] == true
    })
    .await;
    let mut ws = session(&gw, "c").await;
    let g = chat_model(&mut ws, MISTRAL, "hi", "r1").await;
    assert_eq!(g.end["type"], "complete", "{}", g.end);
    assert_eq!(g.text(), "over tls");
}
