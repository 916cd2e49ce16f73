//! TLS: PEM files → a rustls [`ServerConfig`], self-signed certificate
//! generation, and a certificate resolver whose key pair can be swapped while
//! the server runs (for reload and renewed certificates).
//!
//! Only TLS 1.3 and 1.2 with rustls' forward-secret (ECDHE) suites are
//! offered; ALPN is `http/1.1` because WebSocket upgrades need HTTP/1.1.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Why the certificate or key could not be used. Renders as one line naming
/// the file and the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("key `tls.cert`: {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("key `tls.key`: {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("key `tls.cert`: {path}: cannot create the self-signed certificate: {message}")]
    Generate { path: PathBuf, message: String },
}

/// Load a certificate chain and its private key from PEM files.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: cert.to_path_buf(),
        message,
    };
    let key_err = |message: String| TlsError::Key {
        path: key.to_path_buf(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(format!("cannot read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("malformed PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err(
            "no CERTIFICATE block found: supply a PEM certificate chain".into(),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        key_err(format!(
            "no usable private key ({e}): supply a PEM PKCS#8, RSA or EC key"
        ))
    })?;
    let signer = provider::sign::any_supported_type(&key_der)
        .map_err(|e| key_err(format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(_) => Err(key_err(format!(
            "does not match the certificate in {}",
            cert.display()
        ))),
    }
}

/// Serves whatever certificate is currently stored; [`CertStore::replace`]
/// swaps it for new handshakes while open connections keep theirs.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(ck: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(ck),
        })
    }

    pub fn replace(&self, ck: CertifiedKey) {
        self.current.store(Arc::new(ck));
    }

    /// SHA-256 fingerprint of the leaf certificate being served.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.current.load().cert[0])
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A rustls server configuration that resolves through `store`.
pub fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// `AB:CD:...` SHA-256 of a DER certificate, as browsers show it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(95);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// The names a generated certificate covers: the given hosts plus this
/// machine's host name, `localhost`, `127.0.0.1` and `::1`.
pub fn default_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = extra.to_vec();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
            if !h.contains('.') {
                names.push(format!("{h}.local"));
            }
        }
    }
    for n in ["localhost", "127.0.0.1", "::1"] {
        names.push(n.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Lifetime of a generated certificate: ten years, since nobody renews a
/// self-signed LAN certificate by hand (clients pin its fingerprint).
pub const SELF_SIGNED_DAYS: i64 = 3650;

/// Create a self-signed certificate for `names` at `cert` and `key` (mode
/// 0600). Never overwrites: an existing file is an error. Returns the
/// certificate's SHA-256 fingerprint.
pub fn generate_self_signed(cert: &Path, key: &Path, names: &[String]) -> Result<String, TlsError> {
    let gen_err = |message: String| TlsError::Generate {
        path: cert.to_path_buf(),
        message,
    };
    let signing_key = rcgen::KeyPair::generate().map_err(|e| gen_err(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(names.to_vec()).map_err(|e| gen_err(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "T.A.R.S. gateway (self-signed)");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    let c = params
        .self_signed(&signing_key)
        .map_err(|e| gen_err(e.to_string()))?;
    for p in [cert, key] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| gen_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        if p.exists() {
            return Err(gen_err(format!(
                "{} already exists; it is never overwritten",
                p.display()
            )));
        }
    }
    write_new(key, signing_key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| gen_err(format!("writing {}: {e}", key.display())))?;
    write_new(cert, c.pem().as_bytes(), 0o644)
        .map_err(|e| gen_err(format!("writing {}: {e}", cert.display())))?;
    Ok(fingerprint(c.der()))
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_then_load_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c/t.crt"), dir.path().join("c/t.key"));
        let fp = generate_self_signed(&c, &k, &default_names(&["nas.example".into()])).unwrap();
        assert_eq!(fp.len(), 95);
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ck = load_certified_key(&c, &k).unwrap();
        assert_eq!(fingerprint(&ck.cert[0]), fp);
        let before = std::fs::read(&c).unwrap();
        assert!(generate_self_signed(&c, &k, &["x".into()]).is_err());
        assert_eq!(std::fs::read(&c).unwrap(), before);
    }

    #[test]
    fn malformed_files_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("t.crt"), dir.path().join("t.key"));
        std::fs::write(&c, "not a pem").unwrap();
        std::fs::write(&k, "not a pem").unwrap();
        let e = load_certified_key(&c, &k).unwrap_err().to_string();
        assert!(e.starts_with("key `tls.cert`"), "{e}");
    }
}
