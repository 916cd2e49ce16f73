//! The `tars` command line: `tars` (serve), `check-config`, `gen-cert`, and
//! the helper commands of later modules. `main.rs` only calls [`main`].
//!
//! Serving is [`crate::Server`] plus what only a process owns: the logging
//! subscriber, the runtime, the listener (bound or passed by systemd),
//! signals (SIGTERM/SIGINT drain, a second one exits 1, SIGHUP reloads), the
//! systemd notifications, and exit codes: 0 success, 1 a runtime failure
//! (port in use, ...), 2 a configuration the gateway refuses.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tracing::{error, info, warn};

use crate::app::{Handle, Server};
use crate::config::{self, Config};

/// T.A.R.S. gateway: streams a local Ollama's answers to LAN clients over WSS.
#[derive(Debug, Parser)]
#[command(name = "tars", version, about)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "config.toml",
        value_name = "PATH"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default when no command is given).
    Serve,
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// Create a self-signed certificate at tls.cert / tls.key.
    GenCert {
        /// Extra host names or IP addresses the certificate must cover.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
    },
    /// Read a client secret on stdin (one line) and print its argon2id hash
    /// for `secret_hash` in `[[auth.clients]]`.
    HashSecret,
    /// Mint an access/refresh token pair offline with the configured key and
    /// print it as JSON.
    Token {
        /// The client the tokens are for (registered, or any with open_enrollment).
        #[arg(long, value_name = "ID")]
        client_id: String,
        /// Access token lifetime in hours (default: auth.access_ttl_hours).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=8784))]
        ttl_hours: Option<u64>,
    },
    /// Revoke every token a client holds now (a lost or stolen device); it
    /// can sign in again with its secret. Works offline: a running gateway
    /// on the same data_dir applies it within a second.
    Revoke {
        /// The client id to cut off.
        #[arg(long, value_name = "ID")]
        client: String,
    },
    /// Register, list, remove or re-key clients in config.toml (no hand-editing).
    #[command(subcommand)]
    Client(crate::enroll::clients::ClientCommand),
    /// Print a one-time code, URL and QR code that let a phone in (no typing of secrets).
    Pair(crate::enroll::pair::PairArgs),
    /// Ask every configured upstream now and print a table: name, url, api,
    /// up, latency, models. Exit 0 when at least one is up, 1 when none is.
    Upstreams,
    /// Chat with a gateway from the terminal: prompts from stdin, streamed answers on stdout.
    Chat(crate::client::ChatArgs),
}

/// Run the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve_blocking(&cli.config),
        Command::CheckConfig => check_config(&cli.config),
        Command::GenCert { hosts } => gen_cert(&cli.config, &hosts),
        Command::HashSecret => hash_secret(),
        Command::Token {
            client_id,
            ttl_hours,
        } => token(&cli.config, &client_id, ttl_hours),
        Command::Revoke { client } => revoke(&cli.config, &client),
        Command::Client(cmd) => crate::enroll::clients::run(&cli.config, cmd),
        Command::Pair(args) => crate::enroll::pair::run(&cli.config, &args),
        Command::Upstreams => upstreams(&cli.config),
        Command::Chat(args) => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(crate::client::run(args)),
            Err(e) => {
                eprintln!("tars: error: cannot start the async runtime: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// `tars upstreams`.
fn upstreams(path: &Path) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tars: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let rows = rt.block_on(crate::upstream::survey::survey(&cfg));
    print!("{}", crate::upstream::survey::table(&rows));
    if rows.iter().any(|r| r.up.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Print a refusal and return exit code 2.
pub fn refuse(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tars: error: {msg}");
    ExitCode::from(2)
}

/// Load the config or print its one-line error.
pub fn load_config(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(refuse)
}

fn check_config(path: &Path) -> ExitCode {
    let raw = match config::load_raw(path, &|k| std::env::var(k).ok()) {
        Ok(raw) => raw,
        Err(e) => return refuse(e),
    };
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The certificate and key must load as `tars` would load them; missing
    // files are fine (serving generates them).
    if cfg.tls.enabled && cfg.tls.cert.exists() && cfg.tls.key.exists() {
        if let Err(source) = crate::tls::load_certified_key(&cfg.tls.cert, &cfg.tls.key) {
            let path = cfg.source.display().to_string();
            return refuse(crate::state::StartError::Tls { path, source });
        }
    }
    print!("{}", config::redacted_toml(&raw));
    for w in &cfg.warnings {
        eprintln!("tars: warning: {w}");
    }
    for u in &cfg.upstreams {
        let models = u
            .models
            .as_ref()
            .map_or("discovered".to_string(), |m| m.join(","));
        let trust = match (&u.ca_file, u.url.starts_with("https://")) {
            (Some(f), _) => format!(" ca_file={}", f.display()),
            (None, true) => " ca=public".to_string(),
            (None, false) => String::new(),
        };
        eprintln!(
            "tars: upstream {} {} api={} max_concurrent={} weight={} models={models}{trust}",
            u.name,
            u.url,
            u.api.as_str(),
            u.max_concurrent,
            u.weight
        );
    }
    eprintln!("tars: {} is valid", path.display());
    ExitCode::SUCCESS
}

fn gen_cert(path: &Path, hosts: &[String]) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let names = crate::tls::default_names(hosts);
    match crate::tls::generate_self_signed(&cfg.tls.cert, &cfg.tls.key, &names) {
        Ok(fp) => {
            println!("certificate: {}", cfg.tls.cert.display());
            println!("key:         {}", cfg.tls.key.display());
            println!("names:       {}", names.join(", "));
            println!("sha256:      {fp}");
            ExitCode::SUCCESS
        }
        Err(e) => refuse(e),
    }
}

/// `tars hash-secret`: one line of stdin → argon2id PHC string on stdout.
fn hash_secret() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        return refuse(format!("cannot read the secret from stdin: {e}"));
    }
    let secret = line.strip_suffix('\n').unwrap_or(&line);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return refuse("no secret on stdin: pipe one in, e.g. `openssl rand -hex 16 | tee client.secret | tars hash-secret`");
    }
    match crate::auth::clients::hash_secret(secret.as_bytes()) {
        Ok(phc) => {
            println!("{phc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tars: error: cannot hash the secret: {e}");
            ExitCode::from(1)
        }
    }
}

/// `tars token`: mint a pair offline with the server's key (loading or
/// creating it exactly as the server does; the revocation log is not touched).
fn token(path: &Path, client_id: &str, ttl_hours: Option<u64>) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !config::valid_client_id(client_id) {
        return refuse(format!(
            "--client-id {client_id:?}: use 1-128 characters of A-Z a-z 0-9 . _ -"
        ));
    }
    let policy = crate::auth::clients::Policy::from_config(&cfg.auth);
    if !policy.permits(client_id) {
        return refuse(format!(
            "{}: client {client_id:?} is not in [[auth.clients]] and auth.open_enrollment is false: the gateway would refuse its tokens",
            path.display()
        ));
    }
    let keys = match crate::auth::token_keys(&cfg) {
        Ok(k) => k,
        Err(e) => return refuse(format!("{}: {e}", path.display())),
    };
    let access_ttl = ttl_hours.map_or(cfg.auth.access_ttl, |h| {
        std::time::Duration::from_secs(h * 3600)
    });
    let who = crate::auth::Subject {
        client_id: client_id.to_string(),
        ..Default::default()
    };
    let at = crate::auth::Issue::new_family(None);
    match keys.issue_pair(&who, access_ttl, cfg.auth.refresh_ttl, at) {
        Ok(pair) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&pair).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tars: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Load the config, set up logging and the runtime, and serve.
fn serve_blocking(path: &Path) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _log_guard = match crate::logging::init(&cfg.log) {
        Ok(g) => g,
        Err(e) => return refuse(format_args!("{}: {e}", cfg.source.display())),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tars: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(serve(cfg))
}

/// Serve `cfg` until SIGTERM/SIGINT, with SIGHUP reload and systemd glue.
async fn serve(cfg: Config) -> ExitCode {
    let listen = cfg.server.listen;
    let shown = cfg.source.display().to_string();
    let server = match Server::new(cfg) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    let inherited = match crate::systemd::inherited_listener() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tars: error: cannot use the socket passed by systemd (LISTEN_FDS): {e}");
            return ExitCode::from(1);
        }
    };
    let bound = match inherited {
        Some(std_listener) => tokio::net::TcpListener::from_std(std_listener),
        None => tokio::net::TcpListener::bind(listen).await,
    };
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tars: error: {shown}: key `server.listen`: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    let handle = server.handle();
    // Signal handlers first: once "listening" is logged (or systemd told
    // READY), a SIGTERM, SIGINT or SIGHUP must never meet the default action.
    let shutdown = shutdown_on_signal();
    spawn_sighup(handle.clone());
    crate::systemd::spawn_tasks(handle.clone());
    crate::systemd::ready(&handle.status_line());
    match server.run(listener, shutdown).await {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) if e.is_config() => refuse(e),
        Err(e) => {
            eprintln!("tars: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// A future that resolves at the first SIGTERM or SIGINT (after telling
/// systemd the drain begins); a second signal exits at once with 1. The
/// handlers are installed before this returns (not inside the spawned task,
/// which may not have run yet when a signal arrives).
fn shutdown_on_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::spawn(async move {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                crate::systemd::stopping();
                let _ = tx.send(());
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                warn!("second signal: exiting now");
                std::process::exit(1);
            });
        }
        _ => {
            error!("cannot install signal handlers");
            drop(tx);
        }
    }
    async move {
        // Without handlers the sender is gone: serve until killed.
        if rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Reload on every SIGHUP, with the systemd notifications around it.
fn spawn_sighup(server: Handle) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        error!("cannot install the SIGHUP handler: reload disabled");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = server.draining() => return,
            }
            crate::systemd::reloading();
            // Logged and counted by the server; the old config stays on error.
            let _ = server.reload().await;
            crate::systemd::ready(&server.status_line());
        }
    });
}

/// `tars revoke --client X`: set X's cutoff in data_dir (see
/// `auth::cutoffs`), whether or not a gateway is running.
fn revoke(path: &Path, client_id: &str) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !config::valid_client_id(client_id) {
        return refuse(format!(
            "--client {client_id:?}: use 1-128 characters of A-Z a-z 0-9 . _ -"
        ));
    }
    match crate::auth::revoke_client_offline(&cfg, client_id) {
        Ok((file, at_us)) => {
            let secs = i64::try_from(at_us / 1_000_000).unwrap_or(0);
            let when = time::OffsetDateTime::from_unix_timestamp(secs)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            println!(
                "client {client_id:?}: every token issued before {when} is refused (written to {}); \
                 a running gateway applies it within {} s",
                file.display(),
                crate::auth::DISK_POLL_EVERY.as_secs().max(1)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "tars: error: {}: key `server.data_dir`: cannot record the cutoff: {e}",
                path.display()
            );
            ExitCode::from(1)
        }
    }
}
