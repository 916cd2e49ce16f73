//! The revocation log: revoked token ids (`jti`: revoked tokens and used
//! refresh tokens) and revoked token families (`fam`: a reused refresh token,
//! or any revoked token, takes its whole family), each with the `exp` after
//! which it can be forgotten. Held in memory for O(1) lookups and in
//! `{data_dir}/revoked.log` so a revocation survives a restart or a crash.
//!
//! ## On disk
//! Append-only JSON lines, one entry each:
//! `{"jti":"<uuid>","exp":<unix secs>}` or `{"fam":"<uuid>","exp":<unix secs>}`
//! (logs written before families existed hold only `jti` lines and load
//! unchanged). A family's `exp` is the latest expiry any of its tokens can
//! have (the caller passes `now + the longest lifetime`), so one line covers
//! every token the family ever had or will have. [`RevocationStore::revoke`]
//! appends and `fdatasync`s *before* the entry becomes visible in memory and
//! before the caller answers 200, so an acknowledged revocation is never
//! lost, and a failed write is never reported as a revocation.
//!
//! ## Growth
//! An entry is dropped once `exp + leeway` has passed (the token or family
//! it names would be refused as expired anyway): at start (the log is read,
//! a torn last line from a crash ignored, and compacted: rewritten to a
//! temporary file, fsynced, renamed over the log, the folder fsynced) and
//! every [`PRUNE_EVERY`] appends (the file is rewritten when more than half of
//! it is dead). So the log holds about one line (~70 bytes) per refresh and
//! per revocation of the last `refresh_ttl`, plus at most [`PRUNE_EVERY`] dead
//! lines: a client refreshing hourly for a 7-day refresh lifetime keeps ~170
//! lines. Cutting a whole client off is one line in `cutoffs.json`
//! ([`super::cutoffs`]), not one per token.
//!
//! The file is reopened for every append (revocations are rare and the fsync
//! dominates), so a log that was removed or replaced while running is noticed
//! at the next write instead of writing into an unlinked inode. Opens never
//! follow a link ([`super::files`]).

use std::borrow::Cow;
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

/// What an entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One token, by its `jti`.
    Token,
    /// A token family, by its `fam`.
    Family,
}

/// One line of the log: exactly one of `jti` and `fam`.
#[derive(Debug, Serialize, Deserialize)]
struct Entry<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    jti: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    fam: Option<Cow<'a, str>>,
    exp: u64,
}

impl<'a> Entry<'a> {
    fn new(kind: Kind, id: &'a str, exp: u64) -> Self {
        let id = Some(Cow::Borrowed(id));
        match kind {
            Kind::Token => Self {
                jti: id,
                fam: None,
                exp,
            },
            Kind::Family => Self {
                jti: None,
                fam: id,
                exp,
            },
        }
    }
}

/// What [`RevocationStore::revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    /// Newly revoked (or revoked for longer), written and synced.
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

/// Revoked ids in memory: id → `exp`.
#[derive(Debug, Default, Clone)]
struct Sets {
    tokens: HashMap<String, u64>,
    families: HashMap<String, u64>,
}

impl Sets {
    fn of(&self, kind: Kind) -> &HashMap<String, u64> {
        match kind {
            Kind::Token => &self.tokens,
            Kind::Family => &self.families,
        }
    }

    fn of_mut(&mut self, kind: Kind) -> &mut HashMap<String, u64> {
        match kind {
            Kind::Token => &mut self.tokens,
            Kind::Family => &mut self.families,
        }
    }

    fn len(&self) -> usize {
        self.tokens.len() + self.families.len()
    }

    fn retain_live(&mut self, now: u64, leeway: u64) {
        for m in [&mut self.tokens, &mut self.families] {
            m.retain(|_, exp| exp.saturating_add(leeway) >= now);
        }
    }
}

/// Revoked tokens and families, persisted under `data_dir`.
pub struct RevocationStore {
    path: PathBuf,
    /// Serialises check-then-append, so one `jti` is stored (and a refresh
    /// token consumed) exactly once. Holds the line count of the file.
    write: Mutex<FileState>,
    /// Read on every token check.
    sets: RwLock<Sets>,
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

/// Prune the in-memory sets every this many appends, and rewrite the file
/// when more than half of its lines (and at least this many) are expired.
pub const PRUNE_EVERY: u64 = 1024;

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
        let (sets, report) = parse(&text, now, leeway);
        compact(&path, &sets).map_err(|e| store_err("rewrite", e))?;
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
            revoked = sets.tokens.len(),
            revoked_families = sets.families.len(),
            expired_dropped = report.expired,
            "revocation log loaded"
        );
        let store = Self {
            path,
            write: Mutex::new(FileState {
                lines: sets.len(),
                appended: 0,
            }),
            sets: RwLock::new(sets),
            leeway,
        };
        Ok((store, report))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Sets> {
        self.sets.read().unwrap_or_else(|e| e.into_inner())
    }

    /// True when the token `jti` is revoked. O(1), no I/O, no allocation.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.read().tokens.contains_key(jti)
    }

    /// True when the family `fam` is revoked. O(1), no I/O, no allocation.
    pub fn is_family_revoked(&self, fam: &str) -> bool {
        self.read().families.contains_key(fam)
    }

    /// Revoked token ids held (not yet expired at the last prune).
    pub fn len(&self) -> usize {
        self.read().tokens.len()
    }

    /// Revoked families held.
    pub fn families(&self) -> usize {
        self.read().families.len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().len() == 0
    }

    /// Revoke the token `jti` until `exp`. Blocking (write + fdatasync):
    /// call it from `spawn_blocking`. On `Err` nothing is revoked in memory.
    pub fn revoke(&self, jti: &str, exp: u64, now: u64) -> std::io::Result<Revoke> {
        self.put(Kind::Token, jti, exp, now)
    }

    /// Revoke the family `fam` until `exp` (its tokens' latest expiry); an
    /// entry that already lasts as long is left as it is. Blocking.
    pub fn revoke_family(&self, fam: &str, exp: u64, now: u64) -> std::io::Result<Revoke> {
        self.put(Kind::Family, fam, exp, now)
    }

    fn put(&self, kind: Kind, id: &str, exp: u64, now: u64) -> std::io::Result<Revoke> {
        let mut file = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if self.read().of(kind).get(id).is_some_and(|e| *e >= exp) {
            return Ok(Revoke::AlreadyRevoked);
        }
        let mut line =
            serde_json::to_vec(&Entry::new(kind, id, exp)).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.append(&line)?;
        file.lines += 1;
        file.appended += 1;
        self.sets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .of_mut(kind)
            .insert(id.to_string(), exp);
        if file.appended % PRUNE_EVERY == 0 {
            self.prune(&mut file, now);
        }
        Ok(Revoke::Stored)
    }

    /// Drop expired ids from memory and, when most of the file is expired,
    /// rewrite it (the write lock is held: no append can interleave).
    fn prune(&self, file: &mut FileState, now: u64) {
        let live = {
            let mut sets = self.sets.write().unwrap_or_else(|e| e.into_inner());
            sets.retain_live(now, self.leeway);
            if file.lines <= 2 * sets.len() + PRUNE_EVERY as usize {
                return;
            }
            sets.clone()
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

fn parse(text: &[u8], now: u64, leeway: u64) -> (Sets, LoadReport) {
    let mut sets = Sets::default();
    let mut report = LoadReport::default();
    let terminated = text.last().is_none_or(|b| *b == b'\n');
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry = serde_json::from_slice::<Entry>(line)
            .ok()
            .and_then(|e| match (e.jti, e.fam) {
                (Some(id), None) => Some((Kind::Token, id, e.exp)),
                (None, Some(id)) => Some((Kind::Family, id, e.exp)),
                _ => None,
            });
        match entry {
            Some((_, _, exp)) if exp.saturating_add(leeway) < now => report.expired += 1,
            Some((kind, id, exp)) => {
                let slot = sets.of_mut(kind).entry(id.into_owned()).or_insert(exp);
                *slot = (*slot).max(exp);
            }
            None if i == last && !terminated => report.torn_tail = true,
            None => report.unreadable += 1,
        }
    }
    report.kept = sets.len();
    (sets, report)
}

fn compact(path: &Path, sets: &Sets) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(sets.len() * 64);
    for kind in [Kind::Token, Kind::Family] {
        for (id, exp) in sets.of(kind) {
            serde_json::to_writer(&mut out, &Entry::new(kind, id, *exp))
                .map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
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
    fn families_persist_extend_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = RevocationStore::open(dir.path(), NOW, 5).unwrap();
        assert_eq!(
            s.revoke_family("f1", NOW + 100, NOW).unwrap(),
            Revoke::Stored
        );
        assert_eq!(
            s.revoke_family("f1", NOW + 50, NOW).unwrap(),
            Revoke::AlreadyRevoked
        );
        assert_eq!(
            s.revoke_family("f1", NOW + 200, NOW).unwrap(),
            Revoke::Stored
        );
        s.revoke_family("f2", NOW + 10, NOW).unwrap();
        // A family id is not a token id.
        assert!(s.is_family_revoked("f1") && !s.is_revoked("f1"));
        assert_eq!((s.len(), s.families()), (0, 2));
        drop(s);
        // f1 lasts until its longest entry; f2 has expired by then.
        let (s, r) = RevocationStore::open(dir.path(), NOW + 150, 5).unwrap();
        assert!(s.is_family_revoked("f1") && !s.is_family_revoked("f2"));
        assert_eq!((r.kept, r.expired), (1, 2));
        let text = fs::read_to_string(dir.path().join(LOG_NAME)).unwrap();
        assert_eq!(text, format!("{{\"fam\":\"f1\",\"exp\":{}}}\n", NOW + 200));
        // A line naming both, or neither, is damaged.
        fs::write(
            dir.path().join(LOG_NAME),
            format!(
                "{{\"jti\":\"a\",\"fam\":\"b\",\"exp\":{0}}}\n{{\"exp\":{0}}}\n",
                NOW + 9
            ),
        )
        .unwrap();
        let (_, r) = RevocationStore::open(dir.path(), NOW, 5).unwrap();
        assert_eq!((r.kept, r.unreadable), (0, 2));
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
