//! The revocation store: every revoked `jti` (revoked access tokens and used
//! refresh tokens) with its `exp`, in memory for O(1) lookups and in
//! `{data_dir}/revoked.log` so a revocation survives a restart or a crash.
//!
//! The log is append-only JSON lines `{"jti":"…","exp":…}`. [`RevocationStore::revoke`]
//! appends and `fdatasync`s *before* the entry becomes visible in memory and
//! before the caller answers 200, so an acknowledged revocation is never lost,
//! and a failed write is never reported as a revocation. At start the log is
//! read (a torn last line from a crash is ignored; expired entries are
//! dropped) and compacted: rewritten to a temporary file, fsynced, renamed
//! over the log, and the folder fsynced.
//!
//! The file is reopened for every append (revocations are rare and the fsync
//! dominates), so a log that was removed or replaced while running is noticed
//! at the next write instead of writing into an unlinked inode.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::error::AuthInitError;
use super::files;

/// The file name under `data_dir`.
pub const LOG_NAME: &str = "revoked.log";

/// One line of the log.
#[derive(Debug, Serialize, Deserialize)]
struct Entry<'a> {
    jti: std::borrow::Cow<'a, str>,
    exp: u64,
}

/// What [`RevocationStore::revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    /// Newly revoked, written and synced.
    Stored,
    /// It was already revoked (a reused refresh token, or a race).
    AlreadyRevoked,
}

/// What the start-up load found, for the log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    pub kept: usize,
    pub expired: usize,
    pub unreadable: usize,
    pub torn_tail: bool,
}

/// Revoked token ids, persisted under `data_dir`.
pub struct RevocationStore {
    path: PathBuf,
    /// Serialises check-then-append, so one `jti` is stored (and a refresh
    /// token consumed) exactly once. Holds the line count of the file.
    write: Mutex<FileState>,
    /// `jti` → `exp`. Read on every token check.
    set: RwLock<HashMap<String, u64>>,
    /// Entries whose `exp + leeway` has passed are dropped.
    leeway: u64,
}

/// Bookkeeping of the log file, under [`RevocationStore::write`].
#[derive(Debug, Default)]
struct FileState {
    /// Lines in the file now.
    lines: usize,
    /// Appends since start, to prune every [`PRUNE_EVERY`].
    appended: u64,
}

impl std::fmt::Debug for RevocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationStore")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Prune the in-memory set every this many appends, and rewrite the file
/// when more than half of its lines (and at least this many) are expired.
const PRUNE_EVERY: u64 = 1024;

impl RevocationStore {
    /// Load `{dir}/revoked.log`, drop what expired before `now - leeway`, and
    /// compact the file atomically.
    pub fn open(dir: &Path, now: u64, leeway: u64) -> Result<(Self, LoadReport), AuthInitError> {
        let path = dir.join(LOG_NAME);
        let store_err = |action, source| AuthInitError::store(&path, action, source);
        files::ensure_dir(dir).map_err(|e| store_err("create the folder of", e))?;
        let text = files::read(&path)
            .map_err(|e| store_err("read", e))?
            .unwrap_or_default();
        let (set, report) = parse(&text, now, leeway);
        compact(&path, &set).map_err(|e| store_err("rewrite", e))?;
        if report.torn_tail || report.unreadable > 0 {
            warn!(
                path = %path.display(),
                torn_tail = report.torn_tail,
                unreadable = report.unreadable,
                "revocation log had damaged lines; they were dropped"
            );
        }
        info!(
            path = %path.display(),
            revoked = report.kept,
            expired_dropped = report.expired,
            "revocation log loaded"
        );
        let store = Self {
            path,
            write: Mutex::new(FileState {
                lines: set.len(),
                appended: 0,
            }),
            set: RwLock::new(set),
            leeway,
        };
        Ok((store, report))
    }

    /// True when `jti` is revoked. O(1), no I/O.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(jti)
    }

    /// Revoked ids held (not yet expired at the last prune).
    pub fn len(&self) -> usize {
        self.set.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Revoke `jti` until `exp`. Blocking (write + fdatasync): call it from
    /// `spawn_blocking`. On `Err` nothing is revoked in memory.
    pub fn revoke(&self, jti: &str, exp: u64, now: u64) -> std::io::Result<Revoke> {
        let mut file = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_revoked(jti) {
            return Ok(Revoke::AlreadyRevoked);
        }
        let mut line = serde_json::to_vec(&Entry {
            jti: jti.into(),
            exp,
        })
        .map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.append(&line)?;
        file.lines += 1;
        file.appended += 1;
        self.set
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(jti.to_string(), exp);
        if file.appended % PRUNE_EVERY == 0 {
            self.prune(&mut file, now);
        }
        Ok(Revoke::Stored)
    }

    /// Drop expired ids from memory and, when most of the file is expired,
    /// rewrite it (the write lock is held: no append can interleave).
    fn prune(&self, file: &mut FileState, now: u64) {
        let leeway = self.leeway;
        let live = {
            let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
            set.retain(|_, exp| exp.saturating_add(leeway) >= now);
            if file.lines <= 2 * set.len() + PRUNE_EVERY as usize {
                return;
            }
            set.clone()
        };
        match compact(&self.path, &live) {
            Ok(()) => file.lines = live.len(),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot compact the revocation log; will retry")
            }
        }
    }

    /// Lines in the log file now (for tests).
    pub fn file_lines(&self) -> usize {
        self.write.lock().unwrap_or_else(|e| e.into_inner()).lines
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut f = files::open_append(&self.path)?;
        f.write_all(line)?;
        f.sync_data()
    }
}

fn parse(text: &[u8], now: u64, leeway: u64) -> (HashMap<String, u64>, LoadReport) {
    let mut set = HashMap::new();
    let mut report = LoadReport::default();
    let terminated = text.last().is_none_or(|b| *b == b'\n');
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Entry>(line) {
            Ok(e) if e.exp.saturating_add(leeway) < now => report.expired += 1,
            Ok(e) => {
                set.insert(e.jti.into_owned(), e.exp);
            }
            Err(_) if i == last && !terminated => report.torn_tail = true,
            Err(_) => report.unreadable += 1,
        }
    }
    report.kept = set.len();
    (set, report)
}

fn compact(path: &Path, set: &HashMap<String, u64>) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(set.len() * 64);
    for (jti, exp) in set {
        serde_json::to_writer(
            &mut out,
            &Entry {
                jti: jti.as_str().into(),
                exp: *exp,
            },
        )
        .map_err(std::io::Error::other)?;
        out.push(b'\n');
    }
    files::write_atomic(path, &out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn revoke_persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (s, r) = RevocationStore::open(dir.path(), NOW, 5).unwrap();
        assert_eq!(r, LoadReport::default());
        assert_eq!(s.revoke("a", NOW + 100, NOW).unwrap(), Revoke::Stored);
        assert_eq!(
            s.revoke("a", NOW + 100, NOW).unwrap(),
            Revoke::AlreadyRevoked
        );
        assert!(s.is_revoked("a") && !s.is_revoked("b"));
        drop(s);
        let (s, r) = RevocationStore::open(dir.path(), NOW, 5).unwrap();
        assert!(s.is_revoked("a"));
        assert_eq!(r.kept, 1);
    }

    #[test]
    fn torn_tail_and_expired_dropped_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_NAME);
        fs::write(
            &log,
            format!(
                "{{\"jti\":\"old\",\"exp\":{}}}\n{{\"jti\":\"keep\",\"exp\":{}}}\nnot json\n{{\"jti\":\"torn\",\"ex",
                NOW - 100,
                NOW + 100
            ),
        )
        .unwrap();
        let (s, r) = RevocationStore::open(dir.path(), NOW, 5).unwrap();
        assert_eq!(
            r,
            LoadReport {
                kept: 1,
                expired: 1,
                unreadable: 1,
                torn_tail: true
            }
        );
        assert!(s.is_revoked("keep") && !s.is_revoked("old") && !s.is_revoked("torn"));
        let text = fs::read_to_string(&log).unwrap();
        assert_eq!(
            text,
            format!("{{\"jti\":\"keep\",\"exp\":{}}}\n", NOW + 100)
        );
        // An append after compaction starts on a fresh line.
        s.revoke("new", NOW + 10, NOW).unwrap();
        let (s2, r2) = RevocationStore::open(dir.path(), NOW, 5).unwrap();
        assert_eq!(r2.kept, 2);
        assert!(s2.is_revoked("new"));
    }

    #[test]
    fn expiry_within_leeway_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(LOG_NAME),
            format!("{{\"jti\":\"x\",\"exp\":{}}}\n", NOW - 3),
        )
        .unwrap();
        let (s, _) = RevocationStore::open(dir.path(), NOW, 5).unwrap();
        assert!(s.is_revoked("x"));
    }

    #[test]
    fn write_failure_is_not_a_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = RevocationStore::open(dir.path(), NOW, 5).unwrap();
        let log = dir.path().join(LOG_NAME);
        fs::remove_file(&log).unwrap();
        std::os::unix::fs::symlink("/dev/full", &log).unwrap();
        assert!(s.revoke("a", NOW + 100, NOW).is_err());
        assert!(!s.is_revoked("a"));
        // A folder in the way fails too.
        fs::remove_file(&log).unwrap();
        fs::create_dir(&log).unwrap();
        assert!(s.revoke("a", NOW + 100, NOW).is_err());
        assert!(!s.is_revoked("a"));
    }

    #[test]
    fn expired_entries_are_compacted_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = RevocationStore::open(dir.path(), NOW, 5).unwrap();
        let n = 3 * PRUNE_EVERY;
        for i in 0..n {
            // All but the last batch have expired by the time of the prune.
            let exp = if i >= 2 * PRUNE_EVERY {
                NOW + 1000
            } else {
                NOW - 100
            };
            s.revoke(&format!("j{i}"), exp, NOW).unwrap();
        }
        assert_eq!(s.len(), PRUNE_EVERY as usize);
        assert_eq!(s.file_lines(), PRUNE_EVERY as usize);
        let text = fs::read_to_string(dir.path().join(LOG_NAME)).unwrap();
        assert_eq!(text.lines().count(), PRUNE_EVERY as usize);
        assert!(s.is_revoked(&format!("j{}", n - 1)) && !s.is_revoked("j0"));
    }

    #[test]
    fn planted_link_is_a_start_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "precious\n").unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(&target, data.join(LOG_NAME)).unwrap();
        let e = RevocationStore::open(&data, NOW, 5)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("key `server.data_dir`: "), "{e}");
        assert!(
            e.contains(&data.join(LOG_NAME).display().to_string()),
            "{e}"
        );
        assert!(
            e.contains("symbolic link") && !e.contains("writable"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn unwritable_folder_is_a_start_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        fs::write(&file, "x").unwrap();
        let e = RevocationStore::open(&file, NOW, 5)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("key `server.data_dir`: "), "{e}");
        assert!(!e.contains('\n'));
    }
}
