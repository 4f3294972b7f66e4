//! The publish loop: store change -> debounce -> compile -> swap -> diagnostics.
//!
//! Sources write into the [`SharedStore`] whenever they like. A change that comes after a
//! quiet spell is compiled at once (a lone edit is served as soon as it compiles); changes
//! that keep coming after that wait for a quiet moment (or a bounded delay) and are
//! compiled together, so a burst of a thousand changes costs a handful of compiles. Each
//! diagnostic is logged once, when it first appears, and again only once it is resolved.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_core::config::ConfigHandle;

use crate::admin::Readiness;
use crate::compile::{
    compile_with, CompileCache, CompileOptions, Compiled, Diagnostic, GatewayApiStatus, Severity,
};
use crate::metrics::Metrics;
use crate::store::{SharedStore, Store};

/// A change this long after the previous publish is compiled at once. Otherwise, publish
/// once no change has arrived for this long...
pub const QUIET: Duration = Duration::from_millis(50);
/// ...or once the first unpublished change is this old, whichever comes first.
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// One publish, as the hooks see it.
pub struct Published<'a> {
    /// The snapshot that was compiled.
    pub store: &'a Store,
    pub compiled: &'a Compiled,
    /// Diagnostics that were not there in the previous publish.
    pub new_diagnostics: &'a [Diagnostic],
}

/// Something that follows each publish: the TLS certificate store, the L4 dataplane, the
/// Ingress status writer, the Event recorder. Called on the publish task after the HTTP
/// config has been swapped; keep it quick (hand heavy work to a task of your own).
pub trait PublishHook: Send + Sync {
    fn published(&self, p: &Published<'_>);
}

impl<F: Fn(&Published<'_>) + Send + Sync> PublishHook for F {
    fn published(&self, p: &Published<'_>) {
        self(p)
    }
}

pub struct Publisher {
    store: SharedStore,
    config: ConfigHandle,
    opts: CompileOptions,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    hooks: Vec<Box<dyn PublishHook>>,
    seen: HashSet<Diagnostic>,
    /// The Gateway API status of the last publish, to log only what changed.
    gateway_status: GatewayApiStatus,
    cache: CompileCache,
}

impl Publisher {
    pub fn new(
        store: SharedStore,
        config: ConfigHandle,
        opts: CompileOptions,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Self {
        Self {
            store,
            config,
            opts,
            metrics,
            readiness,
            hooks: Vec::new(),
            seen: HashSet::new(),
            gateway_status: GatewayApiStatus::new(),
            cache: CompileCache::default(),
        }
    }

    pub fn add_hook(&mut self, hook: impl PublishHook + 'static) {
        self.hooks.push(Box::new(hook));
    }

    /// Compile the current store and publish the result.
    pub async fn publish(&mut self) {
        let start = Instant::now();
        self.opts.generation += 1;
        let store = self.store.snapshot();
        let opts = self.opts.clone();
        let mut cache = std::mem::take(&mut self.cache);
        // Compiling a large cluster takes a while; keep it off the async workers.
        let (store, compiled) = match tokio::task::spawn_blocking(move || {
            let compiled = compile_with(&store, &opts, &mut cache);
            (store, compiled, cache)
        })
        .await
        {
            Ok((store, compiled, cache)) => {
                self.cache = cache;
                (store, compiled)
            }
            Err(e) => {
                // A bug in the compiler, not bad input; keep serving the last config.
                tracing::error!(error = %e, "compile failed; the previous configuration stays");
                return;
            }
        };
        let previous = self.config.swap(compiled.config.clone());
        let took = start.elapsed();

        let new = self.diagnostics(&compiled.diagnostics);
        self.log_gateway_status(&compiled.gateway_status);
        self.metrics.set_diagnostics(
            "compile",
            compiled
                .diagnostics
                .iter()
                .map(|d| (d.reason.as_str().to_owned(), d.kind.as_str())),
        );
        self.metrics
            .published(&compiled.config, hosts(&store, &compiled), took);
        tracing::info!(
            generation = compiled.config.generation,
            ingresses = compiled.owned_ingresses.len(),
            backends = compiled.config.backends.len(),
            certificates = compiled.certs.len(),
            // Every problem `portico_diagnostics` counts (the manifest folder's as well),
            // each logged on its own when it appeared.
            diagnostics = self.metrics.diagnostics_total(),
            took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            "configuration published"
        );
        let published = Published {
            store: &store,
            compiled: &compiled,
            new_diagnostics: &new,
        };
        for hook in &self.hooks {
            hook.published(&published);
        }
        // Freeing a configuration of tens of thousands of routes takes a while (the
        // previous one, unless requests still hold it, and this compile's copy): not on
        // an async worker.
        drop(tokio::task::spawn_blocking(move || {
            drop((previous, compiled, store));
        }));
    }

    /// Log the Gateway API status of each object whose status changed (the manifest
    /// folder has no API server to write it to).
    fn log_gateway_status(&mut self, current: &GatewayApiStatus) {
        for ((kind, key), status) in current {
            if self.gateway_status.get(&(*kind, key.clone())) != Some(status) {
                tracing::info!(kind = kind.as_str(), object = %key, "status: {status}");
            }
        }
        self.gateway_status.clone_from(current);
    }

    /// Log diagnostics that appeared or went away since the last publish; return the new.
    fn diagnostics(&mut self, current: &[Diagnostic]) -> Vec<Diagnostic> {
        let now: HashSet<Diagnostic> = current.iter().cloned().collect();
        let mut new = Vec::new();
        for d in current {
            if self.seen.contains(d) || new.contains(d) {
                continue;
            }
            let (kind, object, reason) = (d.kind.as_str(), d.object.to_string(), d.reason.as_str());
            match d.severity {
                Severity::Error => tracing::warn!(
                    severity = "error",
                    kind,
                    object,
                    field = d.field,
                    reason,
                    "{}",
                    d
                ),
                Severity::Warning => tracing::warn!(
                    severity = "warning",
                    kind,
                    object,
                    field = d.field,
                    reason,
                    "{}",
                    d
                ),
            }
            new.push(d.clone());
        }
        for d in self.seen.difference(&now) {
            tracing::info!(kind = d.kind.as_str(), object = %d.object, reason = d.reason.as_str(), "resolved: {}", d);
        }
        self.seen = now;
        new
    }

    /// Publish after the source's initial sync, then after every change, debounced.
    pub async fn run(mut self) {
        let mut changes = self.store.subscribe();
        changes.borrow_and_update();
        self.readiness.synced().await;
        changes.borrow_and_update();
        self.publish().await;
        self.readiness.set_published();
        // Tokio's clock, so that the timing follows a paused clock in tests.
        let mut published = tokio::time::Instant::now();
        loop {
            if changes.changed().await.is_err() {
                return;
            }
            let first = tokio::time::Instant::now();
            // After a quiet spell, publish at once; in a stream of changes, gather them.
            if first.duration_since(published) < QUIET {
                loop {
                    let left = MAX_DELAY.saturating_sub(first.elapsed()).min(QUIET);
                    if left.is_zero() {
                        break;
                    }
                    match tokio::time::timeout(left, changes.changed()).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(_)) | Err(_) => break,
                    }
                }
            }
            changes.borrow_and_update();
            self.publish().await;
            published = tokio::time::Instant::now();
        }
    }
}

/// The hosts our Ingresses' rules name, for the metrics' `host` label.
fn hosts(store: &Store, compiled: &Compiled) -> Vec<String> {
    compiled
        .owned_ingresses
        .iter()
        .filter_map(|key| store.ingresses.get(key))
        .filter_map(|ing| ing.spec.as_ref()?.rules.as_ref())
        .flatten()
        .filter_map(|rule| rule.host.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::core::v1::Service;

    use super::*;
    use crate::store::{Object, ObjectKey};

    fn service(name: &str) -> Object {
        let mut svc = Service::default();
        svc.metadata.name = Some(name.to_owned());
        svc.metadata.namespace = Some("default".to_owned());
        Object::Service(svc)
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_sync_then_coalesces_bursts() {
        let store = SharedStore::new();
        let config = ConfigHandle::default();
        let (readiness, synced) = Readiness::new();
        let mut publisher = Publisher::new(
            store.clone(),
            config.clone(),
            CompileOptions::default(),
            Arc::new(Metrics::new()),
            readiness.clone(),
        );
        let count = Arc::new(AtomicUsize::new(0));
        let published_store = Arc::new(std::sync::Mutex::new(Store::default()));
        let (c, last) = (count.clone(), published_store.clone());
        publisher.add_hook(move |p: &Published<'_>| {
            c.fetch_add(1, Ordering::SeqCst);
            *last.lock().unwrap() = p.store.clone();
        });
        tokio::spawn(publisher.run());

        store.update(|s| s.apply(service("early")));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(count.load(Ordering::SeqCst), 0, "published before sync");
        assert!(readiness.check().is_err());

        synced.send_replace(true);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(readiness.check(), Ok(()));
        assert_eq!(config.load().generation, 1);

        // A lone change after a quiet spell is published at once, without a debounce.
        tokio::time::sleep(Duration::from_secs(1)).await;
        store.update(|s| s.apply(service("lone")));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "lone change not published at once"
        );

        // A thousand changes, one every millisecond: the first is published at once, the
        // rest wait for the 500 ms cap, so a few publishes in all.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for i in 0..1000 {
            store.update(|s| s.apply(service(&format!("s{i}"))));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let n = count.load(Ordering::SeqCst);
        assert!(
            (2 + 2..=2 + 5).contains(&n),
            "{} publishes for a 1 s burst",
            n - 2
        );
        assert_eq!(config.load().generation, n as u64);
        // Everything in the burst made it in.
        let last = ObjectKey::new("default", "s999");
        assert!(published_store.lock().unwrap().services.contains_key(&last));
    }
}
