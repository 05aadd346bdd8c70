//! Applies OCI image layers (tar, gzip or zstd) onto a rootfs folder,
//! honouring whiteouts: `.wh.<name>` deletes `<name>`, `.wh..wh..opq` empties
//! its folder of what lower layers put there.

use crate::agent::error::{AgentError, Result};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What one tar entry asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Remove this path (file or folder) left by a lower layer.
    Delete(PathBuf),
    /// Remove everything inside this folder left by a lower layer.
    Opaque(PathBuf),
    /// Unpack the entry as is.
    Add,
    /// The layer root itself: nothing to do.
    Root,
}

/// Classifies an entry path (relative to the layer root); `None` when it
/// would escape the root.
pub fn classify(path: &Path) -> Option<Change> {
    let mut clean = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => clean.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    let Some(name) = clean.file_name() else { return Some(Change::Root) };
    let name = name.to_str().map(str::to_string);
    let parent = clean.parent().map(Path::to_path_buf).unwrap_or_default();
    match name {
        Some(n) if n == OPAQUE => Some(Change::Opaque(parent)),
        Some(n) if n.starts_with(WHITEOUT) => Some(Change::Delete(parent.join(&n[WHITEOUT.len()..]))),
        _ => Some(Change::Add),
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// `reader` decompressed as its magic bytes say: gzip, zstd or as is.
pub fn decompressed<'a>(reader: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut reader = std::io::BufReader::new(reader);
    let magic = std::io::BufRead::fill_buf(&mut reader)?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("zstd: {err}")))?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(reader))
    }
}

/// Applies one layer read from `blob` (gzip and zstd are detected by their magic bytes).
pub fn apply_layer(blob: &Path, digest: &str, root: &Path) -> Result<()> {
    let layer_err = |message: String| AgentError::Layer { digest: digest.to_string(), message };
    let file = std::fs::File::open(blob).map_err(AgentError::io("open layer", blob))?;
    let reader = decompressed(file).map_err(AgentError::io("read layer", blob))?;
    apply_tar(reader, root).map_err(layer_err)
}

/// Applies a tar stream onto `root`.
pub fn apply_tar(reader: impl Read, root: &Path) -> std::result::Result<(), String> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(|e| format!("read tar: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("read tar entry: {e}"))?;
        let path = entry.path().map_err(|e| format!("tar entry path: {e}"))?.into_owned();
        match classify(&path) {
            None => return Err(format!("entry {} escapes the layer root", path.display())),
            Some(Change::Root) => {}
            Some(Change::Delete(target)) => {
                remove_any(&root.join(&target)).map_err(|e| format!("whiteout {}: {e}", target.display()))?
            }
            Some(Change::Opaque(dir)) => {
                let dir = root.join(dir);
                for child in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    remove_any(&child.path()).map_err(|e| format!("opaque {}: {e}", dir.display()))?;
                }
            }
            Some(Change::Add) => {
                // A folder replaced by a file (or the other way) must go first.
                let target = root.join(&path);
                if let Ok(meta) = std::fs::symlink_metadata(&target) {
                    let is_dir = entry.header().entry_type().is_dir();
                    if meta.is_dir() != is_dir || meta.file_type().is_symlink() {
                        remove_any(&target).map_err(|e| format!("replace {}: {e}", path.display()))?;
                    }
                }
                entry
                    .unpack_in(root)
                    .map_err(|e| format!("unpack {}: {e} ({:?})", path.display(), std::error::Error::source(&e)))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match content {
                Some(text) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(text.len() as u64);
                    header.set_mode(0o644);
                    builder.append_data(&mut header, path, text.as_bytes()).expect("append");
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    builder.append_data(&mut header, path, &[][..]).expect("append");
                }
            }
        }
        builder.into_inner().expect("tar")
    }

    #[test]
    fn classifies_whiteouts() {
        assert_eq!(classify(Path::new("etc/.wh.passwd")), Some(Change::Delete("etc/passwd".into())));
        assert_eq!(classify(Path::new("./var/.wh..wh..opq")), Some(Change::Opaque("var".into())));
        assert_eq!(classify(Path::new("bin/sh")), Some(Change::Add));
        assert_eq!(classify(Path::new("../etc/shadow")), None);
        assert_eq!(classify(Path::new("./")), Some(Change::Root));
    }

    #[test]
    fn layers_stack_with_whiteouts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let lower = layer(&[
            ("etc/", None),
            ("etc/passwd", Some("root")),
            ("etc/group", Some("root")),
            ("var/", None),
            ("var/cache/", None),
            ("var/cache/a", Some("a")),
            ("var/keep", Some("k")),
        ]);
        apply_tar(&lower[..], root).expect("lower");
        let upper = layer(&[
            ("etc/.wh.passwd", Some("")),
            ("var/.wh..wh..opq", Some("")),
            ("var/new", Some("n")),
            ("etc/group", Some("wheel")),
        ]);
        apply_tar(&upper[..], root).expect("upper");
        assert!(!root.join("etc/passwd").exists());
        assert_eq!(std::fs::read_to_string(root.join("etc/group")).expect("group"), "wheel");
        assert!(!root.join("var/cache").exists());
        assert!(!root.join("var/keep").exists());
        assert!(root.join("var/new").exists());
        assert!(!root.join("var/.wh..wh..opq").exists());
    }

    #[test]
    fn gzip_layers_are_detected() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let blob = dir.path().join("blob");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer(&[("hello", Some("hi"))])).expect("gzip");
        std::fs::write(&blob, gz.finish().expect("gzip")).expect("write");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        apply_layer(&blob, "sha256:x", &root).expect("apply");
        assert_eq!(std::fs::read_to_string(root.join("hello")).expect("read"), "hi");
    }

    #[test]
    fn zstd_and_plain_layers_are_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = layer(&[("z", Some("zstd")), ("p/", None)]);
        let zst = dir.path().join("zst");
        std::fs::write(&zst, ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest))
            .expect("write");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, layer(&[("p/t", Some("tar"))])).expect("write");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        apply_layer(&zst, "sha256:z", &root).expect("zstd layer");
        apply_layer(&plain, "sha256:p", &root).expect("plain layer");
        assert_eq!(std::fs::read_to_string(root.join("z")).expect("read"), "zstd");
        assert_eq!(std::fs::read_to_string(root.join("p/t")).expect("read"), "tar");
    }
}
