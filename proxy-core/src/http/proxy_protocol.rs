//! PROXY protocol headers (HAProxy's v1 text and v2 binary forms).
//!
//! Behind a TCP load balancer every connection's peer is the balancer, so the client
//! address we log and forward (`X-Forwarded-For`, `X-Real-IP`) would be the balancer's.
//! A balancer that speaks the PROXY protocol sends the real client, and the address it
//! connected to, in a short header ahead of the client's bytes. [`read_header`] reads
//! exactly that header and leaves the stream at the client's first byte (an HTTP request
//! or a TLS ClientHello).
//!
//! Anyone who reaches the port can claim any address in a header, so only listeners
//! whose peers are trusted balancers should read one, and those should refuse
//! connections without it ([`ProxyProtocolError::NotProxyProtocol`]).
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What the PROXY header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// TCP or UDP over IPv4 or IPv6: the original client and the address it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 `UNKNOWN`, v2 `LOCAL` (the balancer's own health checks), or a family with no IP
    /// address (v2 `AF_UNIX`, `AF_UNSPEC`): use the TCP peer.
    Local,
}

/// Why a connection did not yield a PROXY header.
#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    #[error("reading the PROXY header failed: {0}")]
    Io(#[from] io::Error),
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// `received` is 0 when the peer closed without sending anything (a TCP health check).
    #[error("connection closed after {received} bytes, inside the PROXY header")]
    UnexpectedEof { received: usize },
    #[error("connection does not start with a PROXY protocol signature")]
    NotProxyProtocol,
    #[error("PROXY v1 line has no CRLF within {V1_MAX_LEN} bytes")]
    TooLong,
    #[error("unsupported PROXY protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// Longest v1 line, CRLF included: `UNKNOWN` with two full-length IPv6 addresses.
pub const V1_MAX_LEN: usize = 107;
/// Shortest header of either version: `PROXY UNKNOWN\r\n`.
const MIN_LEN: usize = 15;
const V1_SIG: &[u8] = b"PROXY ";
const CRLF: &[u8] = b"\r\n";
/// Fewest characters of each field after `TCP4` / `TCP6`: source and destination address
/// (`0.0.0.0`, `::`), source and destination port.
const TCP4_FIELDS: [usize; 4] = [7, 7, 1, 1];
const TCP6_FIELDS: [usize; 4] = [2, 2, 1, 1];

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/transport, 16-bit length.
const V2_FIXED_LEN: usize = 16;
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;

/// Reads exactly the PROXY header (v1 or v2, told apart by the signature) from the start
/// of `stream`, consuming no byte after it, within `timeout`.
///
/// Reads never ask for more than the fewest bytes a valid header could still need, so
/// the client's data is never taken; v2 TLVs are read and discarded. A stream that does
/// not start with a signature fails as soon as the first diverging byte arrives.
pub async fn read_header<S>(
    stream: &mut S,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyProtocolError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    match tokio::time::timeout(timeout, read_header_unbounded(stream)).await {
        Ok(res) => res,
        Err(_) => Err(ProxyProtocolError::Timeout(timeout)),
    }
}

async fn read_header_unbounded<S>(stream: &mut S) -> Result<ProxyHeader, ProxyProtocolError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    // Holds the longest v1 line, and the v2 fixed part with IPv6 addresses (52 bytes);
    // TLVs are not kept.
    let mut buf = [0u8; V1_MAX_LEN];
    let mut filled = 0;
    loop {
        match step(&buf[..filled])? {
            Step::Need(n) => {
                let end = filled.saturating_add(n.max(1)).min(buf.len());
                let got = stream.read(&mut buf[filled..end]).await?;
                if got == 0 {
                    return Err(ProxyProtocolError::UnexpectedEof { received: filled });
                }
                filled += got;
            }
            Step::Header { header, len } => {
                debug_assert!(len >= filled, "read past the header");
                discard(stream, filled, len.saturating_sub(filled)).await?;
                return Ok(header);
            }
        }
    }
}

/// Reads and drops `n` bytes (v2 TLVs), a bounded chunk at a time.
async fn discard<S>(
    stream: &mut S,
    mut received: usize,
    mut n: usize,
) -> Result<(), ProxyProtocolError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let mut scratch = [0u8; 512];
    while n > 0 {
        let want = n.min(scratch.len());
        let got = stream.read(&mut scratch[..want]).await?;
        if got == 0 {
            return Err(ProxyProtocolError::UnexpectedEof { received });
        }
        n -= got;
        received += got;
    }
    Ok(())
}

/// Parses a PROXY header at the start of `buf`: the header and how many bytes it took, or
/// `None` when `buf` ends before the header does. Bytes after the header are ignored.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyProtocolError> {
    Ok(match step(buf)? {
        Step::Header { header, len } if len <= buf.len() => Some((header, len)),
        Step::Header { .. } | Step::Need(_) => None,
    })
}

/// Where parsing a prefix of the stream got to.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// A valid header is at least this many bytes longer than what was seen.
    Need(usize),
    /// The header is known; it is `len` bytes long, which for v2 may run past what was
    /// seen (the TLVs, which are read but never parsed).
    Header { header: ProxyHeader, len: usize },
}

fn step(buf: &[u8]) -> Result<Step, ProxyProtocolError> {
    // The signatures differ at the first byte, so a client that sent no header is refused
    // at its first byte that fits neither: the first for TLS and most HTTP methods, the
    // second or third for POST, PUT, PATCH and the HTTP/2 preface.
    match buf.first() {
        None => Ok(Step::Need(MIN_LEN)),
        Some(b'P') => step_v1(buf),
        Some(b'\r') => step_v2(buf),
        Some(_) => Err(ProxyProtocolError::NotProxyProtocol),
    }
}

fn step_v1(buf: &[u8]) -> Result<Step, ProxyProtocolError> {
    let sig = buf.len().min(V1_SIG.len());
    if buf[..sig] != V1_SIG[..sig] {
        return Err(ProxyProtocolError::NotProxyProtocol);
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    // The signature has no CR, so a CRLF here comes after it.
    if let Some(at) = window.windows(CRLF.len()).position(|w| w == CRLF) {
        let line = buf
            .get(V1_SIG.len()..at)
            .ok_or(ProxyProtocolError::Malformed(
                "v1 line ends inside the signature",
            ))?;
        let header = parse_v1_line(line)?;
        return Ok(Step::Header {
            header,
            len: at + CRLF.len(),
        });
    }
    if buf.len() >= V1_MAX_LEN {
        return Err(ProxyProtocolError::TooLong);
    }
    let need = v1_min_remaining(buf)?;
    Ok(Step::Need(need.min(V1_MAX_LEN - buf.len())))
}

/// The fewest bytes a valid v1 line could still need after `buf`, which holds no CRLF.
/// Reading that many cannot take client data, and it is usually enough for a whole line
/// to arrive in a handful of reads rather than one per byte. Also refuses an unknown
/// protocol or a surplus field without waiting for the CRLF.
fn v1_min_remaining(buf: &[u8]) -> Result<usize, ProxyProtocolError> {
    let Some(rest) = buf.strip_prefix(V1_SIG) else {
        return Ok(MIN_LEN.saturating_sub(buf.len()));
    };
    if buf.last() == Some(&b'\r') {
        return Ok(1);
    }
    let mut fields = rest.split(|&b| b == b' ');
    let proto = fields.next().unwrap_or_default();
    let (mut later_fields, mut current) = (0usize, &[][..]);
    for f in fields {
        later_fields += 1;
        current = f;
    }
    if later_fields == 0 {
        // Still inside the protocol name: whichever it may become needs the least.
        let candidates = [
            (&b"UNKNOWN"[..], CRLF.len()),
            (&b"TCP4"[..], rest_min(&TCP4_FIELDS)),
            (&b"TCP6"[..], rest_min(&TCP6_FIELDS)),
        ];
        return candidates
            .iter()
            .filter(|(name, _)| name.starts_with(proto))
            .map(|(name, tail)| name.len() - proto.len() + tail)
            .min()
            .ok_or(ProxyProtocolError::Malformed("unknown v1 protocol"));
    }
    let mins: &[usize] = match proto {
        // Anything may follow up to the CRLF.
        b"UNKNOWN" => return Ok(CRLF.len()),
        b"TCP4" => &TCP4_FIELDS,
        b"TCP6" => &TCP6_FIELDS,
        _ => return Err(ProxyProtocolError::Malformed("unknown v1 protocol")),
    };
    let Some((&cur_min, after)) = mins.get(later_fields - 1..).and_then(<[_]>::split_first) else {
        return Err(ProxyProtocolError::Malformed("too many fields in v1 line"));
    };
    Ok(cur_min.saturating_sub(current.len()) + rest_min(after))
}

/// The fewest bytes of ` field field ...\r\n` with fields at least `mins` long.
fn rest_min(mins: &[usize]) -> usize {
    mins.iter().map(|m| 1 + m).sum::<usize>() + CRLF.len()
}

/// `line` is what follows `PROXY ` up to, not including, the CRLF.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyProtocolError> {
    let mut fields = line.split(|&b| b == b' ');
    let v6 = match fields.next() {
        // The spec has the receiver ignore whatever follows UNKNOWN.
        Some(b"UNKNOWN") => return Ok(ProxyHeader::Local),
        Some(b"TCP4") => false,
        Some(b"TCP6") => true,
        _ => return Err(ProxyProtocolError::Malformed("unknown v1 protocol")),
    };
    // Splitting on single spaces makes a doubled space an empty field, which fails below.
    let mut next = |what| fields.next().ok_or(ProxyProtocolError::Malformed(what));
    let src = next("v1 line lacks the source address")?;
    let dst = next("v1 line lacks the destination address")?;
    let sport = next("v1 line lacks the source port")?;
    let dport = next("v1 line lacks the destination port")?;
    if fields.next().is_some() {
        return Err(ProxyProtocolError::Malformed("too many fields in v1 line"));
    }
    let ip = |field: &[u8], what| -> Result<IpAddr, ProxyProtocolError> {
        let bad = || ProxyProtocolError::Malformed(what);
        let s = std::str::from_utf8(field).map_err(|_| bad())?;
        // std refuses IPv4 octets with leading zeros, as the spec asks.
        if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| bad())
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| bad())
        }
    };
    let source = SocketAddr::new(
        ip(src, "bad v1 source address")?,
        parse_port(sport, "bad v1 source port")?,
    );
    let destination = SocketAddr::new(
        ip(dst, "bad v1 destination address")?,
        parse_port(dport, "bad v1 destination port")?,
    );
    Ok(ProxyHeader::Proxied {
        source,
        destination,
    })
}

/// Decimal 0-65535 with no sign and no leading zero (the spec forbids them so that no
/// one reads the number as octal).
fn parse_port(field: &[u8], what: &'static str) -> Result<u16, ProxyProtocolError> {
    let err = ProxyProtocolError::Malformed(what);
    match field {
        [] => Err(err),
        [b'0'] => Ok(0),
        [b'0', ..] => Err(err),
        _ if field.len() > 5 || !field.iter().all(u8::is_ascii_digit) => Err(err),
        _ => {
            let n = field.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            u16::try_from(n).map_err(|_| err)
        }
    }
}

fn step_v2(buf: &[u8]) -> Result<Step, ProxyProtocolError> {
    let sig = buf.len().min(V2_SIG.len());
    if buf[..sig] != V2_SIG[..sig] {
        return Err(ProxyProtocolError::NotProxyProtocol);
    }
    let Some(&[ver_cmd, fam, len_hi, len_lo]) = buf.get(V2_SIG.len()..V2_FIXED_LEN) else {
        return Ok(Step::Need(V2_FIXED_LEN - buf.len()));
    };
    let version = ver_cmd >> 4;
    if version != 2 {
        return Err(ProxyProtocolError::UnsupportedVersion(version));
    }
    let body_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let len = V2_FIXED_LEN + body_len;
    match ver_cmd & 0x0f {
        // LOCAL: the balancer speaking for itself; the spec has the family ignored.
        0x0 => {
            return Ok(Step::Header {
                header: ProxyHeader::Local,
                len,
            })
        }
        0x1 => {}
        _ => return Err(ProxyProtocolError::Malformed("unknown v2 command")),
    }
    // High nibble family (UNSPEC, INET, INET6, UNIX), low nibble transport (UNSPEC,
    // STREAM, DGRAM); the spec has every other combination refused.
    let addr_len = match fam {
        0x00 => 0,
        0x11 | 0x12 => V2_INET_LEN,
        0x21 | 0x22 => V2_INET6_LEN,
        0x31 | 0x32 => V2_UNIX_LEN,
        _ => return Err(ProxyProtocolError::Malformed("unknown v2 address family")),
    };
    if body_len < addr_len {
        return Err(ProxyProtocolError::Malformed(
            "v2 length is shorter than its address block",
        ));
    }
    let header = match fam >> 4 {
        1 => {
            let Some(a) = buf.get(V2_FIXED_LEN..V2_FIXED_LEN + V2_INET_LEN) else {
                return Ok(Step::Need(V2_FIXED_LEN + V2_INET_LEN - buf.len()));
            };
            let ip = |at: usize| Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0).into(), be16(a, 8)),
                destination: SocketAddr::new(ip(4).into(), be16(a, 10)),
            }
        }
        2 => {
            let Some(a) = buf.get(V2_FIXED_LEN..V2_FIXED_LEN + V2_INET6_LEN) else {
                return Ok(Step::Need(V2_FIXED_LEN + V2_INET6_LEN - buf.len()));
            };
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0).into(), be16(a, 32)),
                destination: SocketAddr::new(ip(16).into(), be16(a, 34)),
            }
        }
        // UNSPEC or a UNIX socket path: nothing to stand in for the TCP peer.
        _ => ProxyHeader::Local,
    };
    Ok(Step::Header { header, len })
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncWriteExt, ReadBuf};

    const REST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const T: Duration = Duration::from_secs(5);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: addr(src),
            destination: addr(dst),
        }
    }

    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(ver_cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn v2_inet_body(tlvs: &[u8]) -> Vec<u8> {
        let mut b = vec![203, 0, 113, 7, 10, 0, 0, 1];
        b.extend_from_slice(&51234u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b.extend_from_slice(tlvs);
        b
    }

    fn v2_inet6_body(tlvs: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&51234u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b.extend_from_slice(tlvs);
        b
    }

    /// ALPN "h2", an AWS-style VPC endpoint id, and a NOOP.
    const TLVS: &[u8] = b"\x01\x00\x02h2\xea\x00\x0d\x01vpce-0123456\x04\x00\x03\0\0\0";

    const MAX6: &str = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";

    /// Valid headers and what they say.
    fn valid() -> Vec<(Vec<u8>, ProxyHeader)> {
        let v4 = proxied("203.0.113.7:51234", "10.0.0.1:443");
        let v6 = proxied("[2001:db8::7]:51234", "[fd00::1]:443");
        vec![
            (
                b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n".to_vec(),
                v4,
            ),
            (
                b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n".to_vec(),
                proxied("255.255.255.255:65535", "255.255.255.255:65535"),
            ),
            (
                b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n".to_vec(),
                proxied("0.0.0.0:0", "0.0.0.0:0"),
            ),
            (b"PROXY TCP6 2001:db8::7 fd00::1 51234 443\r\n".to_vec(), v6),
            (
                b"PROXY TCP6 :: :: 0 0\r\n".to_vec(),
                proxied("[::]:0", "[::]:0"),
            ),
            (
                b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n".to_vec(),
                proxied("[::ffff:192.0.2.1]:1", "[::1]:2"),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), ProxyHeader::Local),
            (
                format!("PROXY TCP6 {MAX6} {MAX6} 65535 65535\r\n").into_bytes(),
                proxied(&format!("[{MAX6}]:65535"), &format!("[{MAX6}]:65535")),
            ),
            (
                format!("PROXY UNKNOWN {MAX6} {MAX6} 65535 65535\r\n").into_bytes(),
                ProxyHeader::Local,
            ),
            (
                b"PROXY UNKNOWN  any\rthing\r\n".to_vec(),
                ProxyHeader::Local,
            ),
            (v2(0x21, 0x11, &v2_inet_body(b"")), v4),
            (v2(0x21, 0x11, &v2_inet_body(TLVS)), v4),
            (v2(0x21, 0x12, &v2_inet_body(b"")), v4),
            (v2(0x21, 0x21, &v2_inet6_body(b"")), v6),
            (v2(0x21, 0x21, &v2_inet6_body(TLVS)), v6),
            (v2(0x20, 0x00, b""), ProxyHeader::Local),
            (v2(0x20, 0x11, &v2_inet_body(b"")), ProxyHeader::Local),
            (v2(0x20, 0xff, b"whatever"), ProxyHeader::Local),
            (v2(0x21, 0x00, b""), ProxyHeader::Local),
            (v2(0x21, 0x00, TLVS), ProxyHeader::Local),
            (v2(0x21, 0x31, &[b'/'; V2_UNIX_LEN * 2]), ProxyHeader::Local),
        ]
    }

    /// Hands out one byte per read, as a slow or segmenting peer would.
    struct Trickle<'a>(&'a [u8]);

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some((&b, rest)) = self.0.split_first() {
                if buf.remaining() > 0 {
                    buf.put_slice(&[b]);
                    self.0 = rest;
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    fn with_rest(header: &[u8]) -> Vec<u8> {
        [header, REST].concat()
    }

    async fn read_all<R: AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn valid_headers_leave_the_client_bytes_in_the_stream() {
        for (header, want) in valid() {
            let input = with_rest(&header);
            assert_eq!(
                parse(&input).unwrap(),
                Some((want, header.len())),
                "{header:?}"
            );

            // A slice hands out as much as is asked for, so an over-read would show.
            let mut slice = &input[..];
            assert_eq!(
                read_header(&mut slice, T).await.unwrap(),
                want,
                "{header:?}"
            );
            assert_eq!(slice, REST, "{header:?}");

            let mut trickle = Trickle(&input);
            assert_eq!(read_header(&mut trickle, T).await.unwrap(), want);
            assert_eq!(read_all(trickle).await, REST, "{header:?}");
        }
    }

    #[tokio::test]
    async fn header_over_a_socket_like_stream() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let header = v2(0x21, 0x21, &v2_inet6_body(TLVS));
        let writer = tokio::spawn(async move {
            for chunk in with_rest(&header).chunks(7) {
                client.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(
            read_header(&mut server, T).await.unwrap(),
            proxied("[2001:db8::7]:51234", "[fd00::1]:443")
        );
        writer.await.unwrap();
        assert_eq!(read_all(server).await, REST);
    }

    /// Every prefix of a valid header asks for no more than the header still holds.
    #[test]
    fn reads_never_ask_past_the_header() {
        for (header, want) in valid() {
            for cut in 0..header.len() {
                match step(&header[..cut]).unwrap() {
                    Step::Need(n) => {
                        assert!(n >= 1, "{header:?} at {cut}");
                        assert!(cut + n <= header.len(), "{header:?} at {cut}: asks {n}");
                    }
                    Step::Header { header: h, len } => {
                        assert_eq!(h, want);
                        assert_eq!(len, header.len());
                    }
                }
            }
        }
    }

    #[test]
    fn a_typical_v1_line_takes_a_few_reads() {
        let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        let (mut seen, mut reads) = (0, 0);
        while let Step::Need(n) = step(&header[..seen]).unwrap() {
            seen += n;
            reads += 1;
        }
        assert_eq!(seen, header.len());
        assert!(reads <= 6, "{reads} reads");
    }

    fn err(input: &[u8]) -> ProxyProtocolError {
        match parse(input) {
            Err(e) => e,
            Ok(r) => panic!("{input:?} parsed as {r:?}"),
        }
    }

    #[test]
    fn not_proxy_protocol() {
        for input in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"G",
            b"\x16\x03\x01\x02\x00\x01",
            b"PRI * HTTP/2.0\r\n",
            b"PO",
            b"PUT / HTTP/1.1\r\n",
            b"PROXZ",
            b"PROXY\r\n",
            b"\r\n\r\n\0\r\nQUIT\r",
            b"\r\nGET",
        ] {
            assert!(
                matches!(err(input), ProxyProtocolError::NotProxyProtocol),
                "{input:?}"
            );
        }
    }

    #[test]
    fn v1_malformed() {
        for input in [
            &b"PROXY TCP4 1.2.3 10.0.0.1 1 2\r\n"[..],
            b"PROXY TCP4 01.2.3.4 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.256 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1 99999\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 080 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 +80 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1 \r\n",
            b"PROXY TCP4 1.2.3.4  10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY tcp4 1.2.3.4 10.0.0.1 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 10.0.0.1 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY \r\n",
            b"PROXY  TCP4 1.2.3.4 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2\n\r\n",
            b"PROXY TCP4 1.2.3.4\t10.0.0.1 1 2\r\n",
        ] {
            assert!(
                matches!(err(input), ProxyProtocolError::Malformed(_)),
                "{input:?}: {}",
                err(input)
            );
        }
    }

    #[test]
    fn v1_rejects_before_the_crlf_what_cannot_become_valid() {
        for prefix in [
            &b"PROXY X"[..],
            b"PROXY TCP5",
            b"PROXY UNKNOWNN",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2 ",
        ] {
            assert!(
                matches!(err(prefix), ProxyProtocolError::Malformed(_)),
                "{prefix:?}"
            );
        }
    }

    #[tokio::test]
    async fn v1_too_long() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(200, b'a');
        line.extend_from_slice(b"\r\n");
        assert!(matches!(err(&line), ProxyProtocolError::TooLong));
        // CRLF starting at byte 107 is one byte too late.
        let mut late = b"PROXY UNKNOWN ".to_vec();
        late.resize(V1_MAX_LEN - 1, b'a');
        late.extend_from_slice(b"\r\n");
        assert!(matches!(err(&late), ProxyProtocolError::TooLong));

        let mut slice = &line[..];
        assert!(matches!(
            read_header(&mut slice, T).await,
            Err(ProxyProtocolError::TooLong)
        ));
        assert_eq!(slice.len(), line.len() - V1_MAX_LEN);
    }

    #[test]
    fn v1_longest_line_is_accepted() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 2, b'a');
        line.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&line).unwrap(),
            Some((ProxyHeader::Local, V1_MAX_LEN))
        );
    }

    #[test]
    fn v2_malformed() {
        let inet = v2_inet_body(b"");
        assert!(matches!(
            err(&v2(0x11, 0x11, &inet)),
            ProxyProtocolError::UnsupportedVersion(1)
        ));
        assert!(matches!(
            err(&v2(0x31, 0x11, &inet)),
            ProxyProtocolError::UnsupportedVersion(3)
        ));
        for input in [
            v2(0x22, 0x11, &inet),
            v2(0x2f, 0x11, &inet),
            v2(0x21, 0x10, &inet),
            v2(0x21, 0x13, &inet),
            v2(0x21, 0x01, &inet),
            v2(0x21, 0x41, &inet),
            v2(0x21, 0x11, &inet[..V2_INET_LEN - 1]),
            v2(0x21, 0x21, &v2_inet6_body(b"")[..V2_INET6_LEN - 1]),
            v2(0x21, 0x21, &inet),
            v2(0x21, 0x31, &[0; V2_UNIX_LEN - 1]),
        ] {
            assert!(
                matches!(err(&input), ProxyProtocolError::Malformed(_)),
                "{input:?}"
            );
        }
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        for (header, _) in valid() {
            for cut in 0..header.len() {
                assert_eq!(parse(&header[..cut]).unwrap(), None, "{header:?} at {cut}");
            }
        }
    }

    #[tokio::test]
    async fn plain_http_is_refused_at_its_first_byte() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"G").await.unwrap();
        // The rest never comes; waiting for it would end in a timeout instead.
        let res = read_header(&mut server, Duration::from_millis(50)).await;
        assert!(
            matches!(res, Err(ProxyProtocolError::NotProxyProtocol)),
            "{res:?}"
        );
        drop(client);
    }

    #[tokio::test]
    async fn truncated_stream() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 5";
        let v2_tlvs = v2(0x21, 0x11, &v2_inet_body(TLVS));
        for (input, received) in [
            (&b""[..], 0),
            (&v1[..], v1.len()),
            (&v2_tlvs[..20], 20),
            (&v2_tlvs[..v2_tlvs.len() - 1], v2_tlvs.len() - 1),
        ] {
            let mut slice = input;
            let res = read_header(&mut slice, T).await;
            let Err(ProxyProtocolError::UnexpectedEof { received: r }) = res else {
                panic!("{input:?}: {res:?}");
            };
            assert_eq!(r, received, "{input:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_covers_the_whole_header() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let res = read_header(&mut server, T).await;
        assert!(matches!(res, Err(ProxyProtocolError::Timeout(t)) if t == T));

        // A peer that trickles the header, each byte well inside the timeout, still
        // has to finish within it.
        let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
        let start = tokio::time::Instant::now();
        let writer = tokio::spawn(async move {
            for b in header {
                if client.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let res = read_header(&mut server, T).await;
        assert!(
            matches!(res, Err(ProxyProtocolError::Timeout(_))),
            "{res:?}"
        );
        assert_eq!(start.elapsed(), T);
        drop(server);
        writer.await.unwrap();
    }

    fn random_v1(rng: &mut StdRng) -> (Vec<u8>, ProxyHeader) {
        let (src, dst) = if rng.random() {
            (
                SocketAddr::new(Ipv4Addr::from(rng.random::<u32>()).into(), rng.random()),
                SocketAddr::new(Ipv4Addr::from(rng.random::<u32>()).into(), rng.random()),
            )
        } else {
            // Sparse addresses exercise `::` compression in the text form.
            let mut ip = || {
                let mut segs: [u16; 8] = rng.random();
                for s in &mut segs {
                    if rng.random_bool(0.5) {
                        *s = 0;
                    }
                }
                Ipv6Addr::from(segs)
            };
            let (a, b) = (ip(), ip());
            (
                SocketAddr::new(a.into(), rng.random()),
                SocketAddr::new(b.into(), rng.random()),
            )
        };
        let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
        let line = format!(
            "PROXY {proto} {} {} {} {}\r\n",
            src.ip(),
            dst.ip(),
            src.port(),
            dst.port()
        );
        let want = ProxyHeader::Proxied {
            source: src,
            destination: dst,
        };
        (line.into_bytes(), want)
    }

    /// Random valid headers parse back, and every prefix asks for no more than is left.
    #[test]
    fn random_v1_lines_round_trip() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..5_000 {
            let (line, want) = random_v1(&mut rng);
            assert_eq!(parse(&line).unwrap(), Some((want, line.len())), "{line:?}");
            for cut in 0..line.len() {
                if let Step::Need(n) = step(&line[..cut]).unwrap() {
                    assert!(cut + n <= line.len(), "{line:?} at {cut}: asks {n}");
                }
            }
        }
    }

    /// Random bytes and damaged valid headers: the parser never panics, never claims more
    /// than it was given, and the reader agrees with it and takes exactly the header.
    #[tokio::test]
    async fn random_input_never_panics() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let valid = valid();
        for i in 0..20_000 {
            let mut input = if i % 4 == 0 {
                let len = rng.random_range(0..160);
                (0..len).map(|_| rng.random::<u8>()).collect::<Vec<u8>>()
            } else if i % 4 == 1 {
                random_v1(&mut rng).0
            } else {
                valid[rng.random_range(0..valid.len())].0.clone()
            };
            for _ in 0..rng.random_range(0..4) {
                if input.is_empty() {
                    break;
                }
                let at = rng.random_range(0..input.len());
                match rng.random_range(0..4) {
                    0 => input[at] = rng.random(),
                    1 => {
                        input.remove(at);
                    }
                    2 => input.insert(at, rng.random()),
                    _ => input.truncate(at),
                }
            }
            let tail = rng.random_range(0..40);
            input.extend((0..tail).map(|_| rng.random::<u8>()));

            let parsed = parse(&input);
            if let Ok(Some((_, n))) = parsed {
                assert!(n <= input.len());
            }
            let mut slice = &input[..];
            let read = read_header(&mut slice, T).await;
            if let Ok(Some((h, n))) = parsed {
                assert_eq!(read.unwrap(), h, "{input:?}");
                assert_eq!(slice, &input[n..], "{input:?}");
            }
        }
    }
}
