//! Which file defines which object, and what the store was given: the bookkeeping that
//! lets one changed file be applied without looking at the other thousands.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::store::{Kind, Object, ObjectKey, SharedObject, SharedStore};

pub(super) type Id = (Kind, ObjectKey);

/// One object of a file, as it is (or would be) in the store.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub id: Id,
    pub obj: SharedObject,
}

/// The files that define an object, and which version of it the store holds.
#[derive(Default)]
struct Def {
    /// In path order, each once: the first one wins. A sorted `Vec` rather than a
    /// `BTreeSet`, whose every set allocates a whole node: nearly every object has
    /// one file, and there is a `Def` per object.
    files: Vec<Arc<Path>>,
    applied: Option<(Arc<Path>, SharedObject)>,
}

#[derive(Default)]
pub(super) struct Objects {
    defs: HashMap<Id, Def>,
    /// Objects defined by more than one file, with one message per extra definition.
    duplicates: BTreeMap<Id, Vec<String>>,
}

impl Objects {
    /// A file's new objects as entries. An object equal to its previous version in the
    /// same file keeps that version's `Arc` (so the store is not touched for it); a new
    /// or changed one is stamped with the time the object was first seen.
    pub fn entries(&self, old: &[Entry], parsed: Vec<Object>) -> Vec<Entry> {
        let old: HashMap<&Id, &SharedObject> = old.iter().map(|e| (&e.id, &e.obj)).collect();
        let now = Time(Timestamp::now());
        // Not collected in place: that would keep the parsed objects' allocation (each
        // `Object` holds a whole Kubernetes object inline) for a Vec of small entries,
        // for as long as the file is loaded.
        let mut entries = Vec::with_capacity(parsed.len());
        entries.extend(parsed.into_iter().map(|mut obj| {
            let id = (obj.kind(), obj.key());
            if let Some(prev) = old.get(&id) {
                if same(prev, &mut obj) {
                    return Entry {
                        obj: (*prev).clone(),
                        id,
                    };
                }
            }
            let first_seen = self
                .defs
                .get(&id)
                .and_then(|d| d.applied.as_ref())
                .and_then(|(_, o)| created(o));
            set_created(&mut obj, first_seen.unwrap_or_else(|| now.clone()));
            Entry {
                obj: obj.into(),
                id,
            }
        }));
        entries
    }

    /// The file at `path` now defines `new` instead of `old`; every object named in
    /// either is noted in `affected`.
    pub fn redefine(
        &mut self,
        path: &Arc<Path>,
        old: &[Entry],
        new: &[Entry],
        affected: &mut HashSet<Id>,
    ) {
        for e in old {
            if let Some(def) = self.defs.get_mut(&e.id) {
                def.files.retain(|p| p != path);
            }
            affected.insert(e.id.clone());
        }
        for e in new {
            let files = &mut self.defs.entry(e.id.clone()).or_default().files;
            if let Err(at) = files.binary_search(path) {
                // Exactly: a `Vec` would otherwise start at room for four.
                files.reserve_exact(1);
                files.insert(at, path.clone());
            }
            affected.insert(e.id.clone());
        }
    }

    /// Bring the store in line for the `affected` objects; `file` gives a file's current
    /// objects. Returns whether the store changed.
    pub fn sync<'a>(
        &mut self,
        affected: HashSet<Id>,
        file: impl Fn(&Path) -> Option<&'a [Entry]>,
        store: &SharedStore,
    ) -> bool {
        let mut upserts: Vec<(ObjectKey, SharedObject)> = Vec::new();
        let mut removals: Vec<Id> = Vec::new();
        for id in affected {
            let Some(def) = self.defs.get_mut(&id) else {
                continue;
            };
            self.duplicates.remove(&id);
            let mut paths = def.files.iter();
            let winner = paths.next().cloned();
            let extra: Vec<String> = match &winner {
                Some(first) => paths
                    .map(|other| {
                        format!(
                            "{:?} {} is defined in {} and {}; the first wins",
                            id.0,
                            id.1,
                            first.display(),
                            other.display()
                        )
                    })
                    .collect(),
                None => Vec::new(),
            };
            if !extra.is_empty() {
                self.duplicates.insert(id.clone(), extra);
            }
            // Within one file, the later definition wins, as with `kubectl apply`.
            let wanted = winner.as_ref().and_then(|p| {
                let entries = file(p)?;
                let e = entries.iter().rev().find(|e| e.id == id)?;
                Some((p.clone(), e.obj.clone()))
            });
            match (wanted, def.applied.take()) {
                (None, applied) => {
                    if applied.is_some() {
                        removals.push(id.clone());
                    }
                    if def.files.is_empty() {
                        self.defs.remove(&id);
                    }
                }
                (Some((path, obj)), Some((_, current)))
                    if current.ptr_eq(&obj) || same(&current, &mut obj.to_object()) =>
                {
                    // Unchanged, or the same object now from another file.
                    def.applied = Some((path, current));
                }
                (Some((path, obj)), _) => {
                    upserts.push((id.1.clone(), obj.clone()));
                    def.applied = Some((path, obj));
                }
            }
        }
        if upserts.is_empty() && removals.is_empty() {
            return false;
        }
        let (adds, dels) = (upserts.len(), removals.len());
        store.update(|store| {
            for (key, obj) in upserts {
                store.apply_shared(key, obj);
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
        true
    }

    /// One message per object defined in more than one file.
    pub fn duplicates(&self) -> impl Iterator<Item = &String> {
        self.duplicates.values().flatten()
    }
}

/// Whether `a` and `b` are the same object apart from the creation time this source
/// stamps. `b` is left as it was.
fn same(a: &SharedObject, b: &mut Object) -> bool {
    macro_rules! eq {
        ($a:expr, $b:expr) => {{
            let theirs = $a.metadata.creation_timestamp.clone();
            let ours = std::mem::replace(&mut $b.metadata.creation_timestamp, theirs);
            let eq = **$a == *$b;
            $b.metadata.creation_timestamp = ours;
            eq
        }};
    }
    match (a, b) {
        (SharedObject::Ingress(a), Object::Ingress(b)) => eq!(a, b),
        (SharedObject::IngressClass(a), Object::IngressClass(b)) => eq!(a, b),
        (SharedObject::Service(a), Object::Service(b)) => eq!(a, b),
        (SharedObject::EndpointSlice(a), Object::EndpointSlice(b)) => eq!(a, b),
        (SharedObject::Endpoints(a), Object::Endpoints(b)) => eq!(a, b),
        (SharedObject::Secret(a), Object::Secret(b)) => eq!(a, b),
        (SharedObject::ConfigMap(a), Object::ConfigMap(b)) => eq!(a, b),
        (SharedObject::GatewayClass(a), Object::GatewayClass(b)) => eq!(a, b),
        (SharedObject::Gateway(a), Object::Gateway(b)) => eq!(a, b),
        (SharedObject::HTTPRoute(a), Object::HTTPRoute(b)) => eq!(a, b),
        (SharedObject::GRPCRoute(a), Object::GRPCRoute(b)) => eq!(a, b),
        (SharedObject::ReferenceGrant(a), Object::ReferenceGrant(b)) => eq!(a, b),
        (SharedObject::BackendTLSPolicy(a), Object::BackendTLSPolicy(b)) => eq!(a, b),
        (SharedObject::Namespace(a), Object::Namespace(b)) => eq!(a, b),
        _ => false,
    }
}

fn created(obj: &SharedObject) -> Option<Time> {
    match obj {
        SharedObject::Ingress(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::IngressClass(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::Service(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::EndpointSlice(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::Endpoints(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::Secret(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::ConfigMap(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::GatewayClass(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::Gateway(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::HTTPRoute(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::GRPCRoute(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::ReferenceGrant(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::BackendTLSPolicy(o) => o.metadata.creation_timestamp.clone(),
        SharedObject::Namespace(o) => o.metadata.creation_timestamp.clone(),
    }
}

/// The API server stamps `creationTimestamp` when an object is created; `compile` orders
/// conflicting Ingresses by it. A manifest that sets one keeps it; otherwise the time this
/// source first saw the object stands in, kept across edits.
fn set_created(obj: &mut Object, first_seen: Time) {
    let meta = match obj {
        Object::Ingress(o) => &mut o.metadata,
        Object::IngressClass(o) => &mut o.metadata,
        Object::Service(o) => &mut o.metadata,
        Object::EndpointSlice(o) => &mut o.metadata,
        Object::Endpoints(o) => &mut o.metadata,
        Object::Secret(o) => &mut o.metadata,
        Object::ConfigMap(o) => &mut o.metadata,
        Object::GatewayClass(o) => &mut o.metadata,
        Object::Gateway(o) => &mut o.metadata,
        Object::HTTPRoute(o) => &mut o.metadata,
        Object::GRPCRoute(o) => &mut o.metadata,
        Object::ReferenceGrant(o) => &mut o.metadata,
        Object::BackendTLSPolicy(o) => &mut o.metadata,
        Object::Namespace(o) => &mut o.metadata,
    };
    if meta.creation_timestamp.is_none() {
        meta.creation_timestamp = Some(first_seen);
    }
}
