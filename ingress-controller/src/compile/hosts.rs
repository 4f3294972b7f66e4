//! Host/path rules, kept between compiles and rebuilt only where a change reaches.
//!
//! Each Ingress is read once per version of the object (a [`Fragment`]: its annotations,
//! hosts and paths, and what was wrong with them). A host's rules depend only on the
//! Ingresses that name it (which path each one claims first, oldest first) and on whether
//! TLS covers the host (the redirect), so a compile rebuilds the hosts that a new,
//! changed or removed Ingress names, or whose TLS coverage changed, and keeps every other
//! host's table, claims and diagnostics as they were. At 10,000 Ingresses one edit then
//! costs a few hosts instead of 50,000 paths.

use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use proxy_core::pipeline::{AppRoot, Canary, RequestFilter, Rewrite, RoutePolicy};
use proxy_core::routes::{
    HostMatch, HostRoutes, PathRegex, PathType, RegexRule, RouteRule, RouteTarget,
};

use super::annotations::{self, IngressAnnotations};
use super::backends::{backend_id, reference, BackendRef, RefField};
use super::diagnostic::{Diagnostic, DiagnosticReason};
use super::policy::{self, PolicyDefaults};
use super::syntax;
use super::{duplicate, BackendField, PathField};
use crate::store::{Kind, ObjectKey};

/// An Ingress's annotations as its fragment keeps them. An Ingress that sets none that
/// Portico reads shares one default instead of holding its own (1.4 KiB, for as long as
/// the Ingress exists).
#[derive(Debug)]
pub(super) struct KeptAnnotations(Option<Box<IngressAnnotations>>);

static NO_ANNOTATIONS: LazyLock<IngressAnnotations> = LazyLock::new(IngressAnnotations::default);

impl KeptAnnotations {
    fn new(ann: IngressAnnotations) -> Self {
        Self((ann != *NO_ANNOTATIONS).then(|| Box::new(ann)))
    }
}

impl Deref for KeptAnnotations {
    type Target = IngressAnnotations;

    fn deref(&self) -> &IngressAnnotations {
        self.0.as_deref().unwrap_or(&NO_ANNOTATIONS)
    }
}

/// One version of one Ingress, read.
pub(super) struct Fragment {
    /// The object read; a store holding another `Arc` holds another version.
    pub ingress: Arc<Ingress>,
    pub key: ObjectKey,
    /// `namespace/name`, as route targets name their source.
    pub source: Arc<str>,
    pub ann: KeptAnnotations,
    /// What reading the Ingress alone found wrong (annotations, hosts, paths).
    pub diags: Vec<Diagnostic>,
    /// The distinct rule hosts that parsed.
    pub hosts: Vec<HostMatch>,
    /// The paths that parsed, in spec order.
    pub paths: Vec<ParsedPath>,
}

pub(super) struct ParsedPath {
    /// Index into [`Fragment::hosts`].
    pub host: usize,
    path: String,
    path_type: PathType,
    pub field: PathField,
    /// The path as a regex, when its Ingress asks for regex paths.
    regex: Option<PathRegex>,
    /// `rewrite-target`, for a regex path other than the target. Boxed, as the one
    /// below: few paths have either, and every path of every Ingress is kept.
    rewrite: Option<Box<Rewrite>>,
    /// A plain `Prefix` path `/p` whose Ingress's `rewrite-target` is `/p` itself:
    /// ingress-nginx normalizes the location to `/p/`, which then differs from the
    /// target, so it rewrites requests under `/p/` to the target and puts the host in
    /// regex mode. The rewrite of that `/p/` location.
    slash_rewrite: Option<Box<Rewrite>>,
}

impl Fragment {
    fn read(key: &ObjectKey, ingress: &Arc<Ingress>) -> Self {
        let mut diags = Vec::new();
        let ann = annotations::parse(key, ingress.metadata.annotations.as_ref(), &mut diags);
        let mut hosts: Vec<HostMatch> = Vec::new();
        let mut paths = Vec::new();
        let rules = ingress.spec.as_ref().and_then(|s| s.rules.as_ref());
        for (i, rule) in rules.into_iter().flatten().enumerate() {
            let host = match syntax::parse_host(rule.host.as_deref()) {
                Ok(h) => h,
                Err(msg) => {
                    diags.push(Diagnostic::error(
                        Kind::Ingress,
                        key,
                        format!("spec.rules[{i}].host"),
                        DiagnosticReason::InvalidHost,
                        format!("{msg}; rule ignored"),
                    ));
                    continue;
                }
            };
            let host = match hosts.iter().position(|h| *h == host) {
                Some(at) => at,
                None => {
                    hosts.push(host);
                    hosts.len() - 1
                }
            };
            let rule_paths = rule.http.as_ref().map(|h| h.paths.as_slice());
            for (j, p) in rule_paths.unwrap_or_default().iter().enumerate() {
                let field = PathField { rule: i, path: j };
                let path_type = match syntax::parse_path_type(&p.path_type) {
                    Ok(t) => t,
                    Err(msg) => {
                        diags.push(Diagnostic::error(
                            Kind::Ingress,
                            key,
                            format!("{field}.pathType"),
                            DiagnosticReason::InvalidPathType,
                            format!("{msg}; path ignored"),
                        ));
                        continue;
                    }
                };
                // A canary's paths are matched against its main's as written; its own
                // regex annotations play no part, as in ingress-nginx.
                let regex_path =
                    ann.canary.is_none() && ann.regex_path(p.path.as_deref().unwrap_or("/"));
                let parsed = if regex_path || ann.canary.is_some() {
                    syntax::parse_regex_path(p.path.as_deref())
                } else {
                    syntax::parse_path(p.path.as_deref())
                };
                let path = match parsed {
                    Ok(p) => p,
                    Err(msg) => {
                        diags.push(Diagnostic::error(
                            Kind::Ingress,
                            key,
                            format!("{field}.path"),
                            DiagnosticReason::InvalidPath,
                            format!("{msg}; path ignored"),
                        ));
                        continue;
                    }
                };
                let (regex, rewrite) = if regex_path {
                    let target = ann.rewrite_target.as_deref().filter(|t| *t != path);
                    let compiled = PathRegex::new(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|r| {
                            let rw = target
                                .map(|t| Rewrite::new(&path, t))
                                .transpose()
                                .map_err(|e| e.to_string())?;
                            Ok((r, rw))
                        });
                    match compiled {
                        Ok((r, rw)) => (Some(r), rw.map(Box::new)),
                        Err(msg) => {
                            diags.push(Diagnostic::error(
                                Kind::Ingress,
                                key,
                                format!("{field}.path"),
                                DiagnosticReason::InvalidPathRegex,
                                format!("path {path:?} is not a regular expression Portico can match ({msg}); path ignored"),
                            ));
                            continue;
                        }
                    }
                } else {
                    (None, None)
                };
                let target = ann.rewrite_target.as_deref();
                let normalized_away = regex.is_none()
                    && ann.canary.is_none()
                    && path_type == PathType::Prefix
                    && path != "/"
                    && !path.ends_with('/')
                    && target == Some(path.as_str());
                let slash_rewrite = match target.filter(|_| normalized_away) {
                    Some(t) => match Rewrite::new(&format!("{path}/"), t) {
                        Ok(rw) => Some(Box::new(rw)),
                        Err(e) => {
                            diags.push(Diagnostic::error(
                                Kind::Ingress,
                                key,
                                format!("{field}.path"),
                                DiagnosticReason::InvalidPathRegex,
                                format!("path {path:?} equals rewrite-target, so ingress-nginx rewrites requests under \"{path}/\" as a regular expression, and Portico cannot match that one ({e}); path ignored"),
                            ));
                            continue;
                        }
                    },
                    None => None,
                };
                paths.push(ParsedPath {
                    host,
                    path,
                    path_type,
                    field,
                    regex,
                    rewrite,
                    slash_rewrite,
                });
            }
        }
        // Kept as long as this version of the Ingress is: no spare capacity.
        hosts.shrink_to_fit();
        paths.shrink_to_fit();
        Self {
            ingress: ingress.clone(),
            key: key.clone(),
            source: key.to_string().into(),
            ann: KeptAnnotations::new(ann),
            diags,
            hosts,
            paths,
        }
    }

    /// The backend named at `field`.
    pub fn backend_at(&self, field: PathField) -> Option<&IngressBackend> {
        let rules = self.ingress.spec.as_ref()?.rules.as_ref()?;
        let paths = &rules.get(field.rule)?.http.as_ref()?.paths;
        paths.get(field.path).map(|path| &path.backend)
    }
}

/// Oldest first: by creation time, then namespace/name (the compile's order).
pub(super) fn age_order(a: &Fragment, b: &Fragment) -> std::cmp::Ordering {
    let ta = a.ingress.metadata.creation_timestamp.as_ref();
    let tb = b.ingress.metadata.creation_timestamp.as_ref();
    ta.cmp(&tb).then_with(|| a.key.cmp(&b.key))
}

/// One host's compiled rules and what building them found.
struct HostEntry {
    table: Option<Arc<HostRoutes>>,
    /// Whether TLS covered the host when it was built (its rules' redirect).
    covered: bool,
    /// Paths that lost their claim to an older one, or name a malformed backend.
    diags: Vec<Diagnostic>,
    /// The paths that won their claim.
    winners: Vec<BackendRef>,
}

/// The fragments and host tables of the previous compile.
#[derive(Default)]
pub(super) struct RouteCache {
    fragments: HashMap<ObjectKey, Arc<Fragment>>,
    hosts: HashMap<HostMatch, HostEntry>,
    /// What the host tables' policies were built with.
    defaults: PolicyDefaults,
}

impl RouteCache {
    /// Brings the cache to `ours` (the Ingresses of our class, oldest first) and `covers`
    /// (whether TLS covers a host), and hands back their fragments in that order.
    pub fn update(
        &mut self,
        ours: &[(&ObjectKey, &Arc<Ingress>)],
        covers: impl Fn(&HostMatch) -> bool,
        defaults: &PolicyDefaults,
    ) -> Update {
        let mut dirty: HashSet<HostMatch> = HashSet::new();
        // New global settings reach every path's policy.
        if *defaults != self.defaults {
            dirty.extend(self.hosts.keys().cloned());
            self.defaults = defaults.clone();
        }
        let mut previous = std::mem::take(&mut self.fragments);
        let mut fragments = Vec::with_capacity(ours.len());
        for &(key, ingress) in ours {
            let (key, fragment) = match previous.remove_entry(key) {
                Some((key, f)) if Arc::ptr_eq(&f.ingress, ingress) => (key, f),
                old => {
                    if let Some((_, old)) = old {
                        dirty.extend(old.hosts.iter().cloned());
                    }
                    let f = Arc::new(Fragment::read(key, ingress));
                    dirty.extend(f.hosts.iter().cloned());
                    (key.clone(), f)
                }
            };
            self.fragments.insert(key, fragment.clone());
            fragments.push(fragment);
        }
        // Deleted, or no longer of our class.
        for old in previous.into_values() {
            dirty.extend(old.hosts.iter().cloned());
        }
        for (host, entry) in &self.hosts {
            if covers(host) != entry.covered {
                dirty.insert(host.clone());
            }
        }
        let mut update = Update {
            fragments: Vec::new(),
            removed: Vec::new(),
            added: Vec::new(),
        };
        if !dirty.is_empty() {
            let mut candidates: HashMap<&HostMatch, Vec<(&Arc<Fragment>, u32)>> = HashMap::new();
            for f in &fragments {
                if !f.hosts.iter().any(|h| dirty.contains(h)) {
                    continue;
                }
                for (i, p) in f.paths.iter().enumerate() {
                    let host = &f.hosts[p.host];
                    if dirty.contains(host) {
                        // Path counts come from one object, far below u32::MAX.
                        candidates.entry(host).or_default().push((f, i as u32));
                    }
                }
            }
            for host in &dirty {
                let old = match candidates.get(host) {
                    Some(list) => {
                        let entry = build_host(host, list, covers(host), defaults);
                        update.added.extend(entry.winners.iter().cloned());
                        self.hosts.insert(host.clone(), entry)
                    }
                    None => self.hosts.remove(host),
                };
                if let Some(old) = old {
                    update.removed.extend(old.winners);
                }
            }
        }
        update.fragments = fragments;
        update
    }

    /// Whether some Ingress of our class routes a path of `host` (a canary alone does not).
    pub fn has_host(&self, host: &HostMatch) -> bool {
        self.hosts.get(host).is_some_and(|e| e.table.is_some())
    }

    /// The rules of `host`, if some Ingress routes a path of it.
    pub fn table(&self, host: &HostMatch) -> Option<&Arc<HostRoutes>> {
        self.hosts.get(host).and_then(|e| e.table.as_ref())
    }

    pub fn tables(&self) -> impl Iterator<Item = Arc<HostRoutes>> + '_ {
        self.hosts.values().filter_map(|e| e.table.clone())
    }

    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.hosts.values().flat_map(|e| &e.diags)
    }
}

/// What [`RouteCache::update`] did.
pub(super) struct Update {
    /// The Ingresses of our class, oldest first.
    pub fragments: Vec<Arc<Fragment>>,
    /// Backend references of paths that no longer win their claim, or are gone.
    pub removed: Vec<BackendRef>,
    /// Backend references of paths that now win their claim.
    pub added: Vec<BackendRef>,
}

/// A host's rules from its candidate paths, oldest Ingress first: each (path, type) goes
/// to the first that claims it. When one of the winning paths is a regex, the whole host
/// is matched as ingress-nginx matches it then (see [`regex_rules`]).
fn build_host(
    host: &HostMatch,
    candidates: &[(&Arc<Fragment>, u32)],
    covered: bool,
    defaults: &PolicyDefaults,
) -> HostEntry {
    let mut claims: HashMap<(&str, PathType), &Arc<str>> = HashMap::new();
    // Which rule each claim made, for the canaries.
    let mut claimed: HashMap<(&str, PathType), usize> = HashMap::new();
    let mut canaries: Vec<(&Arc<Fragment>, &ParsedPath)> = Vec::new();
    // The paths of one Ingress share its policy where they can.
    let mut shared: HashMap<*const Fragment, Arc<RoutePolicy>> = HashMap::new();
    let mut diags = Vec::new();
    let mut rules = Vec::with_capacity(candidates.len());
    let mut won: Vec<(&Arc<Fragment>, &ParsedPath)> = Vec::with_capacity(candidates.len());
    let mut winners = Vec::with_capacity(candidates.len());
    for &(f, i) in candidates {
        let p = &f.paths[i as usize];
        if f.ann.canary.is_some() {
            canaries.push((f, p));
            continue;
        }
        // A regex is its own claim: its trailing slash means something.
        let claim_key = match p.regex {
            Some(_) => p.path.as_str(),
            None => syntax::claim_path(&p.path, p.path_type),
        };
        let claim = (claim_key, p.path_type);
        if let Some(owner) = claims.get(&claim) {
            diags.push(duplicate(
                &f.key,
                &p.field.to_string(),
                host,
                &p.path,
                p.path_type,
                owner,
                &f.source,
            ));
            continue;
        }
        let Some(backend) = f.backend_at(p.field) else {
            continue;
        };
        let field = BackendField(p.field);
        let Some((service, port)) = reference(&f.key, backend, &field, &mut diags) else {
            continue;
        };
        claims.insert(claim, &f.source);
        claimed.insert(claim, rules.len());
        let policy = if p.rewrite.is_none() && policy::shared_across_paths(&f.ann, defaults) {
            shared
                .entry(Arc::as_ptr(f))
                .or_insert_with(|| {
                    Arc::new(policy::route_policy(&f.ann, defaults, covered, "/", None))
                })
                .clone()
        } else {
            Arc::new(policy::route_policy(
                &f.ann,
                defaults,
                covered,
                &p.path,
                p.rewrite.as_deref().cloned(),
            ))
        };
        rules.push(RouteRule {
            host: host.clone(),
            path: p.path.clone(),
            path_type: p.path_type,
            target: RouteTarget {
                backend: backend_id(
                    &f.key.namespace,
                    service,
                    &port,
                    f.ann.upstream.service_upstream,
                ),
                policy,
                source: f.source.clone(),
            },
        });
        won.push((f, p));
        winners.push(BackendRef {
            fragment: Arc::clone(f),
            field: RefField::Path(p.field),
        });
    }
    // Client certificates are a host's, as nginx's `ssl_verify_client` is a server's:
    // once one Ingress of the host asks for them, every path of the host checks them.
    let client_certs = candidates.iter().any(|(f, _)| {
        f.ann.canary.is_none()
            && f.ann.security.refused.is_empty()
            && f.ann.security.client_tls.is_some()
    });
    if client_certs {
        let mut checked: HashMap<*const RoutePolicy, Arc<RoutePolicy>> = HashMap::new();
        for rule in &mut rules {
            let policy = checked
                .entry(Arc::as_ptr(&rule.target.policy))
                .or_insert_with(|| policy::with_client_cert(&rule.target.policy))
                .clone();
            rule.target.policy = policy;
        }
    }
    for (f, p) in canaries {
        if let Some(winner) = add_canary(host, f, p, &claimed, &mut rules, &mut diags) {
            winners.push(winner);
        }
    }
    // The rule whose app-root the host takes: its route answers `/` when no rule of the
    // host matches it, as the server-level `if` does in ingress-nginx.
    let app_root = host_app_root(&mut rules, &won).map(|i| rules[i].target.clone());
    let regex_mode = won
        .iter()
        .any(|(_, p)| p.regex.is_some() || p.slash_rewrite.is_some());
    let table = if regex_mode {
        let mut regex = regex_rules(host, rules, &won, &mut diags);
        // Last: only `/` that no location took.
        if let (Some(target), Ok(path)) = (app_root, PathRegex::new("/$")) {
            regex.push(RegexRule {
                host: host.clone(),
                path,
                target,
            });
        }
        Some(HostRoutes::with_regex(host.clone(), regex))
    } else {
        if let Some(target) = app_root.filter(|_| !rules.iter().any(|r| r.path == "/")) {
            rules.push(RouteRule {
                host: host.clone(),
                path: "/".to_owned(),
                path_type: PathType::Exact,
                target,
            });
        }
        HostRoutes::group(rules).pop()
    };
    HostEntry {
        table,
        covered,
        diags,
        winners,
    }
}

/// ingress-nginx writes `app-root` as a server-level `if ($uri = /) { return 302 ...; }`
/// before the location of each path that has it, so it answers `/` on the whole host,
/// whichever path `/` is routed to, ahead of anything a location does; of several, the
/// first in its location order (longest path first, then the greater) wins. Every rule
/// of the host gets that one as its first filter. `won[i]` is where `rules[i]` came from.
/// Returns the index of the rule whose app-root it is.
fn host_app_root(rules: &mut [RouteRule], won: &[(&Arc<Fragment>, &ParsedPath)]) -> Option<usize> {
    // ingress-nginx's location path: a plain Prefix path other than `/` gains a `/`.
    let location = |p: &ParsedPath| {
        if p.regex.is_none() && p.path_type == PathType::Prefix && !p.path.ends_with('/') {
            format!("{}/", p.path)
        } else {
            p.path.clone()
        }
    };
    let (at, root) = won
        .iter()
        .enumerate()
        .filter_map(|(i, (f, p))| Some((i, location(p), f.ann.app_root.as_ref()?)))
        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| a.1.cmp(&b.1)))
        .map(|(i, _, root)| (i, AppRoot(root.clone())))?;
    // Paths that shared a policy keep sharing one.
    let mut rewritten: HashMap<*const RoutePolicy, Arc<RoutePolicy>> = HashMap::new();
    for rule in rules {
        let policy = &rule.target.policy;
        if policy.request.first() == Some(&RequestFilter::AppRoot(root.clone())) {
            continue;
        }
        let updated = rewritten
            .entry(Arc::as_ptr(policy))
            .or_insert_with(|| {
                let mut p = RoutePolicy::clone(policy);
                p.request
                    .retain(|f| !matches!(f, RequestFilter::AppRoot(_)));
                p.request.insert(0, RequestFilter::AppRoot(root.clone()));
                Arc::new(p)
            })
            .clone();
        rule.target.policy = updated;
    }
    Some(at)
}

/// Makes canary path `p` of Ingress `f` the canary of the rule that claimed the same
/// path and type on `host`, as ingress-nginx merges a canary's backend into the main's:
/// the main's route keeps everything of its own (its policy, redirects, rewrite) and
/// only the backend changes for the requests the canary takes. The first canary of a
/// rule (oldest first) is the one; a path with no main is not served. Returns the
/// canary's backend reference when it was taken.
fn add_canary(
    host: &HostMatch,
    f: &Arc<Fragment>,
    p: &ParsedPath,
    claimed: &HashMap<(&str, PathType), usize>,
    rules: &mut [RouteRule],
    diags: &mut Vec<Diagnostic>,
) -> Option<BackendRef> {
    let ann = f.ann.canary.as_ref()?;
    let field = p.field.to_string();
    // The main's claim: its canonical path, or a regex path as written.
    let normalized = syntax::parse_path(Some(&p.path)).ok();
    let keys = [
        normalized
            .as_deref()
            .map(|n| syntax::claim_path(n, p.path_type)),
        Some(p.path.as_str()),
    ];
    let main = keys
        .into_iter()
        .flatten()
        .find_map(|k| claimed.get(&(k, p.path_type)).copied());
    let Some(at) = main else {
        diags.push(Diagnostic::error(
            Kind::Ingress,
            &f.key,
            field,
            DiagnosticReason::CanaryWithoutMain,
            format!(
                "canary path: no Ingress routes host {host} path {:?} ({}) for it to be a canary of; path not served",
                p.path, p.path_type
            ),
        ));
        return None;
    };
    let backend = f.backend_at(p.field)?;
    let (service, port) = reference(&f.key, backend, &BackendField(p.field), diags)?;
    let id = backend_id(
        &f.key.namespace,
        service,
        &port,
        f.ann.upstream.service_upstream,
    );
    let rule = rules.get_mut(at)?;
    if let Some(first) = &rule.target.policy.canary {
        diags.push(Diagnostic::error(
            Kind::Ingress,
            &f.key,
            field,
            DiagnosticReason::CanaryConflict,
            format!(
                "host {host} path {:?} ({}) of {} already has a canary (backend {}) from an older Ingress; only one canary per path, this one is ignored",
                p.path, p.path_type, rule.target.source, first.backend
            ),
        ));
        return None;
    }
    if id == rule.target.backend {
        diags.push(Diagnostic::error(
            Kind::Ingress,
            &f.key,
            format!("{field}.backend"),
            DiagnosticReason::CanaryConflict,
            format!(
                "canary backend {id} is the backend of its main Ingress {}; canary ignored",
                rule.target.source
            ),
        ));
        return None;
    }
    let mut policy = RoutePolicy::clone(&rule.target.policy);
    // `sticky` (the default): the canary's sessions follow the main's cookie settings;
    // `legacy`: the canary's own, if it has any.
    let affinity = if ann.legacy_affinity {
        f.ann.affinity.clone().map(|mut a| {
            if a.path.is_none() {
                a.path = Some(p.path.as_str().into());
            }
            a
        })
    } else {
        policy.affinity.clone()
    };
    policy.canary = Some(Canary {
        backend: id,
        affinity,
        rule: Arc::new(ann.rule.clone()),
    });
    rule.target.policy = Arc::new(policy);
    Some(BackendRef {
        fragment: Arc::clone(f),
        field: RefField::Path(p.field),
    })
}

/// The rules of a host in regex mode, as ingress-nginx lays out its locations once one
/// Ingress of the host uses `use-regex` or `rewrite-target`: every path becomes
/// `location ~* "^PATH"` (a case-insensitive prefix regex, `Exact` paths included); a
/// plain `Prefix` path `/p` becomes `/p/` plus `/p` (unless an `Exact` `/p` exists, as
/// its `updateServerLocations` does); the locations are ordered longest path first (ties:
/// the greater path first), and the first that matches wins. A plain path that is no
/// valid regex is reported and left out. `won[i]` is where `rules[i]` came from.
fn regex_rules(
    host: &HostMatch,
    rules: Vec<RouteRule>,
    won: &[(&Arc<Fragment>, &ParsedPath)],
    diags: &mut Vec<Diagnostic>,
) -> Vec<RegexRule> {
    let exact: HashSet<&str> = rules
        .iter()
        .zip(won)
        .filter(|(r, (_, p))| p.regex.is_none() && r.path_type == PathType::Exact)
        .map(|(r, _)| r.path.as_str())
        .collect();
    // (location path, its regex when already compiled, index into `rules`, its own
    // policy when it is not the rule's).
    type Location = (String, Option<PathRegex>, usize, Option<Arc<RoutePolicy>>);
    let mut locations: Vec<Location> = Vec::new();
    for (i, (rule, (f, p))) in rules.iter().zip(won).enumerate() {
        if let Some(regex) = &p.regex {
            locations.push((rule.path.clone(), Some(regex.clone()), i, None));
            continue;
        }
        if rule.path == "/" || rule.path_type == PathType::Exact {
            locations.push((rule.path.clone(), None, i, None));
            continue;
        }
        let with_slash = if rule.path.ends_with('/') {
            rule.path.clone()
        } else {
            format!("{}/", rule.path)
        };
        let add_exact = with_slash != rule.path && !exact.contains(rule.path.as_str());
        let slash_policy = p.slash_rewrite.as_ref().map(|rw| {
            Arc::new(policy::with_rewrite(
                &rule.target.policy,
                &f.ann,
                (**rw).clone(),
            ))
        });
        locations.push((with_slash, None, i, slash_policy));
        if add_exact {
            locations.push((rule.path.clone(), None, i, None));
        }
    }
    locations.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| b.0.cmp(&a.0)));
    let mut out = Vec::with_capacity(locations.len());
    let mut reported: HashSet<usize> = HashSet::new();
    for (path, regex, i, own_policy) in locations {
        let regex = match regex {
            Some(r) => r,
            None => match PathRegex::new(&path) {
                Ok(r) => r,
                Err(e) => {
                    let (f, p) = won[i];
                    if reported.insert(i) {
                        diags.push(Diagnostic::error(
                            Kind::Ingress,
                            &f.key,
                            format!("{}.path", p.field),
                            DiagnosticReason::InvalidPathRegex,
                            format!("host {host} matches its paths as regular expressions (an Ingress for it sets use-regex or rewrite-target), and {path:?} is not one Portico can match ({e}); path ignored"),
                        ));
                    }
                    continue;
                }
            },
        };
        let mut target = rules[i].target.clone();
        if let Some(policy) = own_policy {
            target.policy = policy;
        }
        out.push(RegexRule {
            host: host.clone(),
            path: regex,
            target,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(annotations: serde_json::Value) -> Fragment {
        let ingress: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app", "namespace": "default", "annotations": annotations},
            "spec": {"rules": [{"host": "app.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "app", "port": {"number": 80}}}}
            ]}}]}
        }))
        .expect("a valid Ingress");
        Fragment::read(&ObjectKey::new("default", "app"), &Arc::new(ingress))
    }

    #[test]
    fn only_annotations_that_set_something_are_held() {
        // Annotations Portico does not read (kubectl's own, say) set nothing.
        let plain =
            read(serde_json::json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"}));
        assert!(plain.ann.0.is_none());
        assert_eq!(*plain.ann, IngressAnnotations::default());

        let set = read(serde_json::json!({"nginx.ingress.kubernetes.io/ssl-redirect": "false"}));
        assert!(set.ann.0.is_some());
        assert_eq!(set.ann.ssl_redirect, Some(false));
    }
}
