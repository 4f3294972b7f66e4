//! The file source (`--manifests DIR`): the same objects as the Kubernetes source, read
//! from a folder of manifests and watched.
//!
//! Every `*.yaml`, `*.yml` and `*.json` under the folder is read, recursively (like
//! `kubectl apply -R -f DIR`); names starting with `.` are skipped, which also skips editor
//! swap files and the `..data` indirection of a mounted ConfigMap (its files are reached
//! through their symlinks instead). Each file is all-or-nothing: a file that does not parse
//! is reported with its path and line and its last good objects stay in force. Deleting a
//! file removes its objects. When two files define the same object the first path (in
//! path order) wins and the other is reported.
//!
//! A change event re-reads just the files it names, so an edit in a folder of ten
//! thousand files costs one file's parse. Events that say nothing about a single file (a
//! folder created, removed or renamed, a ConfigMap's `..data` swapped, a watch error) and
//! a slow periodic timer rescan the whole folder instead (a rescan only re-parses files
//! whose bytes changed), which copes with a folder swapped wholesale and with events the
//! watcher missed.

mod legacy;
mod objects;
mod parse;
mod read;
mod validate;
mod walk;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

pub use parse::{parse, parse_file, Format, ParseError, ParseWarning, Parsed};

use crate::store::SharedStore;
use objects::{Entry, Objects};
use read::{Digest, Read, Stamp, Taken};

/// After a change event, wait this long without further events (the rest of a write or
/// a rename arrives within microseconds)...
const QUIET: Duration = Duration::from_millis(5);
/// ...but never longer than this after the first event, so a stream of writes still
/// applies promptly.
const MAX_DELAY: Duration = Duration::from_millis(50);
/// Rescan this often even without events, in case the watcher missed something.
const RESYNC: Duration = Duration::from_secs(5);
/// Content found changed without an event saying its writer is done (by a rescan, or
/// while the file is still being written) must read the same for this long before it is
/// taken in. A file rewritten in place (truncate, then write) passes through empty or
/// cut-short versions that may well parse; taking one in would drop routes for a moment.
const SETTLE: Duration = Duration::from_millis(60);
/// A file that had content and now reads empty is most likely caught between truncate and
/// write by a writer that is not getting the CPU; emptying a file on purpose is rare, so
/// it waits longer, whatever the events say.
const SETTLE_EMPTY: Duration = Duration::from_millis(750);
/// How often to check that the watched folder is still the folder at the path.
const ROOT_CHECK: Duration = Duration::from_millis(500);
/// A file that was created or modified but not yet closed is being written: keep its last
/// good version until it is closed, or until this long has passed.
const WRITE_GRACE: Duration = Duration::from_secs(2);

/// Errors that stop the file source from starting.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("--manifests {}: {source}", path.display())]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--manifests {}: neither a directory nor a .yaml, .yml or .json file", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot start the manifest watcher thread: {0}")]
    Thread(std::io::Error),
    #[error("--manifests {}: cannot watch: {source}", path.display())]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// A problem the file source currently sees, for metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Problem {
    /// `invalid_manifest`, `duplicate_object` or a warning's reason
    /// (`deprecated_api_version`).
    pub reason: &'static str,
    /// The object kind, or `File` for a file that does not parse.
    pub kind: String,
    pub message: String,
}

/// Called with the full list of current problems whenever it changes.
pub type ProblemSink = Box<dyn Fn(&[Problem]) + Send>;

/// One file as last read. Its text is not kept, only a digest of it.
#[derive(Default)]
struct FileState {
    /// The content last taken in (parsed, successfully or not).
    digest: Option<Digest>,
    /// The file's stamp when that content was read, if it can be relied on to tell a
    /// later change: a rescan does not open a file whose stamp is still this.
    stamp: Option<Stamp>,
    /// The objects of the last version that parsed (empty if none ever did).
    objects: Vec<Entry>,
    /// What that version was warned about.
    warnings: Vec<ParseWarning>,
    error: Option<ParseError>,
    /// New content seen but not yet taken in: it must stay the same for a while first.
    pending: Option<(Digest, Instant)>,
}

/// Files to look at again, gathered from change events.
#[derive(Default)]
struct Noted {
    paths: BTreeSet<PathBuf>,
    /// Something happened that needs the whole folder walked.
    rescan: bool,
}

type Events = mpsc::Receiver<notify::Result<notify::Event>>;

/// The file source's state: what each file holds and what the store was given.
pub struct FileSource {
    root: PathBuf,
    /// The root is one manifest file rather than a folder.
    single_file: bool,
    store: SharedStore,
    /// Hashed, not ordered: `Path` ordering compares component by component, which
    /// dominated lookups among thousands of files. Where order matters (which of two
    /// files defining one object wins), `objects` keeps it.
    files: HashMap<Arc<Path>, FileState>,
    objects: Objects,
    /// Files seen created or modified and not yet closed.
    writing: HashMap<PathBuf, Instant>,
    /// Files with `pending` content.
    settling: BTreeSet<Arc<Path>>,
    noted: Noted,
    sink: Option<ProblemSink>,
    problems: Vec<Problem>,
    settle: Duration,
    /// How old a change must be before a file's stamp is relied on ([`read::TIME_STEP`]).
    time_step: Duration,
    /// Files opened and read so far.
    files_read: u64,
}

impl FileSource {
    pub fn new(root: impl Into<PathBuf>, store: SharedStore) -> Result<Self, FilesError> {
        let root = root.into();
        // Change events name absolute paths (the watcher joins a relative path to the
        // working directory); walk the same form so the two can be matched. Symlinks are
        // deliberately not resolved: a folder swapped behind a symlink must be seen.
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|source| FilesError::Root {
                    path: root.clone(),
                    source,
                })?
                .join(root)
        };
        let meta = std::fs::metadata(&root).map_err(|source| FilesError::Root {
            path: root.clone(),
            source,
        })?;
        let usable = meta.is_dir() || (meta.is_file() && Format::of(&root).is_some());
        if !usable {
            return Err(FilesError::NotADirectory { path: root });
        }
        Ok(Self {
            single_file: meta.is_file(),
            root,
            store,
            files: HashMap::new(),
            objects: Objects::default(),
            writing: HashMap::new(),
            settling: BTreeSet::new(),
            noted: Noted::default(),
            sink: None,
            problems: Vec::new(),
            settle: SETTLE,
            time_step: read::TIME_STEP,
            files_read: 0,
        })
    }

    /// Report problems (parse errors, duplicates) to `sink` whenever they change.
    pub fn with_problem_sink(mut self, sink: ProblemSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// How long new content must stay the same before it is taken in (zero: at once).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The initial load: read the folder and take every file in at once.
    pub fn load(&mut self) -> bool {
        let settle = std::mem::replace(&mut self.settle, Duration::ZERO);
        let changed = self.rescan();
        self.settle = settle;
        changed
    }

    /// Whether some file has new content waiting to settle.
    pub fn settling(&self) -> bool {
        !self.settling.is_empty()
    }

    /// Read the whole folder and bring the store in line with it. Returns whether the
    /// store changed. Changed files are taken in once their content has settled; call
    /// again while [`FileSource::settling`].
    pub fn rescan(&mut self) -> bool {
        self.rescan_with(None)
    }

    /// [`FileSource::rescan`], noting the `events` that arrive meanwhile.
    fn rescan_with(&mut self, events: Option<&Events>) -> bool {
        let start = Instant::now();
        let found = walk::manifests(&self.root);
        let listed: HashSet<&Path> = found.iter().map(|(p, _)| p.as_path()).collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !listed.contains(&***p))
            .map(|p| p.to_path_buf())
            .collect();
        // Events noted so far are covered by this walk (as "confirmed", see `refresh`).
        let noted = std::mem::take(&mut self.noted);
        let read_before = self.files_read;
        let paths = found
            .into_iter()
            .map(|(p, stamp)| (p, Some(stamp)))
            .chain(gone.into_iter().map(|p| (p, None)));
        let changed = self.refresh(paths, &noted.paths, events);
        tracing::trace!(
            took_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            files = self.files.len(),
            read = self.files_read - read_before,
            changed,
            "rescanned"
        );
        changed
    }

    /// Re-read the files that change events named (and those still settling), or the
    /// whole folder if an event called for that. Returns whether the store changed.
    fn refresh_noted(&mut self, events: Option<&Events>) -> bool {
        if self.noted.rescan {
            return self.rescan_with(events);
        }
        let noted = std::mem::take(&mut self.noted);
        let mut paths = noted.paths.clone();
        paths.extend(self.settling.iter().map(|p| p.to_path_buf()));
        paths.extend(self.expired_writes());
        if paths.is_empty() {
            return false;
        }
        self.refresh(paths.into_iter().map(|p| (p, None)), &noted.paths, events)
    }

    /// Files whose writer has not closed them for [`WRITE_GRACE`]: their content is
    /// looked at again (and settles before it is taken in).
    fn expired_writes(&mut self) -> Vec<PathBuf> {
        let now = Instant::now();
        let mut expired = Vec::new();
        self.writing.retain(|path, since| {
            let keep = now.duration_since(*since) < WRITE_GRACE;
            if !keep {
                expired.push(path.clone());
            }
            keep
        });
        expired
    }

    /// Bring the store in line with `paths` (files, present or gone). Content of a path in
    /// `confirmed` (change events said its writer is done with it) is taken in at once;
    /// other new content settles first. `events` that arrive meanwhile are noted, and a
    /// file they name is not taken as confirmed: its writer may be at it again. A path
    /// given with the stamp a walk just found (a rescan, no event behind it) is not opened
    /// when that stamp is still the one its content was taken in with.
    fn refresh(
        &mut self,
        paths: impl Iterator<Item = (PathBuf, Option<Stamp>)>,
        confirmed: &BTreeSet<PathBuf>,
        events: Option<&Events>,
    ) -> bool {
        self.expired_writes();
        let mut affected = HashSet::new();
        let mut structure_changed = false;
        let paths: Vec<(PathBuf, Option<Digest>)> = paths
            .filter(|(p, _)| !self.writing.contains_key(p))
            .filter_map(|(p, seen)| {
                let file = self.files.get(p.as_path());
                let same = file.is_some_and(|f| {
                    f.digest.is_some()
                        && f.pending.is_none()
                        && seen.is_some()
                        && f.stamp == seen
                        && !confirmed.contains(&p)
                });
                (!same).then(|| {
                    let known = file.and_then(|f| f.digest);
                    (p, known)
                })
            })
            .collect();
        let reads = read::read_all(&paths);
        self.files_read += reads
            .iter()
            .filter(|r| matches!(r, Read::Unchanged(_) | Read::Changed(..)))
            .count() as u64;
        if let Some(events) = events {
            while let Ok(ev) = events.try_recv() {
                self.on_event(ev);
            }
        }
        let mut to_parse: Vec<(PathBuf, Vec<u8>, Taken)> = Vec::new();
        for ((path, _), found) in paths.into_iter().zip(reads) {
            match found {
                Read::Gone => {
                    if let Some((key, old)) = self.files.remove_entry(path.as_path()) {
                        tracing::info!(path = %path.display(), "manifest removed");
                        self.settling.remove(&key);
                        self.objects
                            .redefine(&key, &old.objects, &[], &mut affected);
                        structure_changed = true;
                    }
                }
                Read::Folder => self.noted.rescan = true,
                Read::Unchanged(stamp) => {
                    if let Some(f) = self.files.get_mut(path.as_path()) {
                        f.pending = None;
                        f.stamp = stamp.trusted(self.time_step).then_some(stamp);
                    }
                    self.settling.remove(path.as_path());
                }
                Read::Failed(e) => {
                    let error = ParseError {
                        path: path.clone(),
                        line: None,
                        message: format!("cannot read: {e}"),
                    };
                    self.reject(&path, None, error);
                    structure_changed = true;
                }
                Read::Changed(bytes, digest, stamp) => {
                    let done = confirmed.contains(&path)
                        && !self.noted.paths.contains(&path)
                        && !self.writing.contains_key(&path);
                    if self.settled(&path, &bytes, digest, done) {
                        let stamp = stamp.trusted(self.time_step).then_some(stamp);
                        to_parse.push((path, bytes, (digest, stamp)));
                    }
                }
            }
        }
        let parsed = read::par_map(&to_parse, |(path, bytes, _)| read::parse_bytes(path, bytes));
        for ((path, _, (digest, stamp)), parsed) in to_parse.into_iter().zip(parsed) {
            structure_changed = true;
            match parsed {
                Ok(Parsed { objects, warnings }) => {
                    tracing::debug!(path = %path.display(), objects = objects.len(), "manifest loaded");
                    let key = self.key(&path);
                    let old = self.files.remove(&key).unwrap_or_default();
                    // Said once, when it appears, not at every reload of the file.
                    for w in warnings.iter().filter(|w| !old.warnings.contains(w)) {
                        tracing::warn!(
                            path = %w.path.display(),
                            line = w.line,
                            kind = %w.kind,
                            reason = w.reason,
                            warning = %w,
                            "manifest object taken with a warning"
                        );
                    }
                    let entries = self.objects.entries(&old.objects, objects);
                    self.objects
                        .redefine(&key, &old.objects, &entries, &mut affected);
                    self.settling.remove(&key);
                    self.files.insert(
                        key,
                        FileState {
                            digest: Some(digest),
                            stamp,
                            objects: entries,
                            warnings,
                            error: None,
                            pending: None,
                        },
                    );
                }
                Err(error) => self.reject(&path, Some((digest, stamp)), error),
            }
        }
        let files = &self.files;
        let changed = !affected.is_empty()
            && self.objects.sync(
                affected,
                |p| files.get(p).map(|f| f.objects.as_slice()),
                &self.store,
            );
        if structure_changed {
            self.report();
        }
        changed
    }

    /// The shared form of `path`, reusing the one already held.
    fn key(&self, path: &Path) -> Arc<Path> {
        match self.files.get_key_value(path) {
            Some((k, _)) => k.clone(),
            None => Arc::from(path),
        }
    }

    /// Whether new content is ready to be taken in; if not, it is noted as settling.
    fn settled(&mut self, path: &Path, bytes: &[u8], digest: Digest, confirmed: bool) -> bool {
        if self.settle.is_zero() {
            return true;
        }
        let key = self.key(path);
        let file = self.files.entry(key.clone()).or_default();
        let blank = bytes.iter().all(u8::is_ascii_whitespace);
        let settle = if blank && !file.objects.is_empty() {
            self.settle.max(SETTLE_EMPTY)
        } else if confirmed {
            Duration::ZERO
        } else {
            self.settle
        };
        if settle.is_zero() {
            return true;
        }
        match &file.pending {
            Some((p, since)) if *p == digest && since.elapsed() >= settle => true,
            Some((p, _)) if *p == digest => false,
            _ => {
                tracing::trace!(path = %path.display(), len = bytes.len(), "new content; settling");
                file.pending = Some((digest, Instant::now()));
                self.settling.insert(key);
                false
            }
        }
    }

    /// `path` does not parse (or, without `read`, cannot be read): its last good objects
    /// stay in force.
    fn reject(&mut self, path: &Path, read: Option<Taken>, error: ParseError) {
        let key = self.key(path);
        self.settling.remove(&key);
        let file = self.files.entry(key).or_default();
        tracing::warn!(
            path = %path.display(),
            line = error.line,
            kept_objects = file.objects.len(),
            error = %error,
            "manifest rejected; its last good version stays in force"
        );
        file.digest = read.map(|(digest, _)| digest);
        file.stamp = read.and_then(|(_, stamp)| stamp);
        file.error = Some(error);
        file.pending = None;
    }

    fn report(&mut self) {
        let mut problems: Vec<Problem> = self
            .files
            .values()
            .filter_map(|f| f.error.as_ref())
            .map(|e| Problem {
                reason: "invalid_manifest",
                kind: "File".to_owned(),
                message: e.to_string(),
            })
            .collect();
        problems.extend(
            self.files
                .values()
                .flat_map(|f| &f.warnings)
                .map(|w| Problem {
                    reason: w.reason,
                    kind: w.kind.clone(),
                    message: w.to_string(),
                }),
        );
        problems.extend(self.objects.duplicates().map(|d| Problem {
            reason: "duplicate_object",
            kind: d.split(' ').next().unwrap_or("").to_owned(),
            message: d.clone(),
        }));
        problems.sort();
        if problems != self.problems {
            let before: HashSet<&Problem> = self.problems.iter().collect();
            for p in problems.iter().filter(|p| p.reason == "duplicate_object") {
                if !before.contains(p) {
                    tracing::warn!(problem = %p.message, "duplicate object");
                }
            }
            if let Some(sink) = &self.sink {
                sink(&problems);
            }
            self.problems = problems;
        }
    }

    /// The problems currently seen (parse errors, warnings and duplicates).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Note a change event: the files it names are read again on the next refresh, and a
    /// file being written is left alone until it is closed. Returns whether the event may
    /// change what the folder holds (our own reads come back as access events, and must
    /// not trigger anything).
    fn note(&mut self, event: &notify::Event) -> bool {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind};
        tracing::trace!(kind = ?event.kind, paths = ?event.paths, "folder event");
        let relevant = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        if !relevant {
            return false;
        }
        if event.need_rescan() || event.paths.is_empty() {
            self.noted.rescan = true;
        }
        for path in &event.paths {
            // Content read before this event may be a moment of a rewrite: it must settle
            // again from the next read on.
            if let Some(file) = self.files.get_mut(path.as_path()) {
                file.pending = None;
            }
            self.settling.remove(path.as_path());
            match event.kind {
                EventKind::Create(CreateKind::File | CreateKind::Any)
                | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                    self.writing.insert(path.clone(), Instant::now());
                }
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Remove(_)
                | EventKind::Modify(ModifyKind::Name(_)) => {
                    self.writing.remove(path);
                }
                _ => {}
            }
            let folder_event = matches!(
                event.kind,
                EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder)
            );
            if !folder_event && self.is_manifest(path) {
                self.noted.paths.insert(path.clone());
            } else if self.needs_rescan(path) {
                self.noted.rescan = true;
            }
        }
        true
    }

    /// Whether `path` is a file the folder walk would pick (if it is a file).
    fn is_manifest(&self, path: &Path) -> bool {
        if self.single_file || self.root == path {
            return path == self.root;
        }
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        Format::of(path).is_some()
            && !rel
                .components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    }

    /// Whether an event on `path`, which is not a manifest file, may still change what
    /// the walk finds: a folder (or a symlink to one) created, removed or renamed, or a
    /// mounted ConfigMap's `..data` swapped. Editor temporaries and other files are not.
    fn needs_rescan(&self, path: &Path) -> bool {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("..") {
            return true;
        }
        if self.single_file || name.starts_with('.') {
            return false;
        }
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        if rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        {
            return false;
        }
        match std::fs::metadata(path) {
            Ok(meta) => meta.is_dir(),
            // Gone: was it a folder we had files from?
            Err(_) => self.files.keys().any(|p| p.starts_with(path)),
        }
    }

    /// Watch the folder on a thread of its own and keep the store in line with it. The
    /// initial state should already be loaded with [`FileSource::rescan`].
    pub fn watch(mut self) -> Result<std::thread::JoinHandle<()>, FilesError> {
        let (tx, rx) = mpsc::channel();
        let watcher = self.start_watcher(tx.clone())?;
        // Changes made between the initial load and the watch starting are caught by a
        // rescan the thread starts with (not here: the caller is waiting to serve).
        self.noted.rescan = true;
        std::thread::Builder::new()
            .name("portico-files".into())
            .spawn(move || self.run(watcher, tx, rx))
            .map_err(FilesError::Thread)
    }

    fn start_watcher(
        &self,
        tx: mpsc::Sender<notify::Result<notify::Event>>,
    ) -> Result<(RecommendedWatcher, Option<u64>), FilesError> {
        let err = |source| FilesError::Watch {
            path: self.root.clone(),
            source,
        };
        let mut watcher = notify::recommended_watcher(tx).map_err(err)?;
        // A single manifest file is watched through its folder, so that a new version
        // renamed over it is seen (a watch on the file would follow the old inode).
        let (path, mode) = match self.root.parent() {
            Some(parent) if self.single_file => (parent, RecursiveMode::NonRecursive),
            _ => (self.root.as_path(), RecursiveMode::Recursive),
        };
        watcher.watch(path, mode).map_err(err)?;
        Ok((watcher, walk::identity(&self.root)))
    }

    /// How long the loop may sleep: until the first settling file may be taken in, or
    /// until the next folder check.
    fn next_wake(&self) -> Duration {
        if self.noted.rescan || !self.noted.paths.is_empty() {
            return Duration::ZERO;
        }
        let mut wait = ROOT_CHECK;
        for path in &self.settling {
            if let Some((_, since)) = self.files.get(path).and_then(|f| f.pending.as_ref()) {
                let settle = self.settle.max(Duration::from_millis(1));
                wait = wait.min(settle.saturating_sub(since.elapsed()));
            }
        }
        wait
    }

    fn run(
        mut self,
        mut watcher: (RecommendedWatcher, Option<u64>),
        tx: mpsc::Sender<notify::Result<notify::Event>>,
        rx: Events,
    ) {
        let mut last_scan = Instant::now();
        loop {
            match rx.recv_timeout(self.next_wake()) {
                Ok(ev) => {
                    if self.on_event(ev) {
                        // Gather the rest of the burst (a write and its close, a rename).
                        let start = Instant::now();
                        loop {
                            let left = MAX_DELAY.saturating_sub(start.elapsed()).min(QUIET);
                            if left.is_zero() {
                                break;
                            }
                            match rx.recv_timeout(left) {
                                Ok(ev) => {
                                    self.on_event(ev);
                                }
                                Err(mpsc::RecvTimeoutError::Timeout) => break,
                                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                            }
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            // The folder itself was replaced (renamed over, or recreated): watch the new one.
            let identity = walk::identity(&self.root);
            if identity != watcher.1 && identity.is_some() {
                match self.start_watcher(tx.clone()) {
                    Ok(w) => {
                        tracing::info!(path = %self.root.display(), "manifest folder replaced; watching the new one");
                        watcher = w;
                        self.noted.rescan = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch the manifest folder"),
                }
            }
            if last_scan.elapsed() >= RESYNC {
                self.noted.rescan = true;
            }
            if self.noted.rescan {
                last_scan = Instant::now();
            }
            self.refresh_noted(Some(&rx));
        }
    }

    fn on_event(&mut self, ev: notify::Result<notify::Event>) -> bool {
        match ev {
            Ok(ev) => self.note(&ev),
            Err(e) => {
                tracing::warn!(error = %e, "manifest folder watch error; rescanning");
                self.noted.rescan = true;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::store::ObjectKey;

    fn service(name: &str, port: u16) -> String {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: {port}\n")
    }

    fn port_of(store: &SharedStore, name: &str) -> Option<i32> {
        let snap = store.snapshot();
        let svc = snap.services.get(&ObjectKey::new("default", name))?;
        Some(svc.spec.as_ref()?.ports.as_ref()?[0].port)
    }

    fn source(dir: &Path) -> (FileSource, SharedStore, Arc<Mutex<Vec<Problem>>>) {
        let store = SharedStore::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let src = FileSource::new(dir, store.clone())
            .unwrap()
            .with_settle(Duration::ZERO)
            .with_problem_sink(Box::new(move |p| *sink.lock().unwrap() = p.to_vec()));
        (src, store, seen)
    }

    #[test]
    fn folder_is_read_recursively_and_hidden_entries_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::create_dir_all(dir.path().join(".hidden")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), service("a", 1)).unwrap();
        std::fs::write(dir.path().join("sub/deeper/b.yml"), service("b", 2)).unwrap();
        std::fs::write(dir.path().join(".hidden/c.yaml"), service("c", 3)).unwrap();
        std::fs::write(dir.path().join("d.txt"), service("d", 4)).unwrap();
        let (mut src, store, _) = source(dir.path());
        assert!(src.rescan());
        assert_eq!(port_of(&store, "a"), Some(1));
        assert_eq!(port_of(&store, "b"), Some(2));
        assert_eq!(port_of(&store, "c"), None);
        assert_eq!(port_of(&store, "d"), None);
        // Nothing changed: no store update, so the compile loop is not woken.
        let rev = *store.subscribe().borrow();
        assert!(!src.rescan());
        assert_eq!(*store.subscribe().borrow(), rev);
    }

    #[test]
    fn a_rescan_opens_only_files_whose_stamp_moved() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, service("a", 1)).unwrap();
        std::fs::write(dir.path().join("b.yaml"), service("b", 1)).unwrap();
        let (mut src, store, _) = source(dir.path());
        src.time_step = Duration::from_millis(50);
        std::thread::sleep(Duration::from_millis(80));
        assert!(src.rescan());
        assert_eq!(src.files_read, 2);
        assert!(!src.rescan());
        assert_eq!(src.files_read, 2, "unchanged files were opened");

        // Rewritten to the same size with its modification time put back: the change
        // time still moves.
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::fs::write(&a, service("a", 2)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(src.rescan());
        assert_eq!(port_of(&store, "a"), Some(2));
        assert_eq!(src.files_read, 3);
        // Changed within the last step: read at every rescan until the change is older.
        assert!(!src.rescan());
        assert_eq!(src.files_read, 4);
        std::thread::sleep(Duration::from_millis(80));
        assert!(!src.rescan());
        assert!(!src.rescan());
        assert_eq!(src.files_read, 5);
        assert_eq!(port_of(&store, "b"), Some(1));
    }

    #[test]
    fn broken_edit_keeps_last_good_version_and_delete_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, service("a", 1)).unwrap();
        let (mut src, store, seen) = source(dir.path());
        src.rescan();
        let created = store.snapshot().services[&ObjectKey::new("default", "a")]
            .metadata
            .creation_timestamp
            .clone();
        assert!(created.is_some());

        std::fs::write(&path, "apiVersion: v1\nkind: Service\nmetadata: {name: a\n").unwrap();
        assert!(!src.rescan());
        assert_eq!(port_of(&store, "a"), Some(1));
        let problems = seen.lock().unwrap().clone();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].reason, "invalid_manifest");
        assert!(
            problems[0].message.contains("a.yaml:"),
            "{}",
            problems[0].message
        );

        std::fs::write(&path, service("a", 2)).unwrap();
        assert!(src.rescan());
        assert_eq!(port_of(&store, "a"), Some(2));
        assert!(seen.lock().unwrap().is_empty());
        // An edit is not a re-creation: the first-seen time stays.
        let again = store.snapshot().services[&ObjectKey::new("default", "a")]
            .metadata
            .creation_timestamp
            .clone();
        assert_eq!(again, created);

        std::fs::remove_file(&path).unwrap();
        assert!(src.rescan());
        assert_eq!(port_of(&store, "a"), None);
    }

    #[test]
    fn a_v1beta1_ingress_is_taken_with_a_warning_until_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ing.yaml");
        let v1beta1 = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: kubia}\n\
                       spec:\n  rules:\n  - http:\n      paths:\n      - path: /\n        \
                       backend: {serviceName: kubia, servicePort: 80}\n";
        std::fs::write(&path, v1beta1).unwrap();
        let (mut src, store, seen) = source(dir.path());
        assert!(src.rescan());
        assert!(store
            .snapshot()
            .ingresses
            .contains_key(&ObjectKey::new("default", "kubia")));
        let problems = seen.lock().unwrap().clone();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].reason, "deprecated_api_version");
        assert_eq!(problems[0].kind, "Ingress");
        assert!(
            problems[0].message.contains(
                "ing.yaml:1: Ingress default/kubia: apiVersion extensions/v1beta1 is deprecated"
            ),
            "{}",
            problems[0].message
        );

        let v1 = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: kubia}\n\
                  spec:\n  rules:\n  - http:\n      paths:\n      - path: /\n        \
                  pathType: ImplementationSpecific\n        \
                  backend: {service: {name: kubia, port: {number: 80}}}\n";
        std::fs::write(&path, v1).unwrap();
        // The same Ingress: the store is not touched, the warning goes.
        assert!(!src.rescan());
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn duplicate_object_first_path_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), service("x", 2)).unwrap();
        std::fs::write(dir.path().join("a.yaml"), service("x", 1)).unwrap();
        let (mut src, store, seen) = source(dir.path());
        src.rescan();
        assert_eq!(port_of(&store, "x"), Some(1));
        let problems = seen.lock().unwrap().clone();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].reason, "duplicate_object");
        assert_eq!(problems[0].kind, "Service");

        // The winner goes away: the other definition takes over.
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert!(src.rescan());
        assert_eq!(port_of(&store, "x"), Some(2));
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn file_being_written_keeps_its_last_version_until_closed() {
        use notify::event::{AccessKind, AccessMode, DataChange, ModifyKind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, service("a", 1)).unwrap();
        let (mut src, store, _) = source(dir.path());
        src.rescan();
        // Truncated mid-write: must not drop the Service.
        std::fs::write(&path, "").unwrap();
        src.note(
            &notify::Event::new(EventKind::Modify(ModifyKind::Data(DataChange::Any)))
                .add_path(path.clone()),
        );
        src.rescan();
        assert_eq!(port_of(&store, "a"), Some(1));
        std::fs::write(&path, service("a", 3)).unwrap();
        src.note(
            &notify::Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
                .add_path(path.clone()),
        );
        src.rescan();
        assert_eq!(port_of(&store, "a"), Some(3));
    }

    #[test]
    fn new_content_is_taken_in_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, service("a", 1)).unwrap();
        let (src, store, _) = source(dir.path());
        let mut src = src.with_settle(Duration::from_millis(200));
        src.load();
        assert_eq!(
            port_of(&store, "a"),
            Some(1),
            "the initial load does not wait"
        );

        // Caught mid-rewrite: empty. Not taken in, however long it is seen...
        std::fs::write(&path, "").unwrap();
        assert!(!src.rescan());
        assert!(src.settling());
        // ...if it changes again before settling.
        std::fs::write(&path, service("a", 2)).unwrap();
        assert!(!src.rescan());
        std::thread::sleep(Duration::from_millis(250));
        assert!(src.rescan());
        assert!(!src.settling());
        assert_eq!(port_of(&store, "a"), Some(2));
    }

    #[test]
    fn an_emptied_file_waits_longer_before_its_objects_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, service("a", 1)).unwrap();
        let (src, store, _) = source(dir.path());
        let mut src = src.with_settle(Duration::from_millis(50));
        src.load();
        std::fs::write(&path, "\n").unwrap();
        src.rescan();
        std::thread::sleep(Duration::from_millis(150));
        src.rescan();
        assert_eq!(
            port_of(&store, "a"),
            Some(1),
            "emptied file taken in too soon"
        );
        std::thread::sleep(SETTLE_EMPTY);
        assert!(src.rescan());
        assert_eq!(port_of(&store, "a"), None);
    }

    #[test]
    fn a_single_file_can_be_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.yaml");
        std::fs::write(&path, service("a", 1)).unwrap();
        std::fs::write(dir.path().join("other.yaml"), service("b", 2)).unwrap();
        let (src, store, _) = source(&path);
        let mut src = src.with_settle(SETTLE);
        src.load();
        assert_eq!(port_of(&store, "a"), Some(1));
        assert_eq!(port_of(&store, "b"), None, "only the named file is read");
        let _thread = src.watch().unwrap();
        std::fs::write(dir.path().join(".one.tmp"), service("a", 4)).unwrap();
        std::fs::rename(dir.path().join(".one.tmp"), &path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while port_of(&store, "a") != Some(4) {
            assert!(
                Instant::now() < deadline,
                "rename over the file never applied"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(FileSource::new(dir.path().join("x.txt"), SharedStore::new()).is_err());
    }

    #[test]
    fn settings_configmap_and_affinity_key_come_from_the_folder() {
        use crate::compile::{compile, CompileOptions};

        let configmap = |body_size: &str| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{namespace: portico, name: portico}}\n\
                 data:\n  proxy-body-size: \"{body_size}\"\n  use-forwarded-headers: \"true\"\n"
            )
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("settings.yaml"), configmap("8m")).unwrap();
        // Written by hand, as stringData; any namespace will do over a folder.
        std::fs::write(
            dir.path().join("key.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: portico-affinity-key}\ntype: Opaque\n\
             stringData:\n  key: 00112233445566778899AABBCCDDEEFF\n",
        )
        .unwrap();
        let (mut src, store, seen) = source(dir.path());
        assert!(src.rescan());
        assert!(seen.lock().unwrap().is_empty());
        let opts = CompileOptions {
            configmap: Some(ObjectKey::new("portico", "portico")),
            ..CompileOptions::default()
        };
        let c = compile(&store.snapshot(), &opts);
        assert_eq!(c.settings.proxy_body_size, Some(8 << 20));
        assert!(c.settings.use_forwarded_headers);
        assert_eq!(
            c.affinity_key,
            crate::compile::decode_key(b"00112233445566778899aabbccddeeff")
        );
        assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);

        // An edit changes the settings; a deletion brings the defaults back with a warning.
        std::fs::write(dir.path().join("settings.yaml"), configmap("0")).unwrap();
        assert!(src.rescan());
        let c = compile(&store.snapshot(), &opts);
        assert_eq!(c.settings.proxy_body_size, None);
        std::fs::remove_file(dir.path().join("settings.yaml")).unwrap();
        assert!(src.rescan());
        let c = compile(&store.snapshot(), &opts);
        assert_eq!(c.settings, crate::compile::GlobalSettings::default());
        assert_eq!(c.diagnostics.len(), 1, "{:?}", c.diagnostics);
    }

    #[test]
    fn watcher_applies_edits_additions_renames_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), service("a", 1)).unwrap();
        let (src, store, _) = source(dir.path());
        let mut src = src.with_settle(SETTLE);
        src.load();
        let _thread = src.watch().unwrap();
        let wait = |name: &str, want: Option<i32>| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while port_of(&store, name) != want {
                assert!(Instant::now() < deadline, "{name} never became {want:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        std::fs::write(dir.path().join("a.yaml"), service("a", 5)).unwrap();
        wait("a", Some(5));
        std::fs::write(dir.path().join("b.yaml"), service("b", 6)).unwrap();
        wait("b", Some(6));
        // An editor that writes a temporary file and renames it over the original.
        std::fs::write(dir.path().join(".a.yaml.tmp"), service("a", 7)).unwrap();
        std::fs::rename(dir.path().join(".a.yaml.tmp"), dir.path().join("a.yaml")).unwrap();
        wait("a", Some(7));
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        wait("b", None);
        std::fs::create_dir(dir.path().join("new")).unwrap();
        std::fs::write(dir.path().join("new/c.json"), r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"c"},"spec":{"ports":[{"port":8}]}}"#).unwrap();
        wait("c", Some(8));
    }

    #[test]
    fn a_replaced_folder_is_watched_anew() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("m");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.yaml"), service("a", 1)).unwrap();
        let (src, store, _) = source(&root);
        let mut src = src.with_settle(SETTLE);
        src.load();
        let _thread = src.watch().unwrap();
        let staged = parent.path().join("m.new");
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join("a.yaml"), service("a", 2)).unwrap();
        std::fs::rename(&root, parent.path().join("m.old")).unwrap();
        std::fs::rename(&staged, &root).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while port_of(&store, "a") != Some(2) {
            assert!(Instant::now() < deadline, "swap never applied");
            std::thread::sleep(Duration::from_millis(20));
        }
        // And edits in the new folder are seen.
        std::fs::write(root.join("a.yaml"), service("a", 3)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while port_of(&store, "a") != Some(3) {
            assert!(Instant::now() < deadline, "edit after swap never applied");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
