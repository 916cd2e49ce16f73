//! Helpers for the auth tests: forging hostile JWTs by hand, and running
//! `tars` with input on stdin and a deadline.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::ENV_VARS;

/// base64url without padding, as JWTs use it.
pub fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims the gateway would accept (for `sub`), to be spoiled by a test.
pub fn good_claims(sub: &str) -> Value {
    let now = now();
    json!({
        "sub": sub,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "typ": "access",
        "iss": "tars",
        "aud": "tars",
    })
}

/// Sign `claims` with `key` and `alg` (an HMAC algorithm) through jsonwebtoken.
pub fn sign(claims: &Value, key: &[u8], alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
}

/// A token with an arbitrary header JSON, signed with HMAC-SHA256 over
/// `header.payload` with `key` (or with an empty signature when `key` is
/// `None`). For `alg: none` and algorithm-confusion attempts.
pub fn forge(header: &Value, claims: &Value, key: Option<&[u8]>) -> String {
    let msg = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = match key {
        Some(k) => jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &EncodingKey::from_secret(k),
            Algorithm::HS256,
        )
        .unwrap(),
        None => String::new(),
    };
    format!("{msg}.{sig}")
}

/// Replace the payload of `token` with `claims`, keeping its header and
/// signature.
pub fn swap_payload(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let (h, _, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    format!("{h}.{}.{s}", b64url(claims.to_string().as_bytes()))
}

/// The claims of `token`, without any check (to inspect what was issued).
pub fn claims_of(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .unwrap()
        .claims
}

/// Run `tars args` with `stdin` as its input; kill it and panic after
/// `timeout`. Returns (exit code, stdout, stderr).
pub fn run_tars_input(args: &[&str], stdin: &[u8], timeout: Duration) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tars"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let end = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "tars {args:?} still running after {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
