//! `ingress-controller`: the Portico binary. A short, staged start-up; each stage is one
//! call into the library, so adding a listener or a source is one more stage.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

use http::HeaderValue;
use ingress_controller::admin::{Admin, Readiness};
use ingress_controller::admission::{self, certs, Webhook};
use ingress_controller::cli::{self, Args, RuntimeModel, CONTROLLER_NAME};
use ingress_controller::compile::{CompileOptions, AFFINITY_KEY_SECRET};
use ingress_controller::dns::DnsServer;
use ingress_controller::https::{Https, HANDSHAKE_TIMEOUT};
use ingress_controller::metrics::Metrics;
use ingress_controller::publish::{Published, Publisher};
use ingress_controller::service_proxy::ServiceProxy;
use ingress_controller::sources::{files, kube as kube_source};
use ingress_controller::status::PublishSource;
use ingress_controller::store::{ObjectKey, SharedStore};
use proxy_core::config::ConfigHandle;
use proxy_core::http::shard::Incoming;
use proxy_core::http::{default_max_connections, raise_fd_limit, Proxy, ProxyOptions};

// mimalloc (see `alloc`), without transparent huge pages (`no_thp`): a proxy this small
// would otherwise round its heap up to 2 MiB pages and nearly double its resident memory.
#[global_allocator]
static ALLOC: ingress_controller::alloc::MiMalloc = ingress_controller::alloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging(args.log_format);
    let threads = args.serving_threads();
    let per_core = args.runtime == RuntimeModel::PerCore && threads > 1;
    // One worker means one thread: the single-threaded scheduler then does the same work
    // without the multi-threaded one's cross-thread queues and wake-ups. Per core, the
    // main thread's runtime is the first shard, and runs the controller besides.
    let mut builder = if threads == 1 || per_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    // Per core, one more single-threaded runtime for each further thread.
    let shards = (1..if per_core { threads } else { 1 })
        .map(|_| build_runtime(&mut tokio::runtime::Builder::new_current_thread()))
        .collect::<std::io::Result<Vec<_>>>();
    let (runtime, shards) = match (build_runtime(&mut builder), shards) {
        (Ok(runtime), Ok(shards)) => (runtime, shards),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, shards)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

fn build_runtime(
    builder: &mut tokio::runtime::Builder,
) -> std::io::Result<tokio::runtime::Runtime> {
    // Each worker has its own mimalloc heap: one going idle returns what it freed.
    builder
        .on_thread_park(return_freed_memory_when_idle)
        .enable_all()
        .build()
}

/// Has mimalloc hand the pages this thread freed back to the OS, at most twice a second
/// per thread. mimalloc otherwise purges lazily, on later allocations, so a process that
/// goes quiet after a burst of connections would keep their memory for as long as it
/// stays quiet. Runs as a worker is about to wait for work.
fn return_freed_memory_when_idle() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    let due = LAST.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < Duration::from_millis(500) => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        // SAFETY: mi_collect takes no pointers; it walks mimalloc's own structures for
        // the calling thread and the shared arenas.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// Wakes a worker every two seconds, so that each gets to return what it freed (see
/// [`return_freed_memory_when_idle`]) even when no request comes.
async fn return_freed_memory() {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Runs Portico on the current runtime; `shards` are the further single-threaded
/// runtimes of the per-core model (none otherwise), each to serve listeners of its own.
async fn run(args: Args, shards: Vec<tokio::runtime::Runtime>) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting Portico");
    if args.webhook_addr.is_some() && args.manifests.is_some() {
        anyhow::bail!(
            "--webhook-addr needs the Kubernetes API source; it cannot be used with --manifests"
        );
    }

    tokio::spawn(return_freed_memory());

    // 1. Shared state: the objects, the published config, readiness and metrics.
    let store = SharedStore::new();
    let config = ConfigHandle::default();
    let metrics = Arc::new(Metrics::new());
    let (readiness, synced) = Readiness::new();

    // 2. Admin first, so /healthz answers while the rest starts.
    let admin_listener = bind(args.admin_addr, "--admin-addr").await?;
    tokio::spawn(
        Admin {
            readiness: readiness.clone(),
            metrics: metrics.clone(),
        }
        .serve(admin_listener),
    );

    // 3. The source fills the store and flips `synced` once it has loaded everything.
    //    With the Kubernetes API, `reporter` carries status and Events back to it.
    let mut reporter = None;
    match &args.manifests {
        Some(dir) => {
            let sink_metrics = metrics.clone();
            let mut source = files::FileSource::new(dir, store.clone())?.with_problem_sink(
                Box::new(move |problems| {
                    sink_metrics.set_diagnostics(
                        "files",
                        problems.iter().map(|p| (p.reason, p.kind.clone())),
                    )
                }),
            );
            source.load();
            source.watch()?;
            synced.send_replace(true);
            tracing::info!(path = %dir.display(), "watching the manifest folder");
        }
        None => {
            let opts = kube_source::KubeOptions {
                kubeconfig: args.kubeconfig.clone(),
                source: kube_source::KubeSourceOptions {
                    watch_namespace: args.watch_namespace.clone(),
                    configmap: args.configmap.clone(),
                    affinity_key_namespace: None,
                },
                publish: PublishSource::from_flags(
                    args.publish_service.as_deref(),
                    args.publish_address.as_deref(),
                )?,
                leader: None,
                affinity_key_recheck: None,
            };
            reporter = Some(kube_source::start(opts, store.clone(), synced).await?);
        }
    }

    // 4. The publish loop: store -> compile -> swap. Followers of each publish (TLS
    //    certificates, L4 listeners, Ingress status) register with `add_hook` here.
    let opts = CompileOptions {
        ingress_class: args.ingress_class.clone(),
        controller_name: CONTROLLER_NAME.to_owned(),
        default_certificate: args.default_certificate.clone(),
        service_proxy: args.service_proxy,
        node_name: args.node_name.clone(),
        node_addresses: args.node_address.clone(),
        configmap: args.configmap.clone(),
        default_backend_service: args.default_backend_service.clone(),
        watch_ingress_without_class: args.watch_ingress_without_class,
        // Over a folder every Ingress is meant for us: none is left out without a word.
        explain_unowned: args.manifests.is_some(),
        // Over a folder there is one replica; in a cluster, the publish Service's pods.
        replica_service: args
            .publish_service
            .as_deref()
            .filter(|_| args.manifests.is_none())
            .and_then(|s| s.split_once('/'))
            .map(|(ns, name)| ObjectKey::new(ns, name)),
        generation: 0,
        enable_ssl_passthrough: args.enable_ssl_passthrough,
        gateway_address_pool: args.gateway_address_pool.clone(),
    };
    let mut publisher = Publisher::new(
        store.clone(),
        config.clone(),
        opts.clone(),
        metrics.clone(),
        readiness.clone(),
    );
    let https = Arc::new(Https::new(metrics.tls()).context("setting up TLS")?);
    publisher.add_hook({
        let https = https.clone();
        move |p: &Published<'_>| https.published(p.compiled)
    });
    if args.service_proxy {
        publisher.add_hook(ServiceProxy::new(args.node_name.clone(), metrics.l4()));
    }
    if let Some(reporter) = reporter.clone() {
        publisher.add_hook(move |p: &Published<'_>| reporter.after_compile(p.compiled));
    }
    publisher.add_hook(affinity_key_warning());
    if let Some(addr) = args.dns_addr {
        let dns = DnsServer::new(&args.cluster_domain)?;
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("--dns-addr {addr}: cannot listen on UDP"))?;
        let tcp = bind(addr, "--dns-addr").await?;
        publisher.add_hook({
            let dns = dns.clone();
            move |p: &Published<'_>| dns.update(p.store)
        });
        tokio::spawn(dns.clone().serve_udp(udp));
        tokio::spawn(dns.serve_tcp(tcp));
        tracing::info!(addr = %addr, zone = %args.cluster_domain, "answering DNS for Services");
    }

    // 4b. The admission webhook, judging against the same store and options.
    if let Some(addr) = args.webhook_addr {
        start_webhook(&args, addr, store.clone(), opts, readiness.clone()).await?;
    }

    // 5. The proxy's listeners (HTTP/3's too), bound before the first config can be
    //    published: ready (`/readyz`) follows that publish, and a Service sends traffic
    //    to a ready pod at once. A busy port fails start-up here. Connections made
    //    before the config is served wait in the listeners' backlog.
    let http_listener = bind(args.http_addr, "--http-addr").await?;
    let https_listener = bind(args.https_addr, "--https-addr").await?;
    let http3_addr = args
        .http3
        .then(|| args.http3_addr.unwrap_or(args.https_addr));
    let quic = match http3_addr {
        Some(addr) => Some(
            proxy_core::http::h3::endpoint(addr, &https.server_config()).context("--http3-addr")?,
        ),
        None => None,
    };
    tokio::spawn(publisher.run());

    let fd_limit = raise_fd_limit();
    let max_connections = args
        .max_connections
        .map_or_else(|| default_max_connections(fd_limit), |n| n as usize);
    tracing::info!(
        open_files = fd_limit.unwrap_or(0),
        max_connections,
        max_connections_per_client = args.max_connections_per_client.unwrap_or(0),
        "connection caps"
    );
    let proxy = Proxy::new(
        config.clone(),
        ProxyOptions {
            http_port: args.http_redirect_port.unwrap_or(args.http_addr.port()),
            https_port: args.https_redirect_port.unwrap_or(args.https_addr.port()),
            observer: Some(metrics.clone()),
            max_connections,
            max_connections_per_client: args.max_connections_per_client.map(|n| n as usize),
            allow_trace: args.allow_trace,
            alt_svc: http3_addr.map(|a| {
                let port = args.https_redirect_port.unwrap_or(a.port());
                HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
                    .unwrap_or(HeaderValue::from_static("h3=\":443\"; ma=86400"))
            }),
            ..ProxyOptions::default()
        },
    );
    // Weak: the proxy holds the metrics as its observer.
    let counted = Arc::downgrade(&proxy);
    metrics.count_parked_with(Box::new(move || {
        counted.upgrade().map_or(0, |p| p.parked_connections())
    }));
    let shutdown = proxy.shutdown();
    // Per core, this thread accepts for every shard and deals the connections out.
    let (http_listener, http_dealt) = Incoming::dealing(http_listener, shards.len() + 1);
    let (https_listener, https_dealt) = Incoming::dealing(https_listener, shards.len() + 1);
    let stop = stop_signal();
    tokio::pin!(stop);
    tokio::select! {
        _ = readiness.published() => {}
        _ = &mut stop => {
            tracing::info!("stopped before the first configuration was published");
            return Ok(());
        }
    }
    let dealt = http_dealt.into_iter().zip(https_dealt);
    for (index, (rt, (http, tls))) in shards.into_iter().zip(dealt).enumerate() {
        let (proxy, https, shutdown) = (proxy.clone(), https.clone(), shutdown.clone());
        let serve = serve_listeners(proxy, https, shutdown, http, tls);
        std::thread::Builder::new()
            .name(format!("portico-shard-{}", index + 1))
            .spawn(move || {
                proxy_core::http::shard::enter(index + 1);
                rt.block_on(async move {
                    tokio::spawn(return_freed_memory());
                    serve.await;
                    // Accepting has stopped; the connections still open are served
                    // until the process exits after draining.
                    std::future::pending::<()>().await
                })
            })
            .context("starting a serving thread")?;
    }
    tokio::spawn(serve_listeners(
        proxy.clone(),
        https,
        shutdown.clone(),
        http_listener,
        https_listener,
    ));
    if let Some(quic) = quic {
        tokio::spawn({
            let (proxy, shutdown) = (proxy.clone(), shutdown.clone());
            async move { proxy.serve_h3(quic, shutdown).await }
        });
    }
    tracing::info!(http = %args.http_addr, https = %args.https_addr, admin = %args.admin_addr,
        http3 = http3_addr.map(|a| a.to_string()).unwrap_or_default(),
        runtime = ?args.runtime, threads = args.serving_threads(),
        "serving");

    // 6. Graceful stop: not ready, stop accepting, let in-flight requests finish.
    stop.await;
    readiness.set_draining();
    if let Some(reporter) = &reporter {
        // Hand status over to another replica now rather than after the lease expires.
        reporter.shutdown(Duration::from_secs(2)).await;
    }
    tracing::info!(
        grace_seconds = args.shutdown_grace,
        active = shutdown.active(),
        "draining"
    );
    if shutdown.drain(args.shutdown_grace()).await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!(
            active = shutdown.active(),
            "grace period over; closing remaining connections"
        );
    }
    Ok(())
}

/// Says once, and again whenever it changes, whether replicas share the affinity cookie
/// key: without the Secret each process draws its own, so a session moves whenever the
/// load balancer switches replica, and every restart ends every session.
fn affinity_key_warning() -> impl Fn(&Published<'_>) + Send + Sync {
    let shared = std::sync::Mutex::new(None::<bool>);
    move |p: &Published<'_>| {
        let now = p.compiled.affinity_key.is_some();
        let mut last = shared.lock().unwrap_or_else(|e| e.into_inner());
        if *last == Some(now) {
            return;
        }
        *last = Some(now);
        if now {
            tracing::info!(
                secret = AFFINITY_KEY_SECRET,
                "affinity cookies use the shared key"
            );
        } else {
            tracing::warn!(
                secret = AFFINITY_KEY_SECRET,
                "no affinity key Secret: this process uses a key of its own, so other replicas \
                 (and this one after a restart) will not recognise its affinity cookies"
            );
        }
    }
}

/// Binds `--webhook-addr` now (a busy port fails start-up), keeps the webhook's
/// certificates, and serves once they are loaded.
async fn start_webhook(
    args: &Args,
    addr: std::net::SocketAddr,
    store: SharedStore,
    opts: CompileOptions,
    readiness: Arc<Readiness>,
) -> anyhow::Result<()> {
    let listener = bind(addr, "--webhook-addr").await?;
    let client = kube_source::client(args.kubeconfig.as_deref()).await?;
    // Served only until the Secret's certificate is loaded, which is before the first
    // connection is accepted; the resolver needs something to start with.
    let placeholder = tls::generate_self_signed().context("webhook TLS")?;
    let resolver = Arc::new(tls::CertResolver::new(&placeholder));
    let acceptor =
        tls::TlsAcceptor::from(tls::server_config(resolver.clone()).context("webhook TLS")?);
    let cert_opts = certs::CertOptions {
        secret: ObjectKey::new(&args.webhook_service.namespace, &args.webhook_secret),
        service: args.webhook_service.clone(),
        configuration: args.webhook_configuration.clone(),
        recheck: certs::RECHECK,
    };
    let (loaded_tx, mut loaded) = tokio::sync::watch::channel(false);
    tokio::spawn(certs::run(client, cert_opts, resolver, loaded_tx));
    let hook = Webhook {
        store,
        opts,
        readiness,
    };
    tokio::spawn(async move {
        if loaded.wait_for(|l| *l).await.is_ok() {
            tracing::info!(%addr, path = admission::PATH, "admission webhook serving");
            hook.serve(listener, acceptor).await;
        }
    });
    Ok(())
}

async fn bind(addr: std::net::SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{flag} {addr}: cannot listen"))
}

/// Serves one shard's HTTP and HTTPS connections until shutdown.
async fn serve_listeners(
    proxy: Arc<Proxy>,
    https: Arc<Https>,
    shutdown: proxy_core::http::Shutdown,
    http: Incoming,
    tls: Incoming,
) {
    // Tasks of their own, so that a multi-threaded runtime accepts on both at once.
    let plain = tokio::spawn({
        let (proxy, shutdown) = (proxy.clone(), shutdown.clone());
        async move { proxy.serve_listener(http, shutdown).await }
    });
    let secure =
        tokio::spawn(async move { https.serve(tls, proxy, HANDSHAKE_TIMEOUT, shutdown).await });
    let _ = tokio::join!(plain, secure);
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered now, not when first polled, so a signal during start-up is not lost.
    let term = signal(SignalKind::terminate());
    async move { wait_signal(term).await }
}

async fn wait_signal(term: std::io::Result<tokio::signal::unix::Signal>) {
    let mut term = match term {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
