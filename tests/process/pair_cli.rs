//! `tars pair` against a running `tars` (issue 18): the command registers a
//! fresh `device-xxxx`, prints a grouped code, the `/pair#CODE` URL, that URL
//! as a QR code in half blocks and the served certificate's fingerprint;
//! the phone's request redeems the code once for tokens that open a chat
//! session; the device is listed by `tars client list` and `tars client
//! remove` ends its session. Bad options leave config.toml untouched.

use std::time::Duration;

use crate::support::chat::*;
use crate::support::*;
use serde_json::json;

fn tars_on(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--config", gw.config.to_str().unwrap()];
    all.extend_from_slice(args);
    run_tars(&all, &[])
}

/// The value after `label` on the line that has it.
fn after<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.split_once(label).map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
}

/// The server certificate's SHA-256 as the test client sees it.
fn served_fingerprint(gw: &Gateway) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_file_iter(gw.cert.as_ref().unwrap())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    sha256_fingerprint(&der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tars_pair_lets_a_new_device_in_once_and_remove_cuts_it_off() {
    let gw = gateway()
        .client("laptop", "laptop-secret-1", false)
        .set("tls.watch_interval_secs", 1)
        .start();
    let host = format!("localhost:{}", gw.addr.port());
    let (code, out, err) = tars_on(&gw, &["pair", "--host", &host, "--ttl-mins", "5"]);
    assert_eq!(code, 0, "{err}");
    let device = after(&out, "new client")
        .split('"')
        .nth(1)
        .unwrap()
        .to_string();
    assert!(
        device.starts_with("device-") && device.len() == 11,
        "{device}"
    );
    let pair_code = out
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 11 && l.as_bytes()[5] == b'-')
        .unwrap_or_else(|| panic!("no grouped code in {out}"))
        .to_string();
    assert!(
        tars::auth::pairing::normalize(&pair_code).is_some(),
        "{pair_code}"
    );
    let url = after(&out, "or open");
    assert_eq!(url, format!("https://{host}/pair#{pair_code}"));
    // The URL leads to the pairing page (the fragment stays in the browser).
    let page = get(
        &gw,
        url.split('#')
            .next()
            .unwrap()
            .trim_start_matches(&format!("https://{host}")),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/static/pair.js"));
    // The QR block: half-block lines of one width, more than 20 of them.
    let qr: Vec<&str> = out
        .lines()
        .filter(|l| l.contains('█') || l.contains('▀') || l.contains('▄'))
        .collect();
    assert!(qr.len() > 10, "{out}");
    let w = qr[0].chars().count();
    assert!(qr.iter().all(|l| l.chars().count() == w), "ragged QR block");
    assert!(
        !out.contains("\x1b["),
        "no colours when stdout is not a terminal"
    );
    assert_eq!(after(&out, "certificate sha256:"), served_fingerprint(&gw));

    let (_, list, _) = tars_on(&gw, &["client", "list"]);
    let row = list
        .lines()
        .find(|l| l.starts_with(&device))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("tars pair"), "{row}");

    // The phone: the page posts the code from the fragment.
    let r = post_json(&gw, "/auth/pair", &json!({"code": pair_code}), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["client_id"], device.as_str());
    let access = r.json()["access_token"].as_str().unwrap().to_string();
    let (mut ws, _) = open_chat(&gw, &access).await;
    let r = post_json(&gw, "/auth/pair", &json!({"code": pair_code}), None).await;
    assert_eq!(r.status, 401, "a code works once: {}", r.text());
    assert!(!gw.logs().contains(&pair_code), "no code in the log");

    let (code, _, err) = tars_on(&gw, &["client", "remove", &device]);
    assert_eq!(code, 0, "{err}");
    let close = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Event::Closed(c) = next_event(&mut ws).await {
                return c;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the removed device's session did not end; logs:\n{}",
            gw.logs()
        )
    });
    assert_eq!(close, Some((1008, "client removed".into())));
    let r = post_json(&gw, "/auth/validate", &json!({}), Some(&access)).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn tars_pair_for_a_named_client_and_bad_options() {
    let gw = gateway().client("laptop", "laptop-secret-1", false).start();
    let before = std::fs::read(&gw.config).unwrap();
    let (code, out, err) = tars_on(&gw, &["pair", "--client", "laptop"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("new client"), "{out}");
    assert_eq!(
        std::fs::read(&gw.config).unwrap(),
        before,
        "no new client for --client"
    );
    let pair_code = out
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 11 && l.as_bytes()[5] == b'-')
        .unwrap()
        .to_string();
    let r = post_json(&gw, "/auth/pair", &json!({"code": pair_code}), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["client_id"], "laptop");

    for (args, needle) in [
        (&["pair", "--client", "ghost"][..], "no client \"ghost\""),
        (&["pair", "--client", "bad name"][..], "A-Z a-z 0-9"),
        (&["pair", "--ttl-mins", "0"][..], "ttl-mins"),
    ] {
        let (code, out, err) = tars_on(&gw, args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.contains("/pair#"), "{args:?}: {out}");
        assert_eq!(std::fs::read(&gw.config).unwrap(), before, "{args:?}");
    }
}
