//! One-time pairing codes: `tars pair` writes one, `POST /auth/pair`
//! redeems it once for a token pair. The CLI and the running gateway share
//! them through `{data_dir}/pairing/`, one file per code, named after the
//! SHA-256 of the code (the code itself is stored nowhere): a code is found
//! by hashing what the device sent, used once (the file is removed before
//! the tokens are minted: of two requests racing with one code, one removes
//! it and the other finds nothing), and refused after its expiry.
//!
//! Codes are [`CODE_CHARS`] characters of [`ALPHABET`] (31 characters
//! without the look-alikes 0 O 1 I L: about 49.5 bits), shown in groups of
//! five (`K7MPQ-W3XRT`); what a device sends is read case-insensitively with
//! dashes and spaces ignored.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::files;

/// The characters of a code: digits and capitals without 0 O 1 I L.
pub const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters in a code (log2(31) * 10 ≈ 49.5 bits).
pub const CODE_CHARS: usize = 10;
/// Characters per group when a code is shown.
pub const GROUP: usize = 5;
/// The folder in `data_dir` that holds the codes.
pub const FOLDER: &str = "pairing";

/// What a code was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRecord {
    /// The registered client the device signs in as.
    pub client_id: String,
    /// Unix seconds after which the code is refused.
    pub expires_at: u64,
}

/// Why a code was not redeemed.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// Malformed, never made, or already used.
    #[error("unknown or already used pairing code")]
    Unknown,
    /// Made, but its time is up (it is removed now).
    #[error("the pairing code has expired: make a new one with `tars pair`")]
    Expired,
    /// The code's file could not be read or removed.
    #[error("cannot read the pairing codes in {path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// A new random code, grouped for reading aloud (`XXXXX-XXXXX`).
pub fn new_code() -> String {
    let mut s = String::with_capacity(CODE_CHARS + CODE_CHARS / GROUP);
    for i in 0..CODE_CHARS {
        if i > 0 && i % GROUP == 0 {
            s.push('-');
        }
        // Unbiased: rand's range sampling rejects the overhang.
        let k = rand::random_range(0..ALPHABET.len());
        s.push(ALPHABET[k] as char);
    }
    s
}

/// The code's canonical form (capitals, no separators), or `None` when it
/// cannot be a code.
pub fn normalize(input: &str) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (s.len() == CODE_CHARS && s.bytes().all(|b| ALPHABET.contains(&b))).then_some(s)
}

/// The folder holding the codes.
pub fn folder(data_dir: &Path) -> PathBuf {
    data_dir.join(FOLDER)
}

/// The file of a normalized code: the hex SHA-256 of the code.
fn file_of(data_dir: &Path, normalized: &str) -> PathBuf {
    let digest = Sha256::digest(format!("tars-pair:{normalized}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    folder(data_dir).join(format!("{hex}.json"))
}

/// Store `code` for `record` (the CLI). The folder is created 0700 and the
/// file 0600; when run as root, both are given to the owner of `data_dir`,
/// so a gateway running as that user can read and remove them.
pub fn store(data_dir: &Path, code: &str, record: &PairRecord) -> io::Result<PathBuf> {
    let normalized = normalize(code)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a pairing code"))?;
    files::ensure_dir(data_dir)?;
    let dir = folder(data_dir);
    files::ensure_dir(&dir)?;
    give_to_owner_of(data_dir, &dir);
    let path = file_of(data_dir, &normalized);
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    let mut f = files::create_new(&path)?;
    io::Write::write_all(&mut f, &bytes)?;
    f.sync_all()?;
    drop(f);
    give_to_owner_of(data_dir, &path);
    files::sync_dir(&path)?;
    Ok(path)
}

/// chown `path` to the owner of `data_dir` (a no-op unless run as root).
fn give_to_owner_of(data_dir: &Path, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(data_dir) {
        let _ = std::os::unix::fs::lchown(path, Some(m.uid()), Some(m.gid()));
    }
}

/// The record of `code` without using it up; `Unknown` when there is none
/// (or the code is malformed). Expiry is not checked here.
pub fn peek(data_dir: &Path, code: &str) -> Result<PairRecord, PairError> {
    let normalized = normalize(code).ok_or(PairError::Unknown)?;
    let path = file_of(data_dir, &normalized);
    let bytes = files::read(&path)
        .map_err(|source| PairError::Io {
            path: path.clone(),
            source,
        })?
        .ok_or(PairError::Unknown)?;
    serde_json::from_slice(&bytes).map_err(|_| PairError::Unknown)
}

/// Use `code` up: its file is removed; `Unknown` when another request
/// removed it first, `Expired` (and removed) when `now` (Unix seconds) is
/// past its expiry.
pub fn redeem(data_dir: &Path, code: &str, now: u64) -> Result<PairRecord, PairError> {
    let record = peek(data_dir, code)?;
    let normalized = normalize(code).ok_or(PairError::Unknown)?;
    let path = file_of(data_dir, &normalized);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(PairError::Unknown),
        Err(source) => return Err(PairError::Io { path, source }),
    }
    let _ = files::sync_dir(&path);
    if now > record.expires_at {
        return Err(PairError::Expired);
    }
    Ok(record)
}

/// Remove the codes that expired before `now`; returns how many.
pub fn prune(data_dir: &Path, now: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(folder(data_dir)) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let expired = files::read(&path)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<PairRecord>(&b).ok())
            .is_none_or(|r| now > r.expires_at);
        if expired && std::fs::remove_file(&path).is_ok() {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grouped_unambiguous_and_normalize() {
        for _ in 0..200 {
            let c = new_code();
            assert_eq!(c.len(), 11, "{c}");
            assert_eq!(&c[5..6], "-");
            assert!(!c.contains(['0', 'O', '1', 'I', 'L']), "{c}");
            assert_eq!(normalize(&c).unwrap(), c.replace('-', ""));
            assert_eq!(
                normalize(&c.to_lowercase().replace('-', " ")),
                normalize(&c)
            );
        }
        assert!((CODE_CHARS as f64) * (ALPHABET.len() as f64).log2() >= 40.0);
        assert_eq!(normalize("ABCDE-FGHJ"), None);
        assert_eq!(normalize("ABCDE-FGHJO"), None);
        assert_eq!(normalize("../../etc/x"), None);
    }

    #[test]
    fn a_code_works_once_and_not_after_its_expiry() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let rec = PairRecord {
            client_id: "phone".into(),
            expires_at: 1000,
        };
        let code = new_code();
        let path = store(&data, &code, &rec).unwrap();
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(!stored.contains(&code.replace('-', "")), "stored hashed");
        assert!(!path.to_string_lossy().contains(&code.replace('-', "")));
        assert_eq!(peek(&data, &code.to_lowercase()).unwrap(), rec);
        assert_eq!(redeem(&data, &code, 999).unwrap(), rec);
        assert!(matches!(redeem(&data, &code, 999), Err(PairError::Unknown)));

        let late = new_code();
        store(&data, &late, &rec).unwrap();
        assert!(matches!(
            redeem(&data, &late, 1001),
            Err(PairError::Expired)
        ));
        assert!(matches!(redeem(&data, &late, 999), Err(PairError::Unknown)));

        let (old, fresh) = (new_code(), new_code());
        store(&data, &old, &rec).unwrap();
        store(
            &data,
            &fresh,
            &PairRecord {
                expires_at: 5000,
                ..rec.clone()
            },
        )
        .unwrap();
        assert_eq!(prune(&data, 2000), 1);
        assert!(peek(&data, &fresh).is_ok());
        assert!(matches!(peek(&data, &old), Err(PairError::Unknown)));
    }
}
