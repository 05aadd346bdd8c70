//! `kube token create/list/delete`: manages bootstrap tokens (agents may join
//! with `K10<CA hash>::<id>.<secret>` instead of the server's token) through
//! the API, as the admin of the kubeconfig the server wrote.

use super::client::{Client, RemoteConfig, ServerTrust};
use super::token::ca_hash;
use super::token_bootstrap::{BootstrapToken, SECRET_TYPE, field};
use anyhow::{Context, bail};
use base64::Engine;
use serde_json::Value;
use std::path::{Path, PathBuf};

const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";

#[derive(clap::Args, Clone, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
    /// The server's data folder (its admin.kubeconfig is used).
    #[arg(long, short = 'd', env = "KUBE_DATA_DIR", default_value = "/var/lib/kube", global = true)]
    pub data_dir: PathBuf,
    /// Kubeconfig of an admin (default: <data-dir>/admin.kubeconfig).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum TokenCommand {
    /// Create a bootstrap token and print it as a join token.
    Create {
        /// How long the token is valid, e.g. 30m, 24h, 7d; 0 = never expires.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the bootstrap tokens.
    List,
    /// Delete bootstrap tokens (by id, or the whole token).
    Delete {
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

/// `30m`, `24h`, `7d`, `1h30m` in seconds; `0` = no expiry (`None`).
pub fn parse_ttl(text: &str) -> anyhow::Result<Option<i64>> {
    parse_duration("ttl", text)
}

/// A duration flag (`--<flag> 30m`, `24h`, `7d`, `1h30m`) in seconds; `0` = `None`.
pub fn parse_duration(flag: &str, text: &str) -> anyhow::Result<Option<i64>> {
    if text == "0" {
        return Ok(None);
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => bail!("--{flag} {text}: expected a duration like 30m, 24h or 7d (0 = never)"),
        };
        let value: i64 = number.parse().with_context(|| format!("--{flag} {text}: a number must precede {c:?}"))?;
        total = total.saturating_add(value.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        bail!("--{flag} {text}: expected a duration like 30m, 24h or 7d (0 = never)");
    }
    Ok(Some(total))
}

/// Server URL, CA and client identity from a kubeconfig's current context.
pub(crate) fn kubeconfig_client(path: &Path) -> anyhow::Result<(Client, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: Value =
        serde_norway::from_str(&text).with_context(|| format!("{} is not a kubeconfig", path.display()))?;
    let current = doc["current-context"].as_str().unwrap_or("default");
    let named = |list: &str, name: &str, inner: &str| {
        doc[list].as_array().and_then(|items| items.iter().find(|i| i["name"] == name)).map(|i| i[inner].clone())
    };
    let context = named("contexts", current, "context").context("the kubeconfig has no current context")?;
    let cluster = named("clusters", context["cluster"].as_str().unwrap_or_default(), "cluster")
        .context("the kubeconfig's context names no cluster")?;
    let user = named("users", context["user"].as_str().unwrap_or_default(), "user")
        .context("the kubeconfig's context names no user")?;
    let pem = |obj: &Value, key: &str| -> anyhow::Result<String> {
        if let Some(data) = obj[format!("{key}-data")].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD.decode(data).context("bad base64")?;
            return String::from_utf8(bytes).context("not PEM text");
        }
        let file = obj[key].as_str().with_context(|| format!("the kubeconfig has no {key}"))?;
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
    };
    let ca = pem(&cluster, "certificate-authority")?;
    let client = Client::remote(&RemoteConfig {
        server: cluster["server"].as_str().context("the kubeconfig has no server")?.to_string(),
        trust: ServerTrust::Pinned(ca.clone()),
        identity: Some((pem(&user, "client-certificate")?, pem(&user, "client-key")?)),
        authorization: None,
    })?;
    Ok((client, ca))
}

fn row(secret: &Value) -> Option<[String; 5]> {
    let id = field(secret, "token-id")?;
    let token = format!("{id}.{}", field(secret, "token-secret")?);
    let expires = field(secret, "expiration");
    let ttl = match expires.as_deref().and_then(|e| e.parse::<jiff::Timestamp>().ok()) {
        Some(at) => {
            let left = at.as_second() - jiff::Timestamp::now().as_second();
            if left <= 0 { "expired".into() } else { format!("{}h{}m", left / 3600, left % 3600 / 60) }
        }
        None => "<forever>".into(),
    };
    let usages: Vec<&str> = ["authentication", "signing"]
        .into_iter()
        .filter(|u| field(secret, &format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
        .collect();
    Some([
        token,
        ttl,
        expires.unwrap_or_else(|| "<never>".into()),
        usages.join(","),
        field(secret, "description").unwrap_or_else(|| "<none>".into()),
    ])
}

/// Runs `kube token …`.
pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let kubeconfig = args.kubeconfig.clone().unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));
    let (client, ca) = kubeconfig_client(&kubeconfig)?;
    match args.command {
        TokenCommand::Create { ttl, description } => {
            let expiration = parse_ttl(&ttl)?.map(|seconds| {
                let at = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + seconds);
                at.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
            });
            let token = BootstrapToken::generate();
            client
                .create(SECRETS, token.secret_object(expiration.as_deref(), &description))
                .await
                .map_err(|err| anyhow::anyhow!("cannot create the token: {}", err.message))?;
            println!("K10{}::{}.{}", ca_hash(&ca), token.id, token.secret);
        }
        TokenCommand::List => {
            let secrets =
                client.list(SECRETS).await.map_err(|err| anyhow::anyhow!("cannot list the tokens: {}", err.message))?;
            let mut rows = vec![["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION"].map(String::from)];
            rows.extend(secrets.iter().filter(|s| s["type"] == SECRET_TYPE).filter_map(row));
            let widths: Vec<usize> = (0..5).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
            for r in rows {
                let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
                println!("{}", cells.join("   ").trim_end());
            }
        }
        TokenCommand::Delete { tokens } => {
            for text in tokens {
                let id = text.rsplit("::").next().unwrap_or(&text).split('.').next().unwrap_or_default();
                client
                    .delete(&format!("{SECRETS}/{}", BootstrapToken::secret_name(id)), None)
                    .await
                    .map_err(|err| anyhow::anyhow!("cannot delete token {id}: {}", err.message))?;
                println!("bootstrap token {id:?} deleted");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert_eq!(parse_ttl("30m").unwrap(), Some(1800));
        assert_eq!(parse_ttl("1h30m").unwrap(), Some(5400));
        assert_eq!(parse_ttl("7d").unwrap(), Some(7 * 86400));
        assert!(parse_ttl("10").unwrap_err().to_string().contains("--ttl"));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
