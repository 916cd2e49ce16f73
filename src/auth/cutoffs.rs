//! Per-client cutoffs ("not before"): every token of client X issued at or
//! before X's cutoff is refused. Set by an admin (`POST /auth/revoke
//! {"client_id": X}`), by `tars revoke --client X` (offline, while the
//! gateway runs or not), and by a reload that removed X or changed its
//! `secret_hash`. One entry replaces a list of every token X ever had.
//!
//! ## On disk: `{data_dir}/cutoffs.json`
//! ```json
//! {"version":1,"not_before_us":{"laptop":1767225600123456}}
//! ```
//! Microseconds since the Unix epoch, compared with a token's `iat_us`
//! claim (its issue instant; tokens from before that claim existed count
//! from the start of their `iat` second), so a client signing in again in
//! the same second as its cutoff is told apart: a token is refused when
//! `iat_us <= cutoff`, and the gateway never issues one at or before a
//! cutoff it knows (it issues at `cutoff + 1 µs` when the clock says less).
//!
//! The file is small (one entry per client cut off) and replaced whole
//! (temporary file, fsync, rename) under an `flock` on `.cutoffs.lock`, so
//! the gateway and `tars revoke` can write at once without losing an entry.
//! An entry is dropped at the next write once it is older than the longest
//! token lifetime plus the leeway (every token it refuses has expired by
//! then). The running gateway notices a change by the file's modification
//! time, size and inode ([`CutoffStore::poll`], about once a second).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::error::AuthInitError;
use super::files;

/// The file name under `data_dir`.
pub const CUTOFFS_NAME: &str = "cutoffs.json";
/// Held (`flock`) while the file is read, changed and replaced.
const LOCK_NAME: &str = ".cutoffs.lock";

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    /// Client id → cutoff in microseconds since the Unix epoch.
    not_before_us: HashMap<String, u64>,
}

/// What identifies one version of the file without reading it.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The cutoffs, in memory and in `{data_dir}/cutoffs.json`.
pub struct CutoffStore {
    path: PathBuf,
    lock_path: PathBuf,
    /// Read on every token check.
    map: RwLock<HashMap<String, u64>>,
    /// The file version `map` was read from.
    seen: Mutex<Stamp>,
}

impl std::fmt::Debug for CutoffStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CutoffStore")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

fn parse(bytes: &[u8]) -> std::io::Result<HashMap<String, u64>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(HashMap::new());
    }
    let f: FileFormat = serde_json::from_slice(bytes).map_err(|e| {
        std::io::Error::other(format!(
            "not a cutoffs file ({e}): restore it, or remove it to forget every client cutoff"
        ))
    })?;
    if f.version != 1 {
        return Err(std::io::Error::other(format!(
            "version {}, this tars reads version 1",
            f.version
        )));
    }
    Ok(f.not_before_us)
}

/// Read the file (a missing one is empty; a link is refused).
fn load(path: &Path) -> std::io::Result<HashMap<String, u64>> {
    match files::read(path)? {
        Some(bytes) => parse(&bytes),
        None => Ok(HashMap::new()),
    }
}

impl CutoffStore {
    /// Load `{dir}/cutoffs.json` (missing: no cutoffs).
    pub fn open(dir: &Path) -> Result<Self, AuthInitError> {
        let path = dir.join(CUTOFFS_NAME);
        files::ensure_dir(dir).map_err(|e| AuthInitError::cutoffs(&path, e))?;
        let seen = stamp(&path);
        let map = load(&path).map_err(|e| AuthInitError::cutoffs(&path, e))?;
        Ok(Self {
            lock_path: dir.join(LOCK_NAME),
            path,
            map: RwLock::new(map),
            seen: Mutex::new(seen),
        })
    }

    /// The cutoff of `client_id` in microseconds, if any. No I/O, no allocation.
    pub fn get(&self, client_id: &str) -> Option<u64> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(client_id)
            .copied()
    }

    /// Clients with a cutoff.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Set `client_id`'s cutoff to `at_us` (kept if already later), drop
    /// entries older than `drop_before_us`, and persist. Blocking (flock,
    /// write, two fsyncs). On `Err` nothing changed in memory.
    pub fn set(&self, client_id: &str, at_us: u64, drop_before_us: u64) -> std::io::Result<()> {
        let map = update(
            &self.path,
            &self.lock_path,
            client_id,
            at_us,
            drop_before_us,
        )?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        *seen = stamp(&self.path);
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }

    /// Set `client_id`'s cutoff in memory only: the fallback when [`Self::set`]
    /// could not write (it lasts until a restart).
    pub fn set_in_memory(&self, client_id: &str, at_us: u64) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let slot = map.entry(client_id.to_string()).or_insert(at_us);
        *slot = (*slot).max(at_us);
    }

    /// Re-read the file when it changed on disk (another process, e.g.
    /// `tars revoke`, wrote it). True when the cutoffs changed. A file that
    /// does not parse is logged and the cutoffs in memory stay.
    pub fn poll(&self) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(&self.path);
        if now == *seen {
            return false;
        }
        match load(&self.path) {
            Ok(new) => {
                *seen = now;
                let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
                // A cutoff is never lowered by a re-read (one set in memory
                // only, after a failed write, stays).
                let mut changed = false;
                for (client, at) in new {
                    let slot = map.entry(client).or_insert(0);
                    if at > *slot {
                        *slot = at;
                        changed = true;
                    }
                }
                changed
            }
            Err(e) => {
                *seen = now;
                warn!(path = %self.path.display(), error = %e, "cannot read the client cutoffs; keeping the ones in memory");
                false
            }
        }
    }
}

/// Lock, read, change and replace the file; the new contents.
fn update(
    path: &Path,
    lock_path: &Path,
    client_id: &str,
    at_us: u64,
    drop_before_us: u64,
) -> std::io::Result<HashMap<String, u64>> {
    let lock = files::open_append(lock_path)?;
    // SAFETY: flock on a descriptor we own; released when `lock` closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut map = load(path)?;
    map.retain(|_, at| *at >= drop_before_us);
    let slot = map.entry(client_id.to_string()).or_insert(at_us);
    *slot = (*slot).max(at_us);
    let file = FileFormat {
        version: 1,
        not_before_us: map,
    };
    let body = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    files::write_atomic(path, &body)?;
    Ok(file.not_before_us)
}

/// `tars revoke --client`: set a cutoff in `dir` without a running gateway
/// (one that runs picks it up by [`CutoffStore::poll`]).
pub fn set_offline(
    dir: &Path,
    client_id: &str,
    at_us: u64,
    drop_before_us: u64,
) -> std::io::Result<PathBuf> {
    files::ensure_dir(dir)?;
    let path = dir.join(CUTOFFS_NAME);
    update(
        &path,
        &dir.join(LOCK_NAME),
        client_id,
        at_us,
        drop_before_us,
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000_000;

    #[test]
    fn set_persist_poll_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let s = CutoffStore::open(dir.path()).unwrap();
        assert_eq!(s.get("a"), None);
        s.set("a", T, 0).unwrap();
        s.set("a", T - 5, 0).unwrap(); // never lowered
        assert_eq!(s.get("a"), Some(T));
        assert!(!s.poll(), "its own write is not a change");
        // Another process writes: picked up by poll.
        set_offline(dir.path(), "b", T + 7, 0).unwrap();
        assert_eq!(s.get("b"), None);
        assert!(s.poll());
        assert_eq!((s.get("a"), s.get("b")), (Some(T), Some(T + 7)));
        // Old entries are dropped at the next write.
        s.set("c", T + 9, T + 1).unwrap();
        assert_eq!((s.get("a"), s.get("b")), (None, Some(T + 7)));
        let text = std::fs::read_to_string(dir.path().join(CUTOFFS_NAME)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"version": 1, "not_before_us": {"b": T + 7, "c": T + 9}})
        );
        let reopened = CutoffStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("c"), Some(T + 9));
    }

    #[test]
    fn damaged_file_is_a_start_error_and_kept_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let s = CutoffStore::open(dir.path()).unwrap();
        s.set("a", T, 0).unwrap();
        std::fs::write(dir.path().join(CUTOFFS_NAME), "{oops").unwrap();
        assert!(!s.poll());
        assert_eq!(s.get("a"), Some(T));
        let e = CutoffStore::open(dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("key `server.data_dir`: "), "{e}");
        assert!(e.contains(CUTOFFS_NAME) && e.contains("remove it"), "{e}");
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || set_offline(&d, &format!("c{i}"), T + i, 0).unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = CutoffStore::open(dir.path()).unwrap();
        assert_eq!(s.len(), 8);
    }
}
