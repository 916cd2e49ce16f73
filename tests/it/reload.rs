//! Running reconfigured, in-process: certificate files replaced on disk are
//! picked up without a signal while a session streams, and the metrics after
//! a scripted session count what happened. (SIGHUP reload, a bad reload and
//! the systemd glue need the process: `tests/process/service.rs`.)

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::support::chat::*;
use crate::support::fake_ollama::{Behavior, FakeOllama};
use crate::support::*;

/// Make a fresh self-signed pair for `localhost` in a scratch folder.
fn new_pair(scratch: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (crt, key) = (scratch.join("n.crt"), scratch.join("n.key"));
    std::fs::write(&crt, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (crt, key)
}

/// Replace the gateway's cert and key files atomically (rename), as an ACME
/// client does.
fn install_pair(gw: &Server, crt: &Path, key: &Path) {
    let certs = gw.dir.path().join("certs");
    std::fs::copy(crt, certs.join("tars.crt.new")).unwrap();
    std::fs::copy(key, certs.join("tars.key.new")).unwrap();
    std::fs::rename(certs.join("tars.key.new"), certs.join("tars.key")).unwrap();
    std::fs::rename(certs.join("tars.crt.new"), certs.join("tars.crt")).unwrap();
}

/// Whether a TLS handshake succeeds when trusting only `cert`.
async fn handshake_trusting(gw: &Server, cert: &Path) -> bool {
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls_config(cert));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_replaced_on_disk_are_picked_up_without_a_signal() {
    let fake = FakeOllama::start().await;
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(20),
    });
    let gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .set("tls.watch_interval_secs", 1)
        .serve();
    let scratch = tempfile::tempdir().unwrap();
    let old_cert = scratch.path().join("old.crt");
    std::fs::copy(gw.cert.as_ref().unwrap(), &old_cert).unwrap();
    let mut ws = session(&gw, "c").await;
    send_chat(&mut ws, "keep going", None).await;
    assert_eq!(recv(&mut ws).await["type"], "token");

    let (crt, key) = new_pair(scratch.path());
    install_pair(&gw, &crt, &key);
    gw.wait_log("certificate files changed", Duration::from_secs(10))
        .await;
    assert!(
        handshake_trusting(&gw, &crt).await,
        "new handshakes see the new certificate"
    );
    assert!(
        !handshake_trusting(&gw, &old_cert).await,
        "the old certificate is no longer served"
    );
    // The session opened before the reload still streams.
    read_tokens(&mut ws, 5).await;
}

/// The value of one sample line of the Prometheus text, e.g.
/// `tars_tokens_streamed_total`.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no sample {name_and_labels}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_scripted_session_show_the_right_counts() {
    let fake = FakeOllama::start().await;
    let gw = gateway()
        .ollama(&fake.url())
        .set("auth.open_enrollment", true)
        .serve();
    let token = token_for(&gw, "m", None).await;
    let bad = post_json(&gw, "/auth/token", &json!({"client_id": "bad id!"}), None).await;
    assert_eq!(bad.status, 400);
    let (mut ws, _) = open_chat(&gw, &token).await;
    fake.set(Behavior::stream(["a", "b", "c"]));
    assert_eq!(chat(&mut ws, "one", None).await.end["type"], "complete");
    fake.set(Behavior::Endless {
        delay: Duration::from_millis(5),
    });
    send_chat(&mut ws, "two", None).await;
    assert_eq!(recv(&mut ws).await["type"], "token");
    send(&mut ws, &json!({"type": "cancel"})).await;
    loop {
        let v = recv(&mut ws).await;
        if v["type"] == "complete" {
            assert_eq!(v["done_reason"], "cancelled");
            break;
        }
    }
    fake.set(Behavior::Status(
        404,
        "model 'x' not found, try pulling it first".into(),
    ));
    assert_eq!(
        chat(&mut ws, "three", None).await.end["code"],
        "upstream_error"
    );
    send(&mut ws, &json!({"type": "nonsense"})).await;
    assert_eq!(recv(&mut ws).await["code"], "invalid_message");

    let t = get(&gw, "/metrics").await.text();
    assert_eq!(
        sample(
            &t,
            "tars_auth_requests_total{endpoint=\"token\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &t,
            "tars_auth_requests_total{endpoint=\"token\",outcome=\"bad_request\"}"
        ),
        1.0
    );
    assert_eq!(sample(&t, "tars_sessions_active"), 1.0);
    assert_eq!(sample(&t, "tars_sessions_total"), 1.0);
    assert_eq!(sample(&t, "tars_generations_total{kind=\"complete\"}"), 1.0);
    assert_eq!(
        sample(&t, "tars_generations_total{kind=\"cancelled\"}"),
        1.0
    );
    assert_eq!(
        sample(&t, "tars_generations_total{kind=\"upstream_error\"}"),
        1.0
    );
    assert_eq!(
        sample(&t, "tars_ws_messages_total{direction=\"in\",kind=\"chat\"}"),
        3.0
    );
    assert_eq!(
        sample(
            &t,
            "tars_ws_messages_total{direction=\"in\",kind=\"cancel\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &t,
            "tars_ws_messages_total{direction=\"in\",kind=\"invalid\"}"
        ),
        1.0
    );
    assert_eq!(sample(&t, "tars_upstream_requests_total"), 3.0);
    assert_eq!(
        sample(&t, "tars_upstream_failures_total{kind=\"status_4xx\"}"),
        1.0
    );
    assert_eq!(sample(&t, "tars_time_to_first_token_seconds_count"), 2.0);
    assert_eq!(sample(&t, "tars_generation_duration_seconds_count"), 3.0);
    let tokens = sample(&t, "tars_tokens_streamed_total");
    assert!(tokens >= 4.0, "{tokens}");
    assert_eq!(sample(&t, "tars_token_added_delay_seconds_count"), tokens);
    assert!(sample(&t, "tars_process_resident_memory_bytes") > 1e6);
    assert!(sample(&t, "tars_process_open_fds") > 3.0);
    assert_eq!(sample(&t, "tars_generations_active"), 0.0);
}
