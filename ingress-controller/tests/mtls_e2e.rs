//! Client certificates (`auth-tls-*`) through the binary: a CA and client certificates
//! made by the `openssl` command line, requests made by `curl --cert/--key` against the
//! HTTPS listener, each host asking (or not) by SNI.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Runs `openssl` with `args` in `dir`; `false` when it is missing or fails.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    match Command::new("openssl").current_dir(dir).args(args).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => panic!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => false,
    }
}

/// A CA `name` (`name.crt`, `name.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> bool {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    )
}

/// A client certificate `name` (`name.crt`, `name.key`) for `subject`, signed by `ca`.
fn make_client(dir: &Path, name: &str, subject: &str, ca: &str) -> bool {
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "client.ext",
            "-out",
            &format!("{name}.crt"),
        ],
    )
}

/// What OpenSSL prints as the RFC 2253 subject of `cert` (nginx's `$ssl_client_s_dn`).
fn rfc2253_subject(dir: &Path, cert: &str) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", cert,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("subject=")
        .to_owned()
}

/// One answer as curl saw it.
#[derive(Debug)]
struct Seen {
    status: u16,
    headers: String,
    body: String,
}

impl Seen {
    /// The value of response header `name` (lower-case), if any.
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// `curl` to `https://host/path` at `addr` (by `--resolve`, so SNI is `host`), with the
/// client certificate `cert` from `dir` if any.
async fn curl(addr: SocketAddr, dir: &Path, host: &str, path: &str, cert: Option<&str>) -> Seen {
    let dir: PathBuf = dir.to_owned();
    let url = format!("https://{host}:{}{path}", addr.port());
    let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
    let cert = cert.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("curl");
        cmd.current_dir(&dir)
            .args(["-Ssk", "--max-time", "10", "-D", "-", "--resolve", &resolve]);
        if let Some(c) = &cert {
            cmd.args(["--cert", &format!("{c}.crt"), "--key", &format!("{c}.key")]);
        }
        let out = cmd.arg(&url).output().expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        let (headers, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let status = headers
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        // On a failed exchange, what curl said instead.
        let body = if status == 0 {
            String::from_utf8_lossy(&out.stderr).into_owned()
        } else {
            body.to_owned()
        };
        Seen {
            status,
            headers: headers.to_owned(),
            body,
        }
    })
    .await
    .unwrap()
}

/// Polls until `host` `path` with `cert` answers `status`.
async fn until_status(
    addr: SocketAddr,
    dir: &Path,
    host: &str,
    cert: Option<&str>,
    status: u16,
) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = curl(addr, dir, host, "/", cert).await;
        if seen.status == status {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{host} with {cert:?} never answered {status}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Secret `name` with `ca.crt` from `dir/ca_file`.
fn ca_secret(name: &str, dir: &Path, ca_file: &str) -> String {
    let ca = std::fs::read(dir.join(ca_file)).unwrap();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ndata:\n  ca.crt: {}\n",
        b64(&ca)
    )
}

/// An Ingress `name` for `host` / to Service `web` with `annotations`.
fn annotated(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let mut out = ingress_yaml(name, host, "/", "web");
    let list: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    out = out.replacen(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  annotations:\n{list}"),
        1,
    );
    out
}

const P: &str = "nginx.ingress.kubernetes.io/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_per_host() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    if !make_ca(d, "ca") {
        println!("skipped: openssl is not installed");
        return;
    }
    if Command::new("curl").arg("--version").output().is_err() {
        println!("skipped: curl is not installed");
        return;
    }
    assert!(make_ca(d, "other-ca"));
    assert!(make_client(d, "client", "/O=Team, Inc/CN=client", "ca"));
    assert!(make_client(d, "stranger", "/CN=stranger", "other-ca"));

    let web = Backend::start("web").await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = INGRESS_CLASS_YAML.to_owned();
    text.push_str(&service_yaml("web", &[web.addr]));
    let secret = format!("{P}auth-tls-secret");
    let verify = format!("{P}auth-tls-verify-client");
    text.push_str(&annotated(
        "on",
        "on.example.com",
        &[
            (&secret, "default/ca"),
            (&verify, "on"),
            (&format!("{P}auth-tls-pass-certificate-to-upstream"), "true"),
        ],
    ));
    text.push_str(&annotated(
        "optional",
        "optional.example.com",
        // The key under Portico's own prefix works the same.
        &[("portico.dev/auth-tls-secret", "ca"), (&verify, "optional")],
    ));
    text.push_str(&annotated(
        "noca",
        "noca.example.com",
        &[(&secret, "ca"), (&verify, "optional_no_ca")],
    ));
    text.push_str(&annotated(
        "errpage",
        "errpage.example.com",
        &[
            (&secret, "ca"),
            (
                &format!("{P}auth-tls-error-page"),
                "https://errors.example.com/cert",
            ),
        ],
    ));
    text.push_str(&annotated(
        "cn",
        "cn.example.com",
        &[
            (&secret, "ca"),
            (&format!("{P}auth-tls-match-cn"), "CN=admin"),
        ],
    ));
    text.push_str(&annotated(
        "missing",
        "missing.example.com",
        &[(&secret, "no-such-secret")],
    ));
    text.push_str(&ingress_yaml("plain", "plain.example.com", "/", "web"));
    // Other Ingresses on hosts with client certificates, without annotations of their own.
    text.push_str(&ingress_yaml(
        "neighbour",
        "on.example.com",
        "/other",
        "web",
    ));
    text.push_str(&ingress_yaml(
        "missing-neighbour",
        "missing.example.com",
        "/other",
        "web",
    ));
    std::fs::write(dir.path().join("apps.yaml"), text).unwrap();
    write_atomic(dir.path(), "ca.yaml", &ca_secret("ca", d, "ca.crt"));
    let mut ctl = Controller::start(dir.path(), &[]);
    ctl.wait_ready().await;
    let https = ctl.https;

    // on: 200 with a certificate the CA signed, its details upstream.
    let ok = until_status(https, d, "on.example.com", Some("client"), 200).await;
    assert_eq!(
        ok.header("echo-ssl-client-verify").as_deref(),
        Some("SUCCESS")
    );
    assert_eq!(
        ok.header("echo-ssl-client-subject-dn"),
        Some(rfc2253_subject(d, "client.crt")),
        "{ok:?}"
    );
    assert_eq!(
        ok.header("echo-ssl-client-subject-dn").as_deref(),
        Some("CN=client,O=Team\\, Inc")
    );
    assert_eq!(
        ok.header("echo-ssl-client-issuer-dn").as_deref(),
        Some("CN=ca")
    );
    let pem = ok
        .header("echo-ssl-client-cert")
        .expect("certificate passed upstream");
    assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
    let own = std::fs::read_to_string(d.join("client.crt")).unwrap();
    let own_b64: String = own.lines().filter(|l| !l.starts_with("-----")).collect();
    let sent_b64: String = pem
        .split("%0A")
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    assert_eq!(sent_b64, own_b64, "the leaf the client sent");
    // on: 400 without a certificate, and with one from another CA.
    let none = curl(https, d, "on.example.com", "/", None).await;
    assert_eq!(none.status, 400, "{none:?}");
    assert!(
        none.body.contains("No required SSL certificate was sent"),
        "{none:?}"
    );
    let stranger = curl(https, d, "on.example.com", "/", Some("stranger")).await;
    assert_eq!(stranger.status, 400, "{stranger:?}");
    assert!(
        stranger.body.contains("The SSL certificate error"),
        "{stranger:?}"
    );

    // The host's settings cover the other Ingress's paths too, as nginx's server.
    assert_eq!(
        curl(https, d, "on.example.com", "/other", None)
            .await
            .status,
        400
    );
    let other = curl(https, d, "on.example.com", "/other", Some("client")).await;
    assert_eq!(other.status, 200, "{other:?}");
    assert_eq!(
        other.header("echo-ssl-client-verify").as_deref(),
        Some("SUCCESS")
    );
    assert!(other.header("echo-ssl-client-cert").is_some());

    // optional: no certificate passes (NONE), a bad one does not.
    let seen = curl(https, d, "optional.example.com", "/", None).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(
        seen.header("echo-ssl-client-verify").as_deref(),
        Some("NONE")
    );
    assert_eq!(seen.header("echo-ssl-client-subject-dn"), None);
    assert_eq!(
        curl(https, d, "optional.example.com", "/", Some("stranger"))
            .await
            .status,
        400
    );
    let seen = curl(https, d, "optional.example.com", "/", Some("client")).await;
    assert_eq!(
        seen.header("echo-ssl-client-verify").as_deref(),
        Some("SUCCESS")
    );
    // No pass-certificate-to-upstream: no certificate upstream.
    assert_eq!(seen.header("echo-ssl-client-cert"), None);

    // What a client sends under these names never reaches the pods.
    let forged = Command::new("curl")
        .current_dir(d)
        .args(["-sk", "-D", "-", "-o", "/dev/null", "--resolve"])
        .arg(format!(
            "optional.example.com:{}:{}",
            https.port(),
            https.ip()
        ))
        .args(["-H", "ssl-client-verify: SUCCESS"])
        .args(["-H", "ssl-client-subject-dn: CN=admin"])
        .args(["-H", "ssl-client-cert: forged"])
        .arg(format!("https://optional.example.com:{}/", https.port()))
        .output()
        .unwrap();
    let forged = String::from_utf8_lossy(&forged.stdout).to_ascii_lowercase();
    assert!(forged.contains("echo-ssl-client-verify: none"), "{forged}");
    assert!(
        !forged.contains("cn=admin") && !forged.contains("forged"),
        "{forged}"
    );

    // optional_no_ca: another CA's certificate passes, marked FAILED.
    let seen = curl(https, d, "noca.example.com", "/", Some("stranger")).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(
        seen.header("echo-ssl-client-verify").as_deref(),
        Some("FAILED:unable to get local issuer certificate")
    );
    assert_eq!(
        seen.header("echo-ssl-client-subject-dn").as_deref(),
        Some("CN=stranger")
    );
    assert_eq!(
        curl(https, d, "noca.example.com", "/", None).await.status,
        200
    );

    // auth-tls-error-page: a redirect instead of 400.
    let seen = curl(https, d, "errpage.example.com", "/", None).await;
    assert_eq!(seen.status, 302, "{seen:?}");
    assert_eq!(
        seen.header("location").as_deref(),
        Some("https://errors.example.com/cert")
    );
    assert_eq!(
        curl(https, d, "errpage.example.com", "/", Some("client"))
            .await
            .status,
        200
    );

    // auth-tls-match-cn: a good certificate with another CN is forbidden.
    let seen = curl(https, d, "cn.example.com", "/", Some("client")).await;
    assert_eq!(seen.status, 403, "{seen:?}");
    assert!(
        seen.body.contains("client certificate unauthorized"),
        "{seen:?}"
    );

    // A missing Secret refuses exactly that Ingress's paths.
    assert_eq!(
        curl(https, d, "missing.example.com", "/", Some("client"))
            .await
            .status,
        503
    );
    // Only that Ingress's: the host is left without client certificates, as nginx's.
    assert_eq!(
        curl(https, d, "missing.example.com", "/other", None)
            .await
            .status,
        200
    );
    ctl.wait_log(
        "the missing Secret reported",
        Duration::from_secs(10),
        |l| l.contains("no-such-secret") && l.contains("does not exist"),
    )
    .await;

    // A host without auth-tls on the same listener: no certificate asked for, none needed.
    let plain = curl(https, d, "plain.example.com", "/", None).await;
    assert_eq!(plain.status, 200, "{plain:?}");
    assert_eq!(plain.header("echo-ssl-client-verify"), None);
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &https.to_string(),
            "-servername",
            "plain.example.com",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("No client certificate CA names sent"),
        "plain host asked for a certificate: {text}"
    );
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &https.to_string(),
            "-servername",
            "on.example.com",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Acceptable client certificate CA names") && text.contains("CN = ca"),
        "on host named no CA: {text}"
    );

    // SNI of a host without client certificates, Host of one with them: 421.
    let seen = Command::new("curl")
        .current_dir(d)
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
        .arg(format!("plain.example.com:{}:{}", https.port(), https.ip()))
        .args(["-H", "Host: on.example.com"])
        .arg(format!("https://plain.example.com:{}/", https.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&seen.stdout), "421");

    // The CA rotates without a restart: the other CA's clients get in, ours no longer.
    write_atomic(dir.path(), "ca.yaml", &ca_secret("ca", d, "other-ca.crt"));
    until_status(https, d, "on.example.com", Some("stranger"), 200).await;
    assert_eq!(
        curl(https, d, "on.example.com", "/", Some("client"))
            .await
            .status,
        400
    );
}
