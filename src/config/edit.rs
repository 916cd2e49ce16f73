//! Editing `config.toml`'s `[[auth.clients]]` in place, for `tars client
//! add/remove/rotate` and `tars pair`: the file is parsed with the
//! format-preserving `toml_edit`, so every comment, blank line and key order
//! outside the touched entry stays byte for byte; the result must validate
//! exactly as the gateway would load it (environment overrides included)
//! before anything is written; and it is written atomically (a temporary
//! file in the same folder, fsync, rename, fsync the folder) with the
//! original's mode (and owner, where permitted). Any error leaves the file
//! as it was.
//!
//! An entry added here carries a comment line saying which command added it
//! and when (`# added by `tars client add` on 2026-12-02`); `tars client
//! list` shows it as the entry's origin ("by hand" without one).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use toml_edit::{value, Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use super::{Config, ConfigError};

/// Why an edit was refused. One line each, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file as it is (or as it would be) does not validate.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The client list cannot take this change.
    #[error("{path}: key `auth.clients`: {message}")]
    Clients { path: String, message: String },
    /// The new file could not be written; the old one is untouched.
    #[error("{path}: cannot write the configuration file: {source}; nothing was changed (run as the file's owner, or make it and its folder writable)")]
    Write { path: String, source: io::Error },
}

/// One registered client as `tars client list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub id: String,
    pub admin: bool,
    /// `None`: every allowed model.
    pub models: Option<Vec<String>>,
    /// Which command added it and when, or `"by hand"`.
    pub origin: String,
}

/// `config.toml` opened for editing.
pub struct ConfigFile {
    /// The path as given (errors and validation name it).
    path: PathBuf,
    /// Where the bytes live (links resolved): the temporary file goes beside it.
    real: PathBuf,
    doc: DocumentMut,
}

/// The comment that marks an entry added by `command`.
const MARK: &str = "# added by `";

impl ConfigFile {
    /// Read `path`, check that it validates as the gateway would load it,
    /// and parse it for editing.
    pub fn open(path: &Path) -> Result<Self, EditError> {
        let shown = path.display().to_string();
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        super::from_file_text(path, &text, &env)?;
        let doc: DocumentMut =
            text.parse()
                .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                    path: shown.clone(),
                    line: 0,
                    key: "-".into(),
                    message: e.message().split_whitespace().collect::<Vec<_>>().join(" "),
                })?;
        let real = fs::canonicalize(path).map_err(|source| ConfigError::Read {
            path: shown,
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            real,
            doc,
        })
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn refuse(&self, message: impl Into<String>) -> EditError {
        EditError::Clients {
            path: self.shown(),
            message: message.into(),
        }
    }

    /// The registered clients, in file order.
    pub fn clients(&self) -> Vec<ClientRow> {
        let Some(list) = self.doc.get("auth").and_then(|a| a.get("clients")) else {
            return Vec::new();
        };
        match list {
            Item::ArrayOfTables(aot) => aot.iter().map(|t| row_of(t, origin_of(t))).collect(),
            Item::Value(Value::Array(arr)) => arr
                .iter()
                .filter_map(Value::as_inline_table)
                .map(|t| row_of(t, "by hand".into()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// True when `id` is registered.
    pub fn has_client(&self, id: &str) -> bool {
        self.clients().iter().any(|c| c.id == id)
    }

    /// Append a `[[auth.clients]]` entry (after the last one, or at the end
    /// of `[auth]`), marked as added by `command` today.
    pub fn add_client(
        &mut self,
        id: &str,
        secret_hash: &str,
        admin: bool,
        models: Option<&[String]>,
        command: &str,
    ) -> Result<(), EditError> {
        if self.has_client(id) {
            return Err(self.refuse(format!(
                "client {id:?} already exists: pick another name, or `tars client rotate {id}` for a new secret"
            )));
        }
        let fields = |t: &mut dyn toml_edit::TableLike| {
            t.insert("id", value(id));
            t.insert("secret_hash", value(secret_hash));
            if admin {
                t.insert("admin", value(true));
            }
            if let Some(m) = models {
                t.insert("models", value(m.iter().collect::<Array>()));
            }
        };
        let root = self.doc.as_table_mut();
        if !root.contains_key("auth") {
            let mut auth = Table::new();
            auth.set_implicit(true);
            root.insert("auth", Item::Table(auth));
        }
        let Some(auth) = root.get_mut("auth").and_then(Item::as_table_like_mut) else {
            return Err(self.refuse("`auth` is not a table: fix it by hand first"));
        };
        if !auth.contains_key("clients") {
            auth.insert("clients", Item::ArrayOfTables(ArrayOfTables::new()));
        }
        let date = time::OffsetDateTime::now_utc().date();
        match auth.get_mut("clients") {
            Some(Item::ArrayOfTables(aot)) => {
                let mut t = Table::new();
                fields(&mut t);
                t.decor_mut()
                    .set_prefix(format!("\n{MARK}{command}` on {date}\n"));
                aot.push(t);
            }
            Some(Item::Value(Value::Array(arr))) => {
                let mut t = InlineTable::new();
                fields(&mut t);
                arr.push(t);
            }
            _ => return Err(self.refuse("is not a list of tables: fix it by hand first")),
        }
        Ok(())
    }

    /// Remove the entry of `id`.
    pub fn remove_client(&mut self, id: &str) -> Result<(), EditError> {
        let missing = self.missing(id);
        match self.clients_mut() {
            Some(Item::ArrayOfTables(aot)) => {
                let i = (0..aot.len())
                    .find(|&i| aot.get(i).and_then(|t| t.get("id")?.as_str()) == Some(id))
                    .ok_or(missing)?;
                aot.remove(i);
            }
            Some(Item::Value(Value::Array(arr))) => {
                let i = arr
                    .iter()
                    .position(|v| {
                        v.as_inline_table()
                            .and_then(|t| t.get("id")?.as_str())
                            .is_some_and(|x| x == id)
                    })
                    .ok_or(missing)?;
                arr.remove(i);
            }
            _ => return Err(missing),
        }
        Ok(())
    }

    /// Replace the `secret_hash` of `id` (its place and spacing kept).
    pub fn set_secret_hash(&mut self, id: &str, secret_hash: &str) -> Result<(), EditError> {
        let missing = self.missing(id);
        let entry: &mut dyn toml_edit::TableLike = match self.clients_mut() {
            Some(Item::ArrayOfTables(aot)) => aot
                .iter_mut()
                .find(|t| t.get("id").and_then(Item::as_str) == Some(id))
                .map(|t| t as &mut dyn toml_edit::TableLike)
                .ok_or(missing)?,
            Some(Item::Value(Value::Array(arr))) => arr
                .iter_mut()
                .filter_map(Value::as_inline_table_mut)
                .find(|t| t.get("id").and_then(Value::as_str) == Some(id))
                .map(|t| t as &mut dyn toml_edit::TableLike)
                .ok_or(missing)?,
            _ => return Err(missing),
        };
        let decor = entry
            .get("secret_hash")
            .and_then(Item::as_value)
            .map(|v| v.decor().clone());
        let mut new = Value::from(secret_hash);
        if let Some(d) = decor {
            *new.decor_mut() = d;
        }
        entry.insert("secret_hash", Item::Value(new));
        Ok(())
    }

    fn missing(&self, id: &str) -> EditError {
        self.refuse(format!(
            "no client {id:?}: `tars client list` shows the registered ones"
        ))
    }

    fn clients_mut(&mut self) -> Option<&mut Item> {
        self.doc
            .get_mut("auth")
            .and_then(Item::as_table_like_mut)?
            .get_mut("clients")
    }

    /// The file's text as it would be written now.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// Validate the edited text as the gateway would load it and, only if
    /// it does, replace the file atomically. Returns what it validated to.
    pub fn save(&self) -> Result<Config, EditError> {
        let text = self.text();
        let cfg = super::from_file_text(&self.path, &text, &env)?;
        write_atomic(&self.real, text.as_bytes()).map_err(|source| EditError::Write {
            path: self.shown(),
            source,
        })?;
        Ok(cfg)
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn row_of(t: &dyn toml_edit::TableLike, origin: String) -> ClientRow {
    let models = t.get("models").and_then(Item::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    });
    ClientRow {
        id: t.get("id").and_then(Item::as_str).unwrap_or("").to_string(),
        admin: t.get("admin").and_then(Item::as_bool).unwrap_or(false),
        models,
        origin,
    }
}

/// `tars client add, 2026-12-02` out of the marker comment, or `by hand`.
fn origin_of(t: &Table) -> String {
    let prefix = t.decor().prefix().and_then(|p| p.as_str()).unwrap_or("");
    prefix
        .lines()
        .rev()
        .find_map(|l| {
            let rest = l.trim().strip_prefix(MARK)?;
            let (command, rest) = rest.split_once('`')?;
            let date = rest.trim().strip_prefix("on ").unwrap_or("").trim();
            Some(format!("{command}, {date}"))
        })
        .unwrap_or_else(|| "by hand".into())
}

/// Replace `real` with `bytes`: a new file beside it with the same mode
/// (and owner, when permitted), fsynced, renamed over it, the folder
/// fsynced. Refused before anything is created when `real` itself is not
/// writable by this process (a rename would replace it anyway).
fn write_atomic(real: &Path, bytes: &[u8]) -> io::Result<()> {
    let meta = fs::metadata(real)?;
    OpenOptions::new().write(true).open(real)?;
    let mode = meta.mode() & 0o7777;
    let dir = match real.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = real.file_name().map_or_else(
        || "config.toml".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // Owner first (a chown may clear set-id bits), then the mode.
        let _ = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()));
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, real)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$W7SVXUgB0qYkPVTOd1yHwbDztX/AU+jEV8qUWFI0e1Q";

    fn open_text(text: &str) -> (tempfile::TempDir, PathBuf, ConfigFile) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        fs::write(&p, text).unwrap();
        let f = ConfigFile::open(&p).unwrap();
        (dir, p, f)
    }

    const BASE: &str = "# top comment\n[tls]\nenabled = false  # plain\n\n[auth]\n# key\nsecret = \"0123456789abcdef0123456789abcdef\"\n\n[[auth.clients]]\n# first\nid   = \"a\"\nsecret_hash = \"HASH\"\n\n[ollama]\n# trailing table\nmodel = \"m\"\n";

    fn base() -> String {
        BASE.replace("HASH", HASH)
    }

    #[test]
    fn unchanged_round_trip_is_byte_identical() {
        let (_d, _p, f) = open_text(&base());
        assert_eq!(f.text(), base());
    }

    #[test]
    fn add_goes_after_the_last_client_and_keeps_the_rest() {
        let (_d, p, mut f) = open_text(&base());
        f.add_client("b", HASH, true, Some(&["m".into()]), "tars client add")
            .unwrap();
        f.save().unwrap();
        let text = fs::read_to_string(&p).unwrap();
        let date = time::OffsetDateTime::now_utc().date();
        let entry = format!(
            "\n# added by `tars client add` on {date}\n[[auth.clients]]\nid = \"b\"\nsecret_hash = \"{HASH}\"\nadmin = true\nmodels = [\"m\"]\n"
        );
        let at = base().find("\n[ollama]").unwrap();
        let mut want = base();
        want.insert_str(at, &entry);
        assert_eq!(text, want);
        let rows = ConfigFile::open(&p).unwrap().clients();
        assert_eq!(rows[1].origin, format!("tars client add, {date}"));
        assert_eq!(rows[0].origin, "by hand");
        assert!(rows[1].admin && rows[1].models == Some(vec!["m".into()]));
    }

    #[test]
    fn remove_and_rotate_touch_only_their_entry() {
        let (_d, _p, mut f) = open_text(&base());
        f.add_client("b", HASH, false, None, "tars pair").unwrap();
        let with_b = f.text();
        let other = HASH.replace("W7S", "X7S");
        f.set_secret_hash("a", &other).unwrap();
        assert_eq!(f.text(), with_b.replacen(HASH, &other, 1));
        f.remove_client("b").unwrap();
        assert_eq!(f.text(), base().replacen(HASH, &other, 1));
        assert!(matches!(
            f.remove_client("zz"),
            Err(EditError::Clients { .. })
        ));
    }

    #[test]
    fn a_file_without_auth_gets_one_table() {
        let (_d, _p, mut f) = open_text("[tls]\nenabled = false\n");
        f.add_client("x", HASH, false, None, "tars client add")
            .unwrap();
        let t = f.text();
        assert!(t.starts_with("[tls]\nenabled = false\n"), "{t}");
        assert!(!t.contains("[auth]\n"), "{t}");
        assert_eq!(t.matches("[[auth.clients]]").count(), 1, "{t}");
        let d: toml::Table = t.parse().unwrap();
        assert_eq!(d["auth"]["clients"][0]["id"].as_str(), Some("x"));
    }

    #[test]
    fn inline_client_lists_are_edited_too() {
        let text = format!("[tls]\nenabled = false\n[auth]\nclients = [{{ id = \"a\", secret_hash = \"{HASH}\" }}]\n");
        let (_d, _p, mut f) = open_text(&text);
        f.add_client("b", HASH, false, None, "x").unwrap();
        assert_eq!(f.clients().len(), 2);
        f.set_secret_hash("b", &HASH.replace("W7S", "X7S")).unwrap();
        f.remove_client("a").unwrap();
        let rows = f.clients();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "b");
    }
}
