//! L4 dataplane throughput on loopback: bytes/s through the proxy vs a direct connection,
//! and new connections/s (connect, one byte each way, close) through the proxy vs direct.
//!
//! Run: `cargo bench -p proxy-core --bench l4`
//! (`-- --quick` for a shorter run; `PORTICO_L4_BENCH_COPY=1` measures the user-space
//! copy path instead of splice).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use proxy_core::config::Endpoint;
use proxy_core::l4::{L4Options, L4Proxy, L4Service, NoopObserver, Protocol, ServicePortId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Bytes per measured transfer.
const CHUNK: usize = 8 << 20;

/// A sink that acknowledges every `CHUNK` bytes with one byte, and an echo for one-byte
/// pings (the connection-rate benchmark).
async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 1 << 16];
                let mut seen = 0usize;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if seen == 0 && n == 1 && buf[0] == b'p' {
                        // Ping: echo and wait for close.
                        let _ = s.write_all(b"p").await;
                        continue;
                    }
                    seen += n;
                    while seen >= CHUNK {
                        seen -= CHUNK;
                        if s.write_all(b"a").await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn setup(rt: &Runtime) -> (SocketAddr, SocketAddr, L4Proxy) {
    rt.block_on(async {
        let direct = backend().await;
        let vip = {
            let l = std::net::TcpListener::bind("127.0.30.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let options = L4Options {
            zero_copy: std::env::var_os("PORTICO_L4_BENCH_COPY").is_none(),
            ..L4Options::default()
        };
        let proxy = L4Proxy::with_options(None, Arc::new(NoopObserver), options);
        proxy
            .reconcile(&[L4Service {
                id: ServicePortId::new("bench", "sink", "tcp"),
                protocol: Protocol::Tcp,
                cluster_addr: Some(vip),
                node_addrs: vec![],
                endpoints: vec![Endpoint::ready(direct)],
                external_traffic_local: false,
                client_ip_affinity: None,
            }])
            .unwrap();
        (direct, vip, proxy)
    })
}

async fn transfer(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).await.unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await.unwrap();
}

async fn ping(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"p").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (direct, vip, _proxy) = setup(&rt);
    let data = vec![0x5au8; CHUNK];

    let mut g = c.benchmark_group("l4_throughput");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    for (name, addr) in [("direct", direct), ("proxy", vip)] {
        g.bench_function(name, |b| {
            let mut s = rt.block_on(TcpStream::connect(addr)).unwrap();
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        transfer(&mut s, &data).await;
                    }
                    start.elapsed()
                })
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("l4_connections");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    for (name, addr) in [("direct", direct), ("proxy", vip)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        ping(addr).await;
                    }
                    start.elapsed()
                })
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
