//! Reading and parsing manifest files, on a few threads when there are many of them (the
//! initial load of a folder of thousands of files is mostly YAML parsing).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::parse::{parse_file, Format, ParseError, Parsed};

/// Threads for reading and parsing at most; the rest of the process needs CPU too.
const MAX_THREADS: usize = 4;
/// Below this many files one thread does it all: spawning is not worth it.
const PARALLEL_FROM: usize = 64;

/// A fingerprint of a file's bytes, so that what a file held need not be kept to tell
/// whether it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Digest {
    len: usize,
    hash: u64,
}

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = DefaultHasher::new();
        bytes.hash(&mut h);
        Digest {
            len: bytes.len(),
            hash: h.finish(),
        }
    }
}

/// Filesystems keep change times in steps: the kernel's clock tick on most, two seconds
/// on FAT. A file written twice within one step can keep its times and size, so only a
/// stamp whose change time was this far in the past when it was taken stands for the
/// content.
pub(super) const TIME_STEP: Duration = Duration::from_secs(2);

/// What `stat` says of a file: its identity, size and change times. Any write moves its
/// change time, so an unchanged stamp that was [trusted](Stamp::trusted) when taken means
/// unchanged content, and the file need not be opened to tell (an open is an event to
/// the folder's watcher, and reading a large folder was most of a rescan's cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file's last change is older than `step` (the filesystem's, at most
    /// [`TIME_STEP`]): any later write then gives it a new change time.
    pub fn trusted(&self, step: Duration) -> bool {
        let changed = UNIX_EPOCH
            + Duration::from_secs(u64::try_from(self.ctime.0).unwrap_or(0))
            + Duration::from_nanos(u64::try_from(self.ctime.1).unwrap_or(0));
        SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age > step)
    }
}

/// What reading one file found.
pub(super) enum Read {
    /// Gone (removed since it was listed).
    Gone,
    /// A folder now stands at the path: the folder needs walking.
    Folder,
    Failed(std::io::Error),
    /// The same content as `known`; the file's stamp, taken before the read.
    Unchanged(Stamp),
    /// New content, and the stamp taken before the read.
    Changed(Vec<u8>, Digest, Stamp),
}

/// Content read to be taken in: its digest, and the file's stamp if it can be relied on.
pub(super) type Taken = (Digest, Option<Stamp>);

/// Read `path`; `known` is the digest of what was last taken in from it. The stamp is
/// taken first, so a write racing with the read leaves a newer stamp for the next look.
pub(super) fn read(path: &Path, known: Option<Digest>) -> Read {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Read::Gone,
        Err(e) => return Read::Failed(e),
    };
    if meta.is_dir() {
        return Read::Folder;
    }
    let now = Stamp::of(&meta);
    match std::fs::read(path) {
        Ok(bytes) => {
            let found = Digest::of(&bytes);
            if Some(found) == known {
                Read::Unchanged(now)
            } else {
                Read::Changed(bytes, found, now)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Read::Gone,
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Read::Folder,
        Err(e) => Read::Failed(e),
    }
}

/// Parse a file's bytes into its objects.
pub(super) fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Parsed, ParseError> {
    let Some(format) = Format::of(path) else {
        return Ok(Parsed::default());
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_file(path, format, text),
        Err(e) => Err(ParseError {
            path: path.to_owned(),
            line: None,
            message: format!("not UTF-8: {e}"),
        }),
    }
}

/// `f` over `items`, in order, on up to [`MAX_THREADS`] threads.
pub(super) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);
    if threads <= 1 || items.len() < PARALLEL_FROM {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let mut parts = Vec::new();
        for part in items.chunks(chunk) {
            let work = move || part.iter().map(f).collect::<Vec<R>>();
            match std::thread::Builder::new()
                .name("portico-files-read".into())
                .spawn_scoped(s, work)
            {
                Ok(handle) => parts.push(Ok(handle)),
                // No thread to be had: do this part here.
                Err(_) => parts.push(Err(part)),
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for part in parts {
            match part {
                Ok(handle) => match handle.join() {
                    Ok(results) => out.extend(results),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(part) => out.extend(part.iter().map(f)),
            }
        }
        out
    })
}

/// Read every path; `known` gives the digest last taken in from each.
pub(super) fn read_all(paths: &[(PathBuf, Option<Digest>)]) -> Vec<Read> {
    par_map(paths, |(path, known)| read(path, *known))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_order_at_any_size() {
        for n in [0, 1, 63, 64, 65, 1000] {
            let items: Vec<usize> = (0..n).collect();
            assert_eq!(
                par_map(&items, |i| i * 2),
                (0..n).map(|i| i * 2).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn digest_tells_contents_apart() {
        assert_eq!(Digest::of(b"a: 1\n"), Digest::of(b"a: 1\n"));
        assert_ne!(Digest::of(b"a: 1\n"), Digest::of(b"a: 2\n"));
        assert_ne!(Digest::of(b""), Digest::of(b"\n"));
    }
}
