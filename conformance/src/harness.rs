//! Running the real `ingress-controller` binary on 127.0.0.1 ports, waiting until it is
//! ready, and stopping it when the test is done.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::ProxyAddrs;

/// How long the controller may take to become ready on a loaded machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "the ingress-controller binary was not found at {0}; build it first with \
         `cargo build --workspace --bins` (or set PORTICO_BIN)"
    )]
    MissingBinary(PathBuf),
    #[error("picking a free port: {0}")]
    Port(std::io::Error),
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("ingress-controller exited before it was ready ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error(
        "ingress-controller not ready at http://{admin}/readyz after {timeout:?}; its log:\n{log}"
    )]
    NotReady {
        admin: SocketAddr,
        timeout: Duration,
        log: String,
    },
    #[error("creating the log file: {0}")]
    Log(std::io::Error),
}

/// The workspace root (the folder holding `Cargo.toml`, `manifests/`, `conformance/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$PORTICO_BIN`, else `$CARGO_TARGET_DIR/debug/ingress-controller`, else
/// `<workspace>/target/debug/ingress-controller`.
pub fn binary_path() -> Result<PathBuf, HarnessError> {
    let path = if let Some(bin) = std::env::var_os("PORTICO_BIN") {
        PathBuf::from(bin)
    } else {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| {
                if t.is_absolute() {
                    t
                } else {
                    workspace_root().join(t)
                }
            })
            .unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug").join(format!(
            "ingress-controller{}",
            std::env::consts::EXE_SUFFIX
        ))
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::MissingBinary(path))
    }
}

/// A free port on 127.0.0.1 for the controller to bind.
///
/// Picked below the kernel's ephemeral range: a port the kernel handed out for a moment
/// can be handed out again as the source port of any outgoing connection (the controller's
/// own, to the API server or a backend) before the controller binds it. Ports below the
/// range are never chosen that way, and a process-wide counter keeps concurrent tests from
/// picking the same one.
pub fn free_port() -> Result<SocketAddr, HarnessError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = (10_000u32, ephemeral_start().max(10_001));
    let span = high - low;
    let seed = std::process::id().wrapping_mul(7_919) % span;
    let mut last_err = None;
    for _ in 0..span {
        let offset = (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = (low + offset) as u16;
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return listener.local_addr().map_err(HarnessError::Port),
            Err(e) => last_err = Some(e),
        }
    }
    Err(HarnessError::Port(last_err.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free port below the ephemeral range",
        )
    })))
}

/// The first port of the kernel's ephemeral range (Linux's default when unreadable).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// `addr`'s port on every local address, or `addr` itself.
fn bound(addr: SocketAddr, all_addresses: bool) -> SocketAddr {
    if all_addresses {
        SocketAddr::from(([0, 0, 0, 0], addr.port()))
    } else {
        addr
    }
}

/// A running controller process; killed when dropped.
pub struct Controller {
    child: Child,
    pub proxy: ProxyAddrs,
    pub admin: SocketAddr,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Controller {
    /// Start the binary with `args` plus its listen addresses, and wait for `/readyz`.
    pub async fn start(args: &[String]) -> Result<Self, HarnessError> {
        Self::start_with_env(args, &[]).await
    }

    /// [`Controller::start`] with extra environment variables.
    pub async fn start_with_env(
        args: &[String],
        envs: &[(&str, &str)],
    ) -> Result<Self, HarnessError> {
        Self::start_bound(args, envs, false).await
    }

    /// [`Controller::start_with_env`], its proxy listeners bound to every local address
    /// (`0.0.0.0`) when `all_addresses`, on the ports of [`Controller::proxy`]:
    /// connections to other loopback addresses than 127.0.0.1 reach them too.
    pub async fn start_bound(
        args: &[String],
        envs: &[(&str, &str)],
        all_addresses: bool,
    ) -> Result<Self, HarnessError> {
        let binary = binary_path()?;
        let proxy = ProxyAddrs {
            http: free_port()?,
            https: free_port()?,
        };
        let admin = free_port()?;
        let log_dir = tempfile::tempdir().map_err(HarnessError::Log)?;
        let log_path = log_dir.path().join("controller.log");
        let log = std::fs::File::create(&log_path).map_err(HarnessError::Log)?;
        let log_err = log.try_clone().map_err(HarnessError::Log)?;
        let child = Command::new(&binary)
            .args(args)
            .arg("--http-addr")
            .arg(bound(proxy.http, all_addresses).to_string())
            .arg("--https-addr")
            .arg(bound(proxy.https, all_addresses).to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .env(
                "RUST_LOG",
                std::env::var("PORTICO_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                binary: binary.clone(),
                source,
            })?;
        let mut controller = Self {
            child,
            proxy,
            admin,
            log_path,
            _log_dir: log_dir,
        };
        controller.wait_ready().await?;
        Ok(controller)
    }

    async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(HarnessError::Exited {
                    status: status.to_string(),
                    log: self.log_tail(),
                });
            }
            if self.readyz().await == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    admin: self.admin,
                    timeout: READY_TIMEOUT,
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The status code of `GET /readyz` on the admin port, if it answered.
    pub async fn readyz(&self) -> Option<u16> {
        admin_get(self.admin, "/readyz").await.map(|(s, _)| s)
    }

    /// The last lines the controller logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        lines[start..].join("\n")
    }

    /// Everything the controller has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on an admin address: status and body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let req = crate::client::Request::new(http::Method::GET, "http", &admin.to_string(), path);
    let addrs = ProxyAddrs {
        http: admin,
        https: admin,
    };
    let got = crate::client::send(addrs, &req, &crate::client::TlsTrust::Insecure)
        .await
        .ok()?;
    Some((
        got.status.as_u16(),
        String::from_utf8_lossy(&got.body).into_owned(),
    ))
}
