//! A TLS listener built exactly as the HTTPS listener builds it, for pointing a scanner
//! (sslscan, testssl.sh) at: `cargo run -p portico-tls --example tls_echo -- 127.0.0.1:9443`.
//! Serves the generated self-signed certificate and answers each connection with one line.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9443".to_owned());
    let resolver = Arc::new(tls::CertResolver::new(&tls::generate_self_signed()?));
    let acceptor = tls::TlsAcceptor::from(tls::server_config(resolver)?);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    tls::serve(
        listener,
        acceptor,
        Duration::from_secs(10),
        std::future::pending(),
        |mut conn: tls::TlsConnection| async move {
            let line = format!("sni={:?} h2={}\n", conn.info.sni, conn.info.alpn_h2);
            let _ = conn.stream.write_all(line.as_bytes()).await;
            let _ = conn.stream.shutdown().await;
        },
    )
    .await;
    Ok(())
}
