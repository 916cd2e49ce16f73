//! `tars pair [--client NAME] [--ttl-mins 10] [--host NAME]`: a one-time
//! code a phone redeems at `/pair` for a token pair, printed grouped for
//! reading aloud, with the URL `https://HOST:PORT/pair#CODE`, that URL as a
//! QR code and the certificate's SHA-256 fingerprint (so the phone's user
//! can compare it with what the browser shows for a self-signed
//! certificate).
//!
//! Without `--client` the device gets a client of its own: a fresh
//! `device-xxxx` is registered in config.toml now (marked "tars pair"; its
//! secret is random and shown to nobody, so it signs in by pairing only) and
//! appears in `tars client list`, removable like any client. The code goes
//! to `{data_dir}/pairing/` hashed ([`crate::auth::pairing`]), where the
//! running gateway finds it.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use super::{base_url, failed, new_secret, qr, refuse};
use crate::auth::pairing::{self, PairRecord};
use crate::config::edit::{ConfigFile, EditError};
use crate::config::{valid_client_id, Config};

/// `tars pair` options.
#[derive(Debug, clap::Args)]
pub struct PairArgs {
    /// Pair as this registered client (default: a new client `device-xxxx`).
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    /// Minutes the code stays valid (it also stops working once used).
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub ttl_mins: u64,
    /// Host name or address the phone reaches the gateway at (default: the
    /// listen address, else the first of server.allowed_hosts, else this
    /// machine's LAN address).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

/// Characters of the `xxxx` in `device-xxxx`: no look-alikes.
const DEVICE_CHARS: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";

fn device_name() -> String {
    let tail: String = (0..4)
        .map(|_| DEVICE_CHARS[rand::random_range(0..DEVICE_CHARS.len())] as char)
        .collect();
    format!("device-{tail}")
}

/// Register a fresh `device-xxxx` (secret known to nobody); returns its id.
fn register_device(file: &mut ConfigFile) -> Result<(String, Config), EditError> {
    let id = loop {
        let id = device_name();
        if !file.has_client(&id) {
            break id;
        }
    };
    let phc = crate::auth::clients::hash_secret(new_secret().as_bytes()).map_err(|e| {
        EditError::Clients {
            path: String::new(),
            message: format!("cannot hash a secret: {e}"),
        }
    })?;
    file.add_client(&id, &phc, false, None, "tars pair")?;
    let cfg = file.save()?;
    Ok((id, cfg))
}

/// The served certificate's fingerprint, or why there is none.
fn fingerprint(cfg: &Config) -> Result<String, String> {
    if !cfg.tls.enabled {
        return Err(
            "tls.enabled = false: no certificate; the tokens cross the LAN unencrypted".into(),
        );
    }
    if !cfg.tls.cert.exists() {
        return Err(format!(
            "{} does not exist yet: start the gateway once (it makes one), then run tars pair again to see its fingerprint",
            cfg.tls.cert.display()
        ));
    }
    crate::tls::load_certified_key(&cfg.tls.cert, &cfg.tls.key)
        .map(|ck| crate::tls::fingerprint(&ck.cert[0]))
        .map_err(|e| format!("{}: {e}", cfg.tls.cert.display()))
}

/// Run `tars pair` against the config file at `path`.
pub fn run(path: &Path, args: &PairArgs) -> ExitCode {
    let mut file = match ConfigFile::open(path) {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    let (client, cfg, new_device) = match &args.client {
        Some(name) => {
            if !valid_client_id(name) {
                return refuse(format!(
                    "--client {name:?}: use 1-128 characters of A-Z a-z 0-9 . _ -"
                ));
            }
            if !file.has_client(name) {
                return refuse(format!(
                    "{}: key `auth.clients`: no client {name:?}: add it with `tars client add {name}`, or leave --client out to pair a new device",
                    path.display()
                ));
            }
            match crate::config::load(path) {
                Ok(cfg) => (name.clone(), cfg, false),
                Err(e) => return refuse(e),
            }
        }
        None => match register_device(&mut file) {
            Ok((id, cfg)) => (id, cfg, true),
            Err(e @ EditError::Write { .. }) => return failed(e),
            Err(e) => return refuse(e),
        },
    };
    let now = crate::auth::tokens::now_secs();
    let data_dir = &cfg.server.data_dir;
    pairing::prune(data_dir, now);
    let code = pairing::new_code();
    let record = PairRecord {
        client_id: client.clone(),
        expires_at: now + args.ttl_mins * 60,
    };
    if let Err(e) = pairing::store(data_dir, &code, &record) {
        if new_device {
            // Leave no device behind that nobody can pair.
            if let Ok(mut f) = ConfigFile::open(path) {
                if f.remove_client(&client).is_ok() {
                    let _ = f.save();
                }
            }
        }
        return failed(format!(
            "{}: key `server.data_dir`: cannot store the pairing code in {}: {e}",
            path.display(),
            pairing::folder(data_dir).display()
        ));
    }
    let url = format!("{}/pair#{code}", base_url(&cfg, args.host.as_deref()));
    if new_device {
        println!(
            "new client {client:?} registered in {} for this device",
            path.display()
        );
    }
    println!(
        "pairing code for {client:?} (works once, for {} minutes):",
        args.ttl_mins
    );
    println!();
    println!("    {code}");
    println!();
    println!("On the phone, scan this or open {url}");
    match qr::render(&url, std::io::stdout().is_terminal()) {
        Ok(block) => print!("{block}"),
        Err(e) => println!("({e})"),
    }
    match fingerprint(&cfg) {
        Ok(fp) => {
            println!("certificate sha256: {fp}");
            println!("The browser warns about a self-signed certificate: continue only if it shows this fingerprint.");
        }
        Err(why) => println!("certificate: {why}"),
    }
    println!(
        "The device then appears in `tars client list`; `tars client remove {client}` cuts it off."
    );
    ExitCode::SUCCESS
}
