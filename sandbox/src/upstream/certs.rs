//! The credentials of the upstream control plane, issued by the sandbox's CA (the one its
//! kubeconfig trusts) into `<state-dir>/upstream/pki`:
//!
//! - the service-account signing key (kept: tokens already issued stay valid across restarts);
//! - one client certificate per component, named as kubeadm names them, so the real
//!   authorizers (RBAC's bootstrap roles, the Node authorizer) see the identities they know;
//! - the kubelet API's serving certificate for the node address;
//! - the static token file that keeps the sandbox's admin token valid (the kubeconfig stays
//!   the same for both control planes).
//!
//! Certificates are issued afresh at every start, so they always match the current CA.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::bootstrap::NODE_NAME;
use crate::node::NODE_IP;
use crate::pki::{Pki, PkiError, write_private};

/// One client identity: certificate and key files.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Every file the components are started with.
#[derive(Debug, Clone)]
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    pub tokens: PathBuf,
    /// The API server's client certificate towards the kubelet API.
    pub apiserver_kubelet: Identity,
    pub controller_manager: Identity,
    pub scheduler: Identity,
    /// The node's kubelet (`system:node:NAME` in `system:nodes`, for the Node authorizer).
    pub node: Identity,
    /// The node's kube-proxy (`system:kube-proxy`, bound to `system:node-proxier`).
    pub proxy: Identity,
    /// The kubelet API's serving certificate.
    pub kubelet_serving: Identity,
}

/// The common name the kubelet API accepts: the API server's client certificate.
pub const APISERVER_KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

fn issuer(pki: &Pki) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key_pem = pki.ca_key_pem.as_deref().ok_or_else(|| PkiError::Pem {
        path: "ca.key".into(),
        detail: "the CA key is missing".into(),
    })?;
    let key = KeyPair::from_pem(key_pem)?;
    // The CA as `pki` made it: the same name and key identify the same issuer, so what is
    // signed here verifies against ca.crt.
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "tether-sandbox-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(Issuer::new(ca, key))
}

fn issue(
    issuer: &Issuer<'static, KeyPair>,
    dir: &Path,
    file: &str,
    common_name: &str,
    organization: Option<&str>,
    names: &[String],
    usage: ExtendedKeyUsagePurpose,
) -> Result<Identity, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer)?;
    let id = Identity {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    write_private(&id.cert, &id.cert_pem)?;
    write_private(&id.key, &id.key_pem)?;
    Ok(id)
}

impl Certs {
    /// Issues the certificates into `<state_dir>/upstream/pki` (creating the service-account
    /// key once).
    pub fn issue(pki: &Pki, state_dir: &Path) -> Result<Certs, PkiError> {
        let dir = state_dir.join("upstream/pki");
        fs::create_dir_all(&dir).map_err(|source| PkiError::Io {
            path: dir.clone(),
            source,
        })?;
        let ca = dir.join("ca.crt");
        write_private(&ca, &pki.ca_pem)?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        let key = match fs::read_to_string(&sa_key) {
            Ok(pem) => KeyPair::from_pem(&pem)?,
            Err(_) => {
                let key = KeyPair::generate()?;
                write_private(&sa_key, &key.serialize_pem())?;
                key
            }
        };
        write_private(&sa_pub, &key.public_key_pem())?;
        let tokens = dir.join("tokens.csv");
        // token,user,uid,"group": the admin of the builtin control plane, as cluster-admin.
        write_private(
            &tokens,
            &format!("{},admin,admin,\"system:masters\"\n", pki.admin_token),
        )?;

        let issuer = issuer(pki)?;
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        let node_user = format!("system:node:{NODE_NAME}");
        Ok(Certs {
            apiserver_kubelet: issue(
                &issuer,
                &dir,
                "apiserver-kubelet-client",
                APISERVER_KUBELET_CLIENT,
                Some("system:masters"),
                &[],
                client.clone(),
            )?,
            controller_manager: issue(
                &issuer,
                &dir,
                "controller-manager",
                "system:kube-controller-manager",
                None,
                &[],
                client.clone(),
            )?,
            scheduler: issue(
                &issuer,
                &dir,
                "scheduler",
                "system:kube-scheduler",
                None,
                &[],
                client.clone(),
            )?,
            node: issue(
                &issuer,
                &dir,
                "node",
                &node_user,
                Some("system:nodes"),
                &[],
                client.clone(),
            )?,
            proxy: issue(
                &issuer,
                &dir,
                "kube-proxy",
                "system:kube-proxy",
                None,
                &[],
                client,
            )?,
            kubelet_serving: issue(
                &issuer,
                &dir,
                "kubelet",
                &node_user,
                Some("system:nodes"),
                &[NODE_IP.to_string(), NODE_NAME.to_string()],
                ExtendedKeyUsagePurpose::ServerAuth,
            )?,
            dir,
            ca,
            sa_key,
            sa_pub,
            tokens,
        })
    }

    /// A kubeconfig for a component: the API server at `server`, this identity's files.
    pub fn kubeconfig(&self, name: &str, server: &str, id: &Identity) -> Result<PathBuf, PkiError> {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {name}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: {name}\n  context:\n    cluster: sandbox\n    user: {name}\ncurrent-context: {name}\n",
            ca = self.ca.display(),
            cert = id.cert.display(),
            key = id.key.display(),
        );
        write_private(&path, &text)?;
        Ok(path)
    }
}
