//! Reading the server name (SNI) of a TLS ClientHello without taking it off the socket,
//! so that the connection can still go either way: spliced as it is to a pod that
//! terminates TLS itself (`ssl-passthrough`), or handshaken here as usual.
//!
//! The bytes are looked at with `MSG_PEEK` and never read, so neither path needs them
//! replayed: the TLS accept path keeps its plain `TcpStream`, and the splice hands the
//! pod every byte the client sent. Parsing is rustls's own ClientHello reader
//! ([`rustls::server::Acceptor`]), fed a copy of the peeked bytes: it takes records and
//! handshake fragments in any split, and is bounded and fuzzed upstream.

use std::io;
use std::time::Duration;

use rustls::server::Acceptor;
use tokio::net::TcpStream;

/// The most of the stream looked at: a ClientHello longer than this (beyond a full
/// TLS record plus room for a second record's header) is left to the TLS accept path.
pub const MAX_PEEK: usize = 16 * 1024 + 1024;

/// What the first bytes of a connection say about its ClientHello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// More bytes are needed.
    NeedMore,
    /// A complete ClientHello; the server name it asks for, if any (lowercase ASCII).
    Hello(Option<String>),
    /// Not a ClientHello rustls would accept, or too long to look at: the TLS accept
    /// path deals with it (and reports it).
    Unreadable,
}

/// Reads a ClientHello fed in pieces of any size.
#[derive(Default)]
pub struct ServerNameSniffer {
    acceptor: Acceptor,
    /// Bytes fed so far.
    fed: usize,
    done: Option<Sniffed>,
}

impl ServerNameSniffer {
    /// Bytes fed so far.
    pub fn fed(&self) -> usize {
        self.fed
    }

    /// Feeds the next bytes of the stream and says what is known now. Once it says
    /// anything but [`Sniffed::NeedMore`], it keeps saying it.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Sniffed {
        if let Some(done) = &self.done {
            return done.clone();
        }
        if self.fed.saturating_add(bytes.len()) > MAX_PEEK {
            return self.finish(Sniffed::Unreadable);
        }
        self.fed += bytes.len();
        while !bytes.is_empty() {
            match self.acceptor.read_tls(&mut bytes) {
                // Its buffer is full: the hello is larger than it takes.
                Ok(0) | Err(_) => return self.finish(Sniffed::Unreadable),
                Ok(_) => {}
            }
            match self.acceptor.accept() {
                Ok(None) => {}
                Ok(Some(accepted)) => {
                    let name = accepted
                        .client_hello()
                        .server_name()
                        .map(str::to_ascii_lowercase);
                    return self.finish(Sniffed::Hello(name));
                }
                Err(_) => return self.finish(Sniffed::Unreadable),
            }
        }
        Sniffed::NeedMore
    }

    fn finish(&mut self, outcome: Sniffed) -> Sniffed {
        self.done = Some(outcome.clone());
        outcome
    }
}

/// Why no ClientHello could be looked at; the connection is better closed.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    #[error("no complete ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before a complete ClientHello")]
    Closed,
    #[error("reading the ClientHello: {0}")]
    Io(#[from] io::Error),
}

impl PeekError {
    /// A short stable name, usable as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            PeekError::Timeout(_) => "timeout",
            PeekError::Closed => "closed",
            PeekError::Io(_) => "io",
        }
    }
}

/// Looks at the ClientHello on `tcp` without consuming any of it, waiting at most
/// `timeout` for all of it to arrive. `Ok(None)`: a hello without a server name, or
/// bytes that are not one the TLS accept path would take.
pub async fn peek_server_name(
    tcp: &TcpStream,
    timeout: Duration,
) -> Result<Option<String>, PeekError> {
    match tokio::time::timeout(timeout, peek_loop(tcp)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(PeekError::Timeout(timeout)),
    }
}

async fn peek_loop(tcp: &TcpStream) -> Result<Option<String>, PeekError> {
    let mut buf = vec![0u8; MAX_PEEK + 1];
    let mut sniffer = ServerNameSniffer::default();
    // A peek of bytes already seen returns at once (the socket stays readable), so a
    // hello that arrives in several segments is waited for by short sleeps instead of
    // a spin. Most hellos arrive whole, and never sleep.
    let mut pause = Duration::from_millis(1);
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(PeekError::Closed);
        }
        let seen = sniffer.fed();
        if n > seen {
            match sniffer.feed(&buf[seen..n]) {
                Sniffed::NeedMore => pause = Duration::from_millis(1),
                Sniffed::Hello(name) => return Ok(name),
                Sniffed::Unreadable => return Ok(None),
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The bytes a rustls client opens with for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(proxy_core::crypto_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let server = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    fn sniff_in_pieces(bytes: &[u8], piece: usize) -> Sniffed {
        let mut s = ServerNameSniffer::default();
        let mut last = Sniffed::NeedMore;
        for chunk in bytes.chunks(piece.max(1)) {
            last = s.feed(chunk);
            if last != Sniffed::NeedMore {
                break;
            }
        }
        last
    }

    #[test]
    fn finds_the_server_name_whatever_the_split() {
        let hello = client_hello("Pass.Example.com");
        for piece in [1, 2, 3, 5, 7, 64, 100, 511, hello.len()] {
            assert_eq!(
                sniff_in_pieces(&hello, piece),
                Sniffed::Hello(Some("pass.example.com".to_owned())),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn a_hello_split_across_records_is_read() {
        // Re-frame the handshake message into records of 50 bytes, as a client may.
        let hello = client_hello("split.test");
        let body = &hello[5..];
        let mut reframed = Vec::new();
        for chunk in body.chunks(50) {
            reframed.extend_from_slice(&hello[..3]);
            reframed.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            reframed.extend_from_slice(chunk);
        }
        assert_eq!(
            sniff_in_pieces(&reframed, 13),
            Sniffed::Hello(Some("split.test".to_owned()))
        );
    }

    #[test]
    fn truncated_hellos_need_more_and_never_claim_a_name() {
        let hello = client_hello("a.test");
        for cut in 0..hello.len() {
            let mut s = ServerNameSniffer::default();
            assert_eq!(s.feed(&hello[..cut]), Sniffed::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn plain_http_and_garbage_are_unreadable() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            &b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"[..],
            &[0xff; 64][..],
        ] {
            assert_eq!(sniff_in_pieces(bytes, 3), Sniffed::Unreadable, "{bytes:?}");
        }
    }

    #[test]
    fn too_long_is_unreadable() {
        // A record header announcing more than fits, then filler.
        let mut s = ServerNameSniffer::default();
        let mut out = s.feed(&[0x16, 0x03, 0x01, 0x40, 0x00]);
        while out == Sniffed::NeedMore {
            out = s.feed(&[0u8; 1000]);
        }
        assert_eq!(out, Sniffed::Unreadable);
        assert!(s.fed() <= MAX_PEEK);
    }

    #[test]
    fn mutated_hellos_never_panic() {
        // Fuzz-style: flip bytes of a real hello, cut it anywhere; any outcome but a
        // panic is fine, and a name found is always lowercase ASCII.
        let hello = client_hello("mutate.test");
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut bytes = hello.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            let cut = (next() as usize) % (bytes.len() + 1);
            bytes.truncate(cut);
            let piece = (next() as usize) % 300 + 1;
            if let Sniffed::Hello(Some(name)) = sniff_in_pieces(&bytes, piece) {
                assert_eq!(name, name.to_ascii_lowercase());
            }
        }
    }

    #[tokio::test]
    async fn peeks_without_consuming_and_waits_for_the_rest() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hello = client_hello("peek.test");
        let sent = hello.clone();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.set_nodelay(true).unwrap();
            // In two writes, apart in time: the second half arrives later.
            c.write_all(&sent[..40]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
            c.write_all(&sent[40..]).await.unwrap();
            c
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let name = peek_server_name(&server, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("peek.test"));
        // Every byte is still there to read.
        let mut read = vec![0u8; hello.len()];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!(read, hello);
        drop(client.await.unwrap());
    }

    #[tokio::test]
    async fn a_stalled_hello_times_out() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hello = client_hello("slow.test");
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(&hello[..20]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            c
        });
        let (server, _) = listener.accept().await.unwrap();
        let err = peek_server_name(&server, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "timeout");
        client.abort();
    }
}
