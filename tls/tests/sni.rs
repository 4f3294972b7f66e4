//! Real handshakes over 127.0.0.1: which certificate each SNI name is shown, ALPN, protocol
//! versions, rotation and the handshake timeout.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tls::{generate_self_signed, CertResolver, CertStore, TlsAcceptor, TlsError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

fn resolver_with(sources: &[tls::CertSource]) -> (Arc<CertResolver>, tls::SelfSigned) {
    let fallback = generate_self_signed().unwrap();
    let resolver = Arc::new(CertResolver::new(&fallback));
    let (store, diags) = CertStore::build(sources, None);
    assert!(diags.is_empty(), "unexpected diagnostics: {diags:?}");
    resolver.swap(store);
    (resolver, fallback)
}

#[tokio::test]
async fn exact_then_wildcard_then_self_signed_default() {
    let exact = rcgen_p256(&["app.example.com"]);
    let wild = rcgen_p256(&["*.example.com"]);
    let (resolver, fallback) = resolver_with(&[
        wild.source("ns/wild", &["*.example.com"]),
        exact.source("ns/exact", &["app.example.com"]),
    ]);
    let addr = spawn_server(resolver).await;
    let self_signed = fallback.cert_der().to_vec();

    assert_eq!(
        presented(addr, Some("app.example.com")).await,
        exact.leaf_der
    );
    assert_eq!(
        presented(addr, Some("APP.Example.com")).await,
        exact.leaf_der
    );
    assert_eq!(
        presented(addr, Some("other.example.com")).await,
        wild.leaf_der
    );
    // A wildcard covers one label only.
    assert_eq!(presented(addr, Some("a.b.example.com")).await, self_signed);
    assert_eq!(presented(addr, Some("example.com")).await, self_signed);
    assert_eq!(presented(addr, Some("unknown.test")).await, self_signed);
    // No SNI (an IP literal) gets the default.
    assert_eq!(presented(addr, None).await, self_signed);
}

#[tokio::test]
async fn configured_default_certificate_beats_self_signed() {
    let app = rcgen_p256(&["app.example.com"]);
    let default = rcgen_p256(&["default.example.com"]);
    let fallback = generate_self_signed().unwrap();
    let resolver = Arc::new(CertResolver::new(&fallback));
    let (store, diags) = CertStore::build(
        &[app.source("ns/app", &["app.example.com"])],
        Some(&default.source("ingress/default-cert", &[])),
    );
    assert!(diags.is_empty(), "{diags:?}");
    assert!(store.has_default());
    resolver.swap(store);
    let addr = spawn_server(resolver).await;

    assert_eq!(presented(addr, Some("app.example.com")).await, app.leaf_der);
    assert_eq!(
        presented(addr, Some("nope.example.com")).await,
        default.leaf_der
    );
    assert_eq!(presented(addr, None).await, default.leaf_der);
}

#[tokio::test]
async fn ecdsa_p384_and_ed25519_from_rcgen() {
    let p384 = rcgen_cert(&["p384.test"], &rcgen::PKCS_ECDSA_P384_SHA384);
    let ed = rcgen_cert(&["ed.test"], &rcgen::PKCS_ED25519);
    let (resolver, _) = resolver_with(&[
        p384.source("ns/p384", &["p384.test"]),
        ed.source("ns/ed", &["ed.test"]),
    ]);
    let addr = spawn_server(resolver).await;
    assert_eq!(presented(addr, Some("p384.test")).await, p384.leaf_der);
    assert_eq!(presented(addr, Some("ed.test")).await, ed.leaf_der);
}

#[tokio::test]
async fn chain_with_intermediate_verifies_against_root() {
    let (pem, root) = rcgen_chain(&["secure.example.com"]);
    let (resolver, _) = resolver_with(&[pem.source("ns/chain", &["secure.example.com"])]);
    let addr = spawn_server(resolver).await;
    let config = client_config(&ClientOpts {
        root: Some(root),
        ..Default::default()
    });
    let (_, leaf, line) = connect(addr, Some("secure.example.com"), config.clone())
        .await
        .unwrap();
    assert_eq!(leaf, pem.leaf_der);
    assert_eq!(line, "secure.example.com|false");
    // The same client must reject the self-signed default for another name.
    assert!(connect(addr, Some("other.example.com"), config)
        .await
        .is_err());
}

#[tokio::test]
async fn alpn_prefers_h2_and_offers_http11() {
    let pem = rcgen_p256(&["a.test"]);
    let (resolver, _) = resolver_with(&[pem.source("ns/a", &["a.test"])]);
    let addr = spawn_server(resolver).await;
    for (alpn, want) in [
        (&[b"h2".as_slice(), b"http/1.1".as_slice()][..], "true"),
        (&[b"http/1.1".as_slice()][..], "false"),
        (&[][..], "false"),
    ] {
        let config = client_config(&ClientOpts {
            alpn,
            ..Default::default()
        });
        let (stream, _, line) = connect(addr, Some("a.test"), config).await.unwrap();
        assert_eq!(line, format!("a.test|{want}"), "client ALPN {alpn:?}");
        let negotiated = stream
            .get_ref()
            .get_ref()
            .1
            .alpn_protocol()
            .map(<[u8]>::to_vec);
        assert_eq!(negotiated, alpn.first().map(|p| p.to_vec()));
    }
}

#[tokio::test]
async fn tls12_and_tls13_both_work() {
    let pem = rcgen_p256(&["a.test"]);
    let (resolver, _) = resolver_with(&[pem.source("ns/a", &["a.test"])]);
    let addr = spawn_server(resolver).await;
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(&ClientOpts {
            versions: &[version],
            ..Default::default()
        });
        let (stream, leaf, _) = connect(addr, Some("a.test"), config).await.unwrap();
        assert_eq!(leaf, pem.leaf_der);
        assert_eq!(stream.get_ref().get_ref().1.protocol_version(), Some(want));
    }
}

#[tokio::test]
async fn rotation_under_load_has_no_failed_handshakes_and_keeps_open_connections() {
    let old = rcgen_p256(&["rot.example.com"]);
    let new = rcgen_p256(&["rot.example.com"]);
    let (resolver, _) = resolver_with(&[old.source("ns/rot", &["rot.example.com"])]);
    let addr = spawn_server(resolver.clone()).await;

    // A connection opened before the rotation must keep working after it.
    let (mut open, leaf, _) = connect(
        addr,
        Some("rot.example.com"),
        client_config(&Default::default()),
    )
    .await
    .unwrap();
    assert_eq!(leaf, old.leaf_der);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let saw_new = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, saw_new) = (stop.clone(), ok.clone(), saw_new.clone());
        let (old_der, new_der) = (old.leaf_der.clone(), new.leaf_der.clone());
        clients.push(tokio::spawn(async move {
            let config = client_config(&Default::default());
            while !stop.load(Ordering::Relaxed) {
                let (_, leaf, _) = connect(addr, Some("rot.example.com"), config.clone())
                    .await
                    .expect("handshake failed during rotation");
                assert!(leaf == old_der || leaf == new_der, "unexpected certificate");
                if leaf == new_der {
                    saw_new.fetch_add(1, Ordering::Relaxed);
                }
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Flip between the two certificates while clients handshake.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut rotations = 0;
    while ok.load(Ordering::Relaxed) < 200 || rotations < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "load did not progress"
        );
        let pem = if rotations % 2 == 0 { &new } else { &old };
        let (store, diags) = CertStore::build(&[pem.source("ns/rot", &["rot.example.com"])], None);
        assert!(diags.is_empty());
        resolver.swap(store);
        rotations += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (store, _) = CertStore::build(&[new.source("ns/rot", &["rot.example.com"])], None);
    resolver.swap(store);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(saw_new.load(Ordering::Relaxed) > 0);
    // After the last swap, every new handshake sees the new certificate.
    assert_eq!(presented(addr, Some("rot.example.com")).await, new.leaf_der);

    open.get_mut().write_all(b"still here\n").await.unwrap();
    let mut echo = String::new();
    tokio::time::timeout(TIMEOUT, open.read_line(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echo, "still here\n");
}

#[tokio::test]
async fn stalled_client_hits_handshake_timeout() {
    let fallback = generate_self_signed().unwrap();
    let resolver = Arc::new(CertResolver::new(&fallback));
    let acceptor = TlsAcceptor::from(tls::server_config(resolver).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Connects and never sends a ClientHello.
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let result = tls::accept(tcp, &acceptor, Duration::from_millis(200)).await;
    assert!(
        matches!(result, Err(TlsError::HandshakeTimeout(_))),
        "{:?}",
        result.map(|(_, info)| info)
    );
}

#[tokio::test]
async fn garbage_instead_of_client_hello_is_a_handshake_error() {
    let fallback = generate_self_signed().unwrap();
    let resolver = Arc::new(CertResolver::new(&fallback));
    let acceptor = TlsAcceptor::from(tls::server_config(resolver).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let result = tls::accept(tcp, &acceptor, TIMEOUT).await;
    assert!(
        matches!(result, Err(TlsError::Handshake(_))),
        "{:?}",
        result.map(|(_, info)| info)
    );
}

#[tokio::test]
async fn stalled_handshakes_do_not_block_other_clients() {
    let pem = rcgen_p256(&["a.test"]);
    let (resolver, _) = resolver_with(&[pem.source("ns/a", &["a.test"])]);
    let addr = spawn_server_with_timeout(resolver, Duration::from_secs(600)).await;
    // Many connections that never send a ClientHello, held open.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        stalled.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    assert_eq!(presented(addr, Some("a.test")).await, pem.leaf_der);
    drop(stalled);
}

#[tokio::test]
async fn shutdown_stops_accepting_but_keeps_open_connections() {
    let pem = rcgen_p256(&["a.test"]);
    let (resolver, _) = resolver_with(&[pem.source("ns/a", &["a.test"])]);
    let acceptor = TlsAcceptor::from(tls::server_config(resolver).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tls::serve(
        listener,
        acceptor,
        TIMEOUT,
        async move {
            let _ = stop_rx.await;
        },
        |mut conn: tls::TlsConnection| async move {
            // Echo one line back, then close.
            let mut line = String::new();
            let mut rd = tokio::io::BufReader::new(&mut conn.stream);
            if rd.read_line(&mut line).await.is_ok() {
                let _ = conn.stream.write_all(line.as_bytes()).await;
            }
        },
    ));
    let config = client_config(&Default::default());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let mut open = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();

    stop_tx.send(()).unwrap();
    tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    open.write_all(b"after shutdown\n").await.unwrap();
    let mut echo = String::new();
    tokio::time::timeout(
        TIMEOUT,
        tokio::io::BufReader::new(&mut open).read_line(&mut echo),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(echo, "after shutdown\n");
}

#[tokio::test]
async fn failed_and_timed_out_handshakes_are_observed() {
    let fallback = generate_self_signed().unwrap();
    let resolver = Arc::new(CertResolver::new(&fallback));
    let acceptor = TlsAcceptor::from(tls::server_config(resolver).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    tokio::spawn(tls::serve_observed(
        listener,
        acceptor,
        Duration::from_millis(300),
        std::future::pending(),
        |_conn: tls::TlsConnection| async {},
        move |e: &TlsError| {
            let _ = tx.send(e.reason());
        },
        |tcp: tokio::net::TcpStream, _| async move { Some((tcp, ())) },
    ));
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = tokio::time::timeout(TIMEOUT, rx.recv()).await.unwrap();
    assert_eq!(first, Some("handshake"));
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let second = tokio::time::timeout(TIMEOUT, rx.recv()).await.unwrap();
    assert_eq!(second, Some("timeout"));
}
