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
//! Changes are applied by rescanning the whole folder shortly after any change event
//! (files are small; a rescan only re-parses files whose bytes changed), which copes with
//! editors that write through a rename and with a folder swapped wholesale. A slow
//! periodic rescan backs up the watcher.

mod parse;
mod walk;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

pub use parse::{parse, Format, ParseError};

use crate::store::{Kind, Object, ObjectKey, SharedStore};

/// After a change event, wait this long without further events before rescanning...
const QUIET: Duration = Duration::from_millis(100);
/// ...but never longer than this after the first event, so a stream of writes still
/// applies within a second.
const MAX_DELAY: Duration = Duration::from_millis(300);
/// Rescan this often even without events, in case the watcher missed something.
const RESYNC: Duration = Duration::from_secs(5);
/// New content must read the same for this long before it is taken in. A file rewritten
/// in place (truncate, then write) passes through empty or cut-short versions that may
/// well parse; taking one in would drop routes for a moment.
const SETTLE: Duration = Duration::from_millis(60);
/// A file that had content and now reads empty is most likely caught between truncate and
/// write by a writer that is not getting the CPU; emptying a file on purpose is rare, so
/// it waits longer.
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
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `invalid_manifest` or `duplicate_object`.
    pub reason: &'static str,
    /// The object kind, or `File` for a file that does not parse.
    pub kind: String,
    pub message: String,
}

/// Called with the full list of current problems whenever it changes.
pub type ProblemSink = Box<dyn Fn(&[Problem]) + Send>;

/// One file as last read.
struct FileState {
    /// The bytes last taken in (parsed, successfully or not).
    bytes: Vec<u8>,
    /// The objects of the last version that parsed (empty if none ever did).
    objects: Vec<Object>,
    error: Option<ParseError>,
    /// New bytes seen but not yet taken in: they must stay the same for [`SETTLE`] first.
    pending: Option<(Vec<u8>, Instant)>,
    /// `objects` were replaced by the current rescan.
    fresh: bool,
}

impl FileState {
    fn new() -> Self {
        Self {
            bytes: Vec::new(),
            objects: Vec::new(),
            error: None,
            pending: None,
            fresh: false,
        }
    }
}

/// An object as written to the store, and which file it came from.
struct Applied {
    path: PathBuf,
    object: Object,
}

/// The file source's state: what each file holds and what the store was given.
pub struct FileSource {
    root: PathBuf,
    store: SharedStore,
    files: BTreeMap<PathBuf, FileState>,
    applied: BTreeMap<(Kind, ObjectKey), Applied>,
    duplicates: BTreeSet<String>,
    /// Files seen created or modified and not yet closed.
    writing: HashMap<PathBuf, Instant>,
    sink: Option<ProblemSink>,
    problems: Vec<Problem>,
    settle: Duration,
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
            root,
            store,
            files: BTreeMap::new(),
            applied: BTreeMap::new(),
            duplicates: BTreeSet::new(),
            writing: HashMap::new(),
            sink: None,
            problems: Vec::new(),
            settle: SETTLE,
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
        self.files.values().any(|f| f.pending.is_some())
    }

    /// Read the folder and bring the store in line with it. Returns whether the store
    /// changed. Changed files are taken in once their content has settled; call again
    /// while [`FileSource::settling`].
    pub fn rescan(&mut self) -> bool {
        let now = Instant::now();
        self.writing
            .retain(|_, since| now.duration_since(*since) < WRITE_GRACE);
        let found = walk::manifests(&self.root);
        let mut next = BTreeMap::new();
        for path in found {
            let old = self.files.remove(&path);
            if self.writing.contains_key(&path) {
                // Half-written: keep what we had, and do not pick up a new file yet.
                if let Some(mut old) = old {
                    old.fresh = false;
                    next.insert(path, old);
                }
                continue;
            }
            if let Some(state) = self.read(&path, old) {
                next.insert(path, state);
            }
        }
        let mut objects_changed = !self.files.is_empty();
        for path in self.files.keys() {
            tracing::info!(path = %path.display(), "manifest removed");
        }
        self.files = next;
        objects_changed |= self.files.values().any(|f| f.fresh);
        let read = now.elapsed();
        // Most rescans (resyncs, settling, unrelated events) change nothing: skip the
        // comparison with what the store holds.
        let changed = objects_changed && self.apply();
        self.report();
        tracing::trace!(
            read_ms = read.as_secs_f64() * 1000.0,
            total_ms = now.elapsed().as_secs_f64() * 1000.0,
            changed,
            "rescanned"
        );
        changed
    }

    /// Read one file; re-parse only if its bytes changed. `None` if it vanished meanwhile
    /// (the next event rescans).
    fn read(&self, path: &Path, old: Option<FileState>) -> Option<FileState> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                let error = ParseError {
                    path: path.to_owned(),
                    line: None,
                    message: format!("cannot read: {e}"),
                };
                return Some(self.rejected(path, old, Vec::new(), error));
            }
        };
        let mut old = old.unwrap_or_else(FileState::new);
        old.fresh = false;
        if old.bytes == bytes {
            old.pending = None;
            return Some(old);
        }
        // Even a file renamed into place settles: the next writer may already be
        // rewriting it in place before its change events reach us.
        if !self.settle.is_zero() {
            let blank = bytes.iter().all(u8::is_ascii_whitespace);
            let settle = if blank && !old.objects.is_empty() {
                self.settle.max(SETTLE_EMPTY)
            } else {
                self.settle
            };
            match &old.pending {
                Some((p, since)) if *p == bytes && since.elapsed() >= settle => {}
                Some((p, _)) if *p == bytes => return Some(old),
                _ => {
                    tracing::trace!(path = %path.display(), len = bytes.len(), "new content; settling");
                    old.pending = Some((bytes, Instant::now()));
                    return Some(old);
                }
            }
        }
        let old = Some(old);
        let format = Format::of(path)?;
        let parsed = match std::str::from_utf8(&bytes) {
            Ok(text) => parse(path, format, text),
            Err(e) => Err(ParseError {
                path: path.to_owned(),
                line: None,
                message: format!("not UTF-8: {e}"),
            }),
        };
        match parsed {
            Ok(objects) => {
                tracing::info!(path = %path.display(), objects = objects.len(), "manifest loaded");
                Some(FileState {
                    bytes,
                    objects,
                    error: None,
                    pending: None,
                    fresh: true,
                })
            }
            Err(error) => Some(self.rejected(path, old, bytes, error)),
        }
    }

    fn rejected(
        &self,
        path: &Path,
        old: Option<FileState>,
        bytes: Vec<u8>,
        error: ParseError,
    ) -> FileState {
        let kept = old.map(|o| o.objects).unwrap_or_default();
        tracing::warn!(
            path = %path.display(),
            line = error.line,
            kept_objects = kept.len(),
            error = %error,
            "manifest rejected; its last good version stays in force"
        );
        FileState {
            bytes,
            objects: kept,
            error: Some(error),
            pending: None,
            fresh: false,
        }
    }

    /// Work out the wanted objects from the files and write the difference to the store.
    fn apply(&mut self) -> bool {
        // Paths are compared as plain strings below: `Path`'s own comparison walks
        // components and dominates the cost with thousands of objects. Every path here
        // comes from the same walk, so the string form is canonical.
        let mut wanted: BTreeMap<(Kind, ObjectKey), (&Path, &Object, bool)> = BTreeMap::new();
        let mut duplicates = BTreeSet::new();
        for (path, file) in &self.files {
            for obj in &file.objects {
                let id = (obj.kind(), obj.key());
                match wanted.get(&id) {
                    Some((first, _, _)) if first.as_os_str() != path.as_os_str() => {
                        duplicates.insert(format!(
                            "{:?} {} is defined in {} and {}; the first wins",
                            id.0,
                            id.1,
                            first.display(),
                            path.display()
                        ));
                    }
                    // Within one file, the later definition wins, as with `kubectl apply`.
                    _ => {
                        wanted.insert(id, (path.as_path(), obj, file.fresh));
                    }
                }
            }
        }
        for d in duplicates.difference(&self.duplicates) {
            tracing::warn!(problem = %d, "duplicate object");
        }
        self.duplicates = duplicates;

        let mut upserts = Vec::new();
        for (id, (path, obj, fresh)) in &wanted {
            let same_path = |a: &Applied| a.path.as_os_str() == path.as_os_str();
            match self.applied.get(id) {
                // Comparing every object on every rescan is costly; objects of a file
                // that was not re-parsed are the ones already applied.
                Some(a) if !fresh && same_path(a) => {}
                Some(a) if same(&a.object, obj) => {
                    if !same_path(a) {
                        // Same object, now owned by another file: no store change.
                        upserts.push((id.clone(), path.to_path_buf(), None));
                    }
                }
                prev => {
                    let created = prev.and_then(|a| created(&a.object));
                    let mut obj = (*obj).clone();
                    set_created(&mut obj, created.unwrap_or_else(|| Time(Timestamp::now())));
                    upserts.push((id.clone(), path.to_path_buf(), Some(obj)));
                }
            }
        }
        let removals: Vec<(Kind, ObjectKey)> = self
            .applied
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        let store_changes = upserts.iter().any(|u| u.2.is_some()) || !removals.is_empty();
        if store_changes {
            let (adds, dels) = (
                upserts.iter().filter(|u| u.2.is_some()).count(),
                removals.len(),
            );
            self.store.update(|store| {
                for (_, _, obj) in &upserts {
                    if let Some(obj) = obj {
                        store.apply(obj.clone());
                    }
                }
                for (kind, key) in &removals {
                    store.remove(*kind, key);
                }
            });
            tracing::debug!(
                applied = adds,
                removed = dels,
                "store updated from manifests"
            );
        }
        for (id, path, obj) in upserts {
            match obj {
                Some(object) => {
                    self.applied.insert(id, Applied { path, object });
                }
                None => {
                    if let Some(a) = self.applied.get_mut(&id) {
                        a.path = path;
                    }
                }
            }
        }
        for id in removals {
            self.applied.remove(&id);
        }
        store_changes
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
        problems.extend(self.duplicates.iter().map(|d| Problem {
            reason: "duplicate_object",
            kind: d.split(' ').next().unwrap_or("").to_owned(),
            message: d.clone(),
        }));
        problems.sort();
        if problems != self.problems {
            if let Some(sink) = &self.sink {
                sink(&problems);
            }
            self.problems = problems;
        }
    }

    /// The problems currently seen (parse errors and duplicates).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Note a change event: a file being written is left alone until it is closed.
    /// Returns whether the event may change what the folder holds (our own reads come
    /// back as access events, and must not trigger rescans).
    fn note(&mut self, event: &notify::Event) -> bool {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        tracing::trace!(kind = ?event.kind, paths = ?event.paths, "folder event");
        let relevant = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        if !relevant {
            return false;
        }
        for path in &event.paths {
            // Content read before this event may be a moment of a rewrite: it must settle
            // again from the next read on.
            if let Some(file) = self.files.get_mut(path) {
                file.pending = None;
            }
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
        }
        true
    }

    /// Watch the folder on a thread of its own and keep the store in line with it. The
    /// initial state should already be loaded with [`FileSource::rescan`].
    pub fn watch(mut self) -> Result<std::thread::JoinHandle<()>, FilesError> {
        let (tx, rx) = mpsc::channel();
        let watcher = self.start_watcher(tx.clone())?;
        // Changes made between the initial load and the watch starting are caught here.
        self.rescan();
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
            Some(parent) if self.root.is_file() => (parent, RecursiveMode::NonRecursive),
            _ => (self.root.as_path(), RecursiveMode::Recursive),
        };
        watcher.watch(path, mode).map_err(err)?;
        Ok((watcher, walk::identity(&self.root)))
    }

    fn run(
        mut self,
        mut watcher: (RecommendedWatcher, Option<u64>),
        tx: mpsc::Sender<notify::Result<notify::Event>>,
        rx: mpsc::Receiver<notify::Result<notify::Event>>,
    ) {
        let mut last_scan = Instant::now();
        loop {
            let settling = self.settling();
            let wait = if settling {
                self.settle.saturating_sub(last_scan.elapsed())
            } else {
                ROOT_CHECK
            };
            let mut dirty = false;
            let received = rx.recv_timeout(wait).map(|ev| self.on_event(ev));
            match received {
                Ok(true) => {
                    dirty = true;
                    // Debounce: gather the rest of the burst.
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
                Ok(false) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            dirty |= settling && last_scan.elapsed() >= self.settle;
            // The folder itself was replaced (renamed over, or recreated): watch the new one.
            let identity = walk::identity(&self.root);
            if identity != watcher.1 && identity.is_some() {
                match self.start_watcher(tx.clone()) {
                    Ok(w) => {
                        tracing::info!(path = %self.root.display(), "manifest folder replaced; watching the new one");
                        watcher = w;
                        dirty = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch the manifest folder"),
                }
            }
            if dirty || last_scan.elapsed() >= RESYNC {
                self.rescan();
                last_scan = Instant::now();
            }
        }
    }

    fn on_event(&mut self, ev: notify::Result<notify::Event>) -> bool {
        match ev {
            Ok(ev) => self.note(&ev),
            Err(e) => {
                tracing::warn!(error = %e, "manifest folder watch error; rescanning");
                true
            }
        }
    }
}

fn same(a: &Object, b: &Object) -> bool {
    match (a, b) {
        (Object::Ingress(a), Object::Ingress(b)) => strip(a.clone()) == strip(b.clone()),
        (Object::IngressClass(a), Object::IngressClass(b)) => strip(a.clone()) == strip(b.clone()),
        (Object::Service(a), Object::Service(b)) => strip(a.clone()) == strip(b.clone()),
        (Object::EndpointSlice(a), Object::EndpointSlice(b)) => {
            strip(a.clone()) == strip(b.clone())
        }
        (Object::Endpoints(a), Object::Endpoints(b)) => strip(a.clone()) == strip(b.clone()),
        (Object::Secret(a), Object::Secret(b)) => strip(a.clone()) == strip(b.clone()),
        _ => false,
    }
}

/// The object without the creation time this source stamps on it.
fn strip<
    T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    mut o: T,
) -> T {
    o.metadata_mut().creation_timestamp = None;
    o
}

fn meta_mut(obj: &mut Object) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    match obj {
        Object::Ingress(o) => &mut o.metadata,
        Object::IngressClass(o) => &mut o.metadata,
        Object::Service(o) => &mut o.metadata,
        Object::EndpointSlice(o) => &mut o.metadata,
        Object::Endpoints(o) => &mut o.metadata,
        Object::Secret(o) => &mut o.metadata,
    }
}

fn created(obj: &Object) -> Option<Time> {
    let mut obj = obj.clone();
    meta_mut(&mut obj).creation_timestamp.take()
}

/// The API server stamps `creationTimestamp` when an object is created; `compile` orders
/// conflicting Ingresses by it. A manifest that sets one keeps it; otherwise the time this
/// source first saw the object stands in, kept across edits.
fn set_created(obj: &mut Object, first_seen: Time) {
    let meta = meta_mut(obj);
    if meta.creation_timestamp.is_none() {
        meta.creation_timestamp = Some(first_seen);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

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
