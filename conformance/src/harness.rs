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

/// A free port on 127.0.0.1. The listener is closed before the controller binds it; the
/// kernel does not hand the same ephemeral port out again that quickly.
pub fn free_port() -> Result<SocketAddr, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(HarnessError::Port)?;
    listener.local_addr().map_err(HarnessError::Port)
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
            .arg(proxy.http.to_string())
            .arg("--https-addr")
            .arg(proxy.https.to_string())
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
