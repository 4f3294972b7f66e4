//! A differential test: the same annotated Ingresses served by Portico (the real binary
//! over a manifest folder) and by a real nginx configured as ingress-nginx renders them
//! (`differential::render_nginx`), both in front of the same echo pods. Every request goes
//! to both, redirects not followed, and the answers must agree on the status, the
//! `Location` of a redirect, the pod that answered and the method, path, query, `Host`
//! and `X-Forwarded-Prefix` it received. A canary weight is compared statistically.
//!
//! Where Portico deliberately differs from ingress-nginx (README, "Deliberate differences
//! from ingress-nginx"), the request says so and why, and the difference must show.
//!
//! Without nginx the test prints "skipped: nginx not installed" and passes.

mod common;
mod differential;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use differential::{find_nginx, render_nginx, Ing, Listen, Nginx};

/// One request: Host, target (path and query), extra header fields, and, where Portico
/// deliberately differs from ingress-nginx, why.
struct Req {
    https: bool,
    method: &'static str,
    host: &'static str,
    target: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    differs: Option<&'static str>,
}

fn req(host: &'static str, target: &'static str) -> Req {
    Req {
        https: false,
        method: "GET",
        host,
        target,
        headers: Vec::new(),
        differs: None,
    }
}

impl Req {
    /// Sent over HTTPS (SNI: the host).
    fn https(mut self) -> Req {
        self.https = true;
        self
    }

    /// Sent with another method (a `POST` carries a small form body).
    fn method(mut self, method: &'static str) -> Req {
        self.method = method;
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers.push((name, value));
        self
    }

    fn differs(mut self, why: &'static str) -> Req {
        self.differs = Some(why);
        self
    }
}

/// A named group of Ingresses and the requests that exercise them.
struct Case {
    name: &'static str,
    ings: Vec<Ing>,
    reqs: Vec<Req>,
}

/// Why the pods see another path from Portico than from nginx for some URIs.
const NORMALIZED: &str = "normalized paths: Portico routes on the normalized path and \
    sends the pod that path (unreserved escapes decoded, dot segments resolved, slashes \
    merged); nginx passes the client's URI as sent when it does not rewrite (README, \
    Deliberate differences)";

/// The canaries by weight, compared statistically: host, main and canary Service, and the
/// share of requests the canary should get.
const WEIGHTED: &[(&str, &str, &str, f64)] = &[
    ("weight.test", "wmain", "wcanary", 0.30),
    // A total under 100 counts as 100 in ingress-nginx's balancer: 5 of 10 is 5%.
    ("weight2.test", "w2main", "w2canary", 0.05),
];

/// The Services the cases route to; each is one echo pod named after it.
const SERVICES: &[&str] = &[
    "a", "b", "c", "d", "main", "canary", "main2", "canary2", "main3", "canary3", "main4",
    "canary4", "rwmain", "rwcanary", "wmain", "wcanary", "w2main", "w2canary",
];

fn cases() -> Vec<Case> {
    let is = "ImplementationSpecific";
    vec![
        Case {
            name: "rewrite-target with capture groups",
            ings: vec![Ing::new("rewrite", "rewrite.test")
                .ann("rewrite-target", "/$2")
                .path("/something(/|$)(.*)", is, "a")],
            reqs: vec![
                req("rewrite.test", "/something"),
                req("rewrite.test", "/something/"),
                req("rewrite.test", "/something/new"),
                req("rewrite.test", "/something/new?a=b").method("POST"),
                req("rewrite.test", "/something/new").method("HEAD"),
                req("rewrite.test", "/something/new?q=1").https(),
                req("rewrite.test", "/something/new/deeper?x=1&y=2"),
                req("rewrite.test", "/SOMETHING/Abc"),
                req("rewrite.test", "/somethingelse"),
                req("rewrite.test", "/other/something/x"),
                req("rewrite.test", "/"),
                req("rewrite.test", "/something/a%20b"),
                req("rewrite.test", "/something/%41bc?q=%20"),
            ],
        },
        Case {
            name: "rewrite-target on every path of the Ingress, x-forwarded-prefix",
            ings: vec![Ing::new("xfp", "xfp.test")
                .ann("rewrite-target", "/$1")
                .ann("x-forwarded-prefix", "/api")
                .path("/api/?(.*)", is, "b")
                .path("/static", "Prefix", "c")],
            reqs: vec![
                req("xfp.test", "/api"),
                req("xfp.test", "/api/users?id=1"),
                req("xfp.test", "/API/Users"),
                req("xfp.test", "/apiv2/x"),
                req("xfp.test", "/static/site.css"),
                req("xfp.test", "/statics"),
                req("xfp.test", "/elsewhere"),
            ],
        },
        Case {
            name: "one use-regex Ingress makes the whole host regex, longest first",
            ings: vec![
                Ing::new("regex-a", "regex.test")
                    .ann("use-regex", "true")
                    .path("/foo/bar/[A-Z0-9]{3}", is, "a")
                    .path("/l/.*", is, "a")
                    .path("/l/long/.*", is, "d"),
                Ing::new("regex-b", "regex.test")
                    .path("/foo/bar/bar", "Prefix", "b")
                    .path("/exact", "Exact", "c")
                    .path("/dot.path", "Prefix", "d"),
                Ing::new("regex-anchored", "regex.test")
                    .ann("use-regex", "true")
                    .path("/end$", "Exact", "d")
                    .path("/(opt)?group(.*)", is, "b")
                    .ann("rewrite-target", "/x$1y$2"),
            ],
            reqs: vec![
                req("regex.test", "/foo/bar/bar"),
                req("regex.test", "/foo/bar/ABC"),
                req("regex.test", "/foo/bar/abc?q=1"),
                req("regex.test", "/foo/bar/bard"),
                req("regex.test", "/FOO/BAR/BAR/x"),
                req("regex.test", "/foo/bar/ba"),
                req("regex.test", "/foo/bar/ba/"),
                req("regex.test", "/exact"),
                req("regex.test", "/exactly"),
                req("regex.test", "/EXACT/x"),
                req("regex.test", "/l/x"),
                req("regex.test", "/l/long/x"),
                req("regex.test", "/l/LONG/"),
                req("regex.test", "/nothing"),
                req("regex.test", "/dotxpath/y"),
                req("regex.test", "/end"),
                req("regex.test", "/end/"),
                req("regex.test", "/group/z"),
                req("regex.test", "/optgroup/z?k=v"),
                req("regex.test", "/foo/bar/%41BC").differs(NORMALIZED),
            ],
        },
        Case {
            name: "plain Prefix and Exact paths",
            ings: vec![
                Ing::new("plain", "plain.test")
                    .path("/foo", "Prefix", "a")
                    .path("/exact", "Exact", "b")
                    .path("/aaa/bb", "Prefix", "c")
                    .path("/slash/", "Prefix", "c")
                    .path("/", "Prefix", "d"),
                Ing::new("same", "same.test")
                    .path("/same", "Exact", "a")
                    .path("/same", "Prefix", "b"),
                Ing::new("noroot", "noroot.test").path("/only", is, "a"),
            ],
            reqs: vec![
                req("plain.test", "/foo"),
                req("plain.test", "/foo/"),
                req("plain.test", "/foo/bar?q=1"),
                req("plain.test", "/foobar"),
                req("plain.test", "/FOO"),
                req("plain.test", "/exact"),
                req("plain.test", "/exact?x=1"),
                req("PLAIN.TEST", "/foo/x"),
                req("plain.test:8080", "/foo/x"),
                req("plain.test", "/exact/"),
                req("plain.test", "/exactly"),
                req("plain.test", "/EXACT"),
                req("plain.test", "/foo?a=%2F&b"),
                req("plain.test", "/aaa/bb"),
                req("plain.test", "/aaa/bbb"),
                req("plain.test", "/aaa/bb/c"),
                req("plain.test", "/slash").differs(
                    "a Prefix path with a trailing slash: Kubernetes' Prefix ignores it, so \
                     Portico serves /slash; ingress-nginx's location /slash/ answers nginx's \
                     301 to /slash/ (README, Deliberate differences)",
                ),
                req("plain.test", "/slash/x"),
                req("plain.test", "/"),
                req("plain.test", "/?a=b"),
                req("plain.test", "/foo/../foo/x").differs(NORMALIZED),
                req("plain.test", "//foo").differs(NORMALIZED),
                req("plain.test", "/foo%2Fbar").differs(
                    "an encoded slash: %2F is no path separator in Portico, nginx decodes it \
                     before matching locations (README, Deliberate differences)",
                ),
                req("plain.test", "/foo/a%20b"),
                req("plain.test", "/foo?"),
                req("plain.test", "/foo;jsessionid=1"),
                req("plain.test", "/foo/%2e%2e/exact").differs(NORMALIZED),
                req("other.test", "http://plain.test/foo/x").differs(
                    "an absolute-form target: both route by its host, and Portico sends the pod \
                     that host as Host, where ingress-nginx passes the client's Host field on \
                     (README, Deliberate differences)",
                ),
                req("same.test", "/same"),
                req("same.test", "/same/"),
                req("same.test", "/same/x"),
                req("same.test", "/samex"),
                req("noroot.test", "/only"),
                req("noroot.test", "/only/x"),
                req("noroot.test", "/onlyx").differs(
                    "ImplementationSpecific is matched as Prefix, by path elements; \
                     ingress-nginx's plain location /only is a string prefix (README, \
                     Deliberate differences)",
                ),
                req("noroot.test", "/"),
            ],
        },
        Case {
            name: "permanent and temporal redirects",
            ings: vec![
                Ing::new("perm", "perm.test")
                    .ann("permanent-redirect", "https://redirect.test/new")
                    .path("/", "Prefix", "a"),
                Ing::new("perm308", "perm308.test")
                    .ann("permanent-redirect", "https://redirect.test")
                    .ann("permanent-redirect-code", "308")
                    .path("/", "Prefix", "a"),
                Ing::new("perm-bad-code", "permbad.test")
                    .ann("permanent-redirect", "https://redirect.test")
                    .ann("permanent-redirect-code", "999")
                    .path("/", "Prefix", "a"),
                Ing::new("temp", "temp.test")
                    .ann("temporal-redirect", "https://temp.target/x?y=z")
                    .ann("permanent-redirect", "https://never.test")
                    .path("/", "Prefix", "a"),
                Ing::new("temp307", "temp307.test")
                    .ann("temporal-redirect", "http://temp.target")
                    .ann("temporal-redirect-code", "307")
                    .path("/go", "Prefix", "a"),
            ],
            reqs: vec![
                req("perm.test", "/"),
                req("perm.test", "/a/b?c=d"),
                req("perm.test", "/a").method("POST"),
                req("perm.test", "/a").method("HEAD"),
                req("perm.test", "/a").https(),
                req("perm308.test", "/x"),
                req("permbad.test", "/x"),
                req("temp.test", "/anything?q=1"),
                req("temp307.test", "/go/x"),
                req("temp307.test", "/stay"),
            ],
        },
        Case {
            name: "rewrite-target / on a Prefix path",
            ings: vec![Ing::new("slashrw", "slashrw.test")
                .ann("rewrite-target", "/")
                .path("/foo", "Prefix", "a")
                .path("/bar/", "Exact", "b")],
            reqs: vec![
                req("slashrw.test", "/foo"),
                req("slashrw.test", "/foo/bar?x=1"),
                req("slashrw.test", "/foox"),
                req("slashrw.test", "/FOO/"),
                req("slashrw.test", "/bar/"),
                req("slashrw.test", "/bar/x"),
                req("slashrw.test", "/"),
            ],
        },
        Case {
            name: "rewrite-target equal to the path",
            ings: vec![Ing::new("keep", "keep.test")
                .ann("rewrite-target", "/keep")
                .path("/keep", "Prefix", "a")],
            reqs: vec![
                req("keep.test", "/keep"),
                req("keep.test", "/keep/x"),
                req("keep.test", "/KEEP"),
                req("keep.test", "/keepx"),
            ],
        },
        Case {
            name: "app-root of an Ingress that does not route /",
            ings: vec![
                Ing::new("approot-app", "approot2.test")
                    .ann("app-root", "/app/home")
                    .path("/app", "Prefix", "a"),
                Ing::new("approot-rest", "approot2.test").path("/", "Prefix", "b"),
                Ing::new("approot-only", "approot3.test")
                    .ann("app-root", "/app/home")
                    .path("/app", "Prefix", "a"),
            ],
            reqs: vec![
                req("approot2.test", "/"),
                req("approot2.test", "/app"),
                req("approot2.test", "/x"),
                req("approot3.test", "/"),
                req("approot3.test", "/?x=1"),
                req("approot3.test", "/x"),
            ],
        },
        Case {
            name: "app-root",
            ings: vec![Ing::new("approot", "approot.test")
                .ann("app-root", "/app1")
                .path("/", "Prefix", "a")],
            reqs: vec![
                req("approot.test", "/"),
                req("approot.test", "/?q=1"),
                req("approot.test:8080", "/"),
                req("approot.test", "/").https(),
                req("approot.test", "/x").https(),
                req("approot.test", "/app1"),
                req("approot.test", "/x/"),
            ],
        },
        Case {
            name: "HTTPS redirect, and ssl-redirect off",
            ings: vec![
                Ing::new("tls", "tls.test")
                    .tls()
                    .path("/secure", "Prefix", "a"),
                // TLS is the host's: this Ingress names none, its paths redirect too.
                Ing::new("tls-other", "tls.test").path("/plain", "Prefix", "b"),
                Ing::new("tlsrw", "tlsrw.test")
                    .tls()
                    .ann("rewrite-target", "/$1")
                    .path("/api/(.*)", is, "b"),
                Ing::new("tlsperm", "tlsperm.test")
                    .tls()
                    .ann("permanent-redirect", "https://elsewhere.test/p")
                    .path("/", "Prefix", "a"),
                Ing::new("force", "force.test")
                    .ann("force-ssl-redirect", "true")
                    .ann("preserve-trailing-slash", "true")
                    .path("/", "Prefix", "a"),
                Ing::new("nossl", "nossl.test")
                    .tls()
                    .ann("ssl-redirect", "false")
                    .path("/", "Prefix", "b"),
            ],
            reqs: vec![
                req("tls.test", "/secure"),
                req("tls.test", "/secure/"),
                req("tls.test", "/secure/x").method("POST"),
                req("tls.test", "/secure/x/?y=1"),
                req("tls.test", "/other"),
                req("tls.test", "/plain/x/"),
                req("tls.test", "/secure/x?y=1").https(),
                req("tls.test", "/secure/x").method("POST").https(),
                req("force.test", "/x/").https(),
                req("nossl.test", "/x").https(),
                req("nossl.test", "/x?y=1"),
                req("tlsrw.test", "/api/x/?y=1"),
                req("force.test", "/x/"),
                req("tlsperm.test", "/x/"),
                req("force.test", "/x/?q=1"),
            ],
        },
        Case {
            name: "from-to-www-redirect",
            ings: vec![
                Ing::new("fromto", "fromto.test")
                    .ann("from-to-www-redirect", "true")
                    .path("/", "Prefix", "a"),
                Ing::new("fromto-www", "www.fromto2.test")
                    .ann("from-to-www-redirect", "true")
                    .path("/", "Prefix", "b"),
            ],
            reqs: vec![
                req("fromto.test", "/x"),
                req("www.fromto.test", "/"),
                req("www.fromto.test", "/path/"),
                req("www.fromto.test", "/x/?a=1"),
                req("fromto2.test", "/y/"),
                req("www.fromto2.test", "/y/"),
                req("www.fromto.test", "/x/?a=1").https(),
                req("fromto.test", "/x").https(),
            ],
        },
        Case {
            name: "upstream-vhost",
            ings: vec![Ing::new("vhost", "vhost.test")
                .ann("upstream-vhost", "internal.svc")
                .ann("x-forwarded-prefix", "/unused")
                .path("/", "Prefix", "a")],
            reqs: vec![
                req("vhost.test", "/x?q=1"),
                req("vhost.test", "/x").header("X-Forwarded-Prefix", "/client"),
            ],
        },
        Case {
            name: "canary by header and cookie",
            ings: vec![
                Ing::new("main", "canary.test").path("/", "Prefix", "main"),
                Ing::new("canary", "canary.test")
                    .ann("canary", "true")
                    .ann("canary-by-header", "X-Canary")
                    .ann("canary-by-cookie", "canary_cookie")
                    .path("/", "Prefix", "canary"),
                Ing::new("main-value", "canary2.test").path("/", "Prefix", "main2"),
                Ing::new("canary-value", "canary2.test")
                    .ann("canary", "true")
                    .ann("canary-by-header", "X-Version")
                    .ann("canary-by-header-value", "v2")
                    .path("/", "Prefix", "canary2"),
                Ing::new("same-service", "other.test").path("/", "Prefix", "main"),
                Ing::new("main-pattern", "canary3.test").path("/", "Prefix", "main3"),
                Ing::new("canary-pattern", "canary3.test")
                    .ann("canary", "true")
                    .ann("canary-by-header", "X-Pat")
                    .ann("canary-by-header-pattern", "^v[0-9]+$")
                    .path("/", "Prefix", "canary3"),
                Ing::new("main-all", "canary4.test").path("/", "Prefix", "main4"),
                Ing::new("canary-all", "canary4.test")
                    .ann("canary", "true")
                    .ann("canary-by-header", "X-Never")
                    .ann("canary-weight", "100")
                    .path("/", "Prefix", "canary4"),
                Ing::new("rw-main", "canaryrw.test")
                    .ann("rewrite-target", "/$1")
                    .ann("upstream-vhost", "up.internal")
                    .path("/app/(.*)", is, "rwmain"),
                Ing::new("rw-canary", "canaryrw.test")
                    .ann("canary", "true")
                    .ann("canary-by-header", "X-Canary")
                    .path("/app/(.*)", is, "rwcanary"),
            ],
            reqs: vec![
                req("canary.test", "/x"),
                req("canary.test", "/x").header("X-Canary", "always"),
                req("canary.test", "/x").header("X-Canary", "never"),
                req("canary.test", "/x")
                    .header("X-Canary", "never")
                    .header("Cookie", "canary_cookie=always"),
                req("canary.test", "/x")
                    .header("X-Canary", "maybe")
                    .header("Cookie", "canary_cookie=always"),
                req("canary.test", "/x").header("Cookie", "canary_cookie=never"),
                req("canary.test", "/x")
                    .header("X-Canary", "always")
                    .https(),
                req("canary.test", "/x").header("Cookie", "canary_cookie=sometimes"),
                req("canary2.test", "/y").header("X-Version", "v2"),
                req("canary2.test", "/y").header("X-Version", "V2"),
                req("canary2.test", "/y").header("X-Version", "always"),
                req("canary2.test", "/y"),
                req("other.test", "/z"),
                req("canary3.test", "/p").header("X-Pat", "v12"),
                req("canary3.test", "/p").header("X-Pat", "V12"),
                req("canary3.test", "/p").header("X-Pat", "xv1"),
                req("canary3.test", "/p").header("X-Pat", "always"),
                req("canary4.test", "/q"),
                req("canary4.test", "/q").header("X-Never", "never"),
                req("canaryrw.test", "/app/x?q=1"),
                req("canaryrw.test", "/app/x?q=1").header("X-Canary", "always"),
                req("other.test", "/z")
                    .header("X-Canary", "always")
                    .differs(
                        "canary scope: ingress-nginx attaches a canary to the main's Service, so \
                     every route to that Service takes it; Portico to the one route with the \
                     same host, path and pathType (README, Deliberate differences)",
                    ),
            ],
        },
        Case {
            // Its requests are sent and counted apart, below.
            name: "canary by weight",
            ings: vec![
                Ing::new("wmain", "weight.test").path("/", "Prefix", "wmain"),
                Ing::new("wcanary", "weight.test")
                    .ann("canary", "true")
                    .ann("canary-weight", "30")
                    .path("/", "Prefix", "wcanary"),
                Ing::new("w2main", "weight2.test").path("/", "Prefix", "w2main"),
                Ing::new("w2canary", "weight2.test")
                    .ann("canary", "true")
                    .ann("canary-weight", "5")
                    .ann("canary-weight-total", "10")
                    .path("/", "Prefix", "w2canary"),
            ],
            reqs: Vec::new(),
        },
        Case {
            name: "wildcard hosts and rules without a host",
            ings: vec![
                Ing::new("wild", "*.wild.test").path("/", "Prefix", "b"),
                Ing::new("hostless", "").path("/hostless", "Prefix", "c"),
            ],
            reqs: vec![
                req("a.wild.test", "/x"),
                req("a.b.wild.test", "/x"),
                req("wild.test", "/x"),
                req("unknown.test", "/hostless/x"),
                req("noroot.test", "/hostless").differs(
                    "rules without a host: Portico tries them for every host after its own \
                     rules, as the Ingress API describes; ingress-nginx keeps them in its \
                     catch-all server, which a named host's requests never reach (README, \
                     Deliberate differences)",
                ),
            ],
        },
        Case {
            name: "no rule matches",
            ings: Vec::new(),
            reqs: vec![
                req("unknown.test", "/"),
                req("unknown.test", "/x?y=z"),
                req("unknown.test", "/").https(),
            ],
        },
    ]
}

/// What one side answered, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    location: String,
    backend: String,
    uri: String,
    host: String,
    forwarded_prefix: String,
    method: String,
}

const FIELDS: [&str; 7] = [
    "status",
    "location",
    "backend",
    "uri",
    "host",
    "x-fwd-prefix",
    "method",
];

impl Seen {
    fn fields(&self) -> [String; 7] {
        [
            self.status.to_string(),
            self.location.clone(),
            self.backend.clone(),
            self.uri.clone(),
            self.host.clone(),
            self.forwarded_prefix.clone(),
            self.method.clone(),
        ]
    }
}

/// Sends `r` to `addr` on a connection of its own; a redirect's `Location` has the
/// side's own port (`:port`) replaced by `:PORT`, as each names the port it listens on.
async fn send(side: &Side, r: &Req) -> Seen {
    let addr = if r.https { side.https } else { side.http };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let body = if r.method == "POST" { "x=1" } else { "" };
    let a = if r.https {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        let sni = r.host.split(':').next().unwrap_or_default().to_owned();
        let name = rustls::pki_types::ServerName::try_from(sni).expect("SNI");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .unwrap_or_else(|e| panic!("TLS to {addr}: {e}"));
        exchange(tls, r.method, r.host, r.target, &r.headers, body).await
    } else {
        exchange(stream, r.method, r.host, r.target, &r.headers, body).await
    };
    let backend = a.header("x-backend").unwrap_or("").to_owned();
    let uri = if backend.is_empty() {
        String::new()
    } else {
        // The echo pod's body is `<name> <path>`; its query comes as `echo-query`.
        let path = a.body.split_once(' ').map(|(_, p)| p).unwrap_or("");
        match a.header("echo-query") {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        }
    };
    Seen {
        status: a.status,
        location: own_port(a.header("location").unwrap_or(""), &side.ports),
        backend,
        uri,
        host: a.header("echo-host").unwrap_or("").to_owned(),
        forwarded_prefix: a.header("echo-x-forwarded-prefix").unwrap_or("").to_owned(),
        method: a.header("echo-method").unwrap_or("").to_owned(),
    }
}

/// Where one side listens, and the ports it names as its own in redirects.
struct Side {
    http: SocketAddr,
    https: SocketAddr,
    ports: Vec<u16>,
}

/// `location` with a port of `ports` (`:port` before the path or at the end) written
/// `:PORT`: each side names the port it listens on.
fn own_port(location: &str, ports: &[u16]) -> String {
    let mut out = location.to_owned();
    for port in ports {
        let named = format!(":{port}");
        out = out
            .replace(&format!("{named}/"), ":PORT/")
            .replace(&format!("{named}?"), ":PORT?");
        if let Some(head) = out.strip_suffix(named.as_str()) {
            out = format!("{head}:PORT");
        }
    }
    out
}

fn describe(r: &Req) -> String {
    let mut s = match r.method {
        "GET" => String::new(),
        m => format!("{m} "),
    };
    if r.target.starts_with('/') {
        if r.https {
            s.push_str("https://");
        }
        s.push_str(r.host);
        s.push_str(r.target);
    } else {
        // An absolute-form target: the Host field says something else.
        s.push_str(&format!("{} [Host: {}]", r.target, r.host));
    }
    for (k, v) in &r.headers {
        s.push_str(&format!(" [{k}: {v}]"));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portico_answers_as_ingress_nginx_renders_the_same_ingresses() {
    let Some(nginx_bin) = find_nginx() else {
        println!("skipped: nginx not installed");
        return;
    };
    let mut pods = Vec::new();
    let mut services: BTreeMap<&'static str, SocketAddr> = BTreeMap::new();
    for name in SERVICES {
        let b = Backend::start(name).await;
        services.insert(name, b.addr);
        pods.push(b);
    }
    let ings: Vec<Ing> = cases().into_iter().flat_map(|c| c.ings).collect();

    // Portico: the Ingresses, the Services with their EndpointSlices, one certificate
    // for the TLS hosts.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = INGRESS_CLASS_YAML.to_owned();
    for (name, addr) in &services {
        text.push_str(&service_yaml(name, &[*addr]));
    }
    let tls_hosts: Vec<String> = ings
        .iter()
        .filter(|i| i.tls)
        .map(|i| i.host.to_owned())
        .collect();
    let cert = rcgen::generate_simple_self_signed(tls_hosts).expect("certificate");
    text.push_str("---\n");
    text.push_str(&secret_yaml(
        "tls-cert",
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    ));
    for ing in &ings {
        text.push_str(&ing.yaml("tls-cert"));
    }
    std::fs::write(dir.path().join("apps.yaml"), &text).expect("write manifests");
    let mut ctl = Controller::start(dir.path(), &["--https-redirect-port", "443"]);
    ctl.wait_ready().await;
    wait_for(
        ctl.http,
        "plain.test",
        "/foo",
        Duration::from_secs(30),
        |s, _| s == 200,
    )
    .await;

    // nginx: the configuration ingress-nginx would render for the same objects.
    let ndir = tempfile::tempdir().expect("tempdir");
    let listen = Listen {
        http: ([127, 0, 0, 1], free_port()).into(),
        https: ([127, 0, 0, 1], free_port()).into(),
        cert: ndir.path().join("tls.crt"),
        key: ndir.path().join("tls.key"),
    };
    std::fs::write(&listen.cert, cert.cert.pem()).expect("write certificate");
    std::fs::write(&listen.key, cert.signing_key.serialize_pem()).expect("write key");
    let conf = render_nginx(&ings, &services, &listen, ndir.path());
    let conf_path = ndir.path().join("nginx.conf");
    // To read the rendered configuration after a run.
    if let Some(keep) = std::env::var_os("PORTICO_TEST_KEEP_NGINX_CONF") {
        let _ = std::fs::write(keep, &conf);
    }
    std::fs::write(&conf_path, &conf).expect("write nginx.conf");
    let nginx = Nginx::start(&nginx_bin, &conf_path, ndir.path(), listen.http).await;
    let nginx_side = Side {
        http: listen.http,
        https: listen.https,
        ports: vec![listen.http.port(), listen.https.port()],
    };
    // Portico names `--https-redirect-port`, 443 here as in a cluster, for its HTTPS port.
    let portico_side = Side {
        http: ctl.http,
        https: ctl.https,
        ports: vec![ctl.http.port(), ctl.https.port(), 443],
    };

    // Every request to both sides.
    let mut table = Vec::new();
    let (mut compared, mut expected) = (0, 0);
    for case in cases() {
        for r in &case.reqs {
            let want = send(&nginx_side, r).await;
            let got = send(&portico_side, r).await;
            compared += 1;
            let rows: Vec<(usize, String, String)> = want
                .fields()
                .into_iter()
                .zip(got.fields())
                .enumerate()
                .filter(|(_, (w, g))| w != g)
                .map(|(i, (w, g))| (i, w, g))
                .collect();
            match (r.differs, rows.is_empty()) {
                (None, true) => {}
                (None, false) => {
                    for (i, w, g) in rows {
                        table.push(format!(
                            "| {} | {} | {} | {w:?} | {g:?} | |",
                            case.name,
                            describe(r),
                            FIELDS[i]
                        ));
                    }
                }
                (Some(why), false) => {
                    expected += 1;
                    let fields: Vec<String> = rows
                        .iter()
                        .map(|(i, w, g)| format!("{} nginx {w:?}, Portico {g:?}", FIELDS[*i]))
                        .collect();
                    println!(
                        "expected difference, {} ({}): {why}",
                        describe(r),
                        fields.join("; ")
                    );
                }
                (Some(why), true) => table.push(format!(
                    "| {} | {} | (all) | {:?} | {:?} | expected to differ: {why} |",
                    case.name,
                    describe(r),
                    want.fields(),
                    got.fields()
                )),
            }
        }
    }

    // canary-weight, statistically: both sides within a tolerance of the share the
    // annotations ask for, and of each other. Four and a half standard deviations of N
    // draws: a correct proxy fails about once in 100,000 runs.
    const N: usize = 1000;
    for &(host, main, canary, want) in WEIGHTED {
        let probe = req(host, "/w");
        let mut shares = Vec::new();
        for side in [&nginx_side, &portico_side] {
            let mut hits = 0usize;
            for _ in 0..N {
                let seen = send(side, &probe).await;
                match seen.backend.as_str() {
                    b if b == canary => hits += 1,
                    b if b == main => {}
                    other => panic!("{host} answered by {other:?}: {seen:?}"),
                }
            }
            shares.push(hits as f64 / N as f64);
        }
        let (n_share, p_share) = (shares[0], shares[1]);
        println!("{host}: canary share nginx {n_share:.3}, Portico {p_share:.3} of {N} requests (asked: {want})");
        let sd = (want * (1.0 - want) / N as f64).sqrt();
        for (side, share) in [("nginx", n_share), ("Portico", p_share)] {
            if (share - want).abs() > 4.5 * sd {
                table.push(format!(
                    "| canary-weight | {host}/w x{N} | canary share | {want:.3} | {share:.3} ({side}) | |"
                ));
            }
        }
        if (n_share - p_share).abs() > 4.5 * sd * 2f64.sqrt() {
            table.push(format!(
                "| canary-weight | {host}/w x{N} | canary share | {n_share:.3} | {p_share:.3} | |"
            ));
        }
    }

    drop(nginx);
    assert!(
        table.is_empty(),
        "Portico and nginx (as ingress-nginx renders the same Ingresses) differ on {} of {compared} requests:\n\
         | case | request | field | nginx | Portico | note |\n|---|---|---|---|---|---|\n{}\n\nnginx.conf:\n{conf}",
        table.len(),
        table.join("\n")
    );
    println!(
        "{compared} requests compared: {} answered alike by Portico and nginx, {expected} differ as expected",
        compared - expected
    );
}
