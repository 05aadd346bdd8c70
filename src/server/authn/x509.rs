//! Client-certificate authentication: a certificate the TLS layer verified
//! against the cluster CA names the user (CN) and its groups (O), as upstream.

use super::UserInfo;
use rustls::pki_types::CertificateDer;

/// The user a verified client certificate names, or `None` if it names nobody.
pub fn user_of(cert: &CertificateDer<'_>) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject.iter_organization().filter_map(|org| org.as_str().ok().map(str::to_string));
    Some(UserInfo::new(name, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::pki::{Authority, Usage};
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn common_name_is_the_user_and_organizations_are_groups() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let pair =
            ca.issue("system:node:nas", Usage::Client { user: "system:node:nas", groups: &["system:nodes"] }).unwrap();
        let der = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
        let user = user_of(&der).unwrap();
        assert_eq!(user.name, "system:node:nas");
        assert_eq!(user.groups, vec!["system:nodes".to_string(), "system:authenticated".to_string()]);
    }
}
