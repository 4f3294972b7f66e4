//! Finding the manifest files under the folder.

use std::path::{Path, PathBuf};

use super::Format;

/// Symlinked folders are followed; this bounds a symlink loop.
const MAX_DEPTH: usize = 16;

/// Every manifest file under `root` (or `root` itself, when it is one), in path order. Entries whose name starts with `.` are
/// skipped. Unreadable folders are logged and skipped.
pub(super) fn manifests(root: &Path) -> Vec<PathBuf> {
    if std::fs::metadata(root).is_ok_and(|m| m.is_file()) {
        return Format::of(root)
            .map(|_| root.to_owned())
            .into_iter()
            .collect();
    }
    let mut out = Vec::new();
    visit(root, 0, &mut out);
    out.sort();
    out
}

fn visit(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
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
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // `metadata` follows symlinks: a symlinked file or folder counts as what it points to.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            visit(&path, depth + 1, out);
        } else if meta.is_file() && Format::of(&path).is_some() {
            out.push(path);
        }
    }
}

/// Identity of the folder at `root` (device and inode), to notice it being replaced.
pub(super) fn identity(root: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root).ok()?;
    Some(meta.ino() ^ meta.dev().rotate_left(32))
}
