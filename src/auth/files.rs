//! Files in `data_dir` (the JWT key, the revocation log, the client cutoffs):
//! the folder is created 0700 and every file 0600; every open passes
//! `O_NOFOLLOW` and every new file is created with `create_new`, so a
//! symbolic link planted there (to make the gateway overwrite or disclose
//! another file) is refused with an error naming it, never followed.
//! Replacing a file is write-temporary, fsync, rename, fsync the folder.
//!
//! `data_dir` itself may be a link (an operator's choice, e.g.
//! `/var/lib/tars -> /srv/tars`); only the files inside are checked.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use tracing::warn;

/// Mode of files the gateway creates in `data_dir`.
pub const FILE_MODE: u32 = 0o600;
/// Mode of `data_dir` when the gateway creates it.
pub const DIR_MODE: u32 = 0o700;

/// The error inside an [`io::Error`] for a planted symbolic link.
#[derive(Debug, thiserror::Error)]
#[error("{path} is a symbolic link: tars does not follow links in its data folder (one planted there could redirect its writes): remove it", path = .path.display())]
pub struct SymlinkRefused {
    pub path: PathBuf,
}

/// True when `e` is a [`SymlinkRefused`].
pub fn is_symlink_refusal(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<SymlinkRefused>().is_some())
}

/// Turn `ELOOP` from an `O_NOFOLLOW` open into a [`SymlinkRefused`] naming
/// `path`.
fn nofollow_err(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::other(SymlinkRefused {
            path: path.to_path_buf(),
        })
    } else {
        e
    }
}

/// Create `dir` (and its parents) with mode 0700 if it is missing; warn when
/// an existing one is open to other users.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    if let Ok(meta) = fs::metadata(dir) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            warn!(
                path = %dir.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "the data folder is open to other users: chmod 700 it"
            );
        }
    }
    Ok(())
}

/// Read `path` whole without following a link; `None` when it is missing.
pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(nofollow_err(path, e)),
    };
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(Some(v))
}

/// Create `path` new (`O_EXCL`: an existing file or link fails), mode 0600.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if e.kind() == ErrorKind::AlreadyExists && is_link {
                io::Error::other(SymlinkRefused {
                    path: path.to_path_buf(),
                })
            } else {
                nofollow_err(path, e)
            }
        })
}

/// Open `path` for appending without following a link, creating it (0600,
/// `create_new`, folder fsynced) when missing.
pub fn open_append(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    match open() {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let f = match OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
            {
                Ok(f) => f,
                // Another writer created it first.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return open().map_err(|e| nofollow_err(path, e))
                }
                Err(e) => return Err(nofollow_err(path, e)),
            };
            sync_dir(path)?;
            Ok(f)
        }
        Err(e) => Err(nofollow_err(path, e)),
    }
}

/// A fresh temporary name beside `path` (random, so a stale or planted one
/// never collides).
pub fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{:016x}.tmp", OsRng.next_u64()))
}

/// Replace `path` with `bytes` atomically: a new 0600 temporary file,
/// fsynced, renamed over `path` (a link at `path` is replaced, not
/// followed), then the folder fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsync the folder holding `path`, so a new or renamed entry survives a crash.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_links() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/data");
        ensure_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let file = dir.join("store");
        assert_eq!(read(&file).unwrap(), None);
        write_atomic(&file, b"one").unwrap();
        assert_eq!(read(&file).unwrap().as_deref(), Some(&b"one"[..]));
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        open_append(&file).unwrap().write_all(b"+").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"one+");

        // A planted link: refused by name, its target untouched.
        let target = root.path().join("precious");
        fs::write(&target, "keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for e in [
            read(&link).unwrap_err(),
            open_append(&link).unwrap_err(),
            create_new(&link).unwrap_err(),
        ] {
            let shown = e.to_string();
            assert!(
                shown.contains(&link.display().to_string()) && shown.contains("symbolic link"),
                "{shown}"
            );
        }
        assert!(is_symlink_refusal(&read(&link).unwrap_err()));
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        // Replacing a link replaces the link, not its target.
        write_atomic(&link, b"new").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(!fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let leftovers = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }
}
