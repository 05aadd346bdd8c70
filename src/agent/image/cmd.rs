//! `kube image import FILE…` and `kube image ls`: the node's image store
//! from the command line (like `k3s ctr images import` / `crictl images`).
//! Imports take the store's writer lock, so they are safe with a running agent.

use super::{Image, ImageStore, archive};
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct ImageArgs {
    /// The node's data folder (its images are in <data-dir>/agent/images).
    #[arg(long, short = 'd', env = "KUBE_DATA_DIR", default_value = "/var/lib/kube", global = true)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum ImageCommand {
    /// Import image archives (OCI layout or docker save tars, optionally .gz/.zst).
    Import {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List the node's images.
    #[command(alias = "list")]
    Ls,
}

/// Bytes as crictl shows them: decimal units, three significant digits.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", units[unit])
}

/// The `crictl images` table of `images`.
pub fn table(images: &[Image]) -> String {
    let mut rows = vec![["IMAGE".to_string(), "TAG".into(), "IMAGE ID".into(), "SIZE".into()]];
    for image in images {
        let (repo, tag) = match image.reference.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            Some((repo, tag)) => (repo.to_string(), tag.to_string()),
            None => (image.reference.clone(), "<none>".into()),
        };
        let id: String = image.config_digest.trim_start_matches("sha256:").chars().take(13).collect();
        rows.push([repo, tag, id, human_size(image.size)]);
    }
    let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].len() + 3).max().unwrap_or(0).max(20)).collect();
    let mut out = String::new();
    for row in rows {
        let line: String = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    let store = ImageStore::new(args.data_dir.join("agent").join("images"), &[]);
    match args.command {
        ImageCommand::Import { files } => {
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let _lock = archive::lock(store.root())?;
                for file in files {
                    let images = store.import_archive(&file).with_context(|| format!("import {}", file.display()))?;
                    for image in images {
                        println!("unpacking {} ({})...done", image.reference, image.config_digest);
                    }
                }
                Ok(())
            })
            .await??;
        }
        ImageCommand::Ls => print!("{}", table(&store.list())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_table_read_like_crictl() {
        assert_eq!(human_size(500), "500B");
        assert_eq!(human_size(2_234_567), "2.23MB");
        assert_eq!(human_size(12_000), "12kB");
        assert_eq!(human_size(123_456_789), "123MB");
        let image = Image {
            reference: "docker.io/library/busybox:latest".into(),
            image_id: String::new(),
            config_digest: format!("sha256:{}", "ab".repeat(32)),
            config: Default::default(),
            rootfs: "/x".into(),
            layers: Vec::new(),
            size: 2_234_567,
            last_used: 0,
        };
        let text = table(&[image]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "IMAGE                       TAG                 IMAGE ID            SIZE");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["docker.io/library/busybox", "latest", "ababababababa", "2.23MB"]
        );
    }
}
