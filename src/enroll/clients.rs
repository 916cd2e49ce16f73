//! `tars client add NAME [--admin] [--models a,b]`, `list`, `remove NAME`,
//! `rotate NAME`. Each validates the edited file as the gateway would load it
//! before writing it atomically (see [`crate::config::edit`]); a refusal is
//! one line on stderr, a non-zero exit and the file unchanged. A secret is
//! printed once and only its argon2id hash is stored.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::{applies_when, base_url, failed, new_secret, refuse};
use crate::config::edit::{ConfigFile, EditError};
use crate::config::valid_client_id;

/// `tars client ...`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client with a new 256-bit secret (printed once).
    Add {
        /// The client id: 1-128 characters of A-Z a-z 0-9 . _ -
        name: String,
        /// May revoke any client's tokens and see /ready details.
        #[arg(long)]
        admin: bool,
        /// Only these models (comma-separated), instead of every allowed one.
        #[arg(long, value_name = "A,B", value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Host name or address shown in the sign-in example.
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
    /// List the registered clients: id, admin, models, how each was added.
    List,
    /// Remove a client: its tokens and sessions end.
    Remove { name: String },
    /// Give a client a new secret (printed once); the old one stops working.
    Rotate {
        name: String,
        /// Host name or address shown in the sign-in example.
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
}

/// Run `tars client ...` against the config file at `path`.
pub fn run(path: &Path, cmd: ClientCommand) -> ExitCode {
    match cmd {
        ClientCommand::Add {
            name,
            admin,
            models,
            host,
        } => add(path, &name, admin, models.as_deref(), host.as_deref()),
        ClientCommand::List => list(path),
        ClientCommand::Remove { name } => remove(path, &name),
        ClientCommand::Rotate { name, host } => rotate(path, &name, host.as_deref()),
    }
}

fn check_name(name: &str) -> Result<(), ExitCode> {
    if valid_client_id(name) {
        Ok(())
    } else {
        Err(refuse(format!(
            "client name {name:?}: use 1-128 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// Open the file, or print why not.
fn open(path: &Path) -> Result<ConfigFile, ExitCode> {
    ConfigFile::open(path).map_err(refuse)
}

/// Report an [`EditError`] with the right exit code.
fn edit_failed(e: EditError) -> ExitCode {
    match e {
        EditError::Write { .. } => failed(e),
        _ => refuse(e),
    }
}

fn hash(secret: &str) -> Result<String, ExitCode> {
    crate::auth::clients::hash_secret(secret.as_bytes())
        .map_err(|e| failed(format!("cannot hash the secret: {e}")))
}

/// The secret, once, and how to use it.
fn print_secret(cfg: &crate::config::Config, name: &str, secret: &str, host: Option<&str>) {
    let url = base_url(cfg, host);
    println!("secret: {secret}");
    println!();
    println!("Shown once: only its argon2id hash is stored. Keep it now; `tars client rotate {name}` makes a new one.");
    println!("Sign in with client id {name:?} and this secret:");
    println!("  chat page:  {url}/  (client id + secret)");
    let ca = if cfg.tls.enabled {
        format!(" --ca {}", cfg.tls.cert.display())
    } else {
        String::new()
    };
    println!("  terminal:   tars chat --url {url}{ca} --client-id {name} --secret {secret}");
    println!("  HTTP:       POST {url}/auth/token {{\"client_id\": \"{name}\", \"client_secret\": \"{secret}\"}}");
    println!(
        "  Python:     await client.authenticate(client_id=\"{name}\", client_secret=\"{secret}\")"
    );
    println!("{}.", applies_when(cfg));
}

fn add(
    path: &Path,
    name: &str,
    admin: bool,
    models: Option<&[String]>,
    host: Option<&str>,
) -> ExitCode {
    if let Err(c) = check_name(name) {
        return c;
    }
    if let Some(bad) = models.and_then(|m| m.iter().find(|m| m.trim().is_empty())) {
        return refuse(format!(
            "--models has an empty name ({bad:?}): list model names separated by commas"
        ));
    }
    let mut file = match open(path) {
        Ok(f) => f,
        Err(c) => return c,
    };
    let secret = new_secret();
    let phc = match hash(&secret) {
        Ok(h) => h,
        Err(c) => return c,
    };
    if let Err(e) = file.add_client(name, &phc, admin, models, "tars client add") {
        return edit_failed(e);
    }
    let cfg = match file.save() {
        Ok(c) => c,
        Err(e) => return edit_failed(e),
    };
    let models = models.map_or_else(|| "every allowed model".into(), |m| m.join(", "));
    println!(
        "client {name:?} added to {} (admin: {}; models: {models})",
        path.display(),
        if admin { "yes" } else { "no" }
    );
    print_secret(&cfg, name, &secret, host);
    ExitCode::SUCCESS
}

fn list(path: &Path) -> ExitCode {
    let file = match open(path) {
        Ok(f) => f,
        Err(c) => return c,
    };
    let rows = file.clients();
    if rows.is_empty() {
        println!("no registered clients in {} (add one: tars client add NAME, or pair a phone: tars pair)", path.display());
        return ExitCode::SUCCESS;
    }
    let w = rows.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
    println!("{:<w$}  {:<5}  {:<24}  ADDED", "ID", "ADMIN", "MODELS");
    for r in rows {
        let models = r.models.map_or_else(|| "all".into(), |m| m.join(","));
        println!(
            "{:<w$}  {:<5}  {:<24}  {}",
            r.id,
            if r.admin { "yes" } else { "no" },
            models,
            r.origin
        );
    }
    ExitCode::SUCCESS
}

fn remove(path: &Path, name: &str) -> ExitCode {
    if let Err(c) = check_name(name) {
        return c;
    }
    let mut file = match open(path) {
        Ok(f) => f,
        Err(c) => return c,
    };
    if let Err(e) = file.remove_client(name) {
        return edit_failed(e);
    }
    match file.save() {
        Ok(cfg) => {
            println!(
                "client {name:?} removed from {}: its tokens are refused and its sessions end once the gateway applies it; {}.",
                path.display(),
                applies_when(&cfg)
            );
            ExitCode::SUCCESS
        }
        Err(e) => edit_failed(e),
    }
}

fn rotate(path: &Path, name: &str, host: Option<&str>) -> ExitCode {
    if let Err(c) = check_name(name) {
        return c;
    }
    let mut file = match open(path) {
        Ok(f) => f,
        Err(c) => return c,
    };
    if !file.has_client(name) {
        return refuse(format!(
            "{}: key `auth.clients`: no client {name:?}: `tars client list` shows the registered ones",
            path.display()
        ));
    }
    let secret = new_secret();
    let phc = match hash(&secret) {
        Ok(h) => h,
        Err(c) => return c,
    };
    if let Err(e) = file.set_secret_hash(name, &phc) {
        return edit_failed(e);
    }
    match file.save() {
        Ok(cfg) => {
            println!(
                "client {name:?}: new secret written to {}; the old secret, its tokens and sessions stop working once the gateway applies it",
                path.display()
            );
            print_secret(&cfg, name, &secret, host);
            ExitCode::SUCCESS
        }
        Err(e) => edit_failed(e),
    }
}
