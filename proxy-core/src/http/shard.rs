//! Which serving shard the current thread is.
//!
//! On a work-stealing runtime every thread is shard 0 and shares everything. In the
//! per-core model each thread runs a single-threaded runtime of its own, with its own
//! listeners (the kernel spreads connections over them), and is a shard of its own. A
//! socket is driven by the reactor of the runtime it was registered with, so what holds
//! sockets between requests (pooled pod connections, parked client connections) is kept
//! per shard: a shard's requests then never wait on another thread's reactor.
//!
//! One acceptor per address deals new connections out to the shards in turn
//! ([`Incoming::dealing`]): the kernel's own spreading over `SO_REUSEPORT` listeners
//! hashes each connection's addresses, and a few dozen connections rarely split evenly,
//! while a thread cannot take work from a busier one.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as serving shard `shard` (numbered from 0, densely).
pub fn enter(shard: usize) {
    SHARD.with(|s| s.set(shard));
}

/// The calling thread's shard.
pub(crate) fn current() -> usize {
    SHARD.with(Cell::get)
}

/// `slots[shard]`, grown with defaults as shards first ask for theirs.
pub(crate) fn slot<T: Default>(slots: &mut Vec<T>, shard: usize) -> &mut T {
    if slots.len() <= shard {
        slots.resize_with(shard + 1, T::default);
    }
    &mut slots[shard]
}

/// A connection one shard accepted for another, not yet registered with any runtime.
type Handed = (std::net::TcpStream, SocketAddr);

/// Where an accept loop takes its client connections from.
pub enum Incoming {
    /// A listening socket of its own.
    Listener(TcpListener),
    /// A listening socket whose connections go to this shard and the others in turn:
    /// every `others.len() + 1`th is this shard's.
    Dealing {
        listener: TcpListener,
        others: Vec<mpsc::UnboundedSender<Handed>>,
        turn: usize,
    },
    /// The connections another shard's acceptor deals to this one.
    Dealt(mpsc::UnboundedReceiver<Handed>),
}

impl From<TcpListener> for Incoming {
    fn from(listener: TcpListener) -> Self {
        Incoming::Listener(listener)
    }
}

impl Incoming {
    /// An acceptor on `listener` for the calling shard, dealing to `shards - 1` others,
    /// and the ends those others accept from.
    pub fn dealing(listener: TcpListener, shards: usize) -> (Incoming, Vec<Incoming>) {
        if shards <= 1 {
            return (Incoming::Listener(listener), Vec::new());
        }
        let (others, dealt) = (1..shards)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Incoming::Dealt(rx))
            })
            .unzip();
        let dealing = Incoming::Dealing {
            listener,
            others,
            turn: 0,
        };
        (dealing, dealt)
    }

    /// The next client connection for this shard, registered with its runtime.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        match self {
            Incoming::Listener(listener) => listener.accept().await,
            Incoming::Dealing {
                listener,
                others,
                turn,
            } => loop {
                let (stream, remote) = listener.accept().await?;
                let to = *turn;
                *turn = (to + 1) % (others.len() + 1);
                let Some(other) = to.checked_sub(1).and_then(|i| others.get(i)) else {
                    return Ok((stream, remote));
                };
                // Taken off this runtime's reactor, to join the other shard's.
                match stream.into_std() {
                    Ok(std) => {
                        if other.send((std, remote)).is_err() {
                            tracing::debug!(%remote, "serving thread gone; connection dropped");
                        }
                    }
                    Err(e) => tracing::debug!(%remote, error = %e, "cannot hand a connection over"),
                }
            },
            Incoming::Dealt(rx) => match rx.recv().await {
                Some((std, remote)) => Ok((TcpStream::from_std(std)?, remote)),
                // The acceptor stopped (shutting down): nothing more comes.
                None => std::future::pending().await,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_start_as_shard_zero_and_keep_their_own() {
        assert_eq!(current(), 0);
        enter(3);
        let other = std::thread::spawn(current).join().expect("thread");
        assert_eq!(other, 0);
        assert_eq!(current(), 3);
        enter(0);
    }

    /// Connections dealt from one listener to three shards, each shard a runtime of its
    /// own, all answered by the shard they were dealt to.
    #[test]
    fn connections_are_dealt_to_every_shard_in_turn() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = |_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        };
        let runtimes: Vec<_> = (0..3).map(rt).collect();
        let (listener, addr) = runtimes[0].block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            (l, addr)
        });
        let (first, rest) = Incoming::dealing(listener, 3);
        let mut servers = Vec::new();
        for (index, (rt, mut incoming)) in runtimes
            .into_iter()
            .zip(std::iter::once(first).chain(rest))
            .enumerate()
        {
            servers.push(std::thread::spawn(move || {
                rt.block_on(async move {
                    // Each answers its connections with its index. The first, which
                    // accepts for all, stops once none come for a while; the others
                    // after their two.
                    let mut answered = 0;
                    while index == 0 || answered < 2 {
                        let wait = std::time::Duration::from_secs(1);
                        let Ok(accepted) = tokio::time::timeout(wait, incoming.accept()).await
                        else {
                            break;
                        };
                        let (mut s, _) = accepted.expect("accept");
                        s.write_all(&[index as u8]).await.expect("write");
                        answered += 1;
                    }
                    answered
                })
            }));
        }
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut served = client.block_on(async {
            let mut served = Vec::new();
            for _ in 0..6 {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.expect("answer");
                served.push(b[0]);
            }
            served
        });
        let answered: Vec<usize> = servers
            .into_iter()
            .map(|s| s.join().expect("server"))
            .collect();
        assert_eq!(answered, vec![2, 2, 2]);
        assert_eq!(served, vec![0, 1, 2, 0, 1, 2]);
        served.sort();
        assert_eq!(served, vec![0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn slots_grow_to_the_shard_asked_for() {
        let mut slots: Vec<Vec<u8>> = Vec::new();
        slot(&mut slots, 2).push(7);
        assert_eq!(slots, vec![vec![], vec![], vec![7]]);
        slot(&mut slots, 0).push(1);
        assert_eq!(slots[0], vec![1]);
    }
}
