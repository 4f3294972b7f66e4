//! Echo backends for trying Portico without a cluster: one process serves many
//! backends, each on its own 127.0.0.x address and port.
//!
//! ```text
//! echo-server 127.0.0.11:18080=default/kubia/kubia-7d9f8 127.0.0.12:18080=default/kubia/kubia-x2k4q
//! echo-server --manifests manifests/examples      # every loopback endpoint the folder names
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use conformance::backends::loopback_backends;
use conformance::certs::SelfSigned;
use conformance::echo::{EchoServer, Identity};
use conformance::manifests::read_dir;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Echo backends: answer every request with JSON naming the backend and what it received"
)]
struct Args {
    /// Serve every loopback address:port named by the EndpointSlices and Endpoints in DIR.
    #[arg(long, value_name = "DIR", env = "ECHO_MANIFESTS")]
    manifests: Option<PathBuf>,
    /// Serve HTTPS with a generated self-signed certificate instead of plain HTTP.
    #[arg(long)]
    tls: bool,
    /// ADDR=NAMESPACE/SERVICE/POD, e.g. 127.0.0.11:18080=default/kubia/kubia-7d9f8
    #[arg(value_name = "BACKEND")]
    backends: Vec<String>,
}

fn parse_backend(spec: &str) -> Result<(SocketAddr, Identity)> {
    let (addr, who) = spec
        .split_once('=')
        .with_context(|| format!("backend {spec:?}: expected ADDR=NAMESPACE/SERVICE/POD"))?;
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("backend {spec:?}: address {addr:?} is not IP:PORT"))?;
    let parts: Vec<&str> = who.split('/').collect();
    let [ns, service, pod] = parts.as_slice() else {
        bail!("backend {spec:?}: expected NAMESPACE/SERVICE/POD after '='");
    };
    if ns.is_empty() || service.is_empty() || pod.is_empty() {
        bail!("backend {spec:?}: namespace, service and pod must not be empty");
    }
    Ok((addr, Identity::new(ns, service, pod)))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();

    let mut wanted = Vec::new();
    if let Some(dir) = &args.manifests {
        let docs =
            read_dir(dir).with_context(|| format!("reading manifests in {}", dir.display()))?;
        wanted.extend(loopback_backends(&docs)?);
    }
    for spec in &args.backends {
        wanted.push(parse_backend(spec)?);
    }
    if wanted.is_empty() {
        bail!("no backends: give ADDR=NAMESPACE/SERVICE/POD arguments or --manifests DIR");
    }

    let tls = if args.tls {
        let cert = SelfSigned::generate(&["localhost", "echo.local"])?;
        Some(cert.server_config()?)
    } else {
        None
    };

    let mut servers = Vec::new();
    for (addr, identity) in wanted {
        let server = EchoServer::start(addr, identity, tls.clone()).await?;
        let id = server.identity();
        tracing::info!(
            addr = %server.addr(),
            namespace = %id.namespace,
            service = %id.service,
            pod = %id.pod,
            "echo backend listening"
        );
        servers.push(server);
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    drop(servers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_backend;

    #[test]
    fn backend_specs() {
        let (addr, id) = parse_backend("127.0.0.11:18080=default/kubia/kubia-1").unwrap();
        assert_eq!(addr.to_string(), "127.0.0.11:18080");
        assert_eq!(id.pod, "kubia-1");
        assert!(parse_backend("127.0.0.11:18080=default/kubia").is_err());
        assert!(parse_backend("nope=default/kubia/x").is_err());
        assert!(parse_backend("127.0.0.1:1=//x").is_err());
    }
}
