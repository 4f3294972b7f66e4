//! Command-line flags. Every flag also reads a `PORTICO_*` environment variable, so the
//! same settings work in a Deployment's `env:` and on a laptop.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::store::ObjectKey;

/// The `spec.controller` value of IngressClasses that Portico serves.
pub const CONTROLLER_NAME: &str = "portico.dev/ingress-controller";

#[derive(Clone, Debug, Parser)]
#[command(
    name = "ingress-controller",
    version,
    about = "Portico: a Kubernetes Ingress controller and reverse proxy",
    long_about = "Portico: a Kubernetes Ingress controller and reverse proxy.\n\n\
        Reads Ingress, IngressClass, Service, EndpointSlice, Endpoints and TLS Secret \
        objects (plus the --configmap ConfigMap and the portico-affinity-key Secret) from \
        the Kubernetes API (default) or from a folder of manifests (--manifests), and \
        proxies HTTP and HTTPS to the pods behind them.\n\n\
        Logs go to stderr; RUST_LOG sets the level and filters (default: info).",
    after_help = "Every flag can also be set through the environment variable shown with it."
)]
pub struct Args {
    /// Read objects from this folder of YAML/JSON manifests (or this one file) instead of
    /// the Kubernetes API. Every *.yaml, *.yml and *.json below it is read (recursively;
    /// names starting with "." are skipped) and watched: edits apply within a second, and a
    /// file that does not parse is reported while its last good version keeps serving.
    #[arg(long, env = "PORTICO_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// Kubeconfig to reach the API server with. Default: the in-cluster service account,
    /// then $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "PORTICO_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Plain-HTTP listener.
    #[arg(
        long,
        env = "PORTICO_HTTP_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,

    /// HTTPS listener (certificates from the Ingresses' spec.tls Secrets, by SNI).
    #[arg(
        long,
        env = "PORTICO_HTTPS_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub https_addr: SocketAddr,

    /// Port that clients reach HTTPS on, used in HTTP-to-HTTPS redirects. Default: the
    /// port of --https-addr; behind a Service that maps 443 to it, set 443.
    #[arg(long, env = "PORTICO_HTTPS_REDIRECT_PORT", value_name = "PORT")]
    pub https_redirect_port: Option<u16>,

    /// Serve HTTP/3 over QUIC (UDP) with the HTTPS certificates, and advertise it on
    /// HTTPS answers with `Alt-Svc`.
    #[arg(long, env = "PORTICO_HTTP3")]
    pub http3: bool,

    /// UDP address for HTTP/3. Default: the address of --https-addr.
    #[arg(
        long,
        env = "PORTICO_HTTP3_ADDR",
        value_name = "ADDR",
        requires = "http3"
    )]
    pub http3_addr: Option<SocketAddr>,

    /// Port that clients reach plain HTTP on, used in redirects that keep the scheme
    /// (from-to-www-redirect). Default: the port of --http-addr; behind a Service that
    /// maps 80 to it, set 80.
    #[arg(long, env = "PORTICO_HTTP_REDIRECT_PORT", value_name = "PORT")]
    pub http_redirect_port: Option<u16>,

    /// Admin listener: /healthz, /readyz and Prometheus /metrics.
    #[arg(
        long,
        env = "PORTICO_ADMIN_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:10254"
    )]
    pub admin_addr: SocketAddr,

    /// IngressClass name served (also matched by the legacy kubernetes.io/ingress.class
    /// annotation). IngressClasses whose spec.controller is portico.dev/ingress-controller
    /// are ours whatever their name.
    #[arg(
        long,
        env = "PORTICO_INGRESS_CLASS",
        value_name = "NAME",
        default_value = "portico"
    )]
    pub ingress_class: String,

    /// Also serve Ingresses that name no IngressClass (no spec.ingressClassName and no
    /// kubernetes.io/ingress.class annotation), as ingress-nginx's flag of the same name.
    /// Without it they are served only while an IngressClass of ours carries
    /// ingressclass.kubernetes.io/is-default-class: "true".
    #[arg(long, env = "PORTICO_WATCH_INGRESS_WITHOUT_CLASS")]
    pub watch_ingress_without_class: bool,

    /// Honour the ssl-passthrough annotation, as ingress-nginx's flag of the same name:
    /// a TLS connection on --https-addr whose server name (SNI) is the host of such an
    /// Ingress goes undecrypted to the backend of its "/" path; every other connection
    /// is terminated here as before. Without it the annotation is reported and ignored.
    #[arg(long, env = "PORTICO_ENABLE_SSL_PASSTHROUGH")]
    pub enable_ssl_passthrough: bool,

    /// Answer DNS queries for Services on this address (UDP and TCP), as cluster DNS
    /// does: A/AAAA for SVC.NS.svc.ZONE (the clusterIP, or a headless Service's ready
    /// endpoints), HOSTNAME.SVC.NS.svc.ZONE, SRV _PORT._PROTO.SVC.NS.svc.ZONE for named
    /// ports, CNAME for ExternalName Services. Answers follow every change. Default: off.
    #[arg(long, env = "PORTICO_DNS_ADDR", value_name = "ADDR")]
    pub dns_addr: Option<SocketAddr>,

    /// The cluster's DNS domain, the ZONE of --dns-addr's names.
    #[arg(
        long,
        env = "PORTICO_CLUSTER_DOMAIN",
        value_name = "DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// Watch only this namespace. Default: all namespaces.
    #[arg(long, env = "PORTICO_WATCH_NAMESPACE", value_name = "NS")]
    pub watch_namespace: Option<String>,

    /// Write this Service's load-balancer addresses into the status of our Ingresses;
    /// its ready endpoints are also the replicas that share the rate and connection limits.
    #[arg(
        long,
        env = "PORTICO_PUBLISH_SERVICE",
        value_name = "NS/NAME",
        conflicts_with = "publish_address"
    )]
    pub publish_service: Option<String>,

    /// Write these addresses (comma-separated IPs or DNS names) into the status of our
    /// Ingresses.
    #[arg(long, env = "PORTICO_PUBLISH_ADDRESS", value_name = "IP")]
    pub publish_address: Option<String>,

    /// Addresses (comma-separated IPs or CIDRs) Gateways get of their own, as a load
    /// balancer per Gateway would give: each Gateway is served at the spec.addresses
    /// it asks for in this pool, else at the next free one, and a connection to one of
    /// them reaches that Gateway's routes alone. They must reach Portico's listeners
    /// (bind --http-addr and --https-addr to 0.0.0.0, or to [::]). Without a pool, every
    /// Gateway is served at the published addresses.
    #[arg(
        long,
        env = "PORTICO_GATEWAY_ADDRESS_POOL",
        value_name = "CIDRS",
        value_delimiter = ',',
        value_parser = parse_net
    )]
    pub gateway_address_pool: Vec<ipnet::IpNet>,

    /// Also serve Services at L4 (TCP/UDP on clusterIP:port and NodePorts), like kube-proxy.
    #[arg(long, env = "PORTICO_SERVICE_PROXY")]
    pub service_proxy: bool,

    /// This node's name, for externalTrafficPolicy: Local.
    #[arg(long, env = "PORTICO_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// This node's addresses, for NodePort listeners. Repeat the flag, or separate with
    /// commas in the environment variable.
    #[arg(
        long,
        env = "PORTICO_NODE_ADDRESS",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub node_address: Vec<IpAddr>,

    /// TLS Secret served when the client sends no SNI or no certificate matches. Default: a
    /// self-signed certificate generated at start.
    #[arg(long, env = "PORTICO_DEFAULT_CERTIFICATE", value_name = "NS/NAME", value_parser = parse_object_key)]
    pub default_certificate: Option<ObjectKey>,

    /// ConfigMap of global settings, with ingress-nginx's key names and defaults
    /// (use-forwarded-headers, proxy-real-ip-cidr, proxy-body-size, proxy-*-timeout,
    /// ssl-redirect, hsts*, ...). Edits apply at once; a bad value is reported and that
    /// key keeps its default. Default: no ConfigMap, every default.
    #[arg(long, env = "PORTICO_CONFIGMAP", value_name = "NS/NAME", value_parser = parse_object_key)]
    pub configmap: Option<ObjectKey>,

    /// Service that answers HTTP requests no rule (and no Ingress's spec.defaultBackend)
    /// matches, on its first port, as ingress-nginx's flag of the same name; it also
    /// serves the custom-http-errors pages of Ingresses without a default-backend
    /// annotation. While it has no ready endpoint, such requests get 404. Default: none
    /// (404).
    #[arg(long, env = "PORTICO_DEFAULT_BACKEND_SERVICE", value_name = "NS/NAME", value_parser = parse_object_key)]
    pub default_backend_service: Option<ObjectKey>,

    /// Serve the validating admission webhook (HTTPS, path /validate/ingresses) on this
    /// address: the API server sends each Ingress create and update there, and Portico
    /// refuses what it would not serve as written. Needs the Kubernetes API source. Off
    /// unless set.
    #[arg(long, env = "PORTICO_WEBHOOK_ADDR", value_name = "ADDR")]
    pub webhook_addr: Option<SocketAddr>,

    /// The Service the API server calls the webhook through: its certificate names
    /// NAME.NS.svc.
    #[arg(
        long,
        env = "PORTICO_WEBHOOK_SERVICE",
        value_name = "NS/NAME",
        default_value = "portico/portico-admission",
        value_parser = parse_object_key
    )]
    pub webhook_service: ObjectKey,

    /// Secret, in the webhook Service's namespace, holding the webhook's CA and
    /// certificate (created when missing, shared by every replica).
    #[arg(
        long,
        env = "PORTICO_WEBHOOK_SECRET",
        value_name = "NAME",
        default_value = "portico-admission-certs"
    )]
    pub webhook_secret: String,

    /// The ValidatingWebhookConfiguration whose caBundle Portico keeps set to its CA.
    #[arg(
        long,
        env = "PORTICO_WEBHOOK_CONFIGURATION",
        value_name = "NAME",
        default_value = "portico-admission"
    )]
    pub webhook_configuration: String,

    /// On SIGTERM/SIGINT, stop accepting and let in-flight requests finish for up to this
    /// many seconds.
    #[arg(
        long,
        env = "PORTICO_SHUTDOWN_GRACE",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub shutdown_grace: u64,

    /// Threads serving requests (the async runtime's worker threads). Default: one per
    /// CPU. 1 serves everything from the main thread, e.g. to pin the proxy to one core
    /// or to compare it with a one-worker peer.
    #[arg(long, env = "PORTICO_WORKER_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    /// How the worker threads share the work. `work-stealing`: one runtime whose threads
    /// take each other's tasks. `per-core`: each thread runs a runtime of its own, new
    /// connections are dealt out to them in turn, and a connection stays on its thread:
    /// past the hand-over, no task or wake-up crosses threads. With one worker thread
    /// both are the same.
    #[arg(long, env = "PORTICO_RUNTIME", value_enum, default_value_t = RuntimeModel::WorkStealing)]
    pub runtime: RuntimeModel,

    /// Client connections served at once, HTTP and HTTPS together; more are closed at
    /// once, unserved, and counted in portico_connections_refused_total. Default: half of
    /// the open-file limit (raised to its hard limit at start) less a reserve, so that
    /// every client connection can have a pod connection and the admin listener always
    /// answers.
    #[arg(long, env = "PORTICO_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Client connections one client address may hold at once: the TCP peer, or with
    /// use-proxy-protocol the client the PROXY header names. Default: no cap.
    #[arg(long, env = "PORTICO_MAX_CONNECTIONS_PER_CLIENT", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_client: Option<u32>,

    /// Forward TRACE requests to the pods. Default: answer them 405, as they echo the
    /// request (cookies and credentials included) back.
    #[arg(long, env = "PORTICO_ALLOW_TRACE")]
    pub allow_trace: bool,

    /// Log format on stderr.
    #[arg(long, env = "PORTICO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Args {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeModel {
    WorkStealing,
    PerCore,
}

impl Args {
    /// Threads serving requests: `--worker-threads`, else one per CPU.
    pub fn serving_threads(&self) -> usize {
        match self.worker_threads {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `NAMESPACE/NAME`, both non-empty.
/// An IP network (`10.0.0.0/24`) or one address (`10.0.0.7`).
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR"))
}

pub fn parse_object_key(s: &str) -> Result<ObjectKey, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectKey::new(ns, name))
        }
        _ => Err(format!("{s:?}: expected NAMESPACE/NAME")),
    }
}

/// Structured logs on stderr: `RUST_LOG` filters (default `info`), text or JSON lines.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn defaults_match_the_documented_interface() {
        let args = Args::try_parse_from(["ingress-controller"]).unwrap();
        assert_eq!(args.http_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(args.https_addr, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(args.admin_addr, "0.0.0.0:10254".parse().unwrap());
        assert_eq!(args.ingress_class, "portico");
        assert_eq!(args.shutdown_grace(), Duration::from_secs(10));
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.webhook_addr, None);
        assert_eq!(
            args.webhook_service,
            ObjectKey::new("portico", "portico-admission")
        );
        assert!(args.manifests.is_none());
        assert!(!args.service_proxy);
        assert!(args.configmap.is_none());
        assert!(!args.watch_ingress_without_class);
        assert!(!args.enable_ssl_passthrough);
        assert_eq!(args.dns_addr, None);
        assert_eq!(args.cluster_domain, "cluster.local");
    }

    #[test]
    fn every_flag_has_a_portico_env_var() {
        let cmd = Args::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or("");
            let want = format!("PORTICO_{}", id.to_uppercase());
            assert_eq!(env, want, "flag --{id}");
        }
    }

    #[test]
    fn repeated_and_listed_values_parse() {
        let args = Args::try_parse_from([
            "ingress-controller",
            "--node-address",
            "10.0.0.1,10.0.0.2",
            "--node-address",
            "::1",
            "--default-certificate",
            "ns/cert",
            "--configmap",
            "portico/settings",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(args.node_address.len(), 3);
        assert_eq!(args.default_certificate, Some(ObjectKey::new("ns", "cert")));
        assert_eq!(args.configmap, Some(ObjectKey::new("portico", "settings")));
        assert_eq!(args.log_format, LogFormat::Json);
    }

    #[test]
    fn worker_threads_is_optional_and_positive() {
        let args = Args::try_parse_from(["ingress-controller"]).unwrap();
        assert_eq!(args.worker_threads, None);
        let args = Args::try_parse_from(["ingress-controller", "--worker-threads", "1"]).unwrap();
        assert_eq!(args.worker_threads, Some(1));
        let e = Args::try_parse_from(["ingress-controller", "--worker-threads", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--worker-threads"), "{e}");
    }

    #[test]
    fn runtime_model_defaults_to_work_stealing() {
        let args = Args::try_parse_from(["ingress-controller"]).unwrap();
        assert_eq!(args.runtime, RuntimeModel::WorkStealing);
        let args = Args::try_parse_from([
            "ingress-controller",
            "--runtime",
            "per-core",
            "--worker-threads",
            "3",
        ])
        .unwrap();
        assert_eq!(args.runtime, RuntimeModel::PerCore);
        assert_eq!(args.serving_threads(), 3);
        let e = Args::try_parse_from(["ingress-controller", "--runtime", "fibers"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--runtime"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected_naming_the_flag() {
        let e = Args::try_parse_from(["ingress-controller", "--default-certificate", "nope"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--default-certificate"), "{e}");
        let e = Args::try_parse_from(["ingress-controller", "--configmap", "settings"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--configmap"), "{e}");
        let e = Args::try_parse_from(["ingress-controller", "--http-addr", "localhost"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http-addr"), "{e}");
        assert!(Args::try_parse_from([
            "ingress-controller",
            "--publish-service",
            "a/b",
            "--publish-address",
            "1.2.3.4"
        ])
        .is_err());
    }
}
