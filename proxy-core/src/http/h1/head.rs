//! HTTP/1.x request heads: the syntax as httparse reads it, and the message framing as
//! RFC 9112 §6 decides it, strictly: whatever two parsers could read differently (both
//! `Content-Length` and `Transfer-Encoding`, lengths that disagree, a coding other than
//! `chunked`) is refused rather than guessed at.

use std::mem::MaybeUninit;
use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use memchr::memmem;

/// Header fields parsed on the stack; heads allowed more use the heap.
const STACK_HEADERS: usize = 64;

/// The longest request target `http::Uri` takes.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked,
}

/// A parsed request head.
pub(crate) struct Head {
    /// Boxed: it travels through the proxy's layers as a pointer.
    pub parts: Box<Parts>,
    /// `None`: no body.
    pub framing: Option<Framing>,
    /// Why the body cannot be delimited safely: the request is answered 400 and the
    /// connection closed.
    pub refused: Option<&'static str>,
    /// The client asked to keep the connection open (HTTP/1.1 unless `close`; HTTP/1.0
    /// with `keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before its body.
    pub expect_continue: bool,
    /// `Upgrade` with `Connection: upgrade`.
    pub upgrade: bool,
}

/// Why a head could not be read into a request at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    #[error("request head too large")]
    TooLarge,
    #[error("request target too long")]
    TargetTooLong,
}

impl HeadError {
    pub fn status(self) -> StatusCode {
        match self {
            HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
            HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::TargetTooLong => StatusCode::URI_TOO_LONG,
        }
    }
}

/// A head's empty line as it follows the line before it: CRLF, as nearly every head
/// ends, and bare LF, which RFC 9112 lets a recipient take.
static CRLF_END: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\n\r\n"));
static LF_END: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\n\n"));

/// Where a complete head may end in `buf`: the end of an empty line, searched from
/// `from` on. Parsing waits for it, so a head trickling in is not parsed over and over.
pub(crate) fn head_end_from(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(2);
    let rest = buf.get(start..).filter(|r| r.len() >= 2)?;
    // Two searches over the whole head, rather than one per line: the usual ending,
    // then a bare-LF one before it.
    let crlf = CRLF_END.find(rest);
    let lf = LF_END.find(&rest[..crlf.map_or(rest.len(), |c| c + 1)]);
    match (lf, crlf) {
        (Some(i), _) => Some(start + i + 2),
        (None, Some(c)) => Some(start + c + 3),
        (None, None) => None,
    }
}

/// How many fields a proxied request gains on its way upstream (`X-Forwarded-*`,
/// `X-Real-IP`).
const FORWARDING_ROOM: usize = 8;

/// Parses the head at the start of `head` (exactly the bytes of one head, as
/// [`head_end_from`] found them, plus any empty lines before it).
pub(crate) fn parse(head: Bytes, max_headers: usize) -> Result<Head, HeadError> {
    // Left uninitialised: httparse writes the slots it uses, and zeroing 64 of them
    // cost more than parsing a short head.
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap;
    let storage: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers <= STACK_HEADERS {
        &mut stack[..max_headers]
    } else {
        heap = Vec::with_capacity(max_headers);
        heap.resize_with(max_headers, MaybeUninit::uninit);
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, &head, storage)
        .map_err(|e| match e {
            httparse::Error::TooManyHeaders => HeadError::TooLarge,
            httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
            httparse::Error::Token => HeadError::Malformed("invalid token"),
            httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
            httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
            httparse::Error::Status => HeadError::Malformed("invalid request line"),
        })?;
    if status.is_partial() {
        return Err(HeadError::Malformed("incomplete request head"));
    }
    let base = head.as_ptr() as usize;
    // Offsets into `head`, so that the values can share its bytes instead of copying.
    let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let method = req
        .method
        .ok_or(HeadError::Malformed("no method"))
        .and_then(|m| {
            Method::from_bytes(m.as_bytes()).map_err(|_| HeadError::Malformed("invalid method"))
        })?;
    let target = req.path.ok_or(HeadError::Malformed("no request target"))?;
    if target.len() > MAX_TARGET {
        return Err(HeadError::TargetTooLong);
    }
    let (at, len) = span(target.as_bytes());
    let uri = Uri::from_maybe_shared(head.slice(at..at + len))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(HeadError::Malformed("unsupported HTTP version")),
    };

    // With room for the forwarding headers the proxy adds (`headers::prepare_upstream`),
    // so the map is not grown and rehashed midway through every request.
    let mut headers = HeaderMap::with_capacity(req.headers.len() + FORWARDING_ROOM);
    let mut framing = FramingFields::default();
    for h in req.headers.iter() {
        let name = field_name(h.name).map_err(|_| HeadError::Malformed("invalid header name"))?;
        let (at, len) = span(h.value);
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + len))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        framing.see(role(name.as_str().as_bytes()), value.as_bytes());
        headers.append(name, value);
    }

    let (framing_of_body, refused) = framing.decide(version);
    let keep_alive = match version {
        Version::HTTP_11 => !framing.close,
        _ => framing.keep_alive && !framing.close,
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Head {
        parts: Box::new(parts),
        framing: framing_of_body,
        refused,
        keep_alive,
        expect_continue: framing.expect_continue && version == Version::HTTP_11,
        upgrade: framing.upgrade_header && framing.connection_upgrade,
    })
}

/// How a pod's response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body: a `HEAD` request's answer, 1xx, 204, 304, or a length of 0.
    None,
    Length(u64),
    Chunked,
    /// Until the pod closes the connection.
    UntilClose,
}

/// A parsed response head from a pod.
pub(crate) struct ResponseHead {
    /// The status and version; the fields are in `fields`.
    pub parts: http::response::Parts,
    /// Boxed: the answer moves through the proxy's layers with a pointer to them.
    pub fields: Box<PodFields>,
    pub framing: BodyFraming,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
    /// `Connection` names a field of the response (see `headers::names_a_field`).
    pub connection_names: bool,
}

/// Why a pod's response head is refused (answered 502, as nginx does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseHeadError {
    #[error("invalid response head: {0}")]
    Malformed(&'static str),
    #[error("response head has too many fields")]
    TooManyFields,
}

/// Response fields parsed on the stack; a head with more is refused.
const RESPONSE_FIELDS: usize = 100;

/// Parses the pod's response head at the start of `head` (exactly one head, as
/// [`head_end_from`] found it), answering the request made with `method`. Framing is
/// as strict as for requests: both `Content-Length` and `Transfer-Encoding`, or lengths
/// that disagree, are refused rather than guessed at (nginx refuses them too).
pub(crate) fn parse_response(
    head: Bytes,
    method: &Method,
) -> Result<ResponseHead, ResponseHeadError> {
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; RESPONSE_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, &head, &mut storage)
        .map_err(|e| match e {
            httparse::Error::TooManyHeaders => ResponseHeadError::TooManyFields,
            httparse::Error::Version => ResponseHeadError::Malformed("unsupported HTTP version"),
            httparse::Error::HeaderName => ResponseHeadError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => ResponseHeadError::Malformed("invalid header value"),
            httparse::Error::NewLine => ResponseHeadError::Malformed("invalid line ending"),
            httparse::Error::Status | httparse::Error::Token => {
                ResponseHeadError::Malformed("invalid status line")
            }
        })?;
    if status.is_partial() {
        return Err(ResponseHeadError::Malformed("incomplete response head"));
    }
    let code = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ResponseHeadError::Malformed("invalid status code"))?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(ResponseHeadError::Malformed("unsupported HTTP version")),
    };
    let base = head.as_ptr() as usize;
    if u32::try_from(head.len()).is_err() {
        return Err(ResponseHeadError::Malformed("response head too large"));
    }
    // Offsets within `head`, which was just found to fit.
    let at = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
    let mut spans = Vec::with_capacity(resp.headers.len());
    let mut framing = FramingFields::default();
    for h in resp.headers.iter() {
        let role = role(h.name.as_bytes());
        framing.see(role, h.value);
        let (name, name_len) = at(h.name.as_bytes());
        let (value, value_len) = at(h.value);
        spans.push(Span {
            name,
            name_len,
            value,
            value_len,
            role,
        });
    }
    let bodiless = *method == Method::HEAD
        || code.is_informational()
        || code == StatusCode::NO_CONTENT
        || code == StatusCode::NOT_MODIFIED;
    let body = if bodiless {
        BodyFraming::None
    } else if framing.transfer_encoding {
        if framing.length.is_some() {
            return Err(ResponseHeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if framing.chunked && !framing.bad_coding && version == Version::HTTP_11 {
            BodyFraming::Chunked
        } else {
            // RFC 9112 §6.3: a final coding other than chunked runs to the close.
            BodyFraming::UntilClose
        }
    } else {
        match framing.length {
            None => BodyFraming::UntilClose,
            Some(Ok(0)) => BodyFraming::None,
            Some(Ok(n)) => BodyFraming::Length(n),
            Some(Err(())) => {
                return Err(ResponseHeadError::Malformed(
                    "invalid or conflicting Content-Length",
                ))
            }
        }
    };
    let keep_alive = match version {
        Version::HTTP_11 => !framing.close,
        _ => framing.keep_alive && !framing.close,
    } && body != BodyFraming::UntilClose;
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = code;
    parts.version = version;
    Ok(ResponseHead {
        parts,
        fields: Box::new(PodFields {
            head,
            spans,
            over: [None, None, None],
        }),
        framing: body,
        keep_alive,
        connection_names: framing.names_fields,
    })
}

/// A pod's response fields as they came: the head's bytes and where each field lies in
/// them. An HTTP/1 client gets them copied as they are; they are read into a
/// `HeaderMap` only when something reads or edits them ([`PodFields::add_to`]), which
/// spares most answers building, and dropping, a map.
pub(crate) struct PodFields {
    head: Bytes,
    spans: Vec<Span>,
    /// Fields Portico sets over the pod's (its `Server`, HSTS, `Alt-Svc`), as
    /// `HeaderMap::insert` sets them: the pod's of the same names are left out. Held
    /// here, the answer's map is not built for them.
    over: [Option<(HeaderName, HeaderValue)>; 3],
}

/// One field's name and value, as offsets into the head.
struct Span {
    name: u32,
    name_len: u32,
    value: u32,
    value_len: u32,
    role: Role,
}

/// What a field's name means to HTTP/1 framing and to the hop it travels: told once per
/// field, in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    Date,
    /// The other hop-by-hop fields: `Keep-Alive`, `Proxy-Connection`,
    /// `Proxy-Authenticate`, `TE`, `Trailer`.
    HopByHop,
    Other,
}

/// The role of the field named `name`, in any case.
pub(crate) fn role(name: &[u8]) -> Role {
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    match name.len() {
        2 if is(b"te") => Role::HopByHop,
        4 if is(b"date") => Role::Date,
        6 if is(b"expect") => Role::Expect,
        7 if is(b"upgrade") => Role::Upgrade,
        7 if is(b"trailer") => Role::HopByHop,
        10 if is(b"connection") => Role::Connection,
        10 if is(b"keep-alive") => Role::HopByHop,
        14 if is(b"content-length") => Role::ContentLength,
        16 if is(b"proxy-connection") => Role::HopByHop,
        17 if is(b"transfer-encoding") => Role::TransferEncoding,
        18 if is(b"proxy-authenticate") => Role::HopByHop,
        _ => Role::Other,
    }
}

impl PodFields {
    pub fn len(&self) -> usize {
        self.spans.len() + self.over.iter().flatten().count()
    }

    /// Sets `name` over the pod's fields; hands it back when there is no room.
    pub fn set_over(
        &mut self,
        name: HeaderName,
        value: HeaderValue,
    ) -> Result<(), (HeaderName, HeaderValue)> {
        if let Some((_, v)) = self.over.iter_mut().flatten().find(|(n, _)| *n == name) {
            *v = value;
            return Ok(());
        }
        match self.over.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some((name, value));
                Ok(())
            }
            None => Err((name, value)),
        }
    }

    /// The fields set over the pod's.
    pub fn set_over_fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.over.iter().flatten().map(|(n, v)| (n, v))
    }

    fn bytes(&self, at: u32, len: u32) -> &[u8] {
        let at = at as usize;
        self.head.get(at..at + len as usize).unwrap_or_default()
    }

    /// Writes the fields `keep` lets through as `name: value` lines, in the pod's order.
    /// Stretches of the head already written so (one space after the colon, CRLF) are
    /// copied whole, most heads in two or three copies.
    pub fn write_kept(&self, mut keep: impl FnMut(&[u8], Role, &[u8]) -> bool, out: &mut Vec<u8>) {
        let mut run: Option<(usize, usize)> = None;
        let flush = |run: Option<(usize, usize)>, out: &mut Vec<u8>| {
            if let Some((start, end)) = run {
                out.extend_from_slice(self.head.get(start..end).unwrap_or_default());
            }
        };
        for s in &self.spans {
            let (name, value) = (
                self.bytes(s.name, s.name_len),
                self.bytes(s.value, s.value_len),
            );
            if !keep(name, s.role, value) {
                continue;
            }
            let (start, at) = (s.name as usize, s.value as usize);
            let end = at + value.len();
            let as_written = at == start + name.len() + 2
                && self.head.get(at - 2..at) == Some(b": ")
                && self.head.get(end..end + 2) == Some(b"\r\n");
            match run {
                Some((from, to)) if as_written && to == start => run = Some((from, end + 2)),
                _ if as_written => {
                    flush(run, out);
                    run = Some((start, end + 2));
                }
                _ => {
                    flush(run.take(), out);
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        flush(run, out);
    }

    /// Adds the fields to `headers` after what it holds, those set over the pod's
    /// first. A name `headers` then has was set over the pod's (as `HeaderMap::insert`
    /// does), so the pod's fields of that name are left out.
    pub fn add_to(&self, headers: &mut HeaderMap) {
        for (name, value) in self.set_over_fields() {
            headers.insert(name.clone(), value.clone());
        }
        let set: Vec<HeaderName> = headers.keys().cloned().collect();
        headers.reserve(self.spans.len());
        for s in &self.spans {
            let (at, len) = (s.name as usize, s.name_len as usize);
            // httparse's grammar for names and values is the `http` crate's, so neither
            // refuses what the parse let through.
            let name = std::str::from_utf8(self.head.get(at..at + len).unwrap_or_default())
                .ok()
                .and_then(|n| field_name(n).ok());
            let Some(name) = name else { continue };
            if set.contains(&name) {
                continue;
            }
            let (at, len) = (s.value as usize, s.value_len as usize);
            let Ok(value) = HeaderValue::from_maybe_shared(self.head.slice(at..at + len)) else {
                continue;
            };
            headers.append(name, value);
        }
    }
}

/// A field's name, as the `http` crate reads it. The names nearly every head carries,
/// spelled as clients and servers spell them, are told by their length and bytes; any
/// other spelling takes the general parse (which lower-cases and validates).
fn field_name(name: &str) -> Result<HeaderName, http::header::InvalidHeaderName> {
    let known = match name.len() {
        4 => match name {
            "Host" | "host" => Some(header::HOST),
            "Date" | "date" => Some(header::DATE),
            "ETag" | "etag" | "Etag" => Some(header::ETAG),
            "Vary" | "vary" => Some(header::VARY),
            _ => None,
        },
        6 => match name {
            "Server" | "server" => Some(header::SERVER),
            "Accept" | "accept" => Some(header::ACCEPT),
            "Cookie" | "cookie" => Some(header::COOKIE),
            "Expect" | "expect" => Some(header::EXPECT),
            _ => None,
        },
        10 => match name {
            "Connection" | "connection" => Some(header::CONNECTION),
            "User-Agent" | "user-agent" => Some(header::USER_AGENT),
            "Set-Cookie" | "set-cookie" => Some(header::SET_COOKIE),
            _ => None,
        },
        12 => match name {
            "Content-Type" | "content-type" => Some(header::CONTENT_TYPE),
            _ => None,
        },
        13 => match name {
            "Last-Modified" | "last-modified" => Some(header::LAST_MODIFIED),
            "Cache-Control" | "cache-control" => Some(header::CACHE_CONTROL),
            "Accept-Ranges" | "accept-ranges" => Some(header::ACCEPT_RANGES),
            "Authorization" | "authorization" => Some(header::AUTHORIZATION),
            _ => None,
        },
        14 => match name {
            "Content-Length" | "content-length" => Some(header::CONTENT_LENGTH),
            _ => None,
        },
        15 => match name {
            "Accept-Encoding" | "accept-encoding" => Some(header::ACCEPT_ENCODING),
            "Accept-Language" | "accept-language" => Some(header::ACCEPT_LANGUAGE),
            _ => None,
        },
        16 => match name {
            "Content-Encoding" | "content-encoding" => Some(header::CONTENT_ENCODING),
            _ => None,
        },
        17 => match name {
            "Transfer-Encoding" | "transfer-encoding" => Some(header::TRANSFER_ENCODING),
            _ => None,
        },
        _ => None,
    };
    match known {
        Some(name) => Ok(name),
        None => HeaderName::from_bytes(name.as_bytes()),
    }
}

/// What the head's fields say about delimiting and keeping the connection.
#[derive(Default)]
struct FramingFields {
    length: Option<Result<u64, ()>>,
    transfer_encoding: bool,
    /// `chunked` came last, once.
    chunked: bool,
    /// A coding other than a final `chunked`.
    bad_coding: bool,
    close: bool,
    keep_alive: bool,
    connection_upgrade: bool,
    /// `Connection` names a field besides the usual tokens.
    names_fields: bool,
    upgrade_header: bool,
    expect_continue: bool,
}

impl FramingFields {
    fn see(&mut self, role: Role, value: &[u8]) {
        match role {
            Role::ContentLength => self.see_length(value),
            Role::TransferEncoding => self.see_coding(value),
            Role::Connection => self.see_connection(value),
            Role::Upgrade => self.upgrade_header = true,
            Role::Expect => {
                self.expect_continue = trim(value).eq_ignore_ascii_case(b"100-continue");
            }
            Role::Date | Role::HopByHop | Role::Other => {}
        }
    }

    fn see_length(&mut self, value: &[u8]) {
        for part in value.split(|b| *b == b',') {
            let parsed = parse_length(trim(part));
            self.length = match (self.length, parsed) {
                (None, Some(n)) => Some(Ok(n)),
                (Some(Ok(seen)), Some(n)) if seen == n => Some(Ok(n)),
                _ => Some(Err(())),
            };
        }
    }

    fn see_coding(&mut self, value: &[u8]) {
        self.transfer_encoding = true;
        for coding in value.split(|b| *b == b',').map(trim) {
            if coding.is_empty() {
                continue;
            }
            if self.chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                // Anything after `chunked`, or a coding we would have to undo.
                self.bad_coding = true;
            }
            self.chunked = true;
        }
    }

    fn see_connection(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',').map(trim) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.connection_upgrade = true;
            } else if crate::http::headers::names_a_field(token) {
                self.names_fields = true;
            }
        }
    }

    fn decide(&self, version: Version) -> (Option<Framing>, Option<&'static str>) {
        if self.transfer_encoding {
            let refused = if version != Version::HTTP_11 {
                Some("Transfer-Encoding in an HTTP/1.0 request")
            } else if self.length.is_some() {
                Some("both Content-Length and Transfer-Encoding")
            } else if self.bad_coding || !self.chunked {
                Some("a transfer coding other than chunked")
            } else {
                None
            };
            return (Some(Framing::Chunked), refused);
        }
        match self.length {
            None | Some(Ok(0)) => (None, None),
            Some(Ok(n)) => (Some(Framing::Length(n)), None),
            Some(Err(())) => (None, Some("invalid or conflicting Content-Length")),
        }
    }
}

/// A `Content-Length` value: digits only, no sign, no overflow.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Without the optional whitespace around a list element.
fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Head, HeadError> {
        let bytes = Bytes::copy_from_slice(raw.as_bytes());
        let end = head_end_from(&bytes, 0).expect("a complete head");
        parse(bytes.slice(..end), 100)
    }

    #[test]
    fn known_field_names_read_as_the_general_parse_reads_them() {
        for name in [
            "Host",
            "host",
            "HOST",
            "Date",
            "ETag",
            "Etag",
            "etag",
            "Vary",
            "Server",
            "Accept",
            "Cookie",
            "Expect",
            "Connection",
            "User-Agent",
            "Set-Cookie",
            "Content-Type",
            "Last-Modified",
            "Cache-Control",
            "Accept-Ranges",
            "Authorization",
            "Content-Length",
            "content-length",
            "Content-length",
            "Accept-Encoding",
            "Accept-Language",
            "Content-Encoding",
            "Transfer-Encoding",
            "X-Custom",
            "x-forwarded-for",
            "Hos",
            "Hostt",
        ] {
            assert_eq!(
                field_name(name).ok(),
                HeaderName::from_bytes(name.as_bytes()).ok(),
                "{name}"
            );
        }
        assert!(field_name("Bad Name").is_err());
    }

    #[test]
    fn finds_the_end_of_a_head_with_either_line_ending() {
        assert_eq!(
            head_end_from(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest", 0),
            Some(24)
        );
        assert_eq!(head_end_from(b"GET / HTTP/1.1\nA: b\n\nrest", 0), Some(21));
        assert_eq!(head_end_from(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(head_end_from(b"GET / HTTP/1.1\r\nA: b\r\n\r", 0), None);
        // Resuming a search finds a terminator split across reads.
        assert_eq!(head_end_from(b"GET / HTTP/1.1\r\n\r\n", 16), Some(18));
        assert_eq!(head_end_from(b"GET / HTTP/1.1\r\nA: b\n\r\n", 0), Some(23));
        assert_eq!(head_end_from(b"GET / HTTP/1.1\r\nA: b\r\n\n", 0), Some(23));
    }

    /// The end of the first empty line, found line by line.
    fn head_end_by_lines(buf: &[u8], from: usize) -> Option<usize> {
        let mut at = from.saturating_sub(2);
        while let Some(i) = buf[at..].iter().position(|b| *b == b'\n') {
            let nl = at + i;
            match buf.get(nl + 1) {
                Some(b'\n') => return Some(nl + 2),
                Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
                Some(_) => at = nl + 1,
                None => return None,
            }
        }
        None
    }

    #[test]
    fn finds_the_first_empty_line_whatever_the_line_endings() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut found = 0;
        for _ in 0..100_000 {
            let len = (next() % 40) as usize;
            // Line ends and text, the line ends more often.
            let buf: Vec<u8> = (0..len)
                .map(|_| b"\r\n\r\nab"[(next() % 6) as usize])
                .collect();
            let from = (next() as usize) % (len + 1);
            let want = head_end_by_lines(&buf, from);
            found += usize::from(want.is_some());
            assert_eq!(head_end_from(&buf, from), want, "{buf:?} from {from}");
        }
        // Both answers were exercised.
        assert!(found > 10_000 && found < 90_000, "{found}");
    }

    #[test]
    fn reads_method_target_version_and_fields() {
        let h = head(
            "POST /a?b=1 HTTP/1.1\r\nHost: x.test\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.parts.method, Method::POST);
        assert_eq!(h.parts.uri, "/a?b=1");
        assert_eq!(h.parts.version, Version::HTTP_11);
        assert_eq!(h.parts.headers["host"], "x.test");
        assert_eq!(h.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(h.framing, Some(Framing::Length(5)));
        assert!(h.keep_alive && h.refused.is_none());
    }

    #[test]
    fn framing_that_two_parsers_could_read_differently_is_refused() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let h = head(raw).unwrap();
            assert!(h.refused.is_some(), "{raw:?} was accepted");
        }
        // Repeating one length is allowed (RFC 9112 §6.3).
        let h =
            head("POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4, 4\r\n\r\n").unwrap();
        assert_eq!((h.framing, h.refused), (Some(Framing::Length(4)), None));
        let h = head("POST / HTTP/1.1\r\nTransfer-Encoding:  Chunked \r\n\r\n").unwrap();
        assert_eq!((h.framing, h.refused), (Some(Framing::Chunked), None));
    }

    #[test]
    fn malformed_heads_are_errors() {
        for raw in [
            "GARBAGE\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET / HTTP/9.9\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        ] {
            assert!(
                matches!(head(raw), Err(HeadError::Malformed(_))),
                "{raw:?} was accepted"
            );
        }
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(matches!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Err(HeadError::TooLarge)
        ));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let ka = |raw: &str| head(raw).unwrap().keep_alive;
        assert!(ka("GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        let h =
            head("GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .unwrap();
        assert!(h.upgrade);
        assert!(
            !head("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .upgrade
        );
        assert!(
            head("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .unwrap()
                .expect_continue
        );
    }

    #[test]
    fn a_head_after_skipped_empty_lines_parses() {
        let bytes = Bytes::from_static(b"GET /x HTTP/1.1\r\nA: b\r\n\r\n");
        let end = head_end_from(&bytes, 0).unwrap();
        assert_eq!(parse(bytes.slice(..end), 10).unwrap().parts.uri, "/x");
    }

    #[test]
    fn a_pods_fields_keep_their_spelling_and_order_until_read_into_a_map() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: pod\r\nX-Two:1\r\nset-cookie: a=1\r\n\
Set-Cookie:  b=2 \r\nContent-Length: 2\r\nX-Last: z\r\n\r\n";
        let h = parse_response(Bytes::from_static(raw), &Method::GET).unwrap();
        assert!(h.parts.headers.is_empty());
        assert_eq!(h.framing, BodyFraming::Length(2));
        let mut out = Vec::new();
        h.fields.write_kept(|_, _, _| true, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Server: pod\r\nX-Two: 1\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n\
Content-Length: 2\r\nX-Last: z\r\n"
        );
        let mut seen = Vec::new();
        out.clear();
        h.fields.write_kept(
            |name, role, value| {
                seen.push(String::from_utf8_lossy(value).into_owned());
                role != Role::ContentLength && name != b"Server"
            },
            &mut out,
        );
        assert_eq!(seen, ["pod", "1", "a=1", "b=2", "2", "z"]);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "X-Two: 1\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nX-Last: z\r\n"
        );
        // A name the map already holds was set over the pod's: all its fields go.
        let mut map = HeaderMap::new();
        map.insert(header::SERVER, HeaderValue::from_static("portico"));
        h.fields.add_to(&mut map);
        assert_eq!(map.get_all(header::SERVER).iter().count(), 1);
        assert_eq!(map[header::SERVER], "portico");
        let cookies: Vec<_> = map.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(map["x-two"], "1");
        assert_eq!(map.len(), 6);
    }

    #[test]
    fn fields_set_over_a_pods_replace_its_own_of_that_name() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: pod\r\nAlt-Svc: h3\r\nX-A: 1\r\n\r\n";
        let mut h = parse_response(Bytes::from_static(raw), &Method::GET).unwrap();
        let value = HeaderValue::from_static;
        h.fields.set_over(header::SERVER, value("one")).unwrap();
        h.fields.set_over(header::SERVER, value("portico")).unwrap();
        h.fields
            .set_over(header::ALT_SVC, value("h3=\":443\""))
            .unwrap();
        h.fields
            .set_over(header::STRICT_TRANSPORT_SECURITY, value("max-age=1"))
            .unwrap();
        // Three names at most; the caller then sets a fourth in the answer's map.
        let back = h.fields.set_over(header::VARY, value("*"));
        assert_eq!(back, Err((header::VARY, value("*"))));
        let over: Vec<_> = h
            .fields
            .set_over_fields()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(over, ["server", "alt-svc", "strict-transport-security"]);
        assert_eq!(h.fields.len(), 6);
        let mut map = HeaderMap::new();
        h.fields.add_to(&mut map);
        assert_eq!(
            map.get_all(header::SERVER).iter().collect::<Vec<_>>(),
            ["portico"]
        );
        assert_eq!(map.get_all(header::ALT_SVC).iter().count(), 1);
        assert_eq!(map[header::STRICT_TRANSPORT_SECURITY], "max-age=1");
        assert_eq!(map["x-a"], "1");
        assert_eq!(map.len(), 4);
    }
}
