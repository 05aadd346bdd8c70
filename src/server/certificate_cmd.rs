//! `kube certificate check` lists the certificates of a data folder (the
//! server's `tls/`, an agent's `agent/`) with their expiry; `kube certificate
//! rotate` (server stopped, like `k3s certificate rotate`) backs `tls/` up and
//! removes the leaf certificates so that the next start issues new ones from
//! the same CAs. Leaves are also renewed on any start once they expire within
//! 90 days ([`super::pki::RENEW_BEFORE_DAYS`]).

use super::pki::{RENEW_BEFORE_DAYS, expires_at};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The certificate authorities: kept by a rotation.
const AUTHORITIES: [&str; 2] = ["ca", "peer-ca"];

#[derive(clap::Args, Clone, Debug)]
pub struct CertificateArgs {
    #[command(subcommand)]
    pub command: CertificateCommand,
    /// The server's (or agent's) data folder.
    #[arg(long, short = 'd', env = "KUBE_DATA_DIR", default_value = "/var/lib/kube", global = true)]
    pub data_dir: PathBuf,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum CertificateCommand {
    /// Show every certificate with its subject, expiry and status.
    Check,
    /// Re-issue the server's leaf certificates on its next start (stop it first).
    Rotate,
}

/// One certificate file and what it says.
struct Found {
    path: PathBuf,
    subject: String,
    expires: Option<jiff::Timestamp>,
}

fn subject_of(cert_pem: &str) -> String {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else { return "?".into() };
    let Ok(cert) = pem.parse_x509() else { return "?".into() };
    cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("?").to_string()
}

/// The `*.crt` files directly in `dir`, sorted (none if it does not exist).
fn certificates_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "crt"))
        .collect();
    found.sort();
    Ok(found)
}

fn scan(data_dir: &Path) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    for dir in [data_dir.join("tls"), data_dir.join("agent")] {
        for path in certificates_in(&dir)? {
            let pem = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            found.push(Found { subject: subject_of(&pem), expires: expires_at(&pem), path });
        }
    }
    Ok(found)
}

/// `OK`, `RENEW` (within the renewal window), `EXPIRED` or `UNREADABLE`.
fn status(expires: Option<jiff::Timestamp>, now: jiff::Timestamp) -> &'static str {
    match expires {
        None => "UNREADABLE",
        Some(at) if at <= now => "EXPIRED",
        Some(at) if at.as_second() - now.as_second() < RENEW_BEFORE_DAYS * 24 * 3600 => "RENEW",
        Some(_) => "OK",
    }
}

fn check(data_dir: &Path) -> anyhow::Result<()> {
    let found = scan(data_dir)?;
    if found.is_empty() {
        bail!("no certificates under {} (is --data-dir right?)", data_dir.display());
    }
    let now = jiff::Timestamp::now();
    let rows: Vec<[String; 4]> = found
        .iter()
        .map(|f| {
            let file = f.path.strip_prefix(data_dir).unwrap_or(&f.path).display().to_string();
            let expires = f.expires.map(|at| at.strftime("%Y-%m-%d %H:%M:%SZ").to_string()).unwrap_or_default();
            [file, f.subject.clone(), expires, status(f.expires, now).to_string()]
        })
        .collect();
    let header = ["FILE", "SUBJECT", "EXPIRES", "STATUS"].map(String::from);
    let widths: Vec<usize> =
        (0..4).map(|i| rows.iter().chain([&header]).map(|row| row[i].len()).max().unwrap_or(0)).collect();
    for row in [&header].into_iter().chain(&rows) {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(())
}

fn rotate(data_dir: &Path) -> anyhow::Result<()> {
    let tls = data_dir.join("tls");
    if !tls.is_dir() {
        bail!("{} has no server certificates (is --data-dir right?)", tls.display());
    }
    if crate::store::in_use(&data_dir.join("db")) {
        bail!("the server using {} is running: stop it, rotate, then start it again", data_dir.display());
    }
    let backup = data_dir.join(format!("tls-{}", jiff::Timestamp::now().as_second()));
    std::fs::create_dir_all(&backup).with_context(|| format!("cannot create {}", backup.display()))?;
    let entries = std::fs::read_dir(&tls).with_context(|| format!("cannot read {}", tls.display()))?;
    for entry in entries.filter_map(Result::ok).filter(|e| e.path().is_file()) {
        let to = backup.join(entry.file_name());
        std::fs::copy(entry.path(), &to).with_context(|| format!("cannot back up {}", entry.path().display()))?;
    }
    let mut rotated = Vec::new();
    for cert in certificates_in(&tls)? {
        let stem = cert.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if AUTHORITIES.contains(&stem.as_str()) {
            continue;
        }
        for path in [cert.clone(), cert.with_extension("key")] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).with_context(|| format!("cannot remove {}", path.display())),
            }
        }
        rotated.push(stem);
    }
    println!(
        "rotated {} certificates ({}); the old ones are in {}; start the server to issue new ones",
        rotated.len(),
        rotated.join(", "),
        backup.display()
    );
    Ok(())
}

pub async fn run(args: CertificateArgs) -> anyhow::Result<()> {
    match args.command {
        CertificateCommand::Check => check(&args.data_dir),
        CertificateCommand::Rotate => rotate(&args.data_dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::pki::{Authority, Usage};

    #[test]
    fn rotation_keeps_the_authorities_and_backs_up_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let ca = Authority::load_or_create(&tls).unwrap();
        let usage = || Usage::Client { user: "system:admin", groups: &["system:masters"] };
        let admin = ca.load_or_issue(&tls, "client-admin", "system:admin", usage(), |_| true).unwrap();
        rotate(dir.path()).unwrap();
        assert!(tls.join("ca.crt").exists() && tls.join("ca.key").exists());
        assert!(!tls.join("client-admin.crt").exists() && !tls.join("client-admin.key").exists());
        let backups: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("tls-")))
            .collect();
        assert_eq!(backups.len(), 1);
        assert_eq!(std::fs::read_to_string(backups[0].join("client-admin.crt")).unwrap(), admin.cert_pem);
        let again = ca.load_or_issue(&tls, "client-admin", "system:admin", usage(), |_| true).unwrap();
        assert_ne!(again.cert_pem, admin.cert_pem);
        assert!(rotate(&dir.path().join("nowhere")).is_err());
    }

    #[test]
    fn status_says_when_a_certificate_needs_renewal() {
        let now: jiff::Timestamp = "2026-12-07T00:00:00Z".parse().unwrap();
        let days = |d: i64| Some(jiff::Timestamp::from_second(now.as_second() + d * 24 * 3600).unwrap());
        assert_eq!(status(days(365), now), "OK");
        assert_eq!(status(days(30), now), "RENEW");
        assert_eq!(status(days(-1), now), "EXPIRED");
        assert_eq!(status(None, now), "UNREADABLE");
    }
}
