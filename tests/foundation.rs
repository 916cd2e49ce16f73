//! Foundation: endpoints over TLS and plain HTTP.

mod support;

use support::*;

#[tokio::test]
async fn health_over_tls() {
    let gw = gateway().start();
    let r = get(&gw, "/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "healthy");
}
