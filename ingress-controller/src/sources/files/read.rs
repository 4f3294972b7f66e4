//! Reading and parsing manifest files, on a few threads when there are many of them (the
//! initial load of a folder of thousands of files is mostly YAML parsing).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

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

/// What reading one file found.
pub(super) enum Read {
    /// Gone (removed since it was listed).
    Gone,
    /// A folder now stands at the path: the folder needs walking.
    Folder,
    Failed(std::io::Error),
    /// The same content as `known`.
    Unchanged,
    /// New content.
    Changed(Vec<u8>, Digest),
}

/// Read `path`; `known` is the digest of what was last taken in from it.
pub(super) fn read(path: &Path, known: Option<Digest>) -> Read {
    match std::fs::read(path) {
        Ok(bytes) => {
            let digest = Digest::of(&bytes);
            if Some(digest) == known {
                Read::Unchanged
            } else {
                Read::Changed(bytes, digest)
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
