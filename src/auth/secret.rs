//! The JWT signing key: inline (`auth.secret` / `JWT_SECRET_KEY`), read from
//! `auth.secret_file`, or generated once into `{data_dir}/jwt.secret`.
//!
//! The generated file holds 256 random bits as 64 hex characters (mode 0600)
//! and the key is that text, so an operator can copy it into
//! `JWT_SECRET_KEY` and get the same tokens. Creation is race-free: the key
//! is written to a temporary file, fsynced, then hard-linked into place, which
//! fails if another process (`tars token` next to a starting server) won; the
//! loser then reads the winner's key. Trailing whitespace of a key file (the
//! newline of `openssl rand -hex 32 > file`) is not part of the key.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use tracing::{info, warn};

use super::error::AuthInitError;
use super::files;
use crate::config::{check_secret, SecretSource};

/// The key bytes with a `Debug` that never shows them.
pub struct KeyBytes(Vec<u8>);

impl KeyBytes {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// Load (or, for [`SecretSource::Generated`], create) the signing key.
pub fn load_key(source: &SecretSource) -> Result<KeyBytes, AuthInitError> {
    match source {
        SecretSource::Inline(s) => Ok(KeyBytes(s.expose().to_vec())),
        SecretSource::File(path) => read_key_file(path, "auth.secret_file", "the file"),
        SecretSource::Generated(path) => match files::read(path) {
            Ok(Some(bytes)) => check_key(bytes, path, "server.data_dir", "the generated key file"),
            Ok(None) => generate(path),
            Err(e) => Err(generated_err(path, "cannot read", e)),
        },
    }
}

fn secret_err(key: &'static str, path: &Path, message: String) -> AuthInitError {
    AuthInitError::Secret {
        key,
        path: path.to_path_buf(),
        message,
    }
}

/// An error about the generated key file: a planted link is named as such.
fn generated_err(path: &Path, doing: &str, e: std::io::Error) -> AuthInitError {
    if files::is_symlink_refusal(&e) {
        AuthInitError::Link(e)
    } else {
        secret_err("server.data_dir", path, format!("{doing}: {e}"))
    }
}

/// `auth.secret_file` is the operator's own path (it may be a link, e.g.
/// into /run/credentials); only files in `data_dir` refuse links.
fn read_key_file(path: &Path, key: &'static str, what: &str) -> Result<KeyBytes, AuthInitError> {
    let bytes = fs::read(path).map_err(|e| {
        secret_err(
            key,
            path,
            format!("cannot read {what}: {e}: check the path and that the tars user may read it"),
        )
    })?;
    check_key(bytes, path, key, what)
}

fn check_key(
    mut bytes: Vec<u8>,
    path: &Path,
    key: &'static str,
    what: &str,
) -> Result<KeyBytes, AuthInitError> {
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    check_secret(&bytes).map_err(|m| secret_err(key, path, format!("{what} {m}")))?;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "the JWT key file is readable by other users: chmod 600 it"
            );
        }
    }
    Ok(KeyBytes(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn generate(path: &Path) -> Result<KeyBytes, AuthInitError> {
    let err = |m: String| secret_err("server.data_dir", path, m);
    let dir = path.parent().unwrap_or(Path::new("."));
    files::ensure_dir(dir).map_err(|e| err(format!("cannot create the data folder: {e}")))?;
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let text = hex(&raw);
    let tmp: PathBuf = files::temp_beside(path);
    let write = || -> std::io::Result<()> {
        let mut f = files::create_new(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(err(format!("cannot write a new JWT key: {e}")));
    }
    // link(2) never follows a link at `path`: it fails with EEXIST.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            let _ = files::sync_dir(path);
            info!(path = %path.display(), "created a new JWT signing key");
            Ok(KeyBytes(text.into_bytes()))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match files::read(path) {
            Ok(Some(bytes)) => check_key(bytes, path, "server.data_dir", "the generated key file"),
            Ok(None) => Err(err(
                "the JWT key file vanished while being created: start again".into(),
            )),
            Err(e) => Err(generated_err(path, "cannot read", e)),
        },
        Err(e) => Err(err(format!("cannot create the JWT key file: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/jwt.secret");
        let a = load_key(&SecretSource::Generated(path.clone())).unwrap();
        assert_eq!(a.expose().len(), 64);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_key(&SecretSource::Generated(path)).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert!(!format!("{a:?}").contains(std::str::from_utf8(a.expose()).unwrap()));
    }

    #[test]
    fn generated_key_link_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("theirs");
        fs::write(&target, "0123456789abcdef0123456789abcdef-theirs\n").unwrap();
        let path = dir.path().join("jwt.secret");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = load_key(&SecretSource::Generated(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("key `server.data_dir`: "), "{e}");
        assert!(
            e.contains(&path.display().to_string()) && e.contains("symbolic link"),
            "{e}"
        );
        // A dangling one is not followed to create its target either.
        let dangling = dir.path().join("d/jwt.secret");
        fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("made-by-tars"), &dangling).unwrap();
        assert!(load_key(&SecretSource::Generated(dangling)).is_err());
        assert!(!dir.path().join("made-by-tars").exists());
    }

    #[test]
    fn short_file_names_key_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, "twelve bytes\n").unwrap();
        let e = load_key(&SecretSource::File(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("key `auth.secret_file`: "), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("is 12 bytes, must be at least 32"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = load_key(&SecretSource::File("/nonexistent/k".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `auth.secret_file`") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn placeholder_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, "your-secret-key-change-this-in-production\n").unwrap();
        let e = load_key(&SecretSource::File(path)).unwrap_err().to_string();
        assert!(e.contains("placeholder"), "{e}");
    }

    #[test]
    fn file_trailing_newline_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = "0123456789abcdef0123456789abcdef";
        fs::write(&path, format!("{key}\n")).unwrap();
        let k = load_key(&SecretSource::File(path)).unwrap();
        assert_eq!(k.expose(), key.as_bytes());
    }
}
