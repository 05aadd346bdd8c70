//! The cluster's certificates: a CA made on first start, the API server's
//! serving certificate (re-issued when its names change) and client
//! certificates (admin, nodes). Everything lives under `<data-dir>/tls/`.
//! Leaf certificates last a year and are renewed on start once they expire
//! within [`RENEW_BEFORE_DAYS`] (as k3s does); the CA lasts ten years.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what}")]
    Certificate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

fn cert_error(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Certificate { what, source }
}

/// A PEM certificate with its PEM private key.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA, able to issue certificates.
pub struct Authority {
    pub cert_pem: String,
    key: KeyPair,
}

/// What one certificate is for.
pub enum Usage<'a> {
    /// TLS server certificate for these DNS names and addresses.
    Server { names: &'a [String] },
    /// TLS client certificate for a user in groups (CN = user, O = groups).
    Client { user: &'a str, groups: &'a [&'a str] },
    /// Both ends of a mutual-TLS link between servers (the store's peers),
    /// for these names and addresses.
    Peer { names: &'a [String] },
}

const CA_YEARS: i16 = 10;
const LEAF_YEARS: i16 = 1;
/// A leaf certificate this close to its expiry is renewed.
pub const RENEW_BEFORE_DAYS: i64 = 90;

/// When a PEM certificate expires (None if it does not parse).
pub fn expires_at(cert_pem: &str) -> Option<jiff::Timestamp> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    jiff::Timestamp::from_second(cert.validity().not_after.timestamp()).ok()
}

/// Whether a certificate expires within `days` (or cannot be read).
pub fn expires_within(cert_pem: &str, days: i64) -> bool {
    expires_at(cert_pem).is_none_or(|at| at.as_second() - jiff::Timestamp::now().as_second() < days * 24 * 3600)
}

impl Authority {
    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Authority, PkiError> {
        Authority::load_or_create_named(dir, "ca")
    }

    /// Loads the CA `<dir>/<stem>.crt/.key`, creating it on first start.
    pub fn load_or_create_named(dir: &Path, stem: &str) -> Result<Authority, PkiError> {
        let (cert_path, key_path) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        if cert_path.exists() && key_path.exists() {
            let cert_pem = read(&cert_path)?;
            let key =
                KeyPair::from_pem(&read(&key_path)?).map_err(cert_error(format!("read {}", key_path.display())))?;
            return Ok(Authority { cert_pem, key });
        }
        let key = KeyPair::generate().map_err(cert_error("generate the CA key"))?;
        let mut params = CertificateParams::default();
        let common_name = format!("kube-{}@{}", stem.replace('-', ""), jiff::Timestamp::now().as_second());
        params.distinguished_name = name(&common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, jiff::Span::new().years(CA_YEARS));
        let cert = params.self_signed(&key).map_err(cert_error("sign the CA certificate"))?;
        write(&key_path, &key.serialize_pem(), 0o600)?;
        write(&cert_path, &cert.pem(), 0o644)?;
        Ok(Authority { cert_pem: cert.pem(), key })
    }

    /// Issues a new certificate and key.
    pub fn issue(&self, common_name: &str, usage: Usage<'_>) -> Result<CertPair, PkiError> {
        self.issue_lasting(common_name, usage, jiff::Span::new().years(LEAF_YEARS))
    }

    /// Issues a certificate valid for `lifetime` (from yesterday).
    pub(crate) fn issue_lasting(
        &self,
        common_name: &str,
        usage: Usage<'_>,
        lifetime: jiff::Span,
    ) -> Result<CertPair, PkiError> {
        let key = KeyPair::generate().map_err(cert_error("generate a key"))?;
        let mut params = CertificateParams::default();
        set_validity(&mut params, lifetime);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        let names = match usage {
            Usage::Server { names } => {
                params.distinguished_name = name(common_name, &[]);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                names
            }
            Usage::Peer { names } => {
                params.distinguished_name = name(common_name, &[]);
                params.extended_key_usages =
                    vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
                names
            }
            Usage::Client { user, groups } => {
                params.distinguished_name = name(user, groups);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                &[]
            }
        };
        for entry in names {
            let san = match entry.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    entry.clone().try_into().map_err(cert_error(format!("use {entry:?} as a DNS name")))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(cert_error("read the CA"))?;
        let cert =
            params.signed_by(&key, &issuer).map_err(cert_error(format!("sign a certificate for {common_name}")))?;
        Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Loads `<dir>/<stem>.crt/.key` when present and `still_valid` accepts it,
    /// otherwise issues a new pair and writes it there.
    pub fn load_or_issue(
        &self,
        dir: &Path,
        stem: &str,
        common_name: &str,
        usage: Usage<'_>,
        still_valid: impl Fn(&str) -> bool,
    ) -> Result<CertPair, PkiError> {
        let (cert_path, key_path) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        if cert_path.exists() && key_path.exists() {
            let pair = CertPair { cert_pem: read(&cert_path)?, key_pem: read(&key_path)? };
            let expiring = expires_within(&pair.cert_pem, RENEW_BEFORE_DAYS);
            if still_valid(&pair.cert_pem) && !expiring {
                return Ok(pair);
            }
            if expiring {
                tracing::info!(cert = %cert_path.display(), "renewing a certificate that expires within {RENEW_BEFORE_DAYS} days");
            } else {
                tracing::info!(cert = %cert_path.display(), "re-issuing certificate");
            }
        }
        let pair = self.issue(common_name, usage)?;
        write(&key_path, &pair.key_pem, 0o600)?;
        write(&cert_path, &pair.cert_pem, 0o644)?;
        Ok(pair)
    }
}

/// The subject alternative names of a PEM certificate (DNS names and IPs as text).
pub fn subject_alt_names(cert_pem: &str) -> Vec<String> {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else { return Vec::new() };
    let Ok(cert) = pem.parse_x509() else { return Vec::new() };
    let Ok(Some(ext)) = cert.subject_alternative_name() else { return Vec::new() };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, lifetime: jiff::Span) {
    let today = jiff::Zoned::now().date();
    let start = today.yesterday().unwrap_or(today);
    let end = start.checked_add(lifetime).unwrap_or(start);
    // Months and days are in 1..=12 and 1..=31, so the casts are exact.
    params.not_before = rcgen::date_time_ymd(i32::from(start.year()), start.month() as u8, start.day() as u8);
    params.not_after = rcgen::date_time_ymd(i32::from(end.year()), end.month() as u8, end.day() as u8);
}

pub(crate) fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io { action: "read", path: path.to_path_buf(), source })
}

/// Writes a file atomically (temp file + rename) with the given mode.
pub(crate) fn write(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |action, source| PkiError::Io { action, path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| io("create the folder of", e))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).map_err(|e| io("write", e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(|e| io("set the mode of", e))?;
    fs::rename(&tmp, path).map_err(|e| io("replace", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_certificates_close_to_expiry_are_renewed_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let usage = || Usage::Client { user: "admin", groups: &[] };
        let fresh = ca.load_or_issue(dir.path(), "admin", "admin", usage(), |_| true).unwrap();
        assert!(!expires_within(&fresh.cert_pem, RENEW_BEFORE_DAYS), "a new leaf lasts a year");
        assert!(!expires_within(&ca.cert_pem, 9 * 365), "the CA lasts ten years");
        let kept = ca.load_or_issue(dir.path(), "admin", "admin", usage(), |_| true).unwrap();
        assert_eq!(kept.cert_pem, fresh.cert_pem);

        let old = ca.issue_lasting("admin", usage(), jiff::Span::new().days(60)).unwrap();
        write(&dir.path().join("admin.crt"), &old.cert_pem, 0o644).unwrap();
        write(&dir.path().join("admin.key"), &old.key_pem, 0o600).unwrap();
        assert!(expires_within(&old.cert_pem, RENEW_BEFORE_DAYS));
        let renewed = ca.load_or_issue(dir.path(), "admin", "admin", usage(), |_| true).unwrap();
        assert_ne!(renewed.cert_pem, old.cert_pem);
        assert!(!expires_within(&renewed.cert_pem, RENEW_BEFORE_DAYS));
        assert!(expires_within("not a certificate", 1));
    }

    #[test]
    fn ca_survives_restart_and_signs_server_and_client_certs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let again = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem);
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let server = ca.issue("kube-apiserver", Usage::Server { names: &names }).unwrap();
        assert_eq!(subject_alt_names(&server.cert_pem), names);
        let client = ca.issue("admin", Usage::Client { user: "admin", groups: &["system:masters"] }).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(client.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(cert.subject().iter_common_name().next().unwrap().as_str().unwrap(), "admin");
        assert_eq!(cert.subject().iter_organization().next().unwrap().as_str().unwrap(), "system:masters");
        let mode = fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
