//! Test fixtures for `nginx_differential.rs`: a small model of annotated Ingresses, their
//! manifests for Portico, and the nginx configuration ingress-nginx would render for the
//! same objects, plus a real nginx process to serve it.
//!
//! The nginx side is rendered the way ingress-nginx's controller and template do it
//! (`internal/ingress/controller/{controller,location}.go`,
//! `internal/ingress/controller/template/template.go`, `rootfs/etc/nginx/template/nginx.tmpl`),
//! with the Lua parts (HTTPS redirect, from-to-www redirect, canary choice) written as
//! plain nginx directives that take the same decisions. It is test code only: Portico
//! itself never renders nginx configuration.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The annotation prefix the cases use (Portico reads it for migration).
pub const NGINX: &str = "nginx.ingress.kubernetes.io";

/// One path of an Ingress rule.
pub struct PathRule {
    pub path: &'static str,
    pub path_type: &'static str,
    pub service: &'static str,
}

/// An Ingress with one rule (one host), its annotations (keys without prefix) and
/// whether its host has a `spec.tls` entry.
pub struct Ing {
    pub name: &'static str,
    pub host: &'static str,
    pub tls: bool,
    pub annotations: Vec<(&'static str, &'static str)>,
    pub paths: Vec<PathRule>,
}

impl Ing {
    pub fn new(name: &'static str, host: &'static str) -> Ing {
        Ing {
            name,
            host,
            tls: false,
            annotations: Vec::new(),
            paths: Vec::new(),
        }
    }

    pub fn ann(mut self, key: &'static str, value: &'static str) -> Ing {
        self.annotations.push((key, value));
        self
    }

    pub fn path(
        mut self,
        path: &'static str,
        path_type: &'static str,
        service: &'static str,
    ) -> Ing {
        self.paths.push(PathRule {
            path,
            path_type,
            service,
        });
        self
    }

    pub fn tls(mut self) -> Ing {
        self.tls = true;
        self
    }

    fn get(&self, key: &str) -> Option<&'static str> {
        self.annotations
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key) == Some("true")
    }

    fn is_canary(&self) -> bool {
        self.flag("canary")
    }

    /// The Ingress as `kubectl get -o yaml` would show it, class `portico`; a `spec.tls`
    /// entry names the Secret `tls_secret`.
    pub fn yaml(&self, tls_secret: &str) -> String {
        let mut out = format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {}\n",
            self.name
        );
        if !self.annotations.is_empty() {
            out.push_str("  annotations:\n");
            for (k, v) in &self.annotations {
                let _ = writeln!(out, "    {NGINX}/{k}: \"{v}\"");
            }
        }
        out.push_str("spec:\n  ingressClassName: portico\n");
        if self.tls {
            let _ = write!(
                out,
                "  tls:\n  - hosts: [\"{}\"]\n    secretName: {tls_secret}\n",
                self.host
            );
        }
        if self.host.is_empty() {
            out.push_str("  rules:\n  - http:\n      paths:\n");
        } else {
            let _ = write!(
                out,
                "  rules:\n  - host: \"{}\"\n    http:\n      paths:\n",
                self.host
            );
        }
        for p in &self.paths {
            let _ = write!(
                out,
                "      - path: \"{}\"\n        pathType: {}\n        backend:\n          service:\n            name: {}\n            port:\n              number: 80\n",
                p.path, p.path_type, p.service
            );
        }
        out
    }
}

/// A `location` of a rendered server: ingress-nginx's `ingress.Location`, reduced to
/// what the cases use.
struct Loc<'a> {
    /// The path nginx matches (after ingress-nginx's Prefix normalization).
    path: String,
    exact: bool,
    /// The Ingress and path it comes from; `None` is the server's default root location.
    from: Option<(&'a Ing, &'a PathRule)>,
}

impl Loc<'_> {
    fn rewrite_target(&self) -> Option<&'static str> {
        self.from.and_then(|(ing, _)| ing.get("rewrite-target"))
    }

    /// ingress-nginx's `needsRewrite`: a target other than the location's own path.
    fn needs_rewrite(&self) -> bool {
        self.rewrite_target().is_some_and(|t| t != self.path)
    }

    fn use_regex(&self) -> bool {
        self.from.is_some_and(|(ing, _)| ing.flag("use-regex"))
    }
}

/// The canary of a main upstream: ingress-nginx attaches it to the main's backend
/// (Service port), so every location proxying to that Service takes it into account.
struct Canary<'a> {
    ing: &'a Ing,
    service: &'static str,
}

/// Where the rendered nginx listens: plain HTTP, and HTTPS with one certificate for
/// every server (ingress-nginx's servers all listen on both).
pub struct Listen {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Renders the `nginx.conf` ingress-nginx would run for `ings`, listening on `listen`,
/// with `services` (Service name -> pod address), temporary files under `dir`.
pub fn render_nginx(
    ings: &[Ing],
    services: &BTreeMap<&'static str, SocketAddr>,
    listen: &Listen,
    dir: &Path,
) -> String {
    let d = dir.display();
    let mut out = String::new();
    let _ = write!(
        out,
        "# Rendered by ingress-controller/tests/differential as ingress-nginx would render it.
pid {d}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # As nginx.tmpl has them.
    server_name_in_redirect off;
    port_in_redirect off;
    proxy_http_version 1.1;
    proxy_redirect off;
    server_tokens off;
    ssl_certificate {cert};
    ssl_certificate_key {key};

",
        cert = listen.cert.display(),
        key = listen.key.display(),
    );
    for (name, addr) in services {
        let _ = writeln!(out, "    upstream up_{name} {{ server {addr}; }}");
    }

    // Canaries, by the main Service they join (controller.go's mergeAlternativeBackends).
    let mut canaries: BTreeMap<&'static str, Canary> = BTreeMap::new();
    for ing in ings.iter().filter(|i| i.is_canary()) {
        for p in &ing.paths {
            let main = ings.iter().filter(|m| !m.is_canary()).find_map(|m| {
                (m.host == ing.host)
                    .then(|| m.paths.iter().find(|mp| mp.path == p.path))
                    .flatten()
            });
            if let Some(main) = main {
                canaries.entry(main.service).or_insert(Canary {
                    ing,
                    service: p.service,
                });
            }
        }
    }
    for (main, c) in &canaries {
        render_canary_maps(&mut out, main, c);
    }

    // The catch-all server `_`: the rules without a host, and ingress-nginx's default
    // backend (404) for the rest.
    render_server(&mut out, ings, "", listen, &canaries);

    // from-to-www-redirect: a server of its own for the twin (nginx.tmpl's
    // RedirectServers, ngx_srv_redirect.lua: scheme, target host, server port, request
    // URI without a trailing `/`).
    for ing in ings
        .iter()
        .filter(|i| !i.is_canary() && i.flag("from-to-www-redirect"))
    {
        let twin = match ing.host.strip_prefix("www.") {
            Some(bare) => bare.to_owned(),
            None => format!("www.{}", ing.host),
        };
        if ings.iter().any(|i| i.host == twin) {
            continue;
        }
        let _ = write!(
            out,
            "
    server {{
        listen {http};
        listen {https} ssl;
        server_name \"{twin}\";
        set $redirect_uri $request_uri;
        if ($redirect_uri ~ \"^(.*)/$\") {{ set $redirect_uri $1; }}
        return 308 $scheme://{to}:$server_port$redirect_uri;
    }}
",
            to = ing.host,
            http = listen.http,
            https = listen.https,
        );
    }

    // One server per host, in the order hosts first appear.
    let mut hosts: Vec<&'static str> = Vec::new();
    for ing in ings.iter().filter(|i| !i.is_canary() && !i.host.is_empty()) {
        if !hosts.contains(&ing.host) {
            hosts.push(ing.host);
        }
    }
    for host in hosts {
        render_server(&mut out, ings, host, listen, &canaries);
    }
    out.push_str("}\n");
    out
}

/// `map`s and `split_clients` taking balancer.lua's decision for the canary of `main`:
/// header (`always`/`never`, or the exact `-value`, or a match of `-pattern`), then
/// cookie, then weight. nginx's
/// `map` strings ignore case, so anchored case-sensitive regexes stand for the exact
/// comparisons Lua makes.
fn render_canary_maps(out: &mut String, main: &str, c: &Canary) {
    let (canary, main_up) = (format!("up_{}", c.service), format!("up_{main}"));
    let weight: u32 = c
        .ing
        .get("canary-weight")
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    let total: u32 = c
        .ing
        .get("canary-weight-total")
        .and_then(|w| w.parse().ok())
        .unwrap_or(100)
        .max(100);
    let mut fallback = main_up.clone();
    if weight > 0 {
        let pct = f64::from(weight.min(total)) * 100.0 / f64::from(total);
        let _ = writeln!(
            out,
            "    split_clients \"${{request_id}}\" $canary_{main}_weight {{ {pct}% {canary}; * {main_up}; }}"
        );
        fallback = format!("$canary_{main}_weight");
    }
    if let Some(cookie) = c.ing.get("canary-by-cookie") {
        let _ = writeln!(
            out,
            "    map $cookie_{cookie} $canary_{main}_cookie {{ \"~^always$\" {canary}; \"~^never$\" {main_up}; default {fallback}; }}"
        );
        fallback = format!("$canary_{main}_cookie");
    }
    let header = c
        .ing
        .get("canary-by-header")
        .map(|h| h.to_ascii_lowercase().replace('-', "_"));
    let (value, pattern) = (
        c.ing.get("canary-by-header-value"),
        c.ing.get("canary-by-header-pattern"),
    );
    match (header, value, pattern) {
        (Some(h), Some(value), _) => {
            let _ = writeln!(
                out,
                "    map $http_{h} $canary_{main} {{ \"~^{}$\" {canary}; default {fallback}; }}",
                regex_escape(value)
            );
        }
        (Some(h), None, Some(pattern)) => {
            let _ = writeln!(
                out,
                "    map $http_{h} $canary_{main} {{ \"~{pattern}\" {canary}; default {fallback}; }}"
            );
        }
        (Some(h), None, None) => {
            let _ = writeln!(
                out,
                "    map $http_{h} $canary_{main} {{ \"~^always$\" {canary}; \"~^never$\" {main_up}; default {fallback}; }}"
            );
        }
        (None, _, _) => {
            let _ = writeln!(
                out,
                "    map $request_id $canary_{main} {{ default {fallback}; }}"
            );
        }
    }
}

/// `s` as a literal in a PCRE pattern.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// The `server` of `host` (`""`: the catch-all `_`), with the locations ingress-nginx
/// lays out for its paths.
fn render_server(
    out: &mut String,
    ings: &[Ing],
    host: &str,
    listen: &Listen,
    canaries: &BTreeMap<&'static str, Canary>,
) {
    // The locations of every Ingress for the host, the first claim of a path winning,
    // and the root location of the default backend unless a rule has `/`.
    let mut locs: Vec<Loc> = Vec::new();
    let mut seen: HashSet<(&str, bool)> = HashSet::new();
    for ing in ings.iter().filter(|i| !i.is_canary() && i.host == host) {
        for p in &ing.paths {
            let exact = p.path_type == "Exact";
            if seen.insert((p.path, exact)) {
                locs.push(Loc {
                    path: p.path.to_owned(),
                    exact,
                    from: Some((ing, p)),
                });
            }
        }
    }
    if !locs.iter().any(|l| l.path == "/" && !l.exact) {
        locs.push(Loc {
            path: "/".to_owned(),
            exact: false,
            from: None,
        });
    }
    let mut locs = update_server_locations(locs);
    // controller.go: by path, greater first, then (stable) longer first.
    locs.sort_by(|a, b| b.path.cmp(&a.path));
    locs.sort_by_key(|l| std::cmp::Reverse(l.path.len()));
    let enforce_regex = locs.iter().any(|l| l.needs_rewrite() || l.use_regex());
    let tls = ings.iter().any(|i| i.host == host && i.tls);

    // template.go's buildServerName: a wildcard takes exactly one more label.
    let (default, name) = match host.strip_prefix("*.") {
        _ if host.is_empty() => (" default_server", "_".to_owned()),
        Some(rest) => (
            "",
            format!(r"~^(?<subdomain>[\w-]+)\.{}$", rest.replace('.', r"\.")),
        ),
        None => ("", host.to_owned()),
    };
    let _ = write!(
        out,
        "\n    server {{\n        listen {}{default};\n        listen {} ssl{default};\n        server_name \"{name}\";\n",
        listen.http, listen.https
    );
    for loc in &locs {
        // nginx.tmpl writes app-root as a server-level `if` before its location.
        if let Some(root) = loc.from.and_then(|(ing, _)| ing.get("app-root")) {
            let _ = writeln!(
                out,
                "        if ($uri = /) {{ return 302 $scheme://$http_host{root}; }}"
            );
        }
        let path = loc.path.replace('\\', "\\\\").replace('"', "\\\"");
        let matcher = if enforce_regex {
            format!("~* \"^{path}\"")
        } else if loc.exact {
            format!("= \"{path}\"")
        } else {
            format!("\"{path}\"")
        };
        let _ = writeln!(out, "        location {matcher} {{");
        render_location(out, loc, tls, canaries);
        out.push_str("        }\n");
    }
    out.push_str("    }\n");
}

/// location.go's `updateServerLocations`: a Prefix path (other than `/`, and without
/// rewrite or regex) becomes `PATH/` plus an Exact `PATH`, unless an Exact one exists.
fn update_server_locations(locs: Vec<Loc>) -> Vec<Loc> {
    let exacts: Vec<String> = locs
        .iter()
        .filter(|l| l.exact)
        .map(|l| l.path.clone())
        .collect();
    let mut out = Vec::new();
    for mut loc in locs {
        let prefix = loc.from.is_some_and(|(_, p)| p.path_type == "Prefix");
        if loc.path == "/" || !prefix || loc.needs_rewrite() || loc.use_regex() {
            out.push(loc);
            continue;
        }
        let original = loc.path.clone();
        if !original.ends_with('/') {
            loc.path.push('/');
        }
        let from = loc.from;
        out.push(loc);
        if !exacts.contains(&original) {
            out.push(Loc {
                path: original,
                exact: true,
                from,
            });
        }
    }
    out
}

fn render_location(
    out: &mut String,
    loc: &Loc,
    tls: bool,
    canaries: &BTreeMap<&'static str, Canary>,
) {
    let Some((ing, rule)) = loc.from else {
        // The default backend's root location: no annotations, so no HTTPS redirect.
        out.push_str("            return 404;\n");
        return;
    };
    // The redirect annotations (redirect.go): temporal wins; codes out of range fall
    // back to the default.
    let code = |key: &str, max: u16, default: u16| {
        ing.get(key)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (300..=max).contains(c))
            .unwrap_or(default)
    };
    if let Some(url) = ing.get("temporal-redirect") {
        let c = code("temporal-redirect-code", 307, 302);
        let _ = writeln!(out, "            return {c} {url};");
    } else if let Some(url) = ing.get("permanent-redirect") {
        let c = code("permanent-redirect-code", 308, 301);
        let _ = writeln!(out, "            return {c} {url};");
    }
    // lua_ingress.lua's redirect_to_https, run after the rewrite module's directives but
    // before the `rewrite ... break` of the location could stop them: 308 to
    // `https://HOST` + the request URI, without a trailing `/` unless
    // `preserve-trailing-slash`; `force-ssl-redirect` needs no certificate.
    if ing.flag("force-ssl-redirect") || (tls && ing.get("ssl-redirect") != Some("false")) {
        out.push_str("            set $https_uri $request_uri;\n");
        if !ing.flag("preserve-trailing-slash") {
            out.push_str("            if ($https_uri ~ \"^(.*)/$\") { set $https_uri $1; }\n");
        }
        out.push_str("            if ($scheme = http) { return 308 https://$host$https_uri; }\n");
    }
    match ing.get("upstream-vhost") {
        Some(vhost) => {
            let _ = writeln!(out, "            proxy_set_header Host \"{vhost}\";");
        }
        None => out.push_str("            proxy_set_header Host $http_host;\n"),
    }
    let upstream = if canaries.contains_key(rule.service) {
        format!("$canary_{}", rule.service)
    } else {
        format!("up_{}", rule.service)
    };
    // template.go's buildProxyPass.
    if let Some(target) = loc.rewrite_target().filter(|_| loc.needs_rewrite()) {
        let path = loc.path.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "            rewrite \"(?i){path}\" {target} break;");
        if let Some(prefix) = ing.get("x-forwarded-prefix") {
            let _ = writeln!(
                out,
                "            proxy_set_header X-Forwarded-Prefix \"{prefix}\";"
            );
        }
    }
    let _ = writeln!(out, "            proxy_pass http://{upstream};");
}

/// Where nginx is: on `PATH`, or in the sbin folders Debian puts it in.
pub fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// A running `nginx -g 'daemon off; master_process off;'`: one process, so killing it
/// leaves nothing behind. Killed on drop.
pub struct Nginx {
    child: Child,
    log: PathBuf,
}

impl Nginx {
    /// Checks and starts nginx on `conf`, with its prefix and log under `dir`, and waits
    /// until it answers on `listen`.
    pub async fn start(bin: &Path, conf: &Path, dir: &Path, listen: SocketAddr) -> Nginx {
        let test = Command::new(bin)
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(conf)
            .output()
            .expect("run nginx -t");
        assert!(
            test.status.success(),
            "nginx refused the rendered configuration:\n{}\n{}",
            String::from_utf8_lossy(&test.stderr),
            std::fs::read_to_string(conf).unwrap_or_default()
        );
        let log = dir.join("nginx.stderr");
        let logfile = std::fs::File::create(&log).expect("nginx log file");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(conf)
            .arg("-g")
            .arg("daemon off; master_process off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", nginx.logs());
            }
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                return nginx;
            }
            assert!(
                Instant::now() < deadline,
                "nginx never listened on {listen}:\n{}",
                nginx.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- nginx stderr ---\n{}", self.logs());
        }
    }
}
