//! Caps on client connections, so that a flood of them cannot use every file descriptor
//! (the admin listener's probes, upstream connections and certificate reloads need some
//! too). A connection over a cap is closed at once, before any byte is read, and counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why a connection was refused, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The process holds `max_connections` client connections.
    Total,
    /// This client address holds `max_connections_per_client`.
    PerClient,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerClient => "max_connections_per_client",
        }
    }
}

/// Open client connections, against the caps.
pub(crate) struct ConnLimits {
    max: usize,
    open: AtomicUsize,
    per_client: Option<(usize, Mutex<HashMap<IpAddr, usize>>)>,
}

/// One admitted connection; its slot is given back when dropped.
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    client: Option<IpAddr>,
}

impl ConnLimits {
    pub fn new(max: usize, max_per_client: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: AtomicUsize::new(0),
            per_client: max_per_client.map(|n| (n, Mutex::new(HashMap::new()))),
        })
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a slot under the total cap, at accept.
    pub fn admit(self: &Arc<Self>) -> Result<ConnPermit, Refusal> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        Ok(ConnPermit {
            limits: self.clone(),
            client: None,
        })
    }

    /// Counts `permit` against `client`'s cap, once the client is known (the TCP peer,
    /// or behind a load balancer the client its PROXY protocol header names).
    pub fn admit_client(&self, permit: &mut ConnPermit, client: IpAddr) -> Result<(), Refusal> {
        let Some((max, counts)) = &self.per_client else {
            return Ok(());
        };
        let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(client).or_insert(0);
        if *n >= *max {
            return Err(Refusal::PerClient);
        }
        *n += 1;
        permit.client = Some(client);
        Ok(())
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        if let (Some(client), Some((_, counts))) = (self.client, &self.limits.per_client) {
            let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&client);
                }
            }
        }
    }
}

/// Raises this process's open-file limit to its hard limit, as nginx's
/// `worker_rlimit_nofile` does, and returns the soft limit now in force.
#[cfg(target_os = "linux")]
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Some(lim.rlim_cur)
}

#[cfg(not(target_os = "linux"))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}

/// A cap on client connections that leaves room, under `fd_limit` open files, for an
/// upstream connection per client connection plus a reserve for everything else.
pub fn default_max_connections(fd_limit: Option<u64>) -> usize {
    const RESERVE: u64 = 256;
    let limit = fd_limit.unwrap_or(1024);
    usize::try_from((limit.saturating_sub(RESERVE) / 2).max(16)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_total_and_per_client_and_gives_slots_back() {
        let limits = ConnLimits::new(3, Some(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let admit = |ip| {
            let mut p = limits.admit()?;
            limits.admit_client(&mut p, ip)?;
            Ok::<_, Refusal>(p)
        };
        let p1 = admit(a).unwrap();
        let p2 = admit(a).unwrap();
        assert_eq!(admit(a).err(), Some(Refusal::PerClient));
        let p3 = admit(b).unwrap();
        assert_eq!(admit(b).err(), Some(Refusal::Total));
        assert_eq!(limits.open(), 3);
        drop(p1);
        let p4 = admit(a).unwrap();
        drop((p2, p3, p4));
        assert_eq!(limits.open(), 0);
        assert!(limits
            .per_client
            .as_ref()
            .unwrap()
            .1
            .lock()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_default_cap_leaves_room() {
        assert_eq!(default_max_connections(Some(1024)), 384);
        assert_eq!(default_max_connections(Some(100)), 16);
        assert_eq!(
            default_max_connections(Some(1 << 20)),
            ((1 << 20) - 256) / 2
        );
    }
}
