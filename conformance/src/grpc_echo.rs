//! The gRPC side of the echo backend, answering as the Gateway API's echo-basic does
//! with `GRPC_ECHO_SERVER` set: the service
//! `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho` over h2c, whose `Echo` and
//! `EchoTwo` answer with the serving pod's context (namespace, pod) and the request's
//! metadata and authority, and whose `EchoThree` (like any other method) is
//! Unimplemented. And a client for it, as the upstream suite's.
//!
//! The messages are few and small, so they are encoded and decoded here by hand (the
//! protobuf wire format: a varint key of field number and wire type, then for strings
//! and messages a varint length and the bytes).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use crate::echo::{Identity, Received};

/// The echo service's full name.
pub const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// The gRPC status codes the tests look at.
pub const OK: u32 = 0;
pub const UNIMPLEMENTED: u32 = 12;

/// What an `EchoResponse` asserts (its `assertions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assertions {
    pub fully_qualified_method: String,
    /// Metadata as received, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub authority: String,
    pub namespace: String,
    pub pod: String,
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// A length-delimited field (string or message).
fn put_field(buf: &mut BytesMut, number: u64, bytes: &[u8]) {
    put_varint(buf, (number << 3) | 2);
    put_varint(buf, bytes.len() as u64);
    buf.put_slice(bytes);
}

fn get_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if buf.is_empty() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The length-delimited fields of a message, `(number, bytes)`; other wire types are
/// skipped.
fn fields(mut buf: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = get_varint(&mut buf)?;
        match key & 7 {
            0 => {
                get_varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            2 => {
                let len = usize::try_from(get_varint(&mut buf)?).ok()?;
                let (value, rest) = (buf.get(..len)?, buf.get(len..)?);
                out.push((key >> 3, value));
                buf = rest;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Assertions {
    /// An `EchoResponse` carrying these assertions.
    pub fn encode_response(&self) -> Bytes {
        let mut context = BytesMut::new();
        put_field(&mut context, 1, self.namespace.as_bytes());
        put_field(&mut context, 4, self.pod.as_bytes());
        let mut a = BytesMut::new();
        put_field(&mut a, 1, self.fully_qualified_method.as_bytes());
        for (k, v) in &self.headers {
            let mut h = BytesMut::new();
            put_field(&mut h, 1, k.as_bytes());
            put_field(&mut h, 2, v.as_bytes());
            put_field(&mut a, 2, &h);
        }
        put_field(&mut a, 3, self.authority.as_bytes());
        put_field(&mut a, 4, &context);
        let mut response = BytesMut::new();
        put_field(&mut response, 1, &a);
        response.freeze()
    }

    /// The assertions of an `EchoResponse`.
    pub fn decode_response(bytes: &[u8]) -> Option<Self> {
        let mut out = Self::default();
        for (n, assertions) in fields(bytes)? {
            if n != 1 {
                continue;
            }
            for (n, v) in fields(assertions)? {
                match n {
                    1 => out.fully_qualified_method = string(v),
                    2 => {
                        let (mut k, mut val) = (String::new(), String::new());
                        for (n, x) in fields(v)? {
                            match n {
                                1 => k = string(x),
                                2 => val = string(x),
                                _ => {}
                            }
                        }
                        out.headers.push((k, val));
                    }
                    3 => out.authority = string(v),
                    4 => {
                        for (n, x) in fields(v)? {
                            match n {
                                1 => out.namespace = string(x),
                                4 => out.pod = string(x),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(out)
    }

    /// All values of a metadata entry (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A gRPC message frame: uncompressed flag, big-endian length, the message.
fn frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

type GrpcBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Accept h2c connections on `listener` and answer as the echo service of `identity`.
pub async fn serve(listener: TcpListener, identity: Arc<Identity>, received: Received) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let identity = identity.clone();
        let received = received.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, identity.clone(), received.clone()));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    identity: Arc<Identity>,
    received: Received,
) -> Result<Response<GrpcBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    let path = parts.uri.path().to_owned();
    if let Ok(mut log) = received.lock() {
        log.push(path.clone());
    }
    let method = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE))
        .and_then(|p| p.strip_prefix('/'));
    let mut response = Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    let Some(method @ ("Echo" | "EchoTwo")) = method else {
        // Trailers-only: the status in the headers.
        response = response
            .header("grpc-status", UNIMPLEMENTED.to_string())
            .header("grpc-message", format!("unknown method {path}"));
        let body = Full::new(Bytes::new()).boxed();
        return Ok(response.body(body).unwrap_or_default());
    };
    // As grpc-go's metadata: `:authority` first, then the other headers, lower-cased.
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let mut headers = vec![(":authority".to_owned(), authority.clone())];
    for (k, v) in &parts.headers {
        headers.push((
            k.as_str().to_owned(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    let assertions = Assertions {
        fully_qualified_method: format!("/{SERVICE}/{method}"),
        headers,
        authority,
        namespace: identity.namespace.clone(),
        pod: identity.pod.clone(),
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(frame(&assertions.encode_response()))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures::stream::iter(frames)).boxed();
    Ok(response.body(body).unwrap_or_default())
}

/// What a call came back with: its gRPC status and, when OK, the response's assertions.
#[derive(Debug)]
pub struct Reply {
    pub code: u32,
    pub assertions: Option<Assertions>,
}

/// One unary call of `method` (`Echo`, `EchoTwo`, `EchoThree`) to `proxy` over h2c,
/// with `authority` and `metadata`; an empty `EchoRequest`.
pub async fn call(
    proxy: SocketAddr,
    method: &str,
    authority: &str,
    metadata: &[(&str, &str)],
) -> Result<Reply, String> {
    let stream = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connecting to {proxy}: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("h2c handshake: {e}"))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method("POST")
        .uri(format!("http://{authority}/{SERVICE}/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in metadata {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(frame(&[]))).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .map_err(|_| "no answer within 5s".to_owned())?
        .map_err(|e| format!("sending: {e}"))?;
    let (parts, body) = resp.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let code_of = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes();
    let code = trailers
        .as_ref()
        .and_then(code_of)
        .or_else(|| code_of(&parts.headers))
        .ok_or_else(|| format!("HTTP {} without grpc-status", parts.status))?;
    let assertions = if code == OK {
        let message = data.get(5..).ok_or("an OK answer without a message")?;
        Some(Assertions::decode_response(message).ok_or("an undecodable EchoResponse")?)
    } else {
        None
    };
    Ok(Reply { code, assertions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_response_decodes_to_what_was_encoded() {
        let a = Assertions {
            fully_qualified_method: format!("/{SERVICE}/Echo"),
            headers: vec![
                (":authority".into(), "foo".into()),
                ("version".into(), "one".into()),
            ],
            authority: "foo".into(),
            namespace: "ns".into(),
            pod: "grpc-infra-backend-v1-abc-0".into(),
        };
        assert_eq!(Assertions::decode_response(&a.encode_response()), Some(a));
        assert_eq!(Assertions::decode_response(&[0x0a, 0x05]), None);
    }
}
