//! Finding the manifest files under the folder.

use std::path::{Path, PathBuf};

use super::read::Stamp;
use super::Format;

/// Symlinked folders are followed; this bounds a symlink loop.
const MAX_DEPTH: usize = 16;

/// Every manifest file under `root` (or `root` itself, when it is one), in path order,
/// with its stamp as the walk found it. Entries whose name starts with `.` are skipped.
/// Unreadable folders are logged and skipped.
pub(super) fn manifests(root: &Path) -> Vec<(PathBuf, Stamp)> {
    if let Ok(meta) = std::fs::metadata(root) {
        if meta.is_file() {
            return Format::of(root)
                .map(|_| (root.to_owned(), Stamp::of(&meta)))
                .into_iter()
                .collect();
        }
    }
    let mut out = Vec::new();
    visit(root, 0, &mut out);
    out
}

/// Depth first, each folder's entries in name order: that is path order, without sorting
/// whole paths (which compares them component by component, a cost that showed among
/// thousands of files).
fn visit(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, Stamp)>) {
    if depth > MAX_DEPTH {
        tracing::warn!(path = %dir.display(), "manifest folder nested too deep (a symlink loop?); skipped");
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %dir.display(), error = %e, "cannot list manifest folder");
            }
            return;
        }
    };
    let mut entries: Vec<_> = entries
        .flatten()
        .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b"."))
        .map(|e| (e.file_name(), e.path()))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (_, path) in entries {
        // `metadata` follows symlinks: a symlinked file or folder counts as what it points to.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            visit(&path, depth + 1, out);
        } else if meta.is_file() && Format::of(&path).is_some() {
            out.push((path, Stamp::of(&meta)));
        }
    }
}

/// Identity of the folder at `root` (device and inode), to notice it being replaced.
pub(super) fn identity(root: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root).ok()?;
    Some(meta.ino() ^ meta.dev().rotate_left(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "b.yaml",
            "a.yaml",
            "a/x.yaml",
            "a/b/z.json",
            "a-b/y.yml",
            "A.yaml",
            "a0.yaml",
            "a/.hidden.yaml",
            "a/n.txt",
        ] {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        let found: Vec<PathBuf> = manifests(dir.path()).into_iter().map(|(p, _)| p).collect();
        let mut sorted = found.clone();
        sorted.sort();
        assert_eq!(found, sorted);
        let names: Vec<String> = found
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "A.yaml",
                "a/b/z.json",
                "a/x.yaml",
                "a-b/y.yml",
                "a.yaml",
                "a0.yaml",
                "b.yaml"
            ]
        );
    }
}
