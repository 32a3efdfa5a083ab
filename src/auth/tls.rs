//! TLS on the gRPC port, and the system callers known by their client certificates (mutual
//! TLS): a certificate signed by the configured client CA whose subject is registered in
//! `[[auth.certificate_callers]]` is that caller. A certificate that verifies but is not
//! registered is refused (`CLIENT_CERTIFICATE_UNKNOWN`): being signed by the CA is not enough.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;

use super::{AuthError, Caller, Role};
use crate::domain::values::Code;

/// `[tls]` of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// The server's private key (PEM).
    pub key_file: PathBuf,
    /// The CA that signs client certificates (PEM); set it to accept mutual TLS callers.
    pub client_ca_file: Option<PathBuf>,
}

/// One `[[auth.certificate_callers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateCallerConfig {
    /// The certificate's subject as `balagh` prints it, e.g. `CN=rop-cases, O=Royal Oman Police`.
    pub subject: String,
    /// The caller's id in the audit trail.
    pub id: String,
    pub role: String,
    #[serde(default)]
    pub directorate: Option<String>,
    #[serde(default)]
    pub outlets: Vec<String>,
}

/// The registered certificate callers, by subject.
#[derive(Debug, Clone, Default)]
pub struct CertificateCallers {
    by_subject: HashMap<String, Arc<Caller>>,
}

impl CertificateCallers {
    pub fn from_config(entries: &[CertificateCallerConfig]) -> anyhow::Result<Self> {
        let mut by_subject = HashMap::new();
        for entry in entries {
            let context = || format!("auth.certificate_callers {:?}", entry.subject);
            anyhow::ensure!(
                super::jwt::is_caller_id(&entry.id),
                "{}: id must be 1 to 128 characters of letters, digits and ._-@:",
                context()
            );
            let role = Role::parse(&entry.role)
                .with_context(|| format!("{}: unknown role {:?}", context(), entry.role))?;
            let directorate = entry
                .directorate
                .as_deref()
                .map(|d| Code::parse("directorate", d))
                .transpose()
                .map_err(|v| anyhow::anyhow!("{}: {v}", context()))?;
            anyhow::ensure!(
                role.is_directorate_scoped() == directorate.is_some(),
                "{}: a directorate is required for liaison officers and specialists, and only for them",
                context()
            );
            let outlets = entry
                .outlets
                .iter()
                .map(|o| Code::parse("outlets", o))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|v| anyhow::anyhow!("{}: {v}", context()))?;
            let caller = Arc::new(Caller {
                id: entry.id.clone(),
                role,
                directorate,
                outlets,
            });
            if by_subject
                .insert(normalise_subject(&entry.subject), caller)
                .is_some()
            {
                anyhow::bail!("{}: the subject is registered twice", context());
            }
        }
        Ok(Self { by_subject })
    }

    pub fn is_empty(&self) -> bool {
        self.by_subject.is_empty()
    }

    /// The caller the client's leaf certificate (DER) is registered as.
    pub fn caller_for(&self, leaf: &[u8]) -> Result<Arc<Caller>, AuthError> {
        let subject = subject_of(leaf).ok_or(AuthError::CertificateUnknown)?;
        self.by_subject
            .get(&normalise_subject(&subject))
            .cloned()
            .ok_or(AuthError::CertificateUnknown)
    }
}

/// A certificate's subject, as `x509-parser` prints it (`CN=..., O=...`).
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(certificate.subject().to_string())
}

/// The subject with each `key=value` part trimmed, so the spacing of the configured one does
/// not matter.
fn normalise_subject(subject: &str) -> String {
    subject
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The server side of TLS from the configured files.
pub fn server_tls_config(config: &TlsConfig) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).with_context(|| format!("tls.{what}: cannot read {}", path.display()))
    };
    let identity = Identity::from_pem(
        read(&config.cert_file, "cert_file")?,
        read(&config.key_file, "key_file")?,
    );
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &config.client_ca_file {
        // Optional: callers with a bearer token need no certificate.
        tls = tls
            .client_ca_root(Certificate::from_pem(read(ca, "client_ca_file")?))
            .client_auth_optional(true);
    }
    Ok(tls)
}
