//! The sandbox's credentials, kept in its state directory so kubeconfigs stay valid across
//! restarts: a CA, the API server's serving certificate signed by it (for 127.0.0.1,
//! localhost, kubernetes.default.svc and 10.96.0.1), and the admin bearer token.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path} holds no usable PEM: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The names and addresses the serving certificate is valid for.
pub const SERVING_NAMES: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "10.96.0.1",
    "10.244.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_pem: String,
    /// The CA's key, for the certificates the upstream control plane needs (see
    /// [`crate::upstream::certs`]); None for a state directory made before it was kept.
    pub ca_key_pem: Option<String>,
    cert_pem: String,
    key_pem: String,
    pub admin_token: String,
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn generate() -> Result<Pki, PkiError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "tether-sandbox-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let names: Vec<String> = SERVING_NAMES.iter().map(|s| s.to_string()).collect();
    let mut serving = CertificateParams::new(names)?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = serving.signed_by(&key, &issuer)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        ca_key_pem: Some(issuer.key().serialize_pem()),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        admin_token: random_token(),
    })
}

impl Pki {
    /// Loads the credentials from `dir`, creating any that are missing (all of them together:
    /// a serving certificate is only ever paired with the CA that signed it).
    pub fn load_or_create(dir: &Path) -> Result<Pki, PkiError> {
        let paths =
            ["ca.crt", "apiserver.crt", "apiserver.key", "admin.token"].map(|f| dir.join(f));
        let loaded: Vec<Option<String>> =
            paths.iter().map(|p| read(p)).collect::<Result<_, _>>()?;
        if let [Some(ca), Some(cert), Some(key), Some(token)] = loaded.as_slice() {
            return Ok(Pki {
                ca_pem: ca.clone(),
                ca_key_pem: read(&dir.join("ca.key"))?,
                cert_pem: cert.clone(),
                key_pem: key.clone(),
                admin_token: token.trim().to_string(),
            });
        }
        let pki = generate()?;
        for (path, contents) in
            paths
                .iter()
                .zip([&pki.ca_pem, &pki.cert_pem, &pki.key_pem, &pki.admin_token])
        {
            write_private(path, contents)?;
        }
        if let Some(key) = &pki.ca_key_pem {
            write_private(&dir.join("ca.key"), key)?;
        }
        Ok(pki)
    }

    /// As [`Pki::load_or_create`], but with the CA's key: credentials made before the key was
    /// kept are made anew (kubeconfigs written with the old ones stop working).
    pub fn load_or_create_with_ca_key(dir: &Path) -> Result<Pki, PkiError> {
        let pki = Pki::load_or_create(dir)?;
        if pki.ca_key_pem.is_some() {
            return Ok(pki);
        }
        for f in ["ca.crt", "apiserver.crt", "apiserver.key", "admin.token"] {
            let path = dir.join(f);
            fs::remove_file(&path).map_err(|source| PkiError::Io { path, source })?;
        }
        Pki::load_or_create(dir)
    }

    /// The rustls server configuration (HTTP/1.1 only).
    pub fn server_config(&self, dir: &Path) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let cert_path = dir.join("apiserver.crt");
        let pem_err = |path: &Path, e: rustls::pki_types::pem::Error| PkiError::Pem {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| pem_err(&cert_path, e))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| pem_err(&dir.join("apiserver.key"), e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A rustls client configuration trusting the sandbox CA (for `up`'s readiness check).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, PkiError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| PkiError::Pem {
                path: "ca.crt".into(),
                detail: e.to_string(),
            })?;
            roots.add(cert)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path()).unwrap();
        let again = Pki::load_or_create(dir.path()).unwrap();
        assert_eq!(first.ca_pem, again.ca_pem);
        assert_eq!(first.admin_token, again.admin_token);
        assert_eq!(first.admin_token.len(), 64);
        first.server_config(dir.path()).unwrap();
        first.client_config().unwrap();
        let mode = std::fs::metadata(dir.path().join("apiserver.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }
}
