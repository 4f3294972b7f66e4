//! A real API server for tests, as controller-runtime's envtest runs one: etcd and
//! kube-apiserver on loopback, with generated certificates, a token file and a
//! service-account signing key, stopped by PID when dropped.
//!
//! Binaries come from `KUBEBUILDER_ASSETS` (a folder with `etcd`, `kube-apiserver` and
//! optionally `kubectl`, as `setup-envtest` lays out; `etcd` may also be on `PATH`, e.g.
//! Debian's `etcd-server`). Without a kube-apiserver the tests print [`SKIP`] and pass.
//!
//! Two identities are in the token file: an administrator (group `system:masters`) for
//! the test's own setup, and `system:serviceaccount:portico:portico`, the ServiceAccount
//! `manifests/` creates, for the controller. RBAC is on, so the controller gets exactly
//! what `manifests/10-rbac.yaml` grants it and a missing verb fails the test.
//!
//! The API server refuses loopback endpoint addresses, so a test that sends traffic to
//! pods runs in a private network namespace ([`netns`]) where pod addresses are local.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use kube::Client;

/// What a test prints when there is no API server to run against.
pub const SKIP: &str = "skipped: no kube-apiserver (set KUBEBUILDER_ASSETS)";

/// The ServiceAccount `manifests/` creates, as the API server names it.
pub const PORTICO_USER: &str = "system:serviceaccount:portico:portico";

/// How long etcd and the API server get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The envtest binaries, when there are some.
pub struct Assets {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kubectl: Option<PathBuf>,
}

/// `KUBEBUILDER_ASSETS`, if it holds a kube-apiserver (and etcd is there or on `PATH`).
pub fn assets() -> Option<Assets> {
    let dir = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS")?);
    let kube_apiserver = dir.join("kube-apiserver");
    if !kube_apiserver.is_file() {
        return None;
    }
    let etcd = Some(dir.join("etcd"))
        .filter(|p| p.is_file())
        .or_else(|| on_path("etcd"))?;
    let kubectl = Some(dir.join("kubectl")).filter(|p| p.is_file());
    Some(Assets {
        etcd,
        kube_apiserver,
        kubectl,
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running etcd + kube-apiserver. Dropping it kills both (by PID) and removes their
/// data.
pub struct KubeApiServer {
    etcd: Child,
    apiserver: Child,
    pub addr: SocketAddr,
    admin_token: String,
    portico_token: String,
    pub kubectl: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// 32 random hex digits from the OS, for a bearer token.
fn token() -> String {
    let mut bytes = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    std::io::Read::read_exact(&mut f, &mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl KubeApiServer {
    /// Starts etcd and kube-apiserver, or prints [`SKIP`] and returns `None` when there are
    /// no binaries. Panics if they are there but do not come up.
    pub async fn start() -> Option<KubeApiServer> {
        let Some(assets) = assets() else {
            eprintln!("{SKIP}");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = Command::new(&assets.etcd)
            .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "etcd.log"))
            .spawn()
            .expect("start etcd");

        // The service-account signing key: ECDSA P-256, PKCS#8.
        let key = rcgen::KeyPair::generate().expect("service-account key");
        std::fs::write(dir.path().join("sa.key"), key.serialize_pem()).expect("sa.key");
        std::fs::write(dir.path().join("sa.pub"), key.public_key_pem()).expect("sa.pub");
        let (admin_token, portico_token) = (token(), token());
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!(
                "{admin_token},admin,admin,\"system:masters\"\n\
                 {portico_token},{PORTICO_USER},portico,\"system:serviceaccounts,system:serviceaccounts:portico,system:authenticated\"\n"
            ),
        )
        .expect("tokens.csv");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let apiserver = Command::new(&assets.kube_apiserver)
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg(format!("--cert-dir={}", path("certs")))
            .arg(format!("--secure-port={api_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--token-auth-file={}", path("tokens.csv")))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", path("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path("sa.key")
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            // No kube-proxy here: webhook calls go to the Service's endpoint addresses.
            .arg("--enable-aggregator-routing=true")
            // No controller-manager mints tokens for pods here.
            .arg("--disable-admission-plugins=ServiceAccount")
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "kube-apiserver.log"))
            .spawn()
            .expect("start kube-apiserver");
        let server = KubeApiServer {
            etcd,
            apiserver,
            addr: ([127, 0, 0, 1], api_port).into(),
            admin_token,
            portico_token,
            kubectl: assets.kubectl,
            dir,
        };
        server.wait_ready().await;
        Some(server)
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        let client = self.admin().await;
        loop {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => break,
                other => {
                    assert!(
                        started.elapsed() < START_TIMEOUT,
                        "kube-apiserver not ready: {other:?}\n{}",
                        self.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        eprintln!("kube-apiserver ready in {:?}", started.elapsed());
    }

    /// The tails of etcd's and kube-apiserver's logs.
    pub fn logs(&self) -> String {
        ["etcd.log", "kube-apiserver.log"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {f}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A kubeconfig for `token` (the server's certificate is self-signed, generated by
    /// the API server in its cert dir).
    fn write_kubeconfig(&self, path: &Path, token: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: https://{}\n    insecure-skip-tls-verify: true\n\
             contexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: envtest\n    namespace: default\n\
             current-context: envtest\nusers:\n- name: envtest\n  user:\n    token: {token}\n",
            self.addr
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// A kubeconfig as the administrator, in `dir`.
    pub fn admin_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("admin.kubeconfig");
        self.write_kubeconfig(&path, &self.admin_token);
        path
    }

    /// A kubeconfig as the `portico` ServiceAccount, in `dir`.
    pub fn portico_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("portico.kubeconfig");
        self.write_kubeconfig(&path, &self.portico_token);
        path
    }

    /// A client as the administrator.
    pub async fn admin(&self) -> Client {
        let path = self.admin_kubeconfig(self.dir.path());
        ingress_controller::sources::kube::client(Some(&path))
            .await
            .expect("admin client")
    }

    /// Server-side applies every document of these manifest files, as `kubectl apply
    /// --server-side` would (kinds found by discovery).
    pub async fn apply_files(&self, files: &[PathBuf]) {
        let client = self.admin().await;
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .expect("discovery");
        for file in files {
            let text = std::fs::read_to_string(file).expect("manifest");
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let value: serde_json::Value =
                    serde::Deserialize::deserialize(doc).expect("manifest YAML");
                if value.is_null() {
                    continue;
                }
                self.apply_value(&client, &discovery, value).await;
            }
        }
    }

    /// Server-side applies one object (as the administrator).
    pub async fn apply(&self, value: serde_json::Value) {
        let client = self.admin().await;
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .expect("discovery");
        self.apply_value(&client, &discovery, value).await;
    }

    async fn apply_value(&self, client: &Client, discovery: &Discovery, value: serde_json::Value) {
        let obj: DynamicObject = serde_json::from_value(value).expect("an object");
        let types = obj.types.clone().expect("apiVersion and kind");
        let gvk = kube::core::GroupVersionKind::try_from(&types).expect("a GVK");
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("the API server does not serve {gvk:?}"));
        let name = obj.metadata.name.clone().expect("a name");
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or("default"),
                &resource,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply("envtest").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {gvk:?} {name}: {e}"));
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// Private network namespaces for tests that send traffic to pod addresses.
///
/// [`netns::run_inside`] runs the calling test again, alone, in a new network namespace
/// (`unshare -n`) where loopback is up and `10.244.0.0/24` is routed to it
/// (`ip route add local 10.244.0.0/24 dev lo`): every address in it is local, so pods'
/// addresses can be listened on and connected to, and nothing leaves the machine. The
/// test's processes (the controller, etcd, kube-apiserver, backends) all start from the
/// re-run test, so all live in that namespace. By hand:
///
/// ```sh
/// unshare -n sh -c 'ip link set lo up && ip route add local 10.244.0.0/24 dev lo && exec "$@"' \
///     sh cargo test -p ingress-controller --test real_apiserver
/// ```
pub mod netns {
    use std::process::Command;

    /// Set in the re-run test.
    const INSIDE: &str = "PORTICO_TEST_IN_NETNS";
    /// Pod addresses made local inside.
    pub const POD_CIDR: &str = "10.244.0.0/24";
    const SETUP: &str =
        "ip link set lo up && ip route add local 10.244.0.0/24 dev lo && exec \"$@\"";

    /// In the namespace: `true`, run the test body. Outside: runs `test` (its full
    /// name, e.g. `module::name`, or the bare name for a top-level test) in a new
    /// namespace, asserts that it passed, and returns `false`. Where namespaces cannot be
    /// made (no root, no user namespaces) it says so and returns `false`.
    pub fn run_inside(test: &str) -> bool {
        if std::env::var_os(INSIDE).is_some() {
            return true;
        }
        let usable = Command::new("unshare")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !usable {
            eprintln!("skipped: cannot create a network namespace (unshare -n)");
            return false;
        }
        let exe = std::env::current_exe().expect("the test binary");
        let status = Command::new("unshare")
            .args(["-n", "--", "sh", "-c", SETUP, "sh"])
            .arg(exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(INSIDE, "1")
            .status()
            .expect("run the test in a network namespace");
        assert!(status.success(), "{test} failed in its network namespace");
        false
    }
}
