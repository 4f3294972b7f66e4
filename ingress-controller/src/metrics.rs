//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Label values stay bounded: `host` is a host that some rule of the current config
//! names (a wildcard rule's pattern for hosts it covers) or `other`; `backend` is a
//! backend of the config or `none`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proxy_core::config::{BackendId, BackendKind, Config};
use proxy_core::host::{wildcard_parent, HostName, HostPattern};
use proxy_core::http::{Blame, ProxyObserver, Refusal, ResponseEvent};

use crate::exposition::{to_prometheus_text, Format};
use crate::https::TlsMetrics;
use crate::process_metrics::ProcessCollector;
use crate::service_proxy::L4Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    status: u16,
    host: String,
    backend: String,
    /// Whose fault a failure was: `client`, `upstream`, `config`, or `none`.
    blame: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    /// `max_connections` or `max_connections_per_client`.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    backend: String,
    ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiagnosticLabels {
    reason: String,
    kind: String,
}

/// Hosts named by the current config's rules, lower-cased, each with its label
/// (wildcards keyed by suffix, labelled `*.suffix`); and the metric handles requests under
/// this config have used so far.
#[derive(Debug)]
struct Hosts {
    // Keyed by configured hosts only, so the faster unkeyed hash is safe.
    exact: foldhash::HashMap<HostName, Arc<str>>,
    /// `*.foo.com` under `foo.com`.
    wildcard: foldhash::HashMap<HostName, Arc<str>>,
    other: Arc<str>,
    /// Looked-up handles by label values: a request then costs one fast hash instead of
    /// formatting its labels and hashing them twice in the families. Dropped with this
    /// config, so it never outgrows the label values the config allows. Looked up by a
    /// borrowed [`HandleRef`]: only a miss clones the label values into a key.
    handles: Mutex<hashbrown::HashMap<HandleKey, Handles, foldhash::fast::RandomState>>,
}

impl Default for Hosts {
    fn default() -> Self {
        Self {
            exact: foldhash::HashMap::default(),
            wildcard: foldhash::HashMap::default(),
            other: "other".into(),
            handles: Mutex::default(),
        }
    }
}

/// The `host` label is keyed by identity: it is one of [`Hosts`]' own labels, which
/// live as long as the map. A label is never made twice for one config, and if it were,
/// both keys would only find the same handles in the families.
#[derive(Debug)]
struct HandleKey {
    status: u16,
    host: Arc<str>,
    backend: Option<BackendId>,
    blame: Option<Blame>,
}

impl PartialEq for HandleKey {
    fn eq(&self, other: &Self) -> bool {
        self.status == other.status
            && self.blame == other.blame
            && self.backend == other.backend
            && Arc::ptr_eq(&self.host, &other.host)
    }
}

impl Eq for HandleKey {}

/// A [`HandleKey`] borrowed from a request's event: hashes as the key it stands for.
struct HandleRef<'a> {
    status: u16,
    host: &'a Arc<str>,
    backend: Option<&'a BackendId>,
    blame: Option<Blame>,
}

impl From<&HandleRef<'_>> for HandleKey {
    fn from(key: &HandleRef<'_>) -> Self {
        Self {
            status: key.status,
            host: key.host.clone(),
            backend: key.backend.cloned(),
            blame: key.blame,
        }
    }
}

impl std::hash::Hash for HandleRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.status.hash(state);
        std::ptr::hash(Arc::as_ptr(self.host), state);
        self.backend.hash(state);
        self.blame.hash(state);
    }
}

impl std::hash::Hash for HandleKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        HandleRef {
            status: self.status,
            host: &self.host,
            backend: self.backend.as_ref(),
            blame: self.blame,
        }
        .hash(state);
    }
}

impl hashbrown::Equivalent<HandleKey> for HandleRef<'_> {
    fn equivalent(&self, key: &HandleKey) -> bool {
        self.status == key.status
            && self.blame == key.blame
            && self.backend == key.backend.as_ref()
            && Arc::ptr_eq(self.host, &key.host)
    }
}

#[derive(Debug)]
struct Handles {
    /// The `backend` label value.
    backend: String,
    requests: Counter,
    /// Created on the first upstream latency: a backend never reached has none.
    upstream_latency: Option<Histogram>,
}

/// Count of current diagnostics by `(reason, kind)`.
type DiagnosticCounts = BTreeMap<(String, String), i64>;

/// Every metric Portico exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// Metrics under their standard names, without the `portico_` prefix (`process_*`).
    unprefixed: Registry,
    requests: Family<RequestLabels, Counter>,
    upstream_latency: Family<BackendLabels, Histogram>,
    reloads: Counter,
    reload_duration: Histogram,
    diagnostics: Family<DiagnosticLabels, Gauge>,
    endpoints: Family<EndpointLabels, Gauge>,
    refused: Family<RefusedLabels, Counter>,
    hosts: ArcSwap<Hosts>,
    /// Diagnostic counts by source (`compile`, `files`), merged into one gauge family.
    diagnostic_sources: Mutex<BTreeMap<&'static str, DiagnosticCounts>>,
    /// The L4 Service dataplane's families (`--service-proxy`).
    l4: Arc<L4Metrics>,
    /// The HTTPS listener's families.
    tls: Arc<TlsMetrics>,
    parked: Gauge,
    /// Counts the parked connections when scraped; set once the proxy exists.
    parked_source: OnceLock<ParkedSource>,
}

/// Reads how many idle client connections are parked right now.
pub type ParkedSource = Box<dyn Fn() -> usize + Send + Sync>;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_more(|_| {})
    }

    /// The standard metrics plus whatever `register` adds to the same registry (for
    /// example the L4 dataplane's families); names get the `portico_` prefix.
    pub fn with_more(register: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("portico");
        register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by status, host, backend and the side at fault",
            requests.clone(),
        );
        let upstream_latency = Family::<BackendLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "upstream_latency_seconds",
            "Time from sending a request upstream to receiving its response head",
            upstream_latency.clone(),
        );
        let reloads = Counter::default();
        registry.register(
            "config_reloads",
            "Configurations compiled and published",
            reloads.clone(),
        );
        let reload_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "config_reload_duration_seconds",
            "Time to compile and publish a configuration",
            reload_duration.clone(),
        );
        let diagnostics = Family::<DiagnosticLabels, Gauge>::default();
        registry.register(
            "diagnostics",
            "Problems currently reported about the objects, by reason and kind",
            diagnostics.clone(),
        );
        let endpoints = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "backend_endpoints",
            "Endpoints of each backend in the current configuration, by readiness",
            endpoints.clone(),
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Client connections closed unserved because a connection cap was reached",
            refused.clone(),
        );
        let parked = Gauge::default();
        registry.register(
            "client_connections_parked",
            "Idle keep-alive client connections waiting without a task of their own",
            parked.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version of Portico that is running in the label",
            build_info,
        );
        let mut unprefixed = Registry::default();
        unprefixed.register_collector(Box::new(ProcessCollector));
        let l4 = Arc::new(L4Metrics::new());
        l4.register(&mut registry);
        let tls = Arc::new(TlsMetrics::default());
        tls.register(&mut registry);
        Self {
            registry,
            unprefixed,
            l4,
            tls,
            requests,
            upstream_latency,
            reloads,
            reload_duration,
            diagnostics,
            endpoints,
            refused,
            hosts: ArcSwap::default(),
            diagnostic_sources: Mutex::new(BTreeMap::new()),
            parked,
            parked_source: OnceLock::new(),
        }
    }

    /// Where `portico_client_connections_parked` is read from, once the proxy exists.
    pub fn count_parked_with(&self, source: ParkedSource) {
        let _ = self.parked_source.set(source);
    }

    /// The observer for the L4 Service dataplane.
    pub fn l4(&self) -> Arc<L4Metrics> {
        self.l4.clone()
    }

    pub fn tls(&self) -> Arc<TlsMetrics> {
        self.tls.clone()
    }

    /// The metrics in `format`.
    pub fn encode(&self, format: Format) -> String {
        use prometheus_client::encoding::text;
        if let Some(source) = self.parked_source.get() {
            self.parked.set(i64::try_from(source()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = text::encode_registry(&mut out, &self.registry);
        let _ = text::encode_registry(&mut out, &self.unprefixed);
        let _ = text::encode_eof(&mut out);
        match format {
            Format::OpenMetrics => out,
            Format::Prometheus => to_prometheus_text(&out),
        }
    }

    /// One config published: count it, and refresh what derives from the config.
    pub fn published(
        &self,
        config: &Config,
        hosts: impl IntoIterator<Item = String>,
        took: Duration,
    ) {
        self.reloads.inc();
        self.reload_duration.observe(took.as_secs_f64());
        let mut known = Hosts::default();
        // Hosts the compiler refused route nothing, so they get no label of their own.
        for h in hosts
            .into_iter()
            .filter_map(|h| HostPattern::parse(&h).ok())
        {
            let label = h.to_string().into();
            match h {
                HostPattern::Wildcard(suffix) => known.wildcard.insert(suffix, label),
                HostPattern::Exact(name) => known.exact.insert(name, label),
            };
        }
        self.hosts.store(Arc::new(known));
        self.endpoints.clear();
        for (id, backend) in &config.backends {
            let (ready, not_ready) = match &backend.kind {
                BackendKind::Endpoints(eps) => {
                    let ready = eps.iter().filter(|e| e.ready && !e.terminating).count();
                    (ready, eps.len() - ready)
                }
                BackendKind::ExternalName { .. } => (1, 0),
                BackendKind::Unresolved(_) => (0, 0),
            };
            let backend = id.to_string();
            for (flag, n) in [("true", ready), ("false", not_ready)] {
                self.endpoints
                    .get_or_create(&EndpointLabels {
                        backend: backend.clone(),
                        ready: flag,
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Replace the diagnostics one source currently reports, as `(reason, kind)` pairs.
    pub fn set_diagnostics<R: Into<String>, K: Into<String>>(
        &self,
        source: &'static str,
        diags: impl IntoIterator<Item = (R, K)>,
    ) {
        let mut counts = BTreeMap::new();
        for (reason, kind) in diags {
            *counts.entry((reason.into(), kind.into())).or_insert(0) += 1;
        }
        let mut sources = self
            .diagnostic_sources
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sources.insert(source, counts);
        self.diagnostics.clear();
        for counts in sources.values() {
            for ((reason, kind), n) in counts {
                self.diagnostics
                    .get_or_create(&DiagnosticLabels {
                        reason: reason.clone(),
                        kind: kind.clone(),
                    })
                    .inc_by(*n);
            }
        }
    }
}

impl Metrics {
    /// Problems currently counted in `portico_diagnostics`, every source together: what
    /// the publish log line reports, so the two agree.
    pub fn diagnostics_total(&self) -> i64 {
        let sources = self
            .diagnostic_sources
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sources.values().flat_map(|c| c.values()).sum()
    }
}

impl Hosts {
    /// The `host` label for a request host.
    fn label(&self, host: &str) -> &Arc<str> {
        // Request hosts arrive normalised already (`ResponseEvent::host`), or empty.
        if let Some(label) = self.exact.get(host) {
            return label;
        }
        wildcard_parent(host)
            .and_then(|parent| self.wildcard.get(parent))
            .unwrap_or(&self.other)
    }
}

impl ProxyObserver for Metrics {
    fn on_response(&self, ev: &ResponseEvent<'_>) {
        let hosts = self.hosts.load();
        let host = hosts.label(ev.host);
        let key = HandleRef {
            status: ev.status.as_u16(),
            host,
            backend: ev.backend,
            blame: ev.blame,
        };
        let mut handles = hosts.handles.lock().unwrap_or_else(|e| e.into_inner());
        let handles = handles.entry_ref(&key).or_insert_with(|| {
            let backend = key
                .backend
                .map_or_else(|| "none".to_owned(), ToString::to_string);
            let requests = self
                .requests
                .get_or_create(&RequestLabels {
                    status: key.status,
                    host: key.host.to_string(),
                    backend: backend.clone(),
                    blame: key.blame.map_or("none", Blame::as_str),
                })
                .clone();
            Handles {
                backend,
                requests,
                upstream_latency: None,
            }
        });
        handles.requests.inc();
        if let Some(latency) = ev.upstream_latency {
            let histogram = handles.upstream_latency.get_or_insert_with(|| {
                self.upstream_latency
                    .get_or_create(&BackendLabels {
                        backend: handles.backend.clone(),
                    })
                    .clone()
            });
            histogram.observe(latency.as_secs_f64());
        }
    }

    fn on_refused(&self, why: Refusal) {
        self.refused
            .get_or_create(&RefusedLabels {
                reason: why.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::{Method, StatusCode};
    use proxy_core::config::{Backend, BackendId, Endpoint};
    use proxy_core::http::Scheme;

    use super::*;

    fn event<'a>(host: &'a str, backend: Option<&'a BackendId>, status: u16) -> ResponseEvent<'a> {
        static GET: Method = Method::GET;
        ResponseEvent {
            client: SocketAddr::from(([127, 0, 0, 1], 1)).ip(),
            scheme: Scheme::Http,
            host,
            method: &GET,
            path: "/",
            status: StatusCode::from_u16(status).unwrap(),
            backend,
            endpoint: None,
            upstream_latency: backend.map(|_| Duration::from_millis(3)),
            total_latency: Duration::from_millis(4),
            bytes_sent: 0,
            blame: None,
        }
    }

    #[test]
    fn requests_are_labelled_with_known_hosts_only() {
        let m = Metrics::new();
        let id = BackendId::new("default", "kubia", "80");
        let mut config = Config::default();
        config.backends.insert(
            id.clone(),
            Arc::new(Backend::new(
                id.clone(),
                vec![
                    Endpoint::ready("127.0.0.1:1".parse().unwrap()),
                    Endpoint {
                        ready: false,
                        ..Endpoint::ready("127.0.0.1:2".parse().unwrap())
                    },
                ],
            )),
        );
        m.published(
            &config,
            ["Kubia.Example.com".to_owned(), "*.apps.io".to_owned()],
            Duration::from_millis(2),
        );
        // Events carry the host normalised, as the proxy routed by it.
        m.on_response(&event("kubia.example.com", Some(&id), 200));
        m.on_response(&event("x.apps.io", Some(&id), 200));
        m.on_response(&event("random.attacker", None, 404));
        m.on_response(&event("a.b.apps.io", None, 404));
        let text = m.encode(Format::OpenMetrics);
        for want in [
            r#"portico_requests_total{status="200",host="kubia.example.com",backend="default/kubia:80",blame="none"} 1"#,
            r#"portico_requests_total{status="200",host="*.apps.io",backend="default/kubia:80",blame="none"} 1"#,
            r#"portico_requests_total{status="404",host="other",backend="none",blame="none"} 2"#,
            r#"portico_backend_endpoints{backend="default/kubia:80",ready="true"} 1"#,
            r#"portico_backend_endpoints{backend="default/kubia:80",ready="false"} 1"#,
            r#"portico_upstream_latency_seconds_count{backend="default/kubia:80"} 2"#,
            "portico_config_reloads_total 1",
            "portico_config_reload_duration_seconds_count 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn diagnostics_from_sources_add_up_and_clear() {
        let m = Metrics::new();
        m.set_diagnostics(
            "compile",
            [("no_endpoints", "Service"), ("no_endpoints", "Service")],
        );
        m.set_diagnostics("files", [("invalid_manifest", "File")]);
        let text = m.encode(Format::OpenMetrics);
        assert!(
            text.contains(r#"portico_diagnostics{reason="no_endpoints",kind="Service"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"portico_diagnostics{reason="invalid_manifest",kind="File"} 1"#),
            "{text}"
        );
        m.set_diagnostics("compile", Vec::<(String, String)>::new());
        let text = m.encode(Format::OpenMetrics);
        assert!(!text.contains("no_endpoints"), "{text}");
        assert!(text.contains("invalid_manifest"), "{text}");
    }

    #[test]
    fn both_formats_carry_build_and_process_metrics() {
        let m = Metrics::new();
        m.on_refused(Refusal::Total);
        let om = m.encode(Format::OpenMetrics);
        let prom = m.encode(Format::Prometheus);
        let build = format!(
            r#"portico_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        );
        for text in [&om, &prom] {
            assert!(text.contains(&build), "{text}");
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
                "process_max_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(
                    text.lines().any(|l| l.starts_with(name)),
                    "no {name} in\n{text}"
                );
            }
        }
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(
            om.contains("# TYPE portico_connections_refused counter\n"),
            "{om}"
        );
        assert!(om.contains("# TYPE process_cpu_seconds counter\n"), "{om}");
        assert!(!prom.contains("# EOF"), "{prom}");
        assert!(
            prom.contains("# TYPE portico_connections_refused_total counter\n"),
            "{prom}"
        );
        assert!(
            prom.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{prom}"
        );
        // Sample lines are the same in both formats.
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("process_"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&om), samples(&prom));
    }
}
