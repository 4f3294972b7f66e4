//! A minimal HTTP client for scenarios: one request per connection to the proxy's port,
//! with the Host header (and TLS SNI) taken from the URL, the way a user's
//! `curl --resolve` or the upstream suite's Go client talks to an Ingress address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::echo::Echo;

/// The user agent the upstream conformance suite's client sends.
pub const USER_AGENT: &str = "Go-http-client/1.1";

/// How long one request may take end to end; generous for a loaded 2-core machine.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} for {host:?}: {source}")]
    Tls {
        addr: SocketAddr,
        host: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("building request: {0}")]
    Build(#[from] http::Error),
    #[error("request to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("response is not an echo reply (status {status}): {body}")]
    NotEcho { status: StatusCode, body: String },
}

/// Where the proxy listens.
#[derive(Clone, Copy, Debug)]
pub struct ProxyAddrs {
    pub http: SocketAddr,
    pub https: SocketAddr,
}

/// How to treat the server certificate on HTTPS.
#[derive(Clone, Debug)]
pub enum TlsTrust {
    /// Verify the chain against these roots and the certificate's names against the host.
    Roots(Arc<RootCertStore>),
    /// Accept any certificate (`curl -k`); the certificate is still captured.
    Insecure,
}

/// One request as a scenario describes it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// `http` or `https`.
    pub scheme: String,
    /// The Host header and SNI name; empty means "the proxy's own address", as a client
    /// that dials the Ingress IP directly would send.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The SNI name over TLS, when it is not the Host's host.
    pub sni: Option<String>,
    /// The client certificate offered when the server asks for one.
    pub identity: Option<Arc<ClientIdentity>>,
}

/// A client certificate and key, offered as Go's `GetClientCertificate` hook does (only
/// when the server asks), remembering whether it was asked for.
#[derive(Debug)]
pub struct ClientIdentity {
    key: Arc<rustls::sign::CertifiedKey>,
    asked: std::sync::atomic::AtomicBool,
}

impl ClientIdentity {
    /// From PEM certificate (chain) and key, as a `kubernetes.io/tls` Secret holds them.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Arc<Self>, String> {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| e.to_string())?
            .ok_or("no private key")?;
        let signing =
            rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| e.to_string())?;
        Ok(Arc::new(Self {
            key: Arc::new(rustls::sign::CertifiedKey::new(chain, signing)),
            asked: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Whether a server has asked for it since [`Self::reset`].
    pub fn was_asked(&self) -> bool {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.asked.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct OfferIdentity(Arc<ClientIdentity>);

impl rustls::client::ResolvesClientCert for OfferIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0
            .asked
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Some(self.0.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl Request {
    /// `GET url` with the upstream suite's user agent.
    pub fn get(url: &str) -> Result<Self, ClientError> {
        Self::parse(Method::GET, url)
    }

    /// Split an absolute `http(s)://host[:port]/path?query` URL.
    pub fn parse(method: Method, url: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = uri
            .scheme_str()
            .filter(|s| *s == "http" || *s == "https")
            .ok_or_else(|| bad("scheme must be http or https"))?
            .to_owned();
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        Ok(Self::new(method, &scheme, &host, &path_and_query))
    }

    pub fn new(method: Method, scheme: &str, host: &str, path_and_query: &str) -> Self {
        let path_and_query = if path_and_query.starts_with('/') {
            path_and_query.to_owned()
        } else {
            format!("/{path_and_query}")
        };
        Self {
            method,
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            path_and_query,
            headers: vec![("user-agent".to_owned(), USER_AGENT.to_owned())],
            body: Bytes::new(),
            sni: None,
            identity: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// What came back.
#[derive(Clone, Debug)]
pub struct Captured {
    pub status: StatusCode,
    /// `HTTP/1.1` or `HTTP/2.0`, as Go's `resp.Proto` spells it.
    pub proto: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The leaf certificate the server presented, over HTTPS.
    pub peer_cert: Option<Vec<u8>>,
    /// The host name the certificate was verified for, when verified against roots.
    pub verified_host: Option<String>,
}

impl Captured {
    /// The echo backend's reply in the body.
    pub fn echo(&self) -> Result<Echo, ClientError> {
        serde_json::from_slice(&self.body).map_err(|_| ClientError::NotEcho {
            status: self.status,
            body: String::from_utf8_lossy(&self.body)
                .chars()
                .take(400)
                .collect(),
        })
    }

    /// Values of every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
}

/// How many redirects a Go `http.Client` follows before giving up.
pub const MAX_REDIRECTS: usize = 10;

/// The request a Go `http.Client` (the upstream suite's client) sends next when `got`
/// is a redirect, or `None` when it is not one. The proxy's listeners stand in for ports
/// 80 and 443, so a `Location` naming a listener's own port names the default port, and
/// the next request's `Host` carries no port, as it would in a cluster.
pub fn follow_redirect(req: &Request, got: &Captured, addrs: ProxyAddrs) -> Option<Request> {
    let status = got.status.as_u16();
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = got.headers.get(http::header::LOCATION)?.to_str().ok()?;
    let mut next = if location.starts_with('/') {
        Request {
            path_and_query: location.to_owned(),
            ..req.clone()
        }
    } else {
        let mut next = Request::parse(req.method.clone(), location).ok()?;
        next.headers = req.headers.clone();
        next.body = req.body.clone();
        next
    };
    let listener_port = if next.scheme == "https" {
        addrs.https.port()
    } else {
        addrs.http.port()
    };
    if let Some((host, port)) = next.host.rsplit_once(':') {
        if port.parse::<u16>().ok() == Some(listener_port) {
            next.host = host.to_owned();
        }
    }
    // Go turns 301/302/303 into a bodiless GET (HEAD stays HEAD); 307/308 resend as is.
    if matches!(status, 301..=303) && next.method != Method::HEAD {
        next.method = Method::GET;
        next.body = Bytes::new();
    }
    Some(next)
}

/// Send one request to the proxy: plain HTTP to `addrs.http`, HTTPS to `addrs.https`.
pub async fn send(
    addrs: ProxyAddrs,
    req: &Request,
    trust: &TlsTrust,
) -> Result<Captured, ClientError> {
    let https = req.scheme == "https";
    let addr = if https { addrs.https } else { addrs.http };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange(addr, https, req, trust)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout {
            addr,
            timeout: REQUEST_TIMEOUT,
        }),
    }
}

async fn exchange(
    addr: SocketAddr,
    https: bool,
    req: &Request,
    trust: &TlsTrust,
) -> Result<Captured, ClientError> {
    let host_header = if req.host.is_empty() {
        addr.to_string()
    } else {
        req.host.clone()
    };
    let mut builder = http::Request::builder()
        .method(req.method.clone())
        .uri(req.path_and_query.as_str())
        .header(http::header::HOST, host_header.as_str());
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder.body(Full::new(req.body.clone()))?;

    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    if !https {
        let (status, version, headers, body) = roundtrip(addr, TokioIo::new(tcp), request).await?;
        return Ok(Captured {
            status,
            proto: proto(version),
            headers,
            body,
            peer_cert: None,
            verified_host: None,
        });
    }

    // SNI and verification use the host without its port, as any HTTPS client does.
    let sni_host = req
        .sni
        .clone()
        .unwrap_or_else(|| strip_port(&host_header).to_owned());
    let (config, verifying) = client_config(trust, req.identity.as_ref());
    let server_name = ServerName::try_from(sni_host.clone()).map_err(|e| ClientError::Url {
        url: host_header.clone(),
        reason: e.to_string(),
    })?;
    let tls = TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|source| ClientError::Tls {
            addr,
            host: sni_host.clone(),
            source,
        })?;
    let peer_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    let (status, version, headers, body) = roundtrip(addr, TokioIo::new(tls), request).await?;
    Ok(Captured {
        status,
        proto: proto(version),
        headers,
        body,
        peer_cert,
        verified_host: verifying.then_some(sni_host),
    })
}

async fn roundtrip<IO>(
    addr: SocketAddr,
    io: IO,
    request: http::Request<Full<Bytes>>,
) -> Result<(StatusCode, Version, HeaderMap, Bytes), ClientError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http_err = |source| ClientError::Http { addr, source };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http_err)?;
    let driver = tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(http_err)?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(http_err)?.to_bytes();
    driver.abort();
    Ok((parts.status, parts.version, parts.headers, body))
}

fn client_config(
    trust: &TlsTrust,
    identity: Option<&Arc<ClientIdentity>>,
) -> (Arc<rustls::ClientConfig>, bool) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| rustls::ClientConfig::builder());
    let (builder, verifying) = match trust {
        TlsTrust::Roots(roots) => (builder.with_root_certificates(roots.clone()), true),
        TlsTrust::Insecure => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider))),
            false,
        ),
    };
    let config = match identity {
        Some(id) => builder.with_client_cert_resolver(Arc::new(OfferIdentity(id.clone()))),
        None => builder.with_no_client_auth(),
    };
    (Arc::new(config), verifying)
}

fn proto(version: Version) -> String {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
    .to_owned()
}

/// `host:port` or `[v6]:port` to the bare host.
pub fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// `curl -k`: any certificate is accepted, signatures are still checked.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
