//! The `tars` command line: `tars` (serve), `check-config`, `gen-cert`, and
//! the helper commands of later modules. `main.rs` only calls [`main`].
//!
//! Exit codes: 0 success, 1 a runtime failure (port in use, ...), 2 a
//! configuration the gateway refuses.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::state::AppState;

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
}

/// Run the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve_blocking(&cli.config),
        Command::CheckConfig => check_config(&cli.config),
        Command::GenCert { hosts } => gen_cert(&cli.config, &hosts),
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

/// If TLS is on and neither file exists, generate a self-signed pair.
fn ensure_certificate(cfg: &Config) -> Result<(), ExitCode> {
    if cfg.tls.enabled && !cfg.tls.cert.exists() && !cfg.tls.key.exists() {
        let names = crate::tls::default_names(&[]);
        let fp = crate::tls::generate_self_signed(&cfg.tls.cert, &cfg.tls.key, &names)
            .map_err(refuse)?;
        warn!(
            cert = %cfg.tls.cert.display(),
            names = %names.join(","),
            sha256 = %fp,
            "no certificate found: created a self-signed one; pin this fingerprint on clients"
        );
    }
    Ok(())
}

fn serve_blocking(path: &Path) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::logging::init(&cfg.log);
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

/// Start the gateway on a validated config and serve until SIGTERM/SIGINT.
pub async fn serve(cfg: Config) -> ExitCode {
    if let Err(code) = ensure_certificate(&cfg) {
        return code;
    }
    let listen = cfg.server.listen;
    let shown = cfg.source.display().to_string();
    let shutdown = CancellationToken::new();
    let state = match AppState::new(cfg, shutdown.clone()) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tars: error: {shown}: key `server.listen`: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    log_start(&state, addr);
    spawn_signal_handler(state.clone());
    crate::server::run(listener, state).await;
    info!("stopped");
    ExitCode::SUCCESS
}

fn log_start(state: &AppState, addr: std::net::SocketAddr) {
    let cfg = state.config();
    match &state.certs {
        Some(store) => info!(
            %addr,
            scheme = "https",
            sha256 = %store.fingerprint(),
            ollama = %cfg.ollama.host,
            model = %cfg.ollama.model,
            "listening"
        ),
        None => {
            warn!("tls.enabled = false: traffic, tokens included, crosses the LAN unencrypted");
            info!(%addr, scheme = "http", ollama = %cfg.ollama.host, model = %cfg.ollama.model, "listening");
        }
    }
}

/// First SIGTERM or SIGINT starts the drain; a second one exits at once.
fn spawn_signal_handler(state: Arc<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        info!("shutdown requested: no new connections, draining");
        state.shutdown.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        warn!("second signal: exiting now");
        std::process::exit(1);
    });
}
